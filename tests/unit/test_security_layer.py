"""Unit tests of the TLS policy: pin stores, make(), passwords and the verification decision.

The decision tests run real TLS handshakes in memory (pyOpenSSL memory BIOs) between a
verifier's client connection and a server connection with a trustme certificate; a stand-in
for Twisted's TLS protocol records ``failVerification``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from txxmppnode.errors import FatalError, TLSFailure
from txxmppnode.jid import JID
from txxmppnode.pinning import canonical_hostname, make_pin_store
from txxmppnode.security_layer import (
    AbstractPinStore,
    CertificatePinStore,
    ChainError,
    PinType,
    PublicKeyPinStore,
    SecurityLayer,
    TLSVerifier,
    make,
    tls_failure_from,
)

T = TypeVar("T")
DOMAIN = "example.test"
JULIET = JID("juliet", DOMAIN)
NAMESPACE = "txxmppnode.security_layer"


def result_of(d: defer.Deferred[T]) -> T:
    """The result of a Deferred that has fired (failures are raised)."""
    box: list[T | Failure] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    (outcome,) = box
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome  # type: ignore[return-value]


# -- certificates ----------------------------------------------------------------------------


def self_signed(name: str, key: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    """A self-signed certificate for *name* (with *key*, or a new one)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


# -- pin stores --------------------------------------------------------------------------------


STORES = [PublicKeyPinStore, CertificatePinStore]


@pytest.mark.parametrize("store_class", STORES)
@pytest.mark.parametrize("as_pyopenssl", [False, True])
def test_pin_and_query(store_class: type[AbstractPinStore], as_pyopenssl: bool) -> None:
    store = store_class()
    certificate = self_signed(DOMAIN)
    other = self_signed(DOMAIN)
    given: Any = crypto.X509.from_cryptography(certificate) if as_pyopenssl else certificate
    assert not store.query(DOMAIN, given)
    store.pin(DOMAIN, given)
    assert store.query(DOMAIN, certificate)
    assert store.query(DOMAIN, crypto.X509.from_cryptography(certificate))
    assert not store.query(DOMAIN, other)
    assert not store.query("other.test", certificate)
    assert store.get_pinned_for_host(DOMAIN) == {store.fingerprint(certificate)}
    assert store.get_pinned_for_host("other.test") == frozenset()


