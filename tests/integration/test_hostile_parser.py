"""An XMLStream over real TCP against a server whose XML is shaped to hurt the parser.

Each case used to cost the client seconds to minutes of CPU, in one ``dataReceived`` call, before
TLS (so before any timer of the negotiation could fire); now each is refused with its stream
error as soon as the offending bytes arrive, and the server receives that error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import defer, endpoints, reactor

from tests.support.hostile_parser import LISTEN_HOST, HostileParserServer
from tests.support.reactor import ReactorThread
from txxmppnode.errors import StreamError, StreamErrorCondition
from txxmppnode.xmlstream import XMLStream

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='h1'"
    b" version='1.0'>"
)

CASES = {
    # 30,000 attributes on the header: copying them was quadratic (seconds).
    "header attributes": (
        HEADER[:-1] + b"".join(b" a%d=''" % n for n in range(30_000)) + b">",
        StreamErrorCondition.POLICY_VIOLATION,
    ),
    # Features with 200,000 children in the default namespace: detaching them was quadratic
    # (minutes); more children than the client accepts now.
    "wide features": (
        HEADER + b"<stream:features>" + b"<a/>" * 200_000 + b"</stream:features>",
        StreamErrorCondition.POLICY_VIOLATION,
    ),
    # A DTD with an entity, after the header.
    "doctype": (
        HEADER + b"<!DOCTYPE stream:stream [<!ENTITY x 'y'>]><stream:features/>",
        StreamErrorCondition.RESTRICTED_XML,
    ),
}


@pytest.fixture
def hostile(reactor_thread: ReactorThread) -> Iterator[list[HostileParserServer]]:
    servers: list[HostileParserServer] = []
    try:
        yield servers
    finally:
        for server in servers:
            reactor_thread.run(server.stop)


def connect_until_lost(port: int) -> defer.Deferred[BaseException | None]:
    """Connect an XMLStream to the hostile server; fire with its final reason."""
    stream = XMLStream("example.com", reactor=reactor)  # type: ignore[arg-type]
    endpoint = endpoints.TCP4ClientEndpoint(reactor, LISTEN_HOST, port)
    connected = endpoints.connectProtocol(endpoint, stream)

    def lost(_: Any) -> defer.Deferred[BaseException | None]:
        return stream.when_lost()

    return connected.addCallback(lost)


@pytest.mark.parametrize("case", CASES)
def test_hostile_xml_is_refused_with_its_stream_error(
    reactor_thread: ReactorThread, hostile: list[HostileParserServer], case: str
) -> None:
    payload, condition = CASES[case]
    server = HostileParserServer(payload)
    hostile.append(server)
    port = reactor_thread.run(server.start)

    final = reactor_thread.run(connect_until_lost, port, timeout=30)

    assert isinstance(final, StreamError)
    assert final.condition is condition
    assert final.sent_by_us
    received = reactor_thread.run(server.when_closed, timeout=10)
    assert received.startswith(b"<?xml version='1.0'?><stream:stream ")
    error = b"<" + condition.value.encode() + b' xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
    assert error in received
    assert received.endswith(b"</stream:error></stream:stream>")
