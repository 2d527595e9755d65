"""Channel binding and SASL against the real Prosody 0.12, over Twisted direct-TLS streams.

The bindings computed from the client's pyOpenSSL connection are checked against what the
server's certificate and TLS version imply, then used for real: SCRAM-SHA-1-PLUS with
tls-unique succeeds on a TLS 1.2 server and fails with wrong binding data, which proves the
server checks it; plain SCRAM works over TLS 1.3 and a wrong password maps to not-authorized.
The stream code here is a minimal test helper, not the library's stream layer.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from twisted.internet import defer, endpoints, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread
from txxmppnode import namespaces as ns
from txxmppnode.channel_binding import (
    TLS_EXPORTER,
    TLS_SERVER_END_POINT,
    TLS_UNIQUE,
    channel_bindings,
)
from txxmppnode.errors import AuthenticationFailure
from txxmppnode.sasl import (
    KeyDerivation,
    MechanismChoice,
    SASLMechanism,
    choose_mechanisms,
    failure_for_condition,
)
from txxmppnode.scram import ScramMechanism

SASL_CB = "urn:xmpp:sasl-cb:0"
TIMEOUT = 15.0


@implementer(IHandshakeListener)
class Stream(Protocol):
    """A bare client stream over TLS: opens the stream, hands out top-level elements."""

    def __init__(self, domain: str) -> None:
        """Prepare a stream to *domain*."""
        self.domain = domain
        self.handshake_done: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._received: list[etree._Element] = []
        self._waiting: list[defer.Deferred[etree._Element]] = []
        self._lost: Failure | None = None

    def connectionMade(self) -> None:
        """Send the stream header (TLS holds it until the handshake is done)."""
        self.write(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='"
            + self.domain.encode()
            + b"' version='1.0'>"
        )

    def write(self, data: bytes) -> None:
        """Send *data* on the stream."""
        assert self.transport is not None
        self.transport.write(data)

    def handshakeCompleted(self) -> None:
        """The TLS handshake is complete: the binding data is available."""
        self.handshake_done.callback(None)

    def dataReceived(self, data: bytes) -> None:
        """Deliver each completed child of the stream root."""
        self._parser.feed(data)
        for event, element in self._parser.read_events():
            if event == "start":
                self._depth += 1
                continue
            self._depth -= 1
            if self._depth == 1:
                if self._waiting:
                    self._waiting.pop(0).callback(element)
                else:
                    self._received.append(element)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail current and later waits."""
        self._lost = reason
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(reason)
        if not self.handshake_done.called:
            self.handshake_done.errback(reason)
        self.closed.callback(None)

    def next_element(self) -> defer.Deferred[etree._Element]:
        """The next top-level element from the server."""
        if self._received:
            return defer.succeed(self._received.pop(0))
        if self._lost is not None:
            return defer.fail(self._lost)
        waiter: defer.Deferred[etree._Element] = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def send_sasl(self, name: str, payload: bytes | None, **attributes: str) -> None:
        """Send a SASL element; ``None`` means no content, ``b""`` an empty payload ("=")."""
        element = etree.Element(f"{{{ns.SASL}}}{name}", attributes, nsmap={None: ns.SASL})
        if payload is not None:
            element.text = base64.b64encode(payload).decode() or "="
        self.write(etree.tostring(element))

    async def close(self) -> None:
        """End the stream and wait for the connection to close."""
        if self._lost is None:
            self.write(b"</stream:stream>")
            assert self.transport is not None
            self.transport.loseConnection()
        await self.closed


@dataclass
class Session:
    """What a stream learned before authenticating."""

    stream: Stream
    features: etree._Element
    tls_version: str
    bindings: dict[str, bytes]
    peer_certificate_der: bytes

    @property
    def mechanisms(self) -> list[str]:
        """The offered SASL mechanisms."""
        path = f"{{{ns.SASL}}}mechanisms/{{{ns.SASL}}}mechanism"
        return [str(m.text) for m in self.features.iterfind(path)]

    @property
    def server_binding_types(self) -> list[str] | None:
        """The XEP-0440 channel-binding types, or ``None`` if the server announced none."""
        announced = self.features.find(f"{{{SASL_CB}}}sasl-channel-binding")
        if announced is None:
            return None
        return [str(c.get("type")) for c in announced.iterfind(f"{{{SASL_CB}}}channel-binding")]