def test_public_key_pin_survives_reissue() -> None:
    """A new certificate for the same key matches a public-key pin, not a certificate pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    first, reissued = self_signed(DOMAIN, key), self_signed(DOMAIN, key)
    assert first != reissued
    keys, certs = PublicKeyPinStore(), CertificatePinStore()
    for store in (keys, certs):
        store.pin(DOMAIN, first)
    assert keys.query(DOMAIN, reissued)
    assert not certs.query(DOMAIN, reissued)


def test_fingerprints_are_sha256_of_spki_and_certificate() -> None:
    certificate = self_signed(DOMAIN)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert (
        PublicKeyPinStore().fingerprint(certificate)
        == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    )
    assert (
        CertificatePinStore().fingerprint(certificate)
        == base64.b64encode(hashlib.sha256(der).digest()).decode()
    )
    assert PublicKeyPinStore.pin_type is PinType.PUBLIC_KEY
    assert CertificatePinStore.pin_type is PinType.CERTIFICATE


def test_host_names_are_compared_canonically() -> None:
    store = PublicKeyPinStore()
    certificate = self_signed(DOMAIN)
    store.pin("Example.TEST.", certificate)
    assert store.query(DOMAIN, certificate)
    store.pin("bücher.example", certificate)
    assert store.query("xn--bcher-kva.example", certificate)
    assert set(store.export_to_json()) == {DOMAIN, "xn--bcher-kva.example"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("XMPP.Example.", "xmpp.example"),
        ("MÜNCHEN.example", "xn--mnchen-3ya.example"),
        ("[::1]", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("my_host.test", "my_host.test"),
    ],
)
def test_canonical_hostname(given: str, expected: str) -> None:
    assert canonical_hostname(given) == expected


@pytest.mark.parametrize("bad", ["", ".", "a..b", "white space.test", "x" * 64 + ".test"])
def test_canonical_hostname_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        canonical_hostname(bad)


def test_wrong_certificate_type() -> None:
    with pytest.raises(TypeError, match="certificate must be"):
        PublicKeyPinStore().pin(DOMAIN, b"not a certificate")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="host name must be str"):
        PublicKeyPinStore().pin(b"example.test", self_signed(DOMAIN))  # type: ignore[arg-type]


@pytest.mark.parametrize("store_class", STORES)
def test_json_round_trip(store_class: type[AbstractPinStore]) -> None:
    store = store_class()
    certificates = [self_signed(DOMAIN), self_signed(DOMAIN), self_signed("b.test")]
    store.pin(DOMAIN, certificates[0])
    store.pin(DOMAIN, certificates[1])
    store.pin("b.test", certificates[2])
    exported = json.loads(json.dumps(store.export_to_json()))
    assert sorted(exported) == ["b.test", DOMAIN]
    assert len(exported[DOMAIN]) == 2

    restored = store_class()
    restored.import_from_json(exported)
    assert restored.export_to_json() == store.export_to_json()
    assert all(restored.query(DOMAIN, c) for c in certificates[:2])
    assert restored.query("b.test", certificates[2])


def test_import_merges_by_default_and_replaces_with_override() -> None:
    old, new, kept = self_signed(DOMAIN), self_signed(DOMAIN), self_signed("b.test")
    store = PublicKeyPinStore()
    store.pin(DOMAIN, old)
    store.pin("b.test", kept)
    incoming = {DOMAIN: [store.fingerprint(new)]}

    store.import_from_json(incoming)
    assert store.query(DOMAIN, old) and store.query(DOMAIN, new)

    store.import_from_json(incoming, override=True)
    assert not store.query(DOMAIN, old)
    assert store.query(DOMAIN, new)
    assert store.query("b.test", kept), "hosts not in the data keep their pins"


GOOD_PIN = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([GOOD_PIN], "must be a JSON object"),
        ({DOMAIN: GOOD_PIN}, "pins of 'example.test' must be a list"),
        ({DOMAIN: {"a": 1}}, "must be a list of base64 strings, not dict"),
        ({DOMAIN: [GOOD_PIN, 5]}, "entry 1 of 'example.test' is not a string"),
        ({DOMAIN: ["not base64!"]}, "entry 0 of 'example.test' is not valid base64"),
        ({DOMAIN: ["ü"]}, "entry 0 of 'example.test' is not valid base64"),
        ({DOMAIN: [base64.b64encode(bytes(20)).decode()]}, "20 bytes long, not a SHA-256"),
        ({"": [GOOD_PIN]}, "invalid host name ''"),
        ({7: [GOOD_PIN]}, "host name 7 is not a string"),
    ],
)
def test_bad_json_is_refused_with_the_reason(data: Any, message: str) -> None:
    store = PublicKeyPinStore()
    store.import_from_json({"kept.test": [GOOD_PIN]})
    before = store.export_to_json()
    with pytest.raises(ValueError, match=re.escape(message)):
        store.import_from_json(data)
    assert store.export_to_json() == before, "a refused import changes nothing"


def test_import_is_all_or_nothing() -> None:
    store = PublicKeyPinStore()
    with pytest.raises(ValueError, match=r"entry 0 of 'b\.test'"):
        store.import_from_json({"a.test": [GOOD_PIN], "b.test": ["?"]})
    assert store.export_to_json() == {}


def test_make_pin_store() -> None:
    store = make_pin_store(PinType.CERTIFICATE, {DOMAIN: [GOOD_PIN]})
    assert isinstance(store, CertificatePinStore)
    assert store.get_pinned_for_host(DOMAIN) == {GOOD_PIN}
    with pytest.raises(ValueError, match="unknown pin type"):
        make_pin_store("sha1")  # type: ignore[arg-type]


# -- make() ------------------------------------------------------------------------------------


def test_password_required_unless_anonymous_or_client_certificate(ca: trustme.CA) -> None:
    with pytest.raises(ValueError, match="may only be None with anonymous=True"):
        make(None)
    assert make(None, anonymous=True).anonymous
    issued = ca.issue_cert("juliet@example.test")
    pem = issued.cert_chain_pems[0].bytes() + issued.private_key_pem.bytes()
    client = ssl.PrivateCertificate.loadPEM(pem)
    layer = make(None, client_certificate=client)
    assert layer.client_certificate is client
    assert result_of(layer.get_password(JULIET, 0)) is None


def test_argument_types_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="password_provider must be"):
        make(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trust_root must be"):
        make("pw", trust_root=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pin_store must be"):
        make("pw", pin_store=[GOOD_PIN])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="post_handshake_deferred_failure"):
        make("pw", post_handshake_deferred_failure=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_certificate must be"):
        make("pw", client_certificate=b"pem")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tls_max_version"):
        make("pw", tls_max_version="1.1")
    with pytest.raises(ValueError, match="entry 0"):
        make("pw", pin_store={DOMAIN: ["?"]})
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="no usable PEM certificate"):
        make("pw", trust_root=empty)
    with pytest.raises(FileNotFoundError):
        make("pw", trust_root=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="PEM certificate and its private key"):
        make("pw", client_certificate=empty)


def test_defaults() -> None:
    layer = make("pw")
    assert isinstance(layer, SecurityLayer)
    assert not (layer.anonymous or layer.no_verify or layer.allow_plain_without_tls)
    assert layer.pin_store is None and layer.client_certificate is None
    assert layer.tls_max_version is None
    assert make("pw", allow_plain_without_tls=True).allow_plain_without_tls
    with pytest.raises(AttributeError):
        layer.no_verify = True  # type: ignore[misc]


def test_pin_store_json_gets_the_pin_type() -> None:
    data = {DOMAIN: [GOOD_PIN]}
    assert isinstance(make("pw", pin_store=data).pin_store, PublicKeyPinStore)
    layer = make("pw", pin_store=data, pin_type=PinType.CERTIFICATE)
    assert isinstance(layer.pin_store, CertificatePinStore)
    store = PublicKeyPinStore()
    assert make("pw", pin_store=store).pin_store is store


def test_client_certificate_from_pem_file(ca: trustme.CA, tmp_path: Path) -> None:
    intermediate = ca.create_child_ca()
    issued = intermediate.issue_cert("juliet@example.test")
    path = tmp_path / "client.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(path))
    layer = make(None, client_certificate=path)
    assert layer.client_certificate is not None
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    assert layer.client_certificate.original.to_cryptography() == leaf
    (extra,) = layer.client_certificate_chain
    assert extra == x509.load_pem_x509_certificate(issued.cert_chain_pems[1].bytes())
    layer.tls_verifier(DOMAIN)  # the key matches the certificate


# -- passwords ----------------------------------------------------------------------------------


def test_fixed_password() -> None:
    layer = make("s3cret")
    assert result_of(layer.get_password(JULIET, 0)) == "s3cret"
    assert result_of(layer.get_password(JULIET, 3)) == "s3cret"
    assert not layer.asks_again


def test_callable_provider_gets_jid_and_attempt() -> None:
    calls: list[tuple[JID, int]] = []

    def provider(jid: JID, attempt: int) -> str | None:
        calls.append((jid, attempt))
        return None if attempt > 1 else f"pw{attempt}"

    layer = make(provider)
    assert layer.asks_again
    assert result_of(layer.get_password(JULIET, 0)) == "pw0"
    assert result_of(layer.get_password(JULIET, 1)) == "pw1"
    assert result_of(layer.get_password(JULIET, 2)) is None
    assert calls == [(JULIET, 0), (JULIET, 1), (JULIET, 2)]


def test_deferred_provider() -> None:
    pending: list[defer.Deferred[str | None]] = []

    def provider(jid: JID, attempt: int) -> defer.Deferred[str | None]:
        d: defer.Deferred[str | None] = defer.Deferred()
        pending.append(d)
        return d

    d = make(provider).get_password(JULIET, 0)
    assert not d.called
    pending[0].callback("later")
    assert result_of(d) == "later"

    d = make(provider).get_password(JULIET, 1)
    pending[1].callback(None)
    assert result_of(d) is None


def test_coroutine_provider() -> None:
    async def provider(jid: JID, attempt: int) -> str | None:
        await defer.succeed(None)
        return f"{jid.localpart}-{attempt}"

    assert result_of(make(provider).get_password(JULIET, 4)) == "juliet-4"

    async def gives_up(jid: JID, attempt: int) -> str | None:
        return None

    assert result_of(make(gives_up).get_password(JULIET, 0)) is None


def test_other_awaitable_provider() -> None:
    class Ready:
        def __await__(self) -> Iterator[Any]:
            return iter(defer.succeed("awaited"))

    assert result_of(make(lambda jid, attempt: Ready()).get_password(JULIET, 0)) == "awaited"


def test_provider_errors_propagate() -> None:
    def broken(jid: JID, attempt: int) -> str:
        raise KeyError("no keyring")

    with pytest.raises(KeyError, match="no keyring"):
        result_of(make(broken).get_password(JULIET, 0))
    with pytest.raises(TypeError, match="returned bytes, not str or None"):
        result_of(make(lambda jid, attempt: b"pw").get_password(JULIET, 0))  # type: ignore[arg-type,return-value]


# -- verifiers ------------------------------------------------------------------------------------


class FakeTLSProtocol:
    """Stands in for TLSMemoryBIOProtocol: records failVerification."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def failVerification(self, reason: Failure) -> None:
        self.failures.append(reason)


