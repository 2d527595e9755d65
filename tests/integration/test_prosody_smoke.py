"""Smoke tests of the Prosody fixtures, over real Twisted TCP and TLS connections.

They check what every later integration test relies on: the server is up on both ports, its
certificate verifies against the generated CA for the test domain (and not against another CA),
STARTTLS is mandatory, the registered accounts can authenticate, and extra servers honour their
options.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import trustme
from lxml import etree
from OpenSSL import SSL
from twisted.internet import defer, endpoints, ssl
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from tests.support.prosody import ProsodyServer, write_self_signed_certificate
from tests.support.reactor import ReactorThread
from txxmppnode import namespaces as ns

FEATURES = f"{{{ns.STREAMS}}}features"
MECHANISMS = f"{{{ns.SASL}}}mechanisms"
STARTTLS = f"{{{ns.TLS}}}starttls"


class StreamProbe(Protocol):
    """A minimal client stream: sends the stream header and hands out top-level elements."""

    def __init__(self, domain: str) -> None:
        """Prepare a probe for a stream to *domain*."""
        self.domain = domain
        self.disconnected: defer.Deferred[None] = defer.Deferred()
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._ready: list[etree._Element] = []
        self._waiters: list[defer.Deferred[etree._Element]] = []
        self._lost: Failure | None = None

    def connectionMade(self) -> None:
        """Open the XMPP stream (buffered by TLS until its handshake is done)."""
        self.transport.write(
            b"<?xml version='1.0'?>"
            b"<stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='" + self.domain.encode() + b"' version='1.0'>"
        )

    def dataReceived(self, data: bytes) -> None:
        """Parse *data* and deliver each completed child of the stream root."""
        try:
            self._parser.feed(data)
            events = list(self._parser.read_events())
        except etree.XMLSyntaxError:
            self._fail(Failure())
            self.transport.abortConnection()
            return
        for event, element in events:
            if event == "start":
                self._depth += 1
                continue
            self._depth -= 1
            if self._depth == 1:
                if self._waiters:
                    self._waiters.pop(0).callback(element)
                else:
                    self._ready.append(element)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail the pending and future waits with *reason*."""
        self._fail(reason)
        self.disconnected.callback(None)

    def _fail(self, reason: Failure) -> None:
        """Errback every waiter with *reason* and remember it for later ones."""
        if self._lost is None:
            self._lost = reason
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)

    def next_element(self) -> defer.Deferred[etree._Element]:
        """Return a Deferred firing with the next top-level element from the server."""
        if self._ready:
            return defer.succeed(self._ready.pop(0))
        if self._lost is not None:
            return defer.fail(self._lost)
        waiter: defer.Deferred[etree._Element] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    async def features(self) -> etree._Element:
        """Wait for ``<stream:features/>`` (the first element of the stream)."""
        element = await self.next_element()
        assert element.tag == FEATURES, etree.tostring(element)
        return element

    async def close(self) -> None:
        """Close the stream and wait for the connection to go."""
        if self._lost is None:
            self.transport.write(b"</stream:stream>")
            self.transport.loseConnection()
        await self.disconnected


def mechanisms(features: etree._Element) -> list[str]:
    """Return the SASL mechanism names offered in *features*."""
    return [str(m.text) for m in features.iterfind(f"{MECHANISMS}/{{{ns.SASL}}}mechanism")]


def tls_endpoint(
    reactor: Any, server: ProsodyServer, trust_root_pem: bytes
) -> IStreamClientEndpoint:
    """Return a direct-TLS endpoint to *server* that trusts only *trust_root_pem*.

    The SNI and the verified name are the XMPP domain; the TCP connection goes to 127.0.0.1.
    """
    options = ssl.optionsForClientTLS(
        server.domain, trustRoot=ssl.Certificate.loadPEM(trust_root_pem)
    )
    tcp = endpoints.TCP4ClientEndpoint(reactor, server.host, server.direct_tls_port, timeout=5)
    return endpoints.wrapClientTLS(options, tcp)


def ca_pem(server: ProsodyServer) -> bytes:
    """Return the PEM of the CA that issued *server*'s certificate."""
    assert server.ca_pem_path is not None
    return server.ca_pem_path.read_bytes()


async def open_stream(endpoint: IStreamClientEndpoint, domain: str) -> StreamProbe:
    """Connect *endpoint* and open a stream to *domain*."""
    return await endpoints.connectProtocol(endpoint, StreamProbe(domain))


async def features_over_direct_tls(reactor: Any, server: ProsodyServer) -> etree._Element:
    """Return the stream features of a direct-TLS stream verified with the server's CA."""
    probe = await open_stream(tls_endpoint(reactor, server, ca_pem(server)), server.domain)
    try:
        return await probe.features()
    finally:
        await probe.close()


