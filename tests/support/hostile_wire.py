"""Small XMPP servers that misbehave on purpose, for the tests of what reaches the wire.

:class:`HostileServer` listens on ``127.0.0.1`` and runs one :class:`ScriptedStream` per
connection: a real, if minimal, server side of RFC 6120 (STARTTLS with a trustme certificate
for :data:`DOMAIN`, SASL, resource binding, XEP-0198 ``<enable/>`` and ``<resume/>``) that
records every byte the client sends -- in plaintext, then decrypted once TLS is on -- until
the TCP connection closes.  A scenario is a subclass that overrides one step to misbehave in
exactly one way; :data:`SCENARIOS` names those used during negotiation.

Everything here runs in the reactor thread; tests drive it with ``reactor_thread.run``::

    server = HostileServer(BadVersion, tmp_path)
    reactor_thread.run(server.start)
    ...  # connect the client to 127.0.0.1:server.port, trusting server.ca_pem_path
    record = reactor_thread.run(server.closed, 1)  # the first connection, once closed
    reactor_thread.run(server.stop)
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import trustme
from lxml import etree
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from txxmppnode import namespaces as ns
from txxmppnode.xmlparser import (
    ElementReceived,
    StreamFooter,
    StreamHeader,
    XMLStreamParseError,
    XMLStreamParser,
)

__all__ = [
    "DOMAIN",
    "SCENARIOS",
    "BadVersion",
    "BrokenChallenge",
    "Doctype",
    "GarbledProceed",
    "HostileServer",
    "ImpossibleResumeCount",
    "Record",
    "RestrictedXML",
    "ScriptedStream",
    "WrongNamespace",
    "elements_after_last_header",
]

#: the XMPP domain the servers serve, and their certificate's name
DOMAIN: Final = "hostile.test"
FOOTER: Final = b"</stream:stream>"
_TLS: Final = ns.TLS
_SASL: Final = ns.SASL
_SM: Final = ns.STREAM_MANAGEMENT


def header(
    stream_id: str, *, version: str = "1.0", streams: str = ns.STREAMS, prolog: str = ""
) -> bytes:
    """A server's stream header, after the XML declaration and *prolog*."""
    return (
        f"<?xml version='1.0'?>{prolog}<stream:stream xmlns='{ns.CLIENT}'"
        f" xmlns:stream='{streams}' from='{DOMAIN}' id='{stream_id}' version='{version}'>"
    ).encode()


@dataclass
class Record:
    """One connection as the server saw it.

    :ivar received: every byte the client sent, in order (decrypted once TLS was on).
    :ivar mechanisms: the SASL mechanisms the client asked for.
    :ivar bodies: the bodies of the messages the client sent.
    :ivar first_body: fires with the body of the first message.
    :ivar is_closed: whether the TCP connection is gone.
    """

    number: int
    received: bytearray = field(default_factory=bytearray)
    mechanisms: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    first_body: defer.Deferred[str] = field(default_factory=defer.Deferred)
    is_closed: bool = False
    _closed_waiters: list[defer.Deferred[Record]] = field(default_factory=list)

    def when_closed(self) -> defer.Deferred[Record]:
        """Fires with this record once the TCP connection is gone."""
        if self.is_closed:
            return defer.succeed(self)
        waiter: defer.Deferred[Record] = defer.Deferred()
        self._closed_waiters.append(waiter)
        return waiter

    def mark_closed(self) -> None:
        self.is_closed = True
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(self)


def elements_after_last_header(data: bytes) -> tuple[list[etree._Element], bool]:
    """Parse what a client sent on its last stream: its top-level elements and whether its
    footer came after them (the bytes before the last header are ignored)."""
    start = data.rfind(b"<?xml")
    parser = XMLStreamParser()
    events = parser.feed(bytes(data[start:]))
    elements = [e.element for e in events if isinstance(e, ElementReceived)]
    return elements, bool(events) and isinstance(events[-1], StreamFooter)


