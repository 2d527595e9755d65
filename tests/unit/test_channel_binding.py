"""Tests of txxmppnode.channel_binding over in-memory pyOpenSSL handshakes (no sockets)."""

from __future__ import annotations

import datetime
import hashlib
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from txxmppnode import channel_binding
from txxmppnode.channel_binding import (
    EXPORTER_LABEL,
    TLS_EXPORTER,
    TLS_SERVER_END_POINT,
    TLS_UNIQUE,
    channel_bindings,
    server_end_point,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PrivateKey |= ed448.Ed448PrivateKey
SigningHash = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for the module (generating them is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: PrivateKey, algorithm: SigningHash) -> x509.Certificate:
    """A self-signed certificate for ``server.test`` signed by *key* with *algorithm*."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("server.test")]), False)
        .sign(key, algorithm)
    )


def legacy_certificate(key: rsa.RSAPrivateKey, digest: str) -> x509.Certificate:
    """A certificate signed with SHA-1 or MD5, which cryptography refuses to sign with.

    pyOpenSSL's deprecated X509 builder still can.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = crypto.X509()
        legacy.get_subject().CN = "server.test"
        legacy.set_issuer(legacy.get_subject())
        legacy.set_serial_number(1)
        legacy.gmtime_adj_notBefore(-3600)
        legacy.gmtime_adj_notAfter(3600)
        pkey = crypto.PKey.from_cryptography_key(key)
        legacy.set_pubkey(pkey)
        legacy.sign(pkey, digest)
    return legacy.to_cryptography()


def der(cert: x509.Certificate) -> bytes:
    """The DER encoding of *cert*."""
    return cert.public_bytes(serialization.Encoding.DER)


# -- tls-server-end-point hash selection -----------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
        (hashes.SHA224(), hashlib.sha224),
    ],
)
def test_end_point_uses_the_signature_hash(
    rsa_key: rsa.RSAPrivateKey, algorithm: SigningHash, expected: type
) -> None:
    """RFC 5929 §4.1: the certificate's signature hash is the binding's hash."""
    cert = certificate(rsa_key, algorithm)
    assert server_end_point(cert) == expected(der(cert)).digest()


