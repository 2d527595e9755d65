"""The TLS policy of :mod:`txxmppnode.security_layer` against a real Prosody.

Each test opens a bare Twisted client connection (direct TLS, or STARTTLS on the c2s port)
with a :class:`TLSVerifier` as connection creator, sends a stream header and waits for
``<stream:features/>`` or for the connection to be lost.  The TCP connection always goes to
127.0.0.1; the name verified is the XMPP domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from lxml import etree
from OpenSSL import SSL
from twisted.internet import defer, endpoints, interfaces
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.prosody import ProsodyServer, write_self_signed_certificate
from tests.support.reactor import ReactorThread
from txxmppnode import namespaces as ns
from txxmppnode.errors import TLSFailure
from txxmppnode.security_layer import (
    CertificatePinStore,
    PinType,
    PublicKeyPinStore,
    SecurityLayer,
    TLSVerifier,
    make,
)

FEATURES = f"{{{ns.STREAMS}}}features"
PROCEED = f"{{{ns.TLS}}}proceed"
DOMAIN = "xmppnode.test"
NAMESPACE = "txxmppnode.security_layer"


@implementer(interfaces.IHandshakeListener)
class Probe(Protocol):
    """A minimal client stream: opens the stream and collects top-level elements."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.handshakes = 0
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._reason: Failure | None = None
        self._elements: list[etree._Element] = []
        self._waiters: list[defer.Deferred[etree._Element]] = []
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def connectionMade(self) -> None:
        self.open_stream()

    def open_stream(self) -> None:
        """Send a stream header with a fresh parser (also after STARTTLS)."""
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.transport.write(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='"
            + self.domain.encode()
            + b"' version='1.0'>"
        )

    def handshakeCompleted(self) -> None:
        self.handshakes += 1

    def dataReceived(self, data: bytes) -> None:
        self._parser.feed(data)
        for event, element in self._parser.read_events():
            self._depth += 1 if event == "start" else -1
            if event == "end" and self._depth == 1:
                if self._waiters:
                    self._waiters.pop(0).callback(element)
                else:
                    self._elements.append(element)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._reason = reason
        for waiter in self._waiters:
            waiter.errback(reason)
        self._waiters = []
        self.lost.callback(None)

    def next_element(self) -> defer.Deferred[etree._Element]:
        """The next top-level element, or the reason the connection was lost."""
        if self._elements:
            return defer.succeed(self._elements.pop(0))
        if self._reason is not None:
            return defer.fail(self._reason)
        waiter: defer.Deferred[etree._Element] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    async def close(self) -> None:
        if self._reason is None:
            self.transport.write(b"</stream:stream>")
            self.transport.loseConnection()
        await self.lost


@dataclass
class Outcome:
    """What a successful connection saw."""

    features: etree._Element
    version: str
    alpn: bytes


async def direct_tls(
    reactor: Any,
    server: ProsodyServer,
    verifier: TLSVerifier,
    after_handshake: Callable[[Probe], defer.Deferred[None]] | None = None,
) -> Outcome:
    """Connect with direct TLS through *verifier* and wait for the stream features."""
    tcp = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.direct_tls_port, timeout=5)
    endpoint = endpoints.wrapClientTLS(verifier, tcp)
    probe = await endpoints.connectProtocol(endpoint, Probe(verifier.domain))
    try:
        features = await probe.next_element()
        assert features.tag == FEATURES, etree.tostring(features)
        if after_handshake is not None:
            await after_handshake(probe)
        connection: SSL.Connection = probe.transport.getHandle()
        return Outcome(
            features,
            connection.get_protocol_version_name(),
            connection.get_alpn_proto_negotiated(),
        )
    finally:
        await probe.close()


async def starttls(reactor: Any, server: ProsodyServer, verifier: TLSVerifier) -> Outcome:
    """Connect to the c2s port, upgrade with ``transport.startTLS(verifier)``, restart."""
    tcp = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.starttls_port, timeout=5)
    probe = await endpoints.connectProtocol(tcp, Probe(verifier.domain))
    try:
        features = await probe.next_element()
        assert features.find(f"{{{ns.TLS}}}starttls") is not None
        probe.transport.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await probe.next_element()).tag == PROCEED
        probe.transport.startTLS(verifier)
        probe.open_stream()
        features = await probe.next_element()
        assert features.tag == FEATURES, etree.tostring(features)
        connection: SSL.Connection = probe.transport.getHandle()
        return Outcome(
            features, connection.get_protocol_version_name(), connection.get_alpn_proto_negotiated()
        )
    finally:
        await probe.close()