async def open_session(
    reactor: Any, server: ProsodyServer, minimum: ssl.TLSVersion | None = None
) -> Session:
    """Connect to *server*'s direct-TLS port (SNI = domain, trust = its CA), read features."""
    assert server.ca_pem_path is not None
    options = ssl.optionsForClientTLS(
        server.domain,
        trustRoot=ssl.Certificate.loadPEM(server.ca_pem_path.read_bytes()),
        extraCertificateOptions={"raiseMinimumTo": minimum} if minimum else None,
    )
    tcp = endpoints.TCP4ClientEndpoint(reactor, server.host, server.direct_tls_port, timeout=5)
    stream = await endpoints.connectProtocol(  # type: ignore[no-untyped-call]
        endpoints.wrapClientTLS(options, tcp), Stream(server.domain)
    )
    await stream.handshake_done
    features = await stream.next_element()
    assert features.tag == f"{{{ns.STREAMS}}}features", etree.tostring(features)
    connection = stream.transport.getHandle()
    peer = connection.get_peer_certificate()
    assert peer is not None
    return Session(
        stream,
        features,
        connection.get_protocol_version_name(),
        channel_bindings(connection),
        peer.to_cryptography().public_bytes(serialization.Encoding.DER),
    )


async def authenticate(stream: Stream, mechanism: SASLMechanism) -> etree._Element:
    """Run *mechanism* to the end; return ``<success/>`` (already verified) or ``<failure/>``."""
    stream.send_sasl("auth", mechanism.initial_response(), mechanism=mechanism.name)
    while True:
        element = await stream.next_element()
        payload = base64.b64decode(element.text) if element.text not in (None, "=") else b""
        if element.tag == f"{{{ns.SASL}}}challenge":
            reply = mechanism.respond(payload)
            if isinstance(reply, KeyDerivation):
                reply = mechanism.resume(reply.compute())
            stream.send_sasl("response", reply)
        elif element.tag == f"{{{ns.SASL}}}success":
            mechanism.finish(payload if element.text else None)
            return element
        else:
            assert element.tag == f"{{{ns.SASL}}}failure", etree.tostring(element)
            return element


def failure_of(element: etree._Element, mechanism: str) -> Exception:
    """Map a ``<failure/>`` element with :func:`failure_for_condition`."""
    condition = next(
        (etree.QName(c).localname for c in element if etree.QName(c).localname != "text"), None
    )
    text = element.findtext(f"{{{ns.SASL}}}text")
    return failure_for_condition(condition, text, mechanism=mechanism)


def server_certificate_der(server: ProsodyServer) -> bytes:
    """The DER of *server*'s own certificate (the first in its chain file)."""
    chain = x509.load_pem_x509_certificates(server.cert_pem_path.read_bytes())
    return chain[0].public_bytes(serialization.Encoding.DER)


def choose(session: Session) -> list[MechanismChoice]:
    """The candidates for *session*, as the stream layer would choose them."""
    return choose_mechanisms(
        session.mechanisms,
        tls_active=True,
        channel_bindings=session.bindings,
        server_binding_types=session.server_binding_types,
    )


def scram_login(
    reactor_thread: ReactorThread,
    server: ProsodyServer,
    build: Callable[[Session], SASLMechanism],
    minimum: ssl.TLSVersion | None = None,
) -> tuple[Session, SASLMechanism, etree._Element]:
    """Open a session to *server*, authenticate with ``build(session)``; return all three."""

    async def run() -> tuple[Session, SASLMechanism, etree._Element]:
        session = await open_session(reactor_thread.reactor, server, minimum)
        try:
            mechanism = build(session)
            return session, mechanism, await authenticate(session.stream, mechanism)
        finally:
            await session.stream.close()

    return reactor_thread.run(run, timeout=TIMEOUT)


def bindings_of(
    reactor_thread: ReactorThread, server: ProsodyServer, minimum: ssl.TLSVersion | None = None
) -> Session:
    """Open and close a session, returning what it learned."""

    async def run() -> Session:
        session = await open_session(reactor_thread.reactor, server, minimum)
        await session.stream.close()
        return session

    return reactor_thread.run(run, timeout=TIMEOUT)


# -- the bindings ----------------------------------------------------------------------------