class ScriptedStream(Protocol):
    """The server side of one connection; each step is a method a scenario may override."""

    factory: HostileServer
    #: the SASL mechanisms offered inside TLS
    mechanisms: ClassVar[tuple[str, ...]] = ("PLAIN",)

    def connectionMade(self) -> None:
        self.record = self.factory.new_record()
        self.parser = XMLStreamParser()
        self.tls = False
        self.authenticated = False
        self.headers = 0

    def dataReceived(self, data: bytes) -> None:
        self.record.received += data
        try:
            events = self.parser.feed(data)
        except XMLStreamParseError:
            self.transport.loseConnection()
            return
        for event in events:
            if isinstance(event, StreamHeader):
                self.headers += 1
                self.on_header()
            elif isinstance(event, StreamFooter):
                self.on_footer()
            else:
                self.on_element(event.element)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.record.mark_closed()

    def send(self, data: bytes | str) -> None:
        self.transport.write(data.encode() if isinstance(data, str) else data)

    def restart_parser(self) -> None:
        self.parser = XMLStreamParser()

    # -- the steps --------------------------------------------------------------------------

    def on_header(self) -> None:
        stream_id = f"{self.record.number}-{self.headers}"
        self.send(header(stream_id) + self.features())

    def features(self) -> bytes:
        if not self.tls:
            return (
                f"<stream:features><starttls xmlns='{_TLS}'><required/></starttls>"
                "</stream:features>"
            ).encode()
        if not self.authenticated:
            offered = "".join(f"<mechanism>{m}</mechanism>" for m in self.mechanisms)
            return (
                f"<stream:features><mechanisms xmlns='{_SASL}'>{offered}</mechanisms>"
                "</stream:features>"
            ).encode()
        return (
            f"<stream:features><bind xmlns='{ns.BIND}'/><sm xmlns='{_SM}'/></stream:features>"
        ).encode()

    def on_footer(self) -> None:
        self.send(FOOTER)
        self.transport.loseConnection()

    def on_element(self, element: etree._Element) -> None:
        name = etree.QName(element)
        handler = getattr(self, f"on_{name.localname.replace('-', '_')}", None)
        if handler is not None:
            handler(element)

    def on_starttls(self, element: etree._Element) -> None:
        self.proceed()
        self.restart_parser()
        self.tls = True
        self.transport.startTLS(self.factory.tls_options)  # type: ignore[attr-defined]

    def proceed(self) -> None:
        """Answer ``<starttls/>``: only ``<proceed/>``, as RFC 6120 requires."""
        self.send(f"<proceed xmlns='{_TLS}'/>")

    def on_auth(self, element: etree._Element) -> None:
        mechanism = element.get("mechanism", "")
        self.record.mechanisms.append(mechanism)
        if mechanism == "PLAIN":
            self.restart_parser()
            self.authenticated = True
            self.send(f"<success xmlns='{_SASL}'/>")
        else:
            self.send(f"<failure xmlns='{_SASL}'><not-authorized/></failure>")

    def on_abort(self, element: etree._Element) -> None:
        self.send(f"<failure xmlns='{_SASL}'><aborted/></failure>")

    def on_iq(self, element: etree._Element) -> None:
        bind = element.find(f"{{{ns.BIND}}}bind")
        if bind is None:
            return
        resource = bind.findtext(f"{{{ns.BIND}}}resource") or "fresh"
        self.send(
            f"<iq type='result' id='{element.get('id')}'><bind xmlns='{ns.BIND}'>"
            f"<jid>juliet@{DOMAIN}/{resource}</jid></bind></iq>"
        )

    def on_enable(self, element: etree._Element) -> None:
        self.send(f"<enabled xmlns='{_SM}' id='sm-{self.record.number}' resume='true'/>")

    def on_resume(self, element: etree._Element) -> None:
        self.send(f"<failed xmlns='{_SM}'><item-not-found xmlns='{ns.STANZA_ERRORS}'/></failed>")

    def on_message(self, element: etree._Element) -> None:
        body = element.findtext(f"{{{ns.CLIENT}}}body") or ""
        self.record.bodies.append(body)
        if not self.record.first_body.called:
            self.record.first_body.callback(body)


@implementer(IOpenSSLServerConnectionCreator)
class _ServerTLS:
    """The server side of TLS, with the certificate and key in the PEM file *pem*."""

    def __init__(self, pem: Path) -> None:
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.use_certificate_chain_file(str(pem))
        self._context.use_privatekey_file(str(pem))

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)