def server_connection(
    certificate: x509.Certificate | trustme.LeafCert, key: Any = None, max_version: int = 0
) -> SSL.Connection:
    """A server-side memory connection presenting *certificate*."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    if max_version:
        context.set_max_proto_version(max_version)
    if isinstance(certificate, trustme.LeafCert):
        certificate.configure_cert(context)  # type: ignore[arg-type]
    else:
        context.use_certificate(certificate)
        context.use_privatekey(key)
    context.set_alpn_select_callback(lambda conn, offered: offered[0])
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    return connection


def handshake(
    verifier: TLSVerifier, server: SSL.Connection
) -> tuple[FakeTLSProtocol, SSL.Connection]:
    """Run a complete in-memory handshake between *verifier*'s connection and *server*."""
    protocol = FakeTLSProtocol()
    client = verifier.clientConnectionForTLS(protocol)  # type: ignore[arg-type]
    client.set_connect_state()
    for _ in range(50):
        for connection in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                connection.do_handshake()
        moved = False
        for source, target in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            target.bio_write(data)
            moved = True
        if not moved:
            break
    assert verifier.handshake_done
    return protocol, client


def test_verifier_is_a_connection_creator(ca: trustme.CA, ca_file: Path) -> None:
    """A PEM trust root file builds a verifier whose connection sends SNI."""
    verifier = make("pw", trust_root=str(ca_file)).tls_verifier("Example.TEST")
    assert IOpenSSLClientConnectionCreator.providedBy(verifier)
    connection = verifier.clientConnectionForTLS(FakeTLSProtocol())  # type: ignore[arg-type]
    assert connection.get_servername() == b"example.test"
    leaf = crypto.X509.from_cryptography(
        x509.load_pem_x509_certificate(ca.issue_cert(DOMAIN).cert_chain_pems[0].bytes())
    )
    store = connection.get_context().get_cert_store()
    assert store is not None
    crypto.X509StoreContext(store, leaf).verify_certificate()


