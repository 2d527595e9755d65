"""Judging one server certificate: the connection creator of every TLS client connection.

:meth:`SecurityLayer.tls_verifier <txxmppnode.security_layer.SecurityLayer.tls_verifier>`
returns a :class:`TLSVerifier` per connection; this module is what it does with the
handshake, apart from the configuration it applies (:mod:`txxmppnode.security_layer`: trust,
pins, versions, credentials, the OpenSSL context).  Kept apart because it is a different
thing to read: per-connection state driven by OpenSSL's callbacks, against immutable
settings.

How a server certificate is judged
----------------------------------

OpenSSL builds and checks the chain against the trust root, but the verifier's verify callback
only *records* what went wrong (error, depth) and lets the handshake go on.  When the handshake
completes (the ``SSL_CB_HANDSHAKE_DONE`` info callback) the verifier decides, once:

1. the chain is acceptable if OpenSSL reported no error, or if the leaf certificate is pinned
   for the domain in the pin store;
2. the leaf certificate must be valid for the domain (``service_identity``), pinned or not;
3. with ``no_verify`` both checks are still made and logged, but nothing is refused.

The name checked is always the XMPP domain given to ``tls_verifier``, never the host the TCP
connection went to.  A refused certificate becomes a :class:`~txxmppnode.errors.TLSFailure`
whose message names every reason.  Without ``post_handshake_deferred_failure`` the connection
is then aborted through ``failVerification``, so the application protocol's ``connectionLost``
receives that :class:`~txxmppnode.errors.TLSFailure`; with it, the failure is only recorded and
:meth:`SecurityLayer.decide_after_handshake
<txxmppnode.security_layer.SecurityLayer.decide_after_handshake>` asks the application.

Errors that are not about the certificate (no common protocol version or cipher, an alert
from the server) still reach ``connectionLost`` as :class:`OpenSSL.SSL.Error`;
:func:`tls_failure_from` turns them into a :class:`~txxmppnode.errors.TLSFailure`.

Every name here is also importable from :mod:`txxmppnode.security_layer`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import TLSFailure
from .pinning import canonical_hostname

if TYPE_CHECKING:
    from .security_layer import SecurityLayer

__all__ = ["ChainError", "TLSVerifier", "tls_failure_from"]

# the namespace the verifier has always logged under, so that log filters keep working
_log = Logger(namespace="txxmppnode.security_layer")

#: Readable reasons for the certificate verification errors of OpenSSL's ``x509_vfy.h``.
_X509_ERRORS: Final[Mapping[int, str]] = {
    2: "unable to get issuer certificate",
    4: "unable to decrypt the certificate's signature",
    6: "unable to decode the issuer's public key",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    13: "invalid notBefore field in the certificate",
    14: "invalid notAfter field in the certificate",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "issuer certificate has no public key",
    25: "path length constraint exceeded",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    32: "key usage does not include certificate signing",
    34: "unhandled critical extension",
    37: "invalid non-CA certificate (basicConstraints CA is true)",
    41: "invalid or inconsistent certificate extension",
    47: "permitted subtree violation",
    48: "excluded subtree violation",
    55: "path loop",
    66: "EE certificate key too weak",
    67: "CA certificate key too weak",
    68: "CA signature digest algorithm too weak",
    76: "unsupported signature algorithm",
    79: "invalid CA certificate",
}


class ChainError(NamedTuple):
    """One error OpenSSL reported while checking the server's certificate chain."""

    #: The ``X509_V_ERR_*`` code.
    code: int
    #: The position in the chain: 0 is the server's own certificate.
    depth: int

    @property
    def reason(self) -> str:
        """A readable description, e.g. ``"self-signed certificate (depth 0)"``."""
        text = _X509_ERRORS.get(self.code, f"certificate verification error {self.code}")
        return f"{text} (depth {self.depth})"


def tls_failure_from(error: BaseException | Failure) -> TLSFailure:
    """Return *error* (from ``connectionLost`` during a handshake) as a :class:`TLSFailure`.

    A :class:`TLSFailure` is returned as it is; an :class:`OpenSSL.SSL.Error` or anything
    else is wrapped, with the original as ``__cause__``.
    """
    value = error.value if isinstance(error, Failure) else error
    if isinstance(value, TLSFailure):
        return value
    if isinstance(value, SSL.Error):
        message = f"TLS handshake failed: {_ssl_error_text(value)}"
    else:
        message = f"TLS handshake failed: {value}"
    failure = TLSFailure(message)
    failure.__cause__ = value
    return failure