class HostileServer(Factory):
    """Listens on 127.0.0.1 and serves every connection with *scenario*.

    :param scenario: the :class:`ScriptedStream` subclass.
    :param directory: where the CA certificate the client must trust is written.
    """

    def __init__(self, scenario: type[ScriptedStream], directory: Path) -> None:
        self.protocol = scenario
        ca = trustme.CA()
        leaf = ca.issue_cert(DOMAIN)
        self.ca_pem_path = directory / "hostile-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_pem_path))
        server_pem = directory / "hostile-server.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        self.tls_options = _ServerTLS(server_pem)
        self.records: list[Record] = []
        self._port: IListeningPort | None = None
        self._waiting: list[tuple[int, defer.Deferred[Record]]] = []

    @property
    def port(self) -> int:
        assert self._port is not None
        return int(self._port.getHost().port)

    def start(self) -> int:
        from twisted.internet import reactor

        self._port = reactor.listenTCP(0, self, interface="127.0.0.1")  # type: ignore[attr-defined]
        return self.port

    def stop(self) -> Any:
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    def new_record(self) -> Record:
        record = Record(len(self.records) + 1)
        self.records.append(record)
        waiting, self._waiting = self._waiting, []
        for number, waiter in waiting:
            if number == record.number:
                waiter.callback(record)
            else:
                self._waiting.append((number, waiter))
        return record

    def connection(self, number: int) -> defer.Deferred[Record]:
        """Fires with the record of connection *number* (from 1) once it is accepted."""
        if len(self.records) >= number:
            return defer.succeed(self.records[number - 1])
        waiter: defer.Deferred[Record] = defer.Deferred()
        self._waiting.append((number, waiter))
        return waiter

    async def closed(self, number: int) -> Record:
        """The record of connection *number* once its TCP connection is gone."""
        record = await self.connection(number)
        return await record.when_closed()


# -- scenarios during negotiation ---------------------------------------------------------------


class WrongNamespace(ScriptedStream):
    """Answers the stream header with a root in the wrong namespace."""

    def on_header(self) -> None:
        self.send(header("bad", streams="urn:not-streams"))


class BadVersion(ScriptedStream):
    """Answers the stream header with version 2.0."""

    def on_header(self) -> None:
        self.send(header("v2", version="2.0"))


class Doctype(ScriptedStream):
    """Starts its stream with a DOCTYPE declaring an entity."""

    def on_header(self) -> None:
        self.send(header("dt", prolog="<!DOCTYPE stream [<!ENTITY a 'aaaa'>]>"))


class RestrictedXML(ScriptedStream):
    """Puts a comment inside its stream features."""

    def features(self) -> bytes:
        return b"<stream:features><!-- nothing to see --></stream:features>"


class GarbledProceed(ScriptedStream):
    """Answers ``<starttls/>`` with a byte that is not UTF-8 inside ``<proceed/>``."""

    def on_starttls(self, element: etree._Element) -> None:
        self.send(f"<proceed xmlns='{_TLS}'".encode() + b"\xff/>")


class BrokenChallenge(ScriptedStream):
    """Offers SCRAM-SHA-1 and answers with a nonce that does not extend the client's."""

    mechanisms = ("SCRAM-SHA-1",)

    def on_auth(self, element: etree._Element) -> None:
        self.record.mechanisms.append(element.get("mechanism", ""))
        server_first = b"r=not-your-nonce,s=QSXCR+Q6sek8bf92,i=4096"
        self.send(
            f"<challenge xmlns='{_SASL}'>{base64.b64encode(server_first).decode()}</challenge>"
        )


#: the negotiation scenarios, by the stream error the client must send (None: ``<abort/>``)
SCENARIOS: Final[dict[type[ScriptedStream], str | None]] = {
    WrongNamespace: "invalid-namespace",
    BadVersion: "unsupported-version",
    Doctype: "restricted-xml",
    RestrictedXML: "restricted-xml",
    GarbledProceed: "not-well-formed",
    BrokenChallenge: None,
}


# -- a scenario after negotiation ---------------------------------------------------------------


class ImpossibleResumeCount(ScriptedStream):
    """A server whose resumption acknowledges far more stanzas than the client sent.

    Connection 1: a session with stream management, dropped (no footer) once a message
    arrived unacknowledged.  Any later connection: ``<resume/>`` is answered
    ``<resumed h='99'/>``.
    """

    def on_message(self, element: etree._Element) -> None:
        super().on_message(element)
        if self.record.number == 1:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def on_resume(self, element: etree._Element) -> None:
        self.send(f"<resumed xmlns='{_SM}' previd='{element.get('previd')}' h='99'/>")
