"""A hostile XMPP server for the bounds tests: real, on 127.0.0.1, misbehaving on purpose.

:class:`HostileServer` listens on a loopback port and lets a client through STARTTLS (a
certificate from its own trustme CA, for the domain ``hostile.test``), SASL PLAIN (any
credentials) and, depending on :class:`Behaviour`, resource binding and XEP-0198.  Then it
does exactly one bad thing:

``BIND_CHATTER``
    never answers the bind request; sends an unrelated presence every 0.4 s instead.
``ENABLE_SILENT``
    binds, never answers ``<enable/>``; sends whitespace keep-alives every 0.4 s.
``NO_ACK``
    binds and enables stream management, never answers ``<r/>``; keep-alives every 0.4 s (as
    ``SM_IQ_FLOOD`` also sends).
``R_FLOOD``
    binds and enables stream management; on the trigger (a message whose body is
    :data:`TRIGGER`) stops reading and sends ``flood_bytes`` of ``<r/>``, then a message with
    the body :data:`END`.
``IQ_FLOOD``
    binds, offers no stream management; on the trigger stops reading and sends
    ``flood_bytes`` of IQ requests (each needs an error reply), then the :data:`END` message.
``SM_IQ_FLOOD``
    binds and enables stream management; on the trigger sends ``flood_bytes`` of IQ requests
    and the :data:`END` message, reading on but never answering ``<r/>``.
``RAW_IQ_FLOOD``
    no TLS and no authentication (for a bare XML stream over plain TCP): answers the stream
    header with empty features; then as ``IQ_FLOOD``.

The flood is written as a streaming producer, at the pace the connection takes it, so the
server never holds it in memory.  :meth:`HostileServer.resume_reading` makes a server that
stopped reading read (and drain the client) again.

Run as a program (``python -m tests.support.hostile_bounds BEHAVIOUR``) it serves on a free
port, prints ``PORT <n>`` and ``CA <path>`` and runs until killed: ``benchmarks/floods.py``
measures a client against it in another process.
"""

from __future__ import annotations

import enum
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import interfaces, protocol, task
from zope.interface import implementer

from txxmppnode.xmlparser import ElementReceived, StreamHeader, XMLStreamParser

DOMAIN: Final = "hostile.test"
#: The body of the client's message that starts a flood.
TRIGGER: Final = "flood"
#: The body of the server's message that follows a flood.
END: Final = "end of flood"
INTERVAL: Final = 0.4

_STREAMS = "http://etherx.jabber.org/streams"
_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
_SM = "urn:xmpp:sm:3"


class Behaviour(enum.Enum):
    BIND_CHATTER = "bind-chatter"
    ENABLE_SILENT = "enable-silent"
    NO_ACK = "no-ack"
    R_FLOOD = "r-flood"
    IQ_FLOOD = "iq-flood"
    SM_IQ_FLOOD = "sm-iq-flood"
    RAW_IQ_FLOOD = "raw-iq-flood"


def _header(stream_id: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{_STREAMS}'"
        f" from='{DOMAIN}' id='{stream_id}' version='1.0'>"
    ).encode()


@implementer(interfaces.IPushProducer)
class _Flood:
    """Writes *unit* repeatedly until *total* bytes went out, as the transport allows."""

    def __init__(
        self, transport: Any, unit: Callable[[int], bytes], total: int, then: bytes
    ) -> None:
        self.transport = transport
        self.unit = unit
        self.total = total
        self.then = then
        self.sent = 0
        self.count = 0
        self.paused = False

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.total:
            chunk = b"".join(self.unit(self.count + n) for n in range(100))
            self.count += 100
            self.sent += len(chunk)
            self.transport.write(chunk)
        if self.sent >= self.total and not self.paused:
            self.transport.unregisterProducer()
            self.transport.write(self.then)
            self.paused = True

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True
        self.sent = self.total


@implementer(interfaces.IOpenSSLContextFactory)
class _ServerTLS:
    """The server side's TLS context factory (what ``startTLS`` asks ``getContext()`` of)."""

    def __init__(self, certificate: x509.Certificate, key: Any) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.use_certificate(certificate)
        self.context.use_privatekey(key)

    def getContext(self) -> SSL.Context:
        return self.context