def _ssl_error_text(error: SSL.Error) -> str:
    """The reasons in an OpenSSL error queue (``[(lib, func, reason), ...]``), or its text."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(reasons)
    return str(error) or type(error).__name__


@implementer(IOpenSSLClientConnectionCreator)
class TLSVerifier:
    """Creates the OpenSSL connection for one TLS client connection and judges its peer.

    Use one verifier per connection.  After the handshake it reports:

    :ivar domain: the XMPP domain the certificate must be valid for (as given).
    :ivar handshake_done: whether the handshake completed and the decision was made.
    :ivar peer_certificate: the server's certificate, or ``None`` before the handshake.
    :ivar verified: whether the certificate passed every check (trusted chain or pin, and the
        host name), regardless of ``no_verify``.
    :ivar pinned: whether the certificate is pinned for the domain.
    :ivar chain_errors: what OpenSSL found wrong with the chain (empty when it verified).
    :ivar failure: the :class:`TLSFailure` when the certificate was refused, else ``None``
        (also ``None`` when ``no_verify`` let an unverified certificate through).
    :ivar aborted: whether the verifier aborted the connection because of :attr:`failure`.
    :ivar accepted_by_application: whether ``post_handshake_deferred_failure`` accepted a
        certificate that failed verification.

    The decision is made inside OpenSSL's handshake, so when it aborts the connection Twisted
    still calls ``handshakeCompleted()`` on an ``IHandshakeListener`` protocol, just before
    ``connectionLost`` delivers the :class:`TLSFailure`.  Whoever waits for the handshake
    should therefore go on with
    :meth:`~txxmppnode.security_layer.SecurityLayer.decide_after_handshake`, which fails at
    once in that case.
    """

    def __init__(
        self, layer: SecurityLayer, domain: str, alpn: Sequence[bytes], context: SSL.Context
    ) -> None:
        """Use :meth:`~txxmppnode.security_layer.SecurityLayer.tls_verifier`, not this."""
        self.layer = layer
        self.domain = domain
        self.alpn: tuple[bytes, ...] = tuple(alpn)
        self._server_name = canonical_hostname(domain)
        self._is_ip = _is_ip_address(self._server_name)
        self._context = context
        self._protocol: TLSMemoryBIOProtocol | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget the outcome of any previous connection."""
        self.handshake_done = False
        self.peer_certificate: x509.Certificate | None = None
        self.verified = False
        self.pinned = False
        self.chain_errors: tuple[ChainError, ...] = ()
        self.failure: TLSFailure | None = None
        self.aborted = False
        self.accepted_by_application = False

    # -- IOpenSSLClientConnectionCreator --------------------------------------------------

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """Return the client-side OpenSSL connection for *tlsProtocol*.

        It sends the domain as SNI (not for IP literals) and carries the verify and info
        callbacks that record and then judge the server's certificate.
        """
        self._reset()
        self._protocol = tlsProtocol
        connection = SSL.Connection(self._context, None)
        if not self._is_ip:
            connection.set_tlsext_host_name(self._server_name.encode("ascii"))
        connection.set_verify(SSL.VERIFY_PEER, self._verify_callback)
        connection.set_info_callback(self._info_callback)
        return connection

    # -- OpenSSL callbacks (they must never raise) -------------------------------------------

    def _verify_callback(
        self, connection: SSL.Connection, certificate: crypto.X509, code: int, depth: int, ok: int
    ) -> bool:
        """Record a chain error and let the handshake continue; the decision comes later."""
        if not ok:
            self.chain_errors += (ChainError(code, depth),)
        return True

    def _info_callback(self, connection: SSL.Connection, where: int, ret: int) -> None:
        """At the end of the (first) handshake, decide about the certificate."""
        if not where & SSL.SSL_CB_HANDSHAKE_DONE or self.handshake_done:
            return
        try:
            self._decide(connection)
        except BaseException as exc:
            _log.failure("while checking the certificate of {domain}", domain=self.domain)
            self.verified = False
            self.failure = TLSFailure(f"certificate check of {self.domain!r} failed: {exc!r}")
            self._abort()
        finally:
            self._protocol = None

    # -- the decision ----------------------------------------------------------------------------

    def _decide(self, connection: SSL.Connection) -> None:
        """Judge the peer's certificate; record the outcome and abort if it is refused."""
        self.handshake_done = True
        certificate = connection.get_peer_certificate(as_cryptography=True)
        self.peer_certificate = certificate
        reasons: list[str] = []
        if certificate is None:
            reasons.append("the server presented no certificate")
        else:
            store = self.layer.pin_store
            self.pinned = store is not None and store.query(self._server_name, certificate)
            if self.chain_errors and not self.pinned:
                details = ", ".join(dict.fromkeys(e.reason for e in self.chain_errors))
                reasons.append(f"the certificate could not be verified: {details}")
            name_problem = self._check_name(connection, certificate)
            if name_problem:
                reasons.append(name_problem)
        self.verified = not reasons
        if not reasons:
            _log.debug(
                "certificate of {domain} accepted ({how})",
                domain=self.domain,
                how="pinned" if self.pinned and self.chain_errors else "trusted chain",
            )
            return
        message = f"certificate verify failed for {self.domain!r}: " + "; ".join(reasons)
        if self.layer.no_verify:
            _log.warn("no_verify: accepting a certificate that failed: {reason}", reason=message)
            return
        self.failure = TLSFailure(message)
        if self.layer.post_handshake_deferred_failure is None:
            _log.info("refusing the TLS connection: {reason}", reason=message)
            self._abort()
        else:
            _log.info("certificate refused, asking the application: {reason}", reason=message)

    def _check_name(self, connection: SSL.Connection, certificate: x509.Certificate) -> str | None:
        """Return why *certificate* is not valid for the domain, or ``None`` if it is."""
        try:
            if self._is_ip:
                verify_ip_address(connection, self._server_name)
            else:
                verify_hostname(connection, self._server_name)
        except CertificateError as exc:
            return f"the certificate is not usable for the host name {self.domain!r} ({exc})"
        except VerificationError:
            names = _certificate_names(certificate)
            return (
                f"the certificate is not valid for the host name {self.domain!r} "
                f"(it is for {', '.join(names) if names else 'no DNS name or address'})"
            )
        return None

    def _abort(self) -> None:
        """Abort the connection with :attr:`failure` as the reason given to the protocol."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and self.failure is not None:
            self.aborted = True
            protocol.failVerification(Failure(self.failure))  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        state = "failed" if self.failure else "verified" if self.verified else "pending"
        if self.handshake_done and not self.failure and not self.verified:
            state = "unverified"
        return f"<TLSVerifier {self.domain!r} {state}>"


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in *certificate*'s subjectAltName, for messages."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names.extend(str(address) for address in san.get_values_for_type(x509.IPAddress))
    return names