async def authenticate_plain(
    reactor: Any, server: ProsodyServer, localpart: str, password: str
) -> etree._Element:
    """Authenticate with SASL PLAIN over direct TLS; return ``<success/>`` or ``<failure/>``."""
    probe = await open_stream(tls_endpoint(reactor, server, ca_pem(server)), server.domain)
    try:
        assert "PLAIN" in mechanisms(await probe.features())
        response = base64.b64encode(b"\0" + localpart.encode() + b"\0" + password.encode())
        probe.transport.write(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            + response
            + b"</auth>"
        )
        return await probe.next_element()
    finally:
        await probe.close()


def test_direct_tls_offers_scram_and_plain(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    """Direct TLS with the generated CA and SNI = domain reaches the SASL features."""
    features = reactor_thread.run(features_over_direct_tls, reactor_thread.reactor, prosody)
    offered = mechanisms(features)
    assert "SCRAM-SHA-1" in offered
    assert "PLAIN" in offered


def test_starttls_port_requires_tls(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """The plaintext stream offers only a mandatory STARTTLS, no SASL mechanism."""

    async def plaintext_features() -> etree._Element:
        tcp = endpoints.TCP4ClientEndpoint(
            reactor_thread.reactor, prosody.host, prosody.starttls_port, timeout=5
        )
        probe = await open_stream(tcp, prosody.domain)
        try:
            return await probe.features()
        finally:
            await probe.close()

    features = reactor_thread.run(plaintext_features)
    starttls = features.find(STARTTLS)
    assert starttls is not None, etree.tostring(features)
    assert starttls.find(f"{{{ns.TLS}}}required") is not None
    assert mechanisms(features) == []


def test_certificate_from_another_ca_is_rejected(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    """A client trusting only an unrelated CA aborts the handshake: verification fails."""
    other_ca = trustme.CA()

    async def connect() -> None:
        endpoint = tls_endpoint(reactor_thread.reactor, prosody, other_ca.cert_pem.bytes())
        probe = await open_stream(endpoint, prosody.domain)
        try:
            await probe.features()
        finally:
            await probe.close()

    with pytest.raises(SSL.Error) as raised:
        reactor_thread.run(connect)
    assert "certificate verify failed" in str(raised.value)


def test_accounts_authenticate(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """The initial accounts, and one registered while the server runs, can log in."""
    added = prosody.register()
    assert prosody.accounts[added.localpart] == added.password
    assert added.jid == prosody.jid(added.localpart)
    for localpart in ("juliet", added.localpart):
        result = reactor_thread.run(
            authenticate_plain,
            reactor_thread.reactor,
            prosody,
            localpart,
            prosody.accounts[localpart],
        )
        assert result.tag == f"{{{ns.SASL}}}success", etree.tostring(result)

    refused = reactor_thread.run(
        authenticate_plain, reactor_thread.reactor, prosody, "romeo", "not-the-password"
    )
    assert refused.tag == f"{{{ns.SASL}}}failure"
    assert refused.find(f"{{{ns.SASL}}}not-authorized") is not None


def test_extra_server_with_tls12_and_sha256(
    make_prosody: Callable[..., ProsodyServer],
    prosody: ProsodyServer,
    reactor_thread: ReactorThread,
) -> None:
    """A second server capped at TLS 1.2 with SHA-256 hashes offers SCRAM-SHA-256(-PLUS)."""
    server = make_prosody(tls_max_version="1.2", password_hash="SHA-256")
    assert {server.starttls_port, server.direct_tls_port}.isdisjoint(
        {prosody.starttls_port, prosody.direct_tls_port}
    )

    async def features_and_version() -> tuple[etree._Element, str]:
        endpoint = tls_endpoint(reactor_thread.reactor, server, ca_pem(server))
        probe = await open_stream(endpoint, server.domain)
        try:
            features = await probe.features()
            return features, probe.transport.getHandle().get_protocol_version_name()
        finally:
            await probe.close()

    features, version = reactor_thread.run(features_and_version)
    assert version == "TLSv1.2"
    offered = mechanisms(features)
    assert "SCRAM-SHA-256" in offered
    assert "SCRAM-SHA-256-PLUS" in offered
    assert "SCRAM-SHA-1" not in offered
    juliet = reactor_thread.run(
        authenticate_plain, reactor_thread.reactor, server, "juliet", server.accounts["juliet"]
    )
    assert juliet.tag == f"{{{ns.SASL}}}success"


def test_extra_server_with_own_self_signed_certificate(
    make_prosody: Callable[..., ProsodyServer], tmp_path: Any, reactor_thread: ReactorThread
) -> None:
    """A caller-supplied self-signed certificate is served and verifies when pinned."""
    cert_path, key_path = write_self_signed_certificate(tmp_path, "pinned.test")
    server = make_prosody(domain="pinned.test", cert_path=cert_path, key_path=key_path)
    assert server.ca is None
    assert server.ca_pem_path is None

    async def pinned_features() -> etree._Element:
        endpoint = tls_endpoint(reactor_thread.reactor, server, cert_path.read_bytes())
        probe = await open_stream(endpoint, server.domain)
        try:
            return await probe.features()
        finally:
            await probe.close()

    assert "PLAIN" in mechanisms(reactor_thread.run(pinned_features))
