"""Channel-binding data for SCRAM ``-PLUS``, computed from a pyOpenSSL client connection.

Under a Twisted TLS transport, ``transport.getHandle()`` is the :class:`OpenSSL.SSL.Connection`;
call :func:`channel_bindings` once the handshake is complete (for instance when the stream
features arrive).  The types, each only where it is defined:

``tls-exporter`` (RFC 9266)
    TLS 1.3 only: 32 bytes exported with the label ``EXPORTER-Channel-Binding`` and no context
    (``export_keying_material(label, 32, None)``; the TLS 1.3 exporter treats an absent context
    like an empty one, RFC 8446 §7.5).  RFC 9266 also allows it on TLS 1.2 with the extended
    master secret (RFC 7627), which pyOpenSSL cannot report, so it is not offered there.
``tls-unique`` (RFC 5929 §3)
    On TLS 1.2 and below: the first Finished message of the latest handshake, the client's
    (ours) in a full handshake and the server's in an abbreviated (resumed) one.
    RFC 9266 §3 leaves it undefined for TLS 1.3, but servers that predate RFC 9266 and offer
    ``-PLUS`` on TLS 1.3 anyway (ejabberd up to 23.01, the Debian 12 package) compute it
    there from the client's Finished message, the one they verify; that value is offered on
    TLS 1.3 too, and :func:`txxmppnode.sasl.binding_types` decides when it may be used.
    Whether a TLS 1.2 session was resumed comes from ``Connection.session_reused()`` where
    pyOpenSSL has it; releases without it (up to 26.4 at least) expose ``SSL_session_reused``
    only through their private ``OpenSSL._util.lib``, used as a fallback.  If neither
    answers, ``tls-unique`` is not offered rather than guessed.
``tls-server-end-point`` (RFC 5929 §4)
    Any TLS version: the hash of the server certificate's DER encoding, with the hash function
    of the certificate's signature algorithm (MD5 and SHA-1 replaced by SHA-256).  Certificates
    whose signature algorithm has no single hash function — Ed25519 and Ed448 — have no
    ``tls-server-end-point`` binding, so it is not offered for them.

The data is secret-ish (it identifies the TLS session): it is never logged here.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

__all__ = [
    "EXPORTER_LABEL",
    "EXPORTER_LENGTH",
    "TLS_EXPORTER",
    "TLS_SERVER_END_POINT",
    "TLS_UNIQUE",
    "channel_bindings",
    "server_end_point",
]

TLS_EXPORTER: Final = "tls-exporter"
TLS_UNIQUE: Final = "tls-unique"
TLS_SERVER_END_POINT: Final = "tls-server-end-point"
#: The exporter label and output length of RFC 9266 §2.
EXPORTER_LABEL: Final = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH: Final = 32

_TLS13: Final = "TLSv1.3"
_TLS_UP_TO_12: Final = frozenset({"TLSv1", "TLSv1.1", "TLSv1.2"})


def server_end_point(certificate: x509.Certificate) -> bytes | None:
    """Return the ``tls-server-end-point`` data for the server *certificate*, or ``None``.

    ``None`` when the signature algorithm has no usable hash function (Ed25519, Ed448, or an
    algorithm :mod:`cryptography` does not know).
    """
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if algorithm is None:
        return None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(serialization.Encoding.DER))
    return digest.finalize()


def _session_reused(connection: SSL.Connection) -> bool | None:
    """Whether the handshake resumed a session; ``None`` if this pyOpenSSL cannot tell."""
    method = getattr(connection, "session_reused", None)
    if callable(method):
        return bool(method())
    try:
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(connection._ssl))
    except (ImportError, AttributeError):
        return None


def _tls_unique(connection: SSL.Connection) -> bytes | None:
    """The first Finished message of the handshake, client side."""
    reused = _session_reused(connection)
    if reused is None:
        return None
    return connection.get_peer_finished() if reused else connection.get_finished()


def channel_bindings(connection: SSL.Connection) -> dict[str, bytes]:
    """Return the channel-binding data computable for *connection*, by type.

    *connection* is the client end of a completed handshake.  The result has at most
    ``tls-exporter`` (TLS 1.3), ``tls-unique`` (TLS ≤ 1.2) and ``tls-server-end-point`` (a
    server certificate with a hashed signature algorithm); it is empty before the handshake.
    """
    bindings: dict[str, bytes] = {}
    if connection.get_finished() is None or connection.get_peer_finished() is None:
        return bindings  # no completed handshake (the version name is meaningless before)
    version = connection.get_protocol_version_name()
    if version == _TLS13:
        bindings[TLS_EXPORTER] = connection.export_keying_material(
            EXPORTER_LABEL, EXPORTER_LENGTH, None
        )
        # in TLS 1.3 the client's Finished always comes last, and there is no abbreviated
        # handshake that would swap the roles as in TLS 1.2
        finished = connection.get_finished()
        if finished:
            bindings[TLS_UNIQUE] = finished
    elif version in _TLS_UP_TO_12:
        unique = _tls_unique(connection)
        if unique:
            bindings[TLS_UNIQUE] = unique
    else:
        return bindings
    certificate = connection.get_peer_certificate()
    if certificate is not None:
        end_point = server_end_point(certificate.to_cryptography())
        if end_point is not None:
            bindings[TLS_SERVER_END_POINT] = end_point
    return bindings
