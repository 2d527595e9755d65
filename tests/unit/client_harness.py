"""An in-memory server for Client tests: every connection is a StringTransport, every timer
the injected :class:`~twisted.internet.task.Clock`.

:class:`MemoryClient` is a :class:`~txxmppnode.client.Client` whose ``_open_stream`` (the TCP,
TLS and SASL part) hands out an already authenticated XML stream whose peer is a
:class:`FakeServer`; everything above it -- binding, stream management, resumption, the
queue, the signals and the ClientService retry loop -- is the client's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from txxmppnode import JID
from txxmppnode.client import Client
from txxmppnode.security_layer import make
from txxmppnode.xmlparser import ElementReceived, StreamFooter, XMLStreamParser
from txxmppnode.xmlstream import XMLStream

SM = "urn:xmpp:sm:3"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
FEATURES = (
    f"<features xmlns='http://etherx.jabber.org/streams'>"
    f"<bind xmlns='{BIND}'/><sm xmlns='{SM}'/></features>"
)


class _Wire(StringTransport):
    """The client's transport: what it writes reaches the server one turn later."""

    def __init__(self, server: FakeServer, clock: Clock) -> None:
        super().__init__()
        self.server, self.clock = server, clock

    def write(self, data: bytes) -> None:
        super().write(data)
        self.clock.callLater(0, self.server.pump)

    def loseConnection(self) -> None:
        super().loseConnection()
        self.clock.callLater(0, self.server.drop, None)

    def abortConnection(self) -> None:
        super().abortConnection()
        self.clock.callLater(0, self.server.drop, None)


class FakeServer:
    """The server of one account: binds, enables resumable stream management, resumes (or
    refuses to), acknowledges, and records the stanzas it received, in order."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.resumable = True
        self.refuse_resumption = False
        self.refuse_connections = False
        #: every stanza received, over all connections, as (connection number, element)
        self.stanzas: list[tuple[int, etree._Element]] = []
        self.connections = 0
        self.xmlstream: XMLStream | None = None
        self.parser: XMLStreamParser | None = None
        self.transport: _Wire | None = None
        self._handled = 0  # stanzas received on the session (XEP-0198 h)
        self._sessions = 0

    # the client's side

    def open(self) -> defer.Deferred[tuple[XMLStream, etree._Element]]:
        """A new connection, authenticated: what ``connect_xmlstream`` returns."""
        if self.refuse_connections:
            return defer.fail(ConnectionRefusedError("refused"))
        self.connections += 1
        self.transport = _Wire(self, self.clock)
        self.xmlstream = XMLStream("example.com", reactor=self.clock)
        self.xmlstream.makeConnection(self.transport)
        self.xmlstream.dataReceived(PEER_HEADER)
        self.parser = XMLStreamParser()
        self.parser.feed(PEER_HEADER)
        self.transport.clear()
        return defer.succeed((self.xmlstream, etree.fromstring(FEATURES)))

    # the server's side

    def say(self, xml: str) -> None:
        if self.xmlstream is not None and self.xmlstream.is_open:
            self.xmlstream.dataReceived(xml.encode())

    def drop(self, reason: BaseException | None = None) -> None:
        """The connection ends (an RST when *reason* is given)."""
        xmlstream, self.xmlstream = self.xmlstream, None
        if xmlstream is not None:
            xmlstream.connectionLost(Failure(reason or ConnectionLost()))

    def pump(self) -> None:
        if self.transport is None or self.parser is None:
            return
        data = self.transport.value()
        self.transport.clear()
        for event in self.parser.feed(data):
            if isinstance(event, StreamFooter):
                self.say("</stream:stream>")
                self.drop()
            elif isinstance(event, ElementReceived):
                self._answer(event.element)

    def _answer(self, element: etree._Element) -> None:
        tag = etree.QName(element).localname
        if element.tag == f"{{{SM}}}enable":
            self._sessions += 1
            self._handled = 0
            resume = "true" if self.resumable else "false"
            self.say(f"<enabled xmlns='{SM}' id='s{self._sessions}' resume='{resume}'/>")
        elif element.tag == f"{{{SM}}}resume":
            if self.refuse_resumption:
                self.say(f"<failed xmlns='{SM}'/>")
            else:
                self.say(
                    f"<resumed xmlns='{SM}' previd='{element.get('previd')}' h='{self._handled}'/>"
                )
        elif element.tag == f"{{{SM}}}r":
            self.say(f"<a xmlns='{SM}' h='{self._handled}'/>")
        elif element.tag == f"{{{SM}}}a":
            pass
        elif element.find(f"{{{BIND}}}bind") is not None:
            self.say(
                f"<iq type='result' id='{element.get('id')}'><bind xmlns='{BIND}'>"
                f"<jid>juliet@example.com/node</jid></bind></iq>"
            )
        elif tag in ("message", "presence", "iq"):
            self._handled += 1
            self.stanzas.append((self.connections, element))

    def bodies(self) -> list[str]:
        return [str(e.findtext("{jabber:client}body")) for _, e in self.stanzas
                if etree.QName(e).localname == "message"]  # fmt: skip


class MemoryClient(Client):
    """A Client whose connections go to :attr:`server`."""

    def __init__(self, clock: Clock | None = None, **kwargs: Any) -> None:
        clock = clock or Clock()
        super().__init__(
            JID.fromstr("juliet@example.com/node"), make("pw"), reactor=clock, **kwargs
        )
        self.clock = clock
        self.server = FakeServer(clock)
        self.attempts = 0

    async def _open_stream(self) -> tuple[XMLStream, etree._Element]:
        self.attempts += 1
        return await self.server.open()


def settle(clock: Clock, turns: int = 50) -> None:
    """Run *turns* reactor turns (timers due now), without letting time pass."""
    for _ in range(turns):
        clock.advance(0)


class Recorder:
    """Every signal of a client, in order, by name."""

    NAMES = (
        "before_stream_established",
        "on_stream_established",
        "on_stream_suspended",
        "on_stream_resumed",
        "on_stream_destroyed",
        "on_stopped",
        "on_failure",
    )

    def __init__(self, client: Client) -> None:
        self.names: list[str] = []
        for name in self.NAMES:
            getattr(client, name).connect(self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        return lambda *_: self.names.append(name)


def established(clock: Clock | None = None, **kwargs: Any) -> tuple[MemoryClient, Recorder]:
    """A started client with an established session."""
    client = MemoryClient(clock, **kwargs)
    recorder = Recorder(client)
    client.start()
    settle(client.clock)
    assert client.established, recorder.names
    return client, recorder
