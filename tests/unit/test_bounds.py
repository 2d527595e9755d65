"""Memory stays bounded when the server does not cooperate, over in-memory transports.

Backpressure (the XML stream as its transport's producer), one ``<a/>`` per turn however many
``<r/>`` came, the cap on what the stream holds for the server, the dead time of an
unanswered ``<r/>``, replies to the server's requests held as bytes only, and the timeout of
``send()`` for messages and presences.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from tests.unit.test_stanzastream import SM, Harness, msg, tags
from txxmppnode import JID, Message
from txxmppnode.client import Client
from txxmppnode.errors import QueueFull
from txxmppnode.security_layer import make
from txxmppnode.token import StanzaState, StanzaToken
from txxmppnode.xmlstream import XMLStream

R = f"<r xmlns='{SM}'/>"


def iq_requests(count: int, start: int = 0) -> str:
    return "".join(
        f"<iq type='get' id='q{n}' from='romeo@example.net/orchard'><x xmlns='urn:unknown'/></iq>"
        for n in range(start, start + count)
    )


# -- the XML stream is its transport's producer -------------------------------------------------


def test_the_stream_stops_reading_while_the_transport_cannot_write() -> None:
    h = Harness()
    xmlstream, transport = h.server.xmlstream, h.server.transport
    drained: list[None] = []
    xmlstream.on_drained.connect(lambda: drained.append(None))
    assert transport.producer is xmlstream and transport.streaming
    # the transport's buffer went over its high-water mark
    transport.producer.pauseProducing()
    assert xmlstream.paused and transport.producerState == "paused"
    # ... and drained below its low-water mark
    transport.producer.resumeProducing()
    assert not xmlstream.paused and transport.producerState == "producing"
    assert drained == [None]


def test_over_tls_the_pause_of_the_tcp_transport_reaches_the_stream() -> None:
    clock = MemoryReactorClock()
    xmlstream = XMLStream("example.com", reactor=clock)

    class One(Factory):
        def buildProtocol(self, addr: Any) -> XMLStream:
            return xmlstream

    verifier = make("secret", trust_root=None).tls_verifier("example.com")
    tls = TLSMemoryBIOFactory(verifier, True, One()).buildProtocol(None)
    tcp = StringTransport()
    tls.makeConnection(tcp)
    assert tcp.value()  # the ClientHello
    assert tcp.producer is not None and tcp.streaming  # TLS's membrane around the stream
    # TLS pauses us while it holds what we wrote until its handshake is done: the handshake
    # still needs reading, so reading goes on
    tcp.producer.pauseProducing()
    assert xmlstream.paused and tcp.producerState == "producing"
    xmlstream.handshakeCompleted()
    tcp.producer.resumeProducing()  # as TLS does once it wrote what it held
    assert not xmlstream.paused
    tcp.producer.pauseProducing()
    assert xmlstream.paused and tcp.producerState == "paused"
    tcp.producer.resumeProducing()
    assert not xmlstream.paused and tcp.producerState == "producing"


def test_nothing_is_written_while_paused_and_the_queue_goes_out_on_drain() -> None:
    h = Harness()
    h.server.transport.producer.pauseProducing()
    tokens = [h.stream.enqueue(msg(n)) for n in range(3)]
    h.server.say(R)
    h.turn()
    assert h.server.received() == []
    assert [t.state for t in tokens] == [StanzaState.ACTIVE] * 3
    h.server.transport.writes.clear()
    h.server.transport.producer.resumeProducing()
    h.turn()
    assert len(h.server.transport.writes) == 1
    assert tags(h.server.received()) == ["a", "message", "message", "message", "r"]


def test_every_r_of_a_turn_gets_one_a() -> None:
    h = Harness()
    h.server.say("<message from='romeo@example.net'/>")
    h.server.transport.writes.clear()
    h.server.say(R * 1000)
    h.server.say(R * 500 + "<message from='romeo@example.net'/>" + R)
    h.turn()
    (answer,) = h.server.received()
    assert answer.tag == f"{{{SM}}}a" and answer.get("h") == "2"
    assert len(h.server.transport.writes) == 1


# -- the cap on what is held for the server ---------------------------------------------------


def test_enqueue_raises_queue_full_at_the_cap_until_acknowledgements_come() -> None:
    h = Harness()
    h.stream.max_unacked = 3
    tokens = [h.stream.enqueue(msg(n)) for n in range(2)]
    h.turn()
    tokens.append(h.stream.enqueue(msg(2)))  # queued, not yet written: it counts too
    assert h.stream.unacked_count == 3
    with pytest.raises(QueueFull):
        h.stream.enqueue(msg(3))
    refused = h.stream.send(msg(4))
    assert isinstance(refused.result.value, QueueFull)
    refused.addErrback(lambda f: None)
    h.turn()
    assert [m.body for m in h.server.received() if m.tag.endswith("message")] == ["0", "1", "2"]
    h.server.say(f"<a xmlns='{SM}' h='2'/>")
    assert h.stream.unacked_count == 1
    h.stream.enqueue(msg(5))
    assert issubclass(QueueFull, ConnectionError)


def test_without_sm_the_cap_bounds_the_queue_held_while_paused() -> None:
    h = Harness(sm=False)
    h.stream.max_unacked = 2
    h.server.transport.producer.pauseProducing()
    h.stream.enqueue(msg(0))
    h.stream.enqueue(msg(1))
    with pytest.raises(QueueFull):
        h.stream.enqueue(msg(2))
    h.server.transport.producer.resumeProducing()
    h.turn()
    assert h.stream.unacked_count == 0
    h.stream.enqueue(msg(2))


def test_an_unanswered_r_ends_the_connection_despite_keepalives() -> None:
    h = Harness()
    lost: list[BaseException | None] = []
    h.stream.on_connection_lost.connect(lost.append)
    token = h.stream.enqueue(msg(1))
    h.turn()
    assert tags(h.server.received()) == ["message", "r"]
    for _ in range(11):  # whitespace keep-alives: the link looks alive
        h.clock.advance(10)
        h.server.say(" ")
    assert not h.server.transport.disconnecting
    h.clock.advance(10)  # 120 s: soft_timeout + round_trip_time
    assert h.server.transport.disconnecting
    assert isinstance(lost[0], TimeoutError) and "<r/>" in str(lost[0])
    assert token.state is StanzaState.SENT  # kept for the resumption


def test_an_answered_r_does_not_end_the_connection() -> None:
    h = Harness()
    h.stream.enqueue(msg(1))
    h.turn()
    h.clock.advance(100)
    h.server.say(f"<a xmlns='{SM}' h='1'/>")
    h.stream.enqueue(msg(2))
    h.turn()
    for _ in range(11):
        h.clock.advance(10)
        h.server.say(" ")
    assert not h.server.transport.disconnecting  # the second <r/> has 120 s of its own
    h.server.say(f"<a xmlns='{SM}' h='2'/>")
    h.clock.advance(200)
    h.server.say(" ")
    assert h.server.received()[-1].tag == f"{{{SM}}}r"  # the liveness probe after silence


# -- replies to the server's requests --------------------------------------------------------


def test_replies_to_a_flood_of_server_requests_are_held_as_bytes_only() -> None:
    h = Harness()
    h.stream.max_unacked = None
    h.server.say(iq_requests(100))  # warm up the parser and the dispatcher
    h.turn()
    h.server.received()
    gc.collect()
    tokens_before = sum(isinstance(o, StanzaToken) for o in gc.get_objects())
    count = 3000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(100, 100 + count, 100):
            h.server.say(iq_requests(100, start))
            h.turn()
            h.server.transport.clear()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert h.stream.unacked_count == count + 100  # every reply awaits its acknowledgement
    assert h.stream.sm_unacked_list == []  # no token for any of them
    assert sum(isinstance(o, StanzaToken) for o in gc.get_objects()) == tokens_before
    per_reply = held / count
    # the serialised reply alone is about 190 bytes; a token and its element cost more than
    # twice that in Python objects, before the element tree lxml allocates outside them
    assert per_reply < 450, f"{per_reply:.0f} bytes held per reply"
    # acknowledged normally
    h.server.say(f"<a xmlns='{SM}' h='{count + 100}'/>")
    assert h.stream.unacked_count == 0


def test_server_requests_beyond_the_cap_end_the_connection() -> None:
    h = Harness()
    h.stream.max_unacked = 10
    lost: list[BaseException | None] = []
    h.stream.on_connection_lost.connect(lost.append)
    h.server.say(iq_requests(50))
    assert isinstance(lost[0], QueueFull)
    assert h.server.transport.disconnecting
    # reading stopped with the request that went beyond the cap; its reply is kept
    assert h.stream.sm_inbound_ctr == 11
    assert h.stream.unacked_count == 11


# -- send() with a timeout, for messages and presences ------------------------------------------


def test_send_timeout_without_acknowledgement() -> None:
    h = Harness()
    result = h.stream.send(msg(1), timeout=5)
    h.turn()
    h.clock.advance(4.9)
    assert not result.called
    h.clock.advance(0.2)
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError)
    assert "acknowledge" in str(failure.value)
    assert h.stream.sm_unacked_list[0].state is StanzaState.SENT  # may still arrive


def test_send_timeout_withdraws_a_stanza_not_yet_written() -> None:
    h = Harness(sm=False)
    h.server.transport.producer.pauseProducing()
    result = h.stream.send(msg(1), timeout=5)
    h.turn()
    h.clock.advance(5)
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError) and "withdrawn" in str(failure.value)
    h.server.transport.producer.resumeProducing()
    h.turn()
    assert h.server.received() == []  # never written
    assert h.stream.unacked_count == 0


def test_send_acknowledged_in_time_succeeds() -> None:
    h = Harness()
    result = h.stream.send(msg(1), timeout=5)
    h.turn()
    h.server.say(f"<a xmlns='{SM}' h='1'/>")
    assert result.called and result.result is None
    h.clock.advance(10)
    assert result.result is None


def test_client_send_timeout_counts_the_wait_for_the_stream() -> None:
    reactor = MemoryReactorClock()
    client = Client(JID.fromstr("juliet@example.com"), make("pw"), reactor=reactor)
    client.start()
    result = client.send(Message(to="romeo@example.net", body="hi"), timeout=3)
    reactor.advance(2.9)
    assert not result.called
    reactor.advance(0.2)
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError) and "not established" in str(failure.value)
    assert client.stream.unacked_count == 0
    assert client._waiting_sends == []
    stopped = client.stop()
    reactor.advance(0)
    assert stopped.called