class _HostileProtocol(protocol.Protocol):
    factory: HostileServer

    def connectionMade(self) -> None:
        self.parser = XMLStreamParser()
        self.stage = "raw" if self.factory.behaviour is Behaviour.RAW_IQ_FLOOD else "tls"
        self.timer: task.LoopingCall | None = None
        self.flood: _Flood | None = None
        self.sm_on = False
        self.received = 0  # stanzas from the client since <enabled/>, as XEP-0198 counts
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, StreamHeader):
                self.on_header()
            elif isinstance(event, ElementReceived):
                self.on_element(event.element)
            else:  # the client's footer: answer it, so that its close() completes at once
                self.send("</stream:stream>")
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.running:
            self.timer.stop()

    def send(self, data: str | bytes) -> None:
        self.transport.write(data.encode() if isinstance(data, str) else data)  # type: ignore[union-attr]

    def every_interval(self, data: str) -> None:
        self.timer = task.LoopingCall(self.send, data)
        self.timer.clock = self.factory.reactor
        self.timer.start(INTERVAL, now=False)

    def on_header(self) -> None:
        behaviour = self.factory.behaviour
        self.send(_header(f"hostile-{self.stage}"))
        if self.stage == "raw":
            self.send("<stream:features/>")
        elif self.stage == "tls":
            self.send(f"<stream:features><starttls xmlns='{_TLS}'><required/></starttls>"
                      "</stream:features>")  # fmt: skip
        elif self.stage == "sasl":
            self.send(f"<stream:features><mechanisms xmlns='{_SASL}'><mechanism>PLAIN"
                      "</mechanism></mechanisms></stream:features>")  # fmt: skip
        else:
            sm = "" if behaviour is Behaviour.IQ_FLOOD else f"<sm xmlns='{_SM}'/>"
            self.send(f"<stream:features><bind xmlns='{_BIND}'/>{sm}</stream:features>")

    def on_element(self, element: Any) -> None:
        behaviour = self.factory.behaviour
        tag = element.tag
        if tag == f"{{{_TLS}}}starttls":
            self.send(f"<proceed xmlns='{_TLS}'/>")
            self.transport.startTLS(self.factory.tls_options)  # type: ignore[union-attr]
            self.parser.reset()
            self.stage = "sasl"
        elif tag == f"{{{_SASL}}}auth":
            self.send(f"<success xmlns='{_SASL}'/>")
            self.parser.reset()
            self.stage = "bound"
        elif tag == "{jabber:client}iq" and element.find(f"{{{_BIND}}}bind") is not None:
            if behaviour is Behaviour.BIND_CHATTER:
                self.every_interval(f"<presence from='romeo@{DOMAIN}/chatter'/>")
                return
            self.send(f"<iq type='result' id='{element.get('id')}'><bind xmlns='{_BIND}'>"
                      f"<jid>juliet@{DOMAIN}/hostile</jid></bind></iq>")  # fmt: skip
        elif tag == f"{{{_SM}}}enable":
            if behaviour is Behaviour.ENABLE_SILENT:
                self.every_interval(" ")
                return
            self.send(f"<enabled xmlns='{_SM}' id='hostile-sm' resume='true'/>")
            self.sm_on = True
            if behaviour in (Behaviour.NO_ACK, Behaviour.SM_IQ_FLOOD):
                self.every_interval(" ")
        elif tag == "{jabber:client}message" and element.findtext("{jabber:client}body") == TRIGGER:
            self.start_flood()
        elif tag == f"{{{_SM}}}r" and behaviour not in (Behaviour.NO_ACK, Behaviour.SM_IQ_FLOOD):
            self.send(f"<a xmlns='{_SM}' h='{self.received}'/>")
        if tag.startswith("{jabber:client}"):
            self.factory.stanzas += 1
            if self.sm_on:
                self.received += 1

    def start_flood(self) -> None:
        if self.factory.behaviour is not Behaviour.SM_IQ_FLOOD:
            self.transport.pauseProducing()  # type: ignore[union-attr]  # never read again
        end = f"<message from='{DOMAIN}' to='juliet@{DOMAIN}/hostile'><body>{END}</body></message>"
        if self.factory.behaviour is Behaviour.R_FLOOD:
            unit: Callable[[int], bytes] = lambda n: f"<r xmlns='{_SM}'/>".encode()  # noqa: E731
        else:

            def unit(n: int) -> bytes:
                return (
                    f"<iq type='get' id='f{n}' from='romeo@{DOMAIN}/flood'>"
                    f"<query xmlns='urn:example:unknown'/></iq>"
                ).encode()

        self.flood = _Flood(self.transport, unit, self.factory.flood_bytes, end.encode())
        self.flood.start()


class HostileServer(protocol.Factory):
    """Listens on 127.0.0.1 and serves every connection with :class:`Behaviour` *behaviour*.

    :param flood_bytes: how much the flooding behaviours send after the trigger.
    :param receive_buffer: ``SO_RCVBUF`` of accepted connections (small, so that what the
        client writes to a server that stopped reading stays in the client's process).
    """

    protocol = _HostileProtocol

    def __init__(
        self,
        reactor: Any,
        behaviour: Behaviour,
        *,
        flood_bytes: int = 4 * 2**20,
        receive_buffer: int = 64 * 2**10,
        directory: Path | None = None,
    ) -> None:
        self.reactor = reactor
        self.behaviour = behaviour
        self.flood_bytes = flood_bytes
        self.receive_buffer = receive_buffer
        self.connections: list[_HostileProtocol] = []
        self.stanzas = 0  # stanzas received from clients
        self.ca = trustme.CA()
        issued = self.ca.issue_cert(DOMAIN)
        self.tls_options = _ServerTLS(
            x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()),
            serialization.load_pem_private_key(issued.private_key_pem.bytes(), None),
        )
        self._directory = directory or Path(tempfile.mkdtemp(prefix="hostile-"))
        self.ca_pem_path = self._directory / "hostile-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self.port: Any = None

    def start(self) -> int:
        """Listen on a free loopback port (in the reactor thread); return the port number."""
        self.port = self.reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        return int(self.port.getHost().port)

    def stop(self) -> Any:
        """Stop listening and drop every connection."""
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abortConnection()  # type: ignore[attr-defined]
        return self.port.stopListening() if self.port is not None else None

    def resume_reading(self) -> None:
        """Read from every connection again (after a flood stopped it)."""
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.resumeProducing()  # type: ignore[attr-defined]


def unsent_bytes(transport: Any) -> int:
    """What a Twisted TCP transport still holds to write (TLS included, in its encrypted form)."""
    return len(transport.dataBuffer) + transport._tempDataLen  # type: ignore[no-any-return]


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    behaviour = Behaviour(argv[0])
    flood_bytes = int(argv[1]) if len(argv) > 1 else 4 * 2**20
    server = HostileServer(reactor, behaviour, flood_bytes=flood_bytes)
    port = server.start()
    print(f"PORT {port}", flush=True)
    print(f"CA {server.ca_pem_path}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