def test_tls13_bindings(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """TLS 1.3: tls-exporter, tls-server-end-point = SHA-256 of the cert, and the pre-RFC 9266
    tls-unique (a Finished message: as long as the handshake hash)."""
    session = bindings_of(reactor_thread, prosody, ssl.TLSVersion.TLSv1_3)
    assert session.tls_version == "TLSv1.3"
    assert len(session.bindings[TLS_UNIQUE]) in (32, 48)
    assert len(session.bindings[TLS_EXPORTER]) == 32
    assert session.peer_certificate_der == server_certificate_der(prosody)
    expected = hashlib.sha256(server_certificate_der(prosody)).digest()
    assert session.bindings[TLS_SERVER_END_POINT] == expected
    again = bindings_of(reactor_thread, prosody, ssl.TLSVersion.TLSv1_3)
    assert again.bindings[TLS_EXPORTER] != session.bindings[TLS_EXPORTER]
    assert again.bindings[TLS_SERVER_END_POINT] == expected


def test_tls12_bindings(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """TLS 1.2: tls-unique (12 bytes), no tls-exporter; the server offers -PLUS."""
    server = make_prosody(tls_max_version="1.2")
    session = bindings_of(reactor_thread, server)
    assert session.tls_version == "TLSv1.2"
    assert len(session.bindings[TLS_UNIQUE]) == 12
    assert TLS_EXPORTER not in session.bindings
    expected = hashlib.sha256(server_certificate_der(server)).digest()
    assert session.bindings[TLS_SERVER_END_POINT] == expected
    assert "SCRAM-SHA-1-PLUS" in session.mechanisms


# -- SASL with the real server ---------------------------------------------------------------


def test_scram_sha_1_plus_with_tls_unique(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """The chosen SCRAM-SHA-1-PLUS with tls-unique succeeds and the server signature verifies."""
    server = make_prosody(tls_max_version="1.2")

    def build(session: Session) -> SASLMechanism:
        choice = choose(session)[0]
        assert choice == MechanismChoice("SCRAM-SHA-1-PLUS", binding=TLS_UNIQUE)
        return choice.build(
            username="juliet",
            password=server.accounts["juliet"],
            channel_binding=session.bindings[TLS_UNIQUE],
        )

    _, mechanism, result = scram_login(reactor_thread, server, build)
    assert result.tag == f"{{{ns.SASL}}}success", etree.tostring(result)
    assert base64.b64decode(str(result.text)).startswith(b"v=")  # verified by finish()
    assert mechanism.name == "SCRAM-SHA-1-PLUS"


def test_scram_sha_1_plus_with_wrong_binding_fails(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """Right password, wrong tls-unique data: the server refuses, so it checks the binding."""
    server = make_prosody(tls_max_version="1.2")

    def build(session: Session) -> SASLMechanism:
        wrong = bytes(b ^ 0xFF for b in session.bindings[TLS_UNIQUE])
        return ScramMechanism(
            "SCRAM-SHA-1-PLUS",
            "juliet",
            server.accounts["juliet"],
            channel_binding=(TLS_UNIQUE, wrong),
        )

    _, _, result = scram_login(reactor_thread, server, build)
    assert result.tag == f"{{{ns.SASL}}}failure", etree.tostring(result)
    error = failure_of(result, "SCRAM-SHA-1-PLUS")
    assert isinstance(error, AuthenticationFailure)
    assert error.condition == "malformed-request"
    assert error.text == "Invalid channel binding value."


def test_scram_sha_1_over_tls13(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """TLS 1.3, no -PLUS offered: SCRAM-SHA-1 with the y,, header succeeds."""

    def build(session: Session) -> SASLMechanism:
        assert not any(name.endswith("-PLUS") for name in session.mechanisms)
        choice = choose(session)[0]
        assert choice == MechanismChoice("SCRAM-SHA-1", binding_supported=True)
        return choice.build(username="juliet", password=prosody.accounts["juliet"])

    session, mechanism, result = scram_login(reactor_thread, prosody, build, ssl.TLSVersion.TLSv1_3)
    assert session.tls_version == "TLSv1.3"
    assert result.tag == f"{{{ns.SASL}}}success", etree.tostring(result)
    assert base64.b64decode(str(result.text)).startswith(b"v=")  # verified by finish()
    assert mechanism.name == "SCRAM-SHA-1"


def test_scram_sha_1_wrong_password(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    """A wrong password is <not-authorized/>, mapped to AuthenticationFailure."""

    def build(session: Session) -> SASLMechanism:
        return choose(session)[0].build(username="romeo", password="not-the-password")

    _, _, result = scram_login(reactor_thread, prosody, build, ssl.TLSVersion.TLSv1_3)
    assert result.tag == f"{{{ns.SASL}}}failure", etree.tostring(result)
    error = failure_of(result, "SCRAM-SHA-1")
    assert isinstance(error, AuthenticationFailure)
    assert error.condition == "not-authorized"


def test_unsupported_binding_type_is_refused(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    """Prosody 0.12 binds with tls-unique only: tls-server-end-point is refused, not ignored."""
    binding_type = TLS_SERVER_END_POINT
    server = make_prosody(tls_max_version="1.2")

    def build(session: Session) -> SASLMechanism:
        return ScramMechanism(
            "SCRAM-SHA-1-PLUS",
            "juliet",
            server.accounts["juliet"],
            channel_binding=(binding_type, session.bindings[binding_type]),
        )

    _, _, result = scram_login(reactor_thread, server, build)
    assert result.tag == f"{{{ns.SASL}}}failure", etree.tostring(result)
    assert isinstance(failure_of(result, "SCRAM-SHA-1-PLUS"), AuthenticationFailure)