def test_trust_root_file_with_several_cas(tmp_path: Path) -> None:
    first, second = trustme.CA(), trustme.CA()
    path = tmp_path / "cas.pem"
    path.write_bytes(first.cert_pem.bytes() + second.cert_pem.bytes())
    layer = make("pw", trust_root=path)
    for ca in (first, second):
        verifier = layer.tls_verifier(DOMAIN)
        protocol, _ = handshake(verifier, server_connection(ca.issue_cert(DOMAIN)))
        assert verifier.verified and protocol.failures == []


def test_trusted_certificate_is_accepted(ca: trustme.CA, ca_file: Path) -> None:
    verifier = make("pw", trust_root=ca_file).tls_verifier(DOMAIN, alpn=[b"xmpp-client"])
    protocol, client = handshake(verifier, server_connection(ca.issue_cert(DOMAIN)))
    assert protocol.failures == []
    assert verifier.verified and verifier.failure is None and verifier.chain_errors == ()
    assert verifier.peer_certificate is not None
    assert client.get_alpn_proto_negotiated() == b"xmpp-client"
    assert client.get_protocol_version_name() == "TLSv1.3"
    assert result_of(make("pw", trust_root=ca_file).decide_after_handshake(verifier)) is None


def test_untrusted_certificate_aborts(ca: trustme.CA) -> None:
    """The failure handed to failVerification is the verifier's TLSFailure."""
    layer = make("pw")  # platform trust: the test CA is unknown
    verifier = layer.tls_verifier(DOMAIN)
    protocol, _ = handshake(verifier, server_connection(ca.issue_cert(DOMAIN)))
    (failure,) = protocol.failures
    assert failure.value is verifier.failure
    assert isinstance(failure.value, TLSFailure) and isinstance(failure.value, FatalError)
    assert verifier.aborted and not verifier.verified
    assert "unable to get local issuer certificate (depth 0)" in str(failure.value)
    with pytest.raises(TLSFailure):
        result_of(layer.decide_after_handshake(verifier))