def connect(
    reactor_thread: ReactorThread,
    server: ProsodyServer,
    layer: SecurityLayer,
    *,
    domain: str = DOMAIN,
    alpn: Sequence[bytes] = (),
) -> tuple[TLSVerifier, Outcome]:
    """Connect to *server* with a new verifier of *layer*; return both."""
    verifier = layer.tls_verifier(domain, alpn=alpn)
    outcome = reactor_thread.run(direct_tls, reactor_thread.reactor, server, verifier)
    return verifier, outcome


def refused(
    reactor_thread: ReactorThread, server: ProsodyServer, layer: SecurityLayer
) -> tuple[TLSVerifier, TLSFailure]:
    """Connect to *server* expecting the verifier to abort; return it and the failure."""
    verifier = layer.tls_verifier(DOMAIN)
    with pytest.raises(TLSFailure) as raised:
        reactor_thread.run(direct_tls, reactor_thread.reactor, server, verifier)
    assert type(raised.value) is TLSFailure
    assert raised.value is verifier.failure
    assert verifier.aborted and verifier.handshake_done and not verifier.verified
    return verifier, raised.value


def server_certificate(server: ProsodyServer) -> x509.Certificate:
    """The leaf certificate *server* presents."""
    return x509.load_pem_x509_certificates(server.cert_pem_path.read_bytes())[0]


def ca_path(server: ProsodyServer) -> Path:
    assert server.ca_pem_path is not None
    return server.ca_pem_path


@pytest.fixture
def other_ca_path(tmp_path: Path) -> Path:
    """A PEM file with a CA that issued nothing the servers use."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def self_signed(
    make_prosody: Callable[..., ProsodyServer], tmp_path: Path
) -> tuple[ProsodyServer, x509.Certificate]:
    """A server for the test domain whose certificate is self-signed (for that domain)."""
    cert_path, key_path = write_self_signed_certificate(tmp_path, DOMAIN)
    server = make_prosody(cert_path=cert_path, key_path=key_path)
    return server, server_certificate(server)


@pytest.fixture
def self_signed_other_name(
    make_prosody: Callable[..., ProsodyServer], tmp_path: Path
) -> tuple[ProsodyServer, x509.Certificate]:
    """A server for the test domain presenting a self-signed certificate for other.test."""
    cert_path, key_path = write_self_signed_certificate(tmp_path, "other.test", stem="other")
    server = make_prosody(cert_path=cert_path, key_path=key_path)
    return server, server_certificate(server)


def pin_store(pin_type: PinType) -> PublicKeyPinStore | CertificatePinStore:
    return PublicKeyPinStore() if pin_type is PinType.PUBLIC_KEY else CertificatePinStore()


# -- (1) a trusted chain ----------------------------------------------------------------------


def test_trusted_chain_connects(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """With the server's CA as trust root the stream comes up and the verifier says so."""
    layer = make("secret", trust_root=ca_path(prosody))
    verifier, outcome = connect(reactor_thread, prosody, layer)
    assert outcome.features.tag == FEATURES
    assert verifier.handshake_done
    assert verifier.verified
    assert verifier.failure is None
    assert not verifier.aborted
    assert verifier.chain_errors == ()
    assert not verifier.pinned
    assert verifier.peer_certificate == server_certificate(prosody)