def test_end_point_with_ecdsa_sha384() -> None:
    """The key type does not matter, only the signature's hash."""
    cert = certificate(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    assert server_end_point(cert) == hashlib.sha384(der(cert)).digest()


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_end_point_upgrades_sha1_and_md5_to_sha256(rsa_key: rsa.RSAPrivateKey, digest: str) -> None:
    """RFC 5929 §4.1: MD5 and SHA-1 signatures give a SHA-256 binding."""
    cert = legacy_certificate(rsa_key, digest)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == digest
    assert server_end_point(cert) == hashlib.sha256(der(cert)).digest()


@pytest.mark.parametrize(
    "key", [ed25519.Ed25519PrivateKey.generate(), ed448.Ed448PrivateKey.generate()]
)
def test_end_point_undefined_for_eddsa(key: PrivateKey) -> None:
    """EdDSA signatures have no separate hash: no tls-server-end-point binding."""
    assert server_end_point(certificate(key, None)) is None


# -- in-memory handshakes --------------------------------------------------------------------


def server_context(cert: x509.Certificate, key: PrivateKey, version: int) -> SSL.Context:
    """A server context serving *cert*, limited to TLS *version*, caching sessions."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(cert)
    context.use_privatekey(key)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    context.set_session_id(b"txxmppnode-tests")
    return context


def client_context() -> SSL.Context:
    """A client context (no verification: only the binding data matters here)."""
    return SSL.Context(SSL.TLS_METHOD)


def pump(source: SSL.Connection, destination: SSL.Connection) -> None:
    """Move the bytes *source* has written to *destination*."""
    while True:
        try:
            data = source.bio_read(65536)
        except SSL.WantReadError:
            return
        destination.bio_write(data)


def handshake(
    server_ctx: SSL.Context, client_ctx: SSL.Context, session: SSL.Session | None = None
) -> tuple[SSL.Connection, SSL.Connection]:
    """Complete a handshake between new client and server connections; return both."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    pending = {client, server}
    for _ in range(20):
        for connection in (client, server):
            if connection in pending:
                try:
                    connection.do_handshake()
                    pending.discard(connection)
                except SSL.WantReadError:
                    pass
        pump(client, server)
        pump(server, client)
        if not pending:
            return client, server
    raise AssertionError("the in-memory handshake did not complete")


@pytest.fixture(scope="module")
def ecdsa() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An ECDSA P-256 certificate signed with SHA-256, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return certificate(key, hashes.SHA256()), key


@pytest.fixture
def tls13(
    ecdsa: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> tuple[SSL.Connection, SSL.Connection]:
    """A completed TLS 1.3 handshake: (client, server)."""
    return handshake(server_context(*ecdsa, SSL.TLS1_3_VERSION), client_context())


@pytest.fixture
def tls12(
    ecdsa: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> tuple[SSL.Connection, SSL.Connection]:
    """A completed TLS 1.2 handshake: (client, server)."""
    return handshake(server_context(*ecdsa, SSL.TLS1_2_VERSION), client_context())


def test_tls13_bindings(
    tls13: tuple[SSL.Connection, SSL.Connection],
    ecdsa: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    """TLS 1.3: tls-exporter (as the server computes it), tls-server-end-point, and the
    pre-RFC 9266 tls-unique: the client's Finished, as the server sees it."""
    client, server = tls13
    assert client.get_protocol_version_name() == "TLSv1.3"
    bindings = channel_bindings(client)
    assert set(bindings) == {TLS_EXPORTER, TLS_SERVER_END_POINT, TLS_UNIQUE}
    assert bindings[TLS_UNIQUE] == server.get_peer_finished()
    assert bindings[TLS_UNIQUE] != server.get_finished()
    assert len(bindings[TLS_EXPORTER]) == 32
    assert bindings[TLS_EXPORTER] == server.export_keying_material(EXPORTER_LABEL, 32, None)
    assert bindings[TLS_SERVER_END_POINT] == hashlib.sha256(der(ecdsa[0])).digest()


def test_tls13_exporter_without_context_equals_empty_context(
    tls13: tuple[SSL.Connection, SSL.Connection],
) -> None:
    """RFC 8446 §7.5: in TLS 1.3 no context and an empty context export the same."""
    client, _ = tls13
    assert client.export_keying_material(EXPORTER_LABEL, 32, None) == (
        client.export_keying_material(EXPORTER_LABEL, 32, b"")
    )


def test_tls13_exporter_differs_per_connection(
    ecdsa: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    """Each connection has its own tls-exporter value."""
    server_ctx = server_context(*ecdsa, SSL.TLS1_3_VERSION)
    first, _ = handshake(server_ctx, client_context())
    second, _ = handshake(server_ctx, client_context())
    assert channel_bindings(first)[TLS_EXPORTER] != channel_bindings(second)[TLS_EXPORTER]


def test_tls12_full_handshake(tls12: tuple[SSL.Connection, SSL.Connection]) -> None:
    """TLS 1.2 full handshake: tls-unique is the client's Finished; no tls-exporter."""
    client, server = tls12
    assert client.get_protocol_version_name() == "TLSv1.2"
    bindings = channel_bindings(client)
    assert set(bindings) == {TLS_UNIQUE, TLS_SERVER_END_POINT}
    assert len(bindings[TLS_UNIQUE]) == 12
    assert bindings[TLS_UNIQUE] == client.get_finished() == server.get_peer_finished()


def test_tls12_resumed_handshake(
    ecdsa: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    """TLS 1.2 abbreviated handshake: tls-unique is the server's Finished (sent first)."""
    server_ctx = server_context(*ecdsa, SSL.TLS1_2_VERSION)
    client_ctx = client_context()
    first, _ = handshake(server_ctx, client_ctx)
    session = first.get_session()
    assert session is not None
    client, server = handshake(server_ctx, client_ctx, session)
    assert channel_binding._session_reused(client) is True
    unique = channel_bindings(client)[TLS_UNIQUE]
    assert unique == client.get_peer_finished() == server.get_finished()
    assert unique != client.get_finished()


def test_tls_unique_left_out_when_resumption_is_unknown(
    tls12: tuple[SSL.Connection, SSL.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If pyOpenSSL cannot say whether the session was resumed, tls-unique is not guessed."""
    monkeypatch.setattr(channel_binding, "_session_reused", lambda _connection: None)
    assert set(channel_bindings(tls12[0])) == {TLS_SERVER_END_POINT}


def test_public_session_reused_is_preferred(
    tls12: tuple[SSL.Connection, SSL.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pyOpenSSL with Connection.session_reused() is asked first."""
    monkeypatch.setattr(SSL.Connection, "session_reused", lambda _self: 1, raising=False)
    client, _ = tls12
    assert channel_bindings(client)[TLS_UNIQUE] == client.get_peer_finished()


def test_ed25519_server_has_no_end_point_binding() -> None:
    """An Ed25519 server certificate: only tls-exporter on TLS 1.3."""
    key = ed25519.Ed25519PrivateKey.generate()
    server_ctx = server_context(certificate(key, None), key, SSL.TLS1_3_VERSION)
    client, _ = handshake(server_ctx, client_context())
    assert set(channel_bindings(client)) == {TLS_EXPORTER, TLS_UNIQUE}


def test_nothing_before_the_handshake() -> None:
    """No handshake, no binding data."""
    connection = SSL.Connection(client_context(), None)
    connection.set_connect_state()
    assert channel_bindings(connection) == {}