def test_expired_certificate(ca: trustme.CA, ca_file: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    issued = ca.issue_cert(DOMAIN, not_before=past, not_after=past + datetime.timedelta(days=1))
    verifier = make("pw", trust_root=ca_file).tls_verifier(DOMAIN)
    handshake(verifier, server_connection(issued))
    assert "certificate has expired (depth 0)" in str(verifier.failure)


def test_wrong_name(ca: trustme.CA, ca_file: Path) -> None:
    verifier = make("pw", trust_root=ca_file).tls_verifier(DOMAIN)
    protocol, _ = handshake(verifier, server_connection(ca.issue_cert("a.test", "b.test")))
    assert len(protocol.failures) == 1
    assert str(verifier.failure) == (
        "certificate verify failed for 'example.test': the certificate is not valid for the "
        "host name 'example.test' (it is for a.test, b.test)"
    )


def test_both_problems_are_reported() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = make("pw").tls_verifier(DOMAIN)
    handshake(verifier, server_connection(self_signed("other.test", key), key))
    message = str(verifier.failure)
    assert "self-signed certificate (depth 0)" in message
    assert "not valid for the host name" in message


@pytest.mark.parametrize("pin_type", list(PinType))
def test_pinned_self_signed(pin_type: PinType) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(DOMAIN, key)
    store = make_pin_store(pin_type)
    store.pin(DOMAIN, certificate)
    verifier = make("pw", pin_store=store).tls_verifier(DOMAIN)
    protocol, _ = handshake(verifier, server_connection(certificate, key))
    assert protocol.failures == []
    assert verifier.verified and verifier.pinned
    assert verifier.chain_errors == (ChainError(18, 0),)
    assert verifier.chain_errors[0].reason == "self-signed certificate (depth 0)"


def test_ip_address_domain(ca: trustme.CA, ca_file: Path) -> None:
    """An IP literal is checked against the iPAddress names and is not sent as SNI."""
    server = server_connection(ca.issue_cert("127.0.0.1"))
    verifier = make("pw", trust_root=ca_file).tls_verifier("127.0.0.1")
    protocol, _ = handshake(verifier, server)
    assert protocol.failures == [] and verifier.verified
    assert server.get_servername() is None

    verifier = make("pw", trust_root=ca_file).tls_verifier("127.0.0.2")
    handshake(verifier, server_connection(ca.issue_cert("127.0.0.1")))
    assert "not valid for the host name '127.0.0.2' (it is for 127.0.0.1)" in str(verifier.failure)


def test_internationalised_domain(ca: trustme.CA, ca_file: Path) -> None:
    server = server_connection(ca.issue_cert("xn--bcher-kva.example"))
    verifier = make("pw", trust_root=ca_file).tls_verifier("bücher.example")
    handshake(verifier, server)
    assert verifier.verified
    assert server.get_servername() == b"xn--bcher-kva.example"


def test_max_version(ca: trustme.CA, ca_file: Path) -> None:
    verifier = make("pw", trust_root=ca_file, tls_max_version="1.2").tls_verifier(DOMAIN)
    _, client = handshake(verifier, server_connection(ca.issue_cert(DOMAIN)))
    assert client.get_protocol_version_name() == "TLSv1.2"


def test_tls11_server_is_refused(ca: trustme.CA, ca_file: Path) -> None:
    verifier = make("pw", trust_root=ca_file).tls_verifier(DOMAIN)
    server = server_connection(ca.issue_cert(DOMAIN), max_version=SSL.TLS1_1_VERSION)
    with pytest.raises(SSL.Error):
        handshake(verifier, server)
    assert not verifier.handshake_done


def test_invalid_alpn_and_domain() -> None:
    layer = make("pw")
    with pytest.raises(ValueError, match="ALPN"):
        layer.tls_verifier(DOMAIN, alpn=[b""])
    with pytest.raises(ValueError, match="ALPN"):
        layer.tls_verifier(DOMAIN, alpn=["xmpp-client"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="host name"):
        layer.tls_verifier("bad name")


# -- no_verify ------------------------------------------------------------------------------------


def test_no_verify_logs_a_warning_per_creator() -> None:
    layer = make("pw", no_verify=True)
    with capturedLogs() as events:
        layer.tls_verifier(DOMAIN)
        layer.tls_verifier(DOMAIN)
    warnings = [
        e for e in events if e.get("log_namespace") == NAMESPACE and e["log_level"] == LogLevel.warn
    ]
    assert len(warnings) == 2
    assert all(w["domain"] == DOMAIN and "DISABLED" in w["log_format"] for w in warnings)
    with capturedLogs() as events:
        make("pw").tls_verifier(DOMAIN)
    assert not [e for e in events if e["log_level"] >= LogLevel.warn]


def test_no_verify_accepts_a_bad_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = make("pw", no_verify=True).tls_verifier(DOMAIN)
    with capturedLogs() as events:
        protocol, _ = handshake(verifier, server_connection(self_signed("other.test", key), key))
    assert protocol.failures == []
    assert verifier.failure is None and not verifier.verified
    assert any("host name" in e.get("reason", "") for e in events)


# -- deciding after the handshake ---------------------------------------------------------------


def deferred_layer(decide: Callable[[TLSVerifier], Any]) -> SecurityLayer:
    return make("pw", post_handshake_deferred_failure=decide)


@pytest.fixture
def bad_server() -> Callable[[], SSL.Connection]:
    """Servers whose certificate (from an unknown CA) fails verification."""
    unknown = trustme.CA()
    return lambda: server_connection(unknown.issue_cert(DOMAIN))


@pytest.mark.parametrize(
    "answer",
    [
        lambda v: True,
        lambda v: defer.succeed(True),
        lambda v: _async(True),
    ],
    ids=["bool", "deferred", "coroutine"],
)
def test_application_accepts(
    answer: Callable[[TLSVerifier], Any], bad_server: Callable[[], SSL.Connection]
) -> None:
    seen: list[TLSVerifier] = []

    def decide(verifier: TLSVerifier) -> Any:
        seen.append(verifier)
        return answer(verifier)

    layer = deferred_layer(decide)
    verifier = layer.tls_verifier(DOMAIN)
    protocol, _ = handshake(verifier, bad_server())
    assert protocol.failures == [] and not verifier.aborted
    assert isinstance(verifier.failure, TLSFailure)
    assert result_of(layer.decide_after_handshake(verifier)) is None
    assert seen == [verifier]
    assert verifier.accepted_by_application


async def _async(value: T) -> T:
    return value


@pytest.mark.parametrize(
    "answer",
    [
        lambda v: False,
        lambda v: defer.succeed(False),
        lambda v: _async(False),
        lambda v: "yes",
        lambda v: 1 / 0,
        lambda v: defer.fail(RuntimeError("dialog closed")),
    ],
    ids=["bool", "deferred", "coroutine", "not-a-bool", "raises", "fails"],
)
def test_application_refuses(
    answer: Callable[[TLSVerifier], Any], bad_server: Callable[[], SSL.Connection]
) -> None:
    layer = deferred_layer(answer)
    verifier = layer.tls_verifier(DOMAIN)
    handshake(verifier, bad_server())
    with pytest.raises(TLSFailure) as raised:
        result_of(layer.decide_after_handshake(verifier))
    assert raised.value is verifier.failure
    assert not verifier.accepted_by_application


def test_decide_before_handshake_is_an_error() -> None:
    layer = make("pw")
    with pytest.raises(RuntimeError, match="before the TLS handshake"):
        layer.decide_after_handshake(layer.tls_verifier(DOMAIN))


def test_tls_failure_from() -> None:
    failure = TLSFailure("x")
    assert tls_failure_from(failure) is failure
    assert tls_failure_from(Failure(failure)) is failure
    error = SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")])
    converted = tls_failure_from(Failure(error))
    assert str(converted) == "TLS handshake failed: tlsv1 alert protocol version"
    assert converted.__cause__ is error
    assert str(tls_failure_from(OSError("boom"))) == "TLS handshake failed: boom"


def test_direct_construction_is_checked() -> None:
    trust = make("pw").trust_root
    with pytest.raises(ValueError, match="may only be None"):
        SecurityLayer(password_provider=None, trust_root=trust)
    with pytest.raises(TypeError, match="password_provider must be"):
        SecurityLayer(password_provider=5, trust_root=trust)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IOpenSSLTrustRoot"):
        SecurityLayer(password_provider="pw", trust_root=object())  # type: ignore[arg-type]
    assert SecurityLayer(password_provider=None, trust_root=trust, anonymous=True).anonymous


def test_repr_does_not_show_the_password() -> None:
    assert "hunter2" not in repr(make("hunter2"))


def test_connections_share_one_context_per_alpn_list() -> None:
    from txxmppnode.security_layer import make as make_layer

    layer = make_layer("pw")
    first = layer.tls_verifier("example.com")
    second = layer.tls_verifier("example.org")
    direct = layer.tls_verifier("example.com", alpn=[b"xmpp-client"])
    assert first._context is second._context
    assert direct._context is not first._context
    assert layer.tls_verifier("example.net", alpn=[b"xmpp-client"])._context is direct._context