def test_trusted_chain_over_starttls(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """The verifier also works as the creator given to ``transport.startTLS()``."""
    layer = make("secret", trust_root=ca_path(prosody))
    verifier = layer.tls_verifier(DOMAIN)
    outcome = reactor_thread.run(starttls, reactor_thread.reactor, prosody, verifier)
    assert outcome.features.find(f"{{{ns.SASL}}}mechanisms") is not None
    assert verifier.verified
    assert verifier.peer_certificate == server_certificate(prosody)


def test_untrusted_chain_over_starttls_is_refused(
    prosody: ProsodyServer, reactor_thread: ReactorThread, other_ca_path: Path
) -> None:
    """After STARTTLS too, an unverifiable certificate loses the connection with TLSFailure."""
    verifier = make("secret", trust_root=other_ca_path).tls_verifier(DOMAIN)
    with pytest.raises(TLSFailure, match="could not be verified") as raised:
        reactor_thread.run(starttls, reactor_thread.reactor, prosody, verifier)
    assert raised.value is verifier.failure


# -- (2) an untrusted chain ---------------------------------------------------------------------


def test_platform_trust_refuses_test_ca(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    """The platform's CAs do not know the test CA: TLSFailure, not an OpenSSL error."""
    verifier, failure = refused(reactor_thread, prosody, make("secret"))
    assert "certificate could not be verified" in str(failure)
    assert "unable to get local issuer certificate (depth 0)" in str(failure)
    assert verifier.peer_certificate == server_certificate(prosody)
    assert verifier.chain_errors


def test_other_ca_is_refused(
    prosody: ProsodyServer, reactor_thread: ReactorThread, other_ca_path: Path
) -> None:
    """A trust root holding only another CA refuses the server with a readable reason."""
    _, failure = refused(reactor_thread, prosody, make("secret", trust_root=other_ca_path))
    assert str(failure).startswith(f"certificate verify failed for {DOMAIN!r}:")
    assert "certificate could not be verified" in str(failure)
    assert "host name" not in str(failure)


# -- (3) the host name ---------------------------------------------------------------------------


def test_certificate_for_another_name_is_refused(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """A trusted certificate for other.test does not do for xmppnode.test."""
    server = make_prosody(cert_identities=["other.test"])
    verifier, failure = refused(reactor_thread, server, make("secret", trust_root=ca_path(server)))
    assert verifier.chain_errors == ()
    assert "not valid for the host name 'xmppnode.test'" in str(failure)
    assert "other.test" in str(failure)
    assert "could not be verified" not in str(failure)


# -- (4) pinning -------------------------------------------------------------------------------


def test_self_signed_without_pin_is_refused(
    self_signed: tuple[ProsodyServer, x509.Certificate], reactor_thread: ReactorThread
) -> None:
    server, _ = self_signed
    layer = make("secret", pin_store=PublicKeyPinStore())
    _, failure = refused(reactor_thread, server, layer)
    assert "self-signed certificate (depth 0)" in str(failure)


@pytest.mark.parametrize("pin_type", list(PinType))
def test_pinned_self_signed_connects(
    self_signed: tuple[ProsodyServer, x509.Certificate],
    reactor_thread: ReactorThread,
    pin_type: PinType,
) -> None:
    """A pinned certificate is accepted although no CA vouches for it."""
    server, certificate = self_signed
    store = pin_store(pin_type)
    store.pin(DOMAIN, certificate)
    verifier, outcome = connect(reactor_thread, server, make("secret", pin_store=store))
    assert outcome.features.tag == FEATURES
    assert verifier.verified and verifier.pinned and verifier.failure is None
    assert [e.code for e in verifier.chain_errors] == [18]
    assert verifier.peer_certificate == certificate


@pytest.mark.parametrize("pin_type", list(PinType))
def test_pins_from_json_connect(
    self_signed: tuple[ProsodyServer, x509.Certificate],
    reactor_thread: ReactorThread,
    pin_type: PinType,
) -> None:
    """Pins handed to make() as JSON go into a store of the given type."""
    server, certificate = self_signed
    store = pin_store(pin_type)
    store.pin(DOMAIN, certificate)
    layer = make("secret", pin_store=store.export_to_json(), pin_type=pin_type)
    assert type(layer.pin_store) is type(store)
    verifier, _ = connect(reactor_thread, server, layer)
    assert verifier.pinned and verifier.verified


def test_pin_for_another_host_does_not_help(
    self_signed: tuple[ProsodyServer, x509.Certificate], reactor_thread: ReactorThread
) -> None:
    """A pin counts only for the host it was recorded for."""
    server, certificate = self_signed
    store = PublicKeyPinStore()
    store.pin("elsewhere.test", certificate)
    verifier, failure = refused(reactor_thread, server, make("secret", pin_store=store))
    assert not verifier.pinned
    assert "self-signed certificate" in str(failure)


@pytest.mark.parametrize("pin_type", list(PinType))
def test_pinned_certificate_for_another_name_is_refused(
    self_signed_other_name: tuple[ProsodyServer, x509.Certificate],
    reactor_thread: ReactorThread,
    pin_type: PinType,
) -> None:
    """Pinning skips the chain check only: the host name is still checked."""
    server, certificate = self_signed_other_name
    store = pin_store(pin_type)
    store.pin(DOMAIN, certificate)
    verifier, failure = refused(reactor_thread, server, make("secret", pin_store=store))
    assert verifier.pinned
    assert "not valid for the host name 'xmppnode.test'" in str(failure)
    assert "could not be verified" not in str(failure)


def test_no_verify_accepts_anything_and_warns(
    self_signed_other_name: tuple[ProsodyServer, x509.Certificate],
    reactor_thread: ReactorThread,
) -> None:
    """no_verify connects despite chain and name problems, and says so in the log."""
    server, certificate = self_signed_other_name
    store = PublicKeyPinStore()
    store.pin(DOMAIN, certificate)
    layer = make("secret", pin_store=store, no_verify=True)
    with capturedLogs() as events:
        verifier, outcome = connect(reactor_thread, server, layer)
    assert outcome.features.tag == FEATURES
    assert verifier.failure is None and not verifier.aborted
    assert not verifier.verified
    assert verifier.peer_certificate == certificate
    warnings = [
        e for e in events if e.get("log_namespace") == NAMESPACE and e["log_level"] == LogLevel.warn
    ]
    # one when the creator is built, one when the bad certificate is let through
    assert len(warnings) == 2
    assert "DISABLED" in warnings[0]["log_format"]
    assert "host name" in warnings[1]["reason"]


# -- (5) deciding after the handshake ---------------------------------------------------------


def test_application_accepts_and_pins(
    prosody: ProsodyServer, reactor_thread: ReactorThread, other_ca_path: Path
) -> None:
    """A decider returning True keeps the connection; after it pins, no question is asked."""
    store = CertificatePinStore()
    asked: list[TLSVerifier] = []

    async def decide(verifier: TLSVerifier) -> bool:
        asked.append(verifier)
        assert verifier.peer_certificate is not None
        store.pin(verifier.domain, verifier.peer_certificate)
        return True

    layer = make(
        "secret", trust_root=other_ca_path, pin_store=store, post_handshake_deferred_failure=decide
    )
    verifier = layer.tls_verifier(DOMAIN)
    decided: list[object] = []

    def after(probe: Probe) -> defer.Deferred[None]:
        return layer.decide_after_handshake(verifier).addCallback(decided.append)

    outcome = reactor_thread.run(direct_tls, reactor_thread.reactor, prosody, verifier, after)
    assert outcome.features.tag == FEATURES
    assert decided == [None]
    assert asked == [verifier]
    assert verifier.accepted_by_application
    assert not verifier.aborted and not verifier.verified
    assert verifier.failure is not None
    assert "could not be verified" in str(verifier.failure)

    second, _ = connect(reactor_thread, prosody, layer)
    assert second.verified and second.pinned and second.failure is None
    assert asked == [verifier]


@pytest.mark.parametrize("style", ["plain", "deferred"])
def test_application_refuses(
    prosody: ProsodyServer, reactor_thread: ReactorThread, other_ca_path: Path, style: str
) -> None:
    """A decider answering False makes decide_after_handshake fail with the TLSFailure."""

    def decide(verifier: TLSVerifier) -> bool | defer.Deferred[bool]:
        return False if style == "plain" else defer.succeed(False)

    layer = make("secret", trust_root=other_ca_path, post_handshake_deferred_failure=decide)
    verifier = layer.tls_verifier(DOMAIN)

    def after(probe: Probe) -> defer.Deferred[None]:
        # the connection is still up: deciding is the stream layer's job
        assert not verifier.aborted
        return layer.decide_after_handshake(verifier)

    with pytest.raises(TLSFailure, match="could not be verified") as raised:
        reactor_thread.run(direct_tls, reactor_thread.reactor, prosody, verifier, after)
    assert raised.value is verifier.failure
    assert not verifier.accepted_by_application


def test_decision_not_asked_for_good_certificate(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    """A verified certificate never reaches the decider."""

    def decide(verifier: TLSVerifier) -> bool:
        raise AssertionError("not to be called")

    layer = make("secret", trust_root=ca_path(prosody), post_handshake_deferred_failure=decide)
    verifier, _ = connect(reactor_thread, prosody, layer)
    assert verifier.verified
    assert reactor_thread.run(layer.decide_after_handshake, verifier) is None


def test_aborted_connection_decides_as_failure(
    prosody: ProsodyServer, reactor_thread: ReactorThread, other_ca_path: Path
) -> None:
    """Without a decider, decide_after_handshake reports the failure that aborted the stream."""
    layer = make("secret", trust_root=other_ca_path)
    verifier, failure = refused(reactor_thread, prosody, layer)
    with pytest.raises(TLSFailure) as raised:
        reactor_thread.run(layer.decide_after_handshake, verifier)
    assert raised.value is failure


# -- (6) protocol versions ----------------------------------------------------------------------


def test_default_negotiates_tls13(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    _, outcome = connect(reactor_thread, prosody, make("secret", trust_root=ca_path(prosody)))
    assert outcome.version == "TLSv1.3"


def test_max_version_12(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    layer = make("secret", trust_root=ca_path(prosody), tls_max_version="1.2")
    verifier, outcome = connect(reactor_thread, prosody, layer)
    assert outcome.version == "TLSv1.2"
    assert verifier.verified


def test_server_capped_at_tls12_is_accepted(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """TLS 1.2 is the minimum we accept, so a TLS-1.2-only server is fine."""
    server = make_prosody(tls_max_version="1.2")
    verifier, outcome = connect(reactor_thread, server, make("x", trust_root=ca_path(server)))
    assert outcome.version == "TLSv1.2"
    assert verifier.verified


# -- (7) ALPN -------------------------------------------------------------------------------------


def test_alpn_offer_does_not_break_handshake(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    """Prosody 0.12 ignores ALPN; offering xmpp-client must still connect."""
    layer = make("secret", trust_root=ca_path(prosody))
    verifier, outcome = connect(reactor_thread, prosody, layer, alpn=[b"xmpp-client"])
    assert verifier.alpn == (b"xmpp-client",)
    assert verifier.verified
    assert outcome.alpn in (b"", b"xmpp-client")
