"""StanzaStream over in-memory transports with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from txxmppnode import IQ, JID, Message
from txxmppnode.errors import (
    ErrorCondition,
    StreamError,
    XMPPCancelError,
    XMPPError,
)
from txxmppnode.sm import ResendPolicy
from txxmppnode.stanzastream import StanzaStream
from txxmppnode.token import StanzaState
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser
from txxmppnode.xmlstream import XMLStream

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
SM = "urn:xmpp:sm:3"
ME = JID.fromstr("juliet@example.com/balcony")


class RecordingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Server:
    """The server side of one connection: reads what we wrote, answers with bytes."""

    def __init__(self, clock: Clock) -> None:
        self.transport = RecordingTransport()
        self.xmlstream = XMLStream("example.com", reactor=clock)
        self.xmlstream.makeConnection(self.transport)
        self.xmlstream.dataReceived(PEER_HEADER)
        self.parser = XMLStreamParser()
        self.parser.feed(PEER_HEADER)
        self.transport.clear()
        self.transport.writes.clear()

    def received(self) -> list[Any]:
        data = self.transport.value()
        self.transport.clear()
        return [e.element for e in self.parser.feed(data) if isinstance(e, ElementReceived)]

    def say(self, xml: str) -> None:
        self.xmlstream.dataReceived(xml.encode())

    def drop(self) -> None:
        self.xmlstream.connectionLost(Failure(ConnectionDone()))


class Harness:
    def __init__(self, *, sm: bool = True) -> None:
        self.clock = Clock()
        self.stream = StanzaStream(ME.bare(), reactor=self.clock)
        self.server = Server(self.clock)
        self.enabled = self.stream.start(self.server.xmlstream, ME, sm=sm)
        if sm:
            (enable,) = self.server.received()
            assert enable.tag == f"{{{SM}}}enable"
            self.server.say(f"<enabled xmlns='{SM}' id='sm-1' resume='true' max='300'/>")
        assert self.enabled.result is sm

    def turn(self) -> None:
        self.clock.advance(0)


def msg(n: int) -> Message:
    return Message(to="romeo@example.net", type_="chat", body=str(n))


def tags(elements: list[Any]) -> list[str]:
    return [etree.QName(e).localname for e in elements]


def test_writes_are_batched_per_reactor_turn_with_one_ack_request() -> None:
    h = Harness()
    h.server.transport.writes.clear()
    tokens = [h.stream.enqueue(msg(n)) for n in range(3)]
    assert h.server.received() == []
    h.turn()
    assert len(h.server.transport.writes) == 1
    received = h.server.received()
    assert tags(received) == ["message", "message", "message", "r"]
    assert [m.body for m in received[:3]] == ["0", "1", "2"]
    assert [t.state for t in tokens] == [StanzaState.SENT] * 3
    assert h.stream.sm_unacked_list == tokens


def test_acks_free_tokens_oldest_first() -> None:
    h = Harness()
    tokens = [h.stream.enqueue(msg(n)) for n in range(3)]
    h.turn()
    h.server.say(f"<a xmlns='{SM}' h='2'/>")
    assert [t.state for t in tokens] == [StanzaState.ACKED, StanzaState.ACKED, StanzaState.SENT]
    assert tokens[0].deferred().called
    assert h.stream.sm_outbound_base == 2


def test_without_sm_tokens_are_sent_without_sm() -> None:
    h = Harness(sm=False)
    token = h.stream.enqueue(msg(1))
    h.turn()
    assert tags(h.server.received()) == ["message"]
    assert token.state is StanzaState.SENT_WITHOUT_SM


def test_enabled_is_handled_before_an_r_in_the_same_chunk() -> None:
    clock = Clock()
    stream = StanzaStream(ME.bare(), reactor=clock)
    server = Server(clock)
    enabled = stream.start(server.xmlstream, ME, sm=True)
    server.received()
    server.say(
        f"<enabled xmlns='{SM}' id='x' resume='true'/><message from='romeo@example.net'/>"
        f"<r xmlns='{SM}'/>"
    )
    assert enabled.result is True
    clock.advance(0)
    (answer,) = server.received()
    assert answer.tag == f"{{{SM}}}a" and answer.get("h") == "1"


def test_r_is_answered_within_the_turn_with_the_inbound_count() -> None:
    h = Harness()
    h.server.say("<message from='romeo@example.net'/><presence from='romeo@example.net/x'/>")
    h.server.say(f"<r xmlns='{SM}'/>")
    h.turn()
    (answer,) = h.server.received()
    assert answer.get("h") == "2"
    assert h.stream.sm_inbound_ctr == 2


def test_ack_for_more_than_sent_is_a_stream_error() -> None:
    h = Harness()
    h.stream.enqueue(msg(1))
    h.turn()
    h.server.received()
    h.server.say(f"<a xmlns='{SM}' h='5'/>")
    data = h.server.transport.value()
    assert b"<undefined-condition " in data
    assert b'<handled-count-too-high xmlns="urn:xmpp:sm:3" h="5" send-count="1"/>' in data
    assert h.server.transport.disconnecting


def test_invalid_stanza_fails_at_enqueue_and_nothing_is_written() -> None:
    h = Harness()
    bad = IQ("error", id_="e1")
    with pytest.raises(ValueError, match="needs an <error/>"):
        h.stream.enqueue(bad)
    h.turn()
    assert h.server.received() == []
    assert h.stream.queue_length == 0


def test_stanzas_get_unpredictable_ids() -> None:
    h = Harness()
    tokens = [h.stream.enqueue(Message(body="x")) for _ in range(50)]
    ids = {t.stanza.id_ for t in tokens}
    assert len(ids) == 50 and None not in ids


def query() -> IQ:
    return IQ("get", to="example.com", payload=etree.Element("{urn:x}q", nsmap={None: "urn:x"}))


def test_iq_request_resolves_with_the_response_payload() -> None:
    h = Harness()
    result = h.stream.send(query())
    h.turn()
    (request, _) = h.server.received()
    h.server.say(
        f"<iq type='result' id='{request.id_}' from='example.com'><q xmlns='urn:x'><item/></q></iq>"
    )
    payload = result.result
    assert payload.tag == "{urn:x}q" and payload[0].tag == "{urn:x}item"


def test_iq_error_response_raises_the_mapped_error() -> None:
    h = Harness()
    result = h.stream.send(query())
    h.turn()
    (request, _) = h.server.received()
    h.server.say(
        f"<iq type='error' id='{request.id_}' from='example.com'><error type='cancel'>"
        "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, XMPPCancelError)
    assert failure.value.condition is ErrorCondition.ITEM_NOT_FOUND


def test_response_from_someone_else_is_ignored() -> None:
    h = Harness()
    result = h.stream.send(query())
    h.turn()
    (request, _) = h.server.received()
    h.server.say(f"<iq type='result' id='{request.id_}' from='mallory@evil.example'/>")
    assert not result.called
    h.server.say(f"<iq type='result' id='{request.id_}'/>")  # no from: our server
    assert result.called and result.result is None


def test_iq_timeout_uses_the_clock() -> None:
    h = Harness()
    result = h.stream.send(query(), timeout=5)
    h.turn()
    h.clock.advance(4.9)
    assert not result.called
    h.clock.advance(0.2)
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError)


def test_cb_result_replaces_the_payload_and_cb_needs_a_request() -> None:
    h = Harness()
    seen: list[Any] = []
    result = h.stream.send(query(), cb=lambda reply: seen.append(reply) or "from cb")
    h.turn()
    (request, _) = h.server.received()
    h.server.say(f"<iq type='result' id='{request.id_}' from='example.com'/>")
    assert result.result == "from cb"
    assert isinstance(seen[0], IQ)
    bad = h.stream.send(msg(1), cb=lambda reply: None)
    assert isinstance(bad.result.value, ValueError)
    bad.addErrback(lambda f: None)


def test_destroy_fails_queued_unacked_and_pending() -> None:
    h = Harness()
    result = h.stream.send(query())
    sent = h.stream.enqueue(msg(1))
    h.turn()
    queued = h.stream.enqueue(msg(2))
    destroyed: list[Any] = []
    h.stream.on_stream_destroyed.connect(destroyed.append)
    reason = ConnectionError("gone")
    h.stream.destroy(reason)
    assert sent.state is StanzaState.DISCONNECTED
    assert queued.state is StanzaState.DISCONNECTED
    assert result.result.value is reason
    result.addErrback(lambda f: None)
    assert destroyed == [reason]


def serve(h: Harness, xml: str) -> Any:
    h.server.say(xml)
    h.turn()
    return h.server.received()


def test_iq_handlers_results_errors_and_failures() -> None:
    h = Harness()

    def ok(iq: IQ) -> Any:
        return etree.Element("{urn:x}answer", nsmap={None: "urn:x"})

    async def refuse(iq: IQ) -> Any:
        raise XMPPError(ErrorCondition.FORBIDDEN, "no")

    def crash(iq: IQ) -> Any:
        raise KeyError("bug")

    h.stream.register_iq_request_handler("get", "{urn:x}ok", ok)
    h.stream.register_iq_request_handler("set", "{urn:x}refuse", refuse)
    h.stream.register_iq_request_handler("get", "{urn:x}crash", crash)
    with pytest.raises(ValueError):
        h.stream.register_iq_request_handler("get", "{urn:x}ok", ok)

    reply, _ = serve(h, "<iq type='get' id='1' from='romeo@example.net/a'><ok xmlns='urn:x'/></iq>")
    assert (reply.get("type"), reply.get("id"), reply.get("to")) == (
        "result",
        "1",
        "romeo@example.net/a",
    )
    assert reply[0].tag == "{urn:x}answer"
    reply, _ = serve(h, "<iq type='set' id='2'><refuse xmlns='urn:x'/></iq>")
    assert reply.get("type") == "error" and reply.error.condition is ErrorCondition.FORBIDDEN
    reply, _ = serve(h, "<iq type='get' id='3'><crash xmlns='urn:x'/></iq>")
    assert reply.error.condition is ErrorCondition.UNDEFINED_CONDITION
    reply, _ = serve(h, "<iq type='get' id='4'><unknown xmlns='urn:x'/></iq>")
    assert reply.error.condition is ErrorCondition.SERVICE_UNAVAILABLE
    reply, _ = serve(h, "<iq type='get' id='5'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert reply.get("type") == "result" and len(reply) == 0


def test_with_send_reply_answers_before_the_handler_returns() -> None:
    h = Harness()
    later: defer.Deferred[None] = defer.Deferred()

    async def handler(iq: IQ, send_reply: Any) -> None:
        send_reply(None)
        await later

    h.stream.register_iq_request_handler("get", "{urn:x}q", handler, with_send_reply=True)
    reply, _ = serve(h, "<iq type='get' id='9'><q xmlns='urn:x'/></iq>")
    assert reply.get("type") == "result"
    later.callback(None)
    h.turn()
    assert h.server.received() == []  # answered exactly once


def test_errors_are_never_answered_and_broken_stanzas_get_bad_request() -> None:
    h = Harness()
    assert serve(h, "<iq type='error' id='7'><nonsense xmlns='urn:x'/></iq>") == []
    assert serve(h, "<message type='error' from='a@b'/>") == []
    reply, _ = serve(h, "<message type='shout' id='m' from='romeo@example.net'/>")
    assert reply.tag == "{jabber:client}message"
    assert reply.error.condition is ErrorCondition.BAD_REQUEST
    reply, _ = serve(h, "<iq type='get' id='8'/>")
    assert reply.error.condition is ErrorCondition.BAD_REQUEST


def test_message_callbacks_and_inbound_filters() -> None:
    h = Harness()
    got: list[str] = []
    h.stream.register_message_callback("chat", "romeo@example.net", lambda m: got.append(m.body))
    h.stream.app_inbound_message_filter.register(lambda m: None if m.body == "drop" else m)
    h.server.say(
        "<message type='chat' from='romeo@example.net/orchard'><body>hi</body></message>"
        "<message type='chat' from='romeo@example.net/orchard'><body>drop</body></message>"
    )
    assert got == ["hi"]


def test_outbound_filter_dropping_marks_the_token_dropped() -> None:
    h = Harness()
    h.stream.app_outbound_message_filter.register(lambda m: None)
    token = h.stream.enqueue(msg(1))
    h.turn()
    assert token.state is StanzaState.DROPPED
    assert h.server.received() == []


def lose_and_reconnect(h: Harness) -> Server:
    lost: list[Any] = []
    h.stream.on_connection_lost.connect(lost.append)
    h.server.drop()
    assert len(lost) == 1 and not h.stream.running
    return Server(h.clock)


def test_resumption_resends_unacked_in_order_before_newly_queued() -> None:
    h = Harness()
    tokens = [h.stream.enqueue(msg(n)) for n in range(4)]
    h.turn()
    h.server.say(f"<a xmlns='{SM}' h='1'/>")
    h.server.say("<message from='romeo@example.net'/>")
    server = lose_and_reconnect(h)
    late = h.stream.enqueue(msg(99))  # queued while disconnected
    resumed = defer.Deferred.fromCoroutine(h.stream.resume(server.xmlstream))
    (resume,) = server.received()
    assert (resume.tag, resume.get("previd"), resume.get("h")) == (f"{{{SM}}}resume", "sm-1", "1")
    server.say(f"<resumed xmlns='{SM}' previd='sm-1' h='2'/>")
    assert resumed.result is True
    h.turn()
    bodies = [e.body for e in server.received() if e.tag == "{jabber:client}message"]
    assert bodies == ["2", "3", "99"]
    assert [t.state for t in tokens] == [StanzaState.ACKED] * 2 + [StanzaState.SENT] * 2
    assert late.state is StanzaState.SENT


@pytest.mark.parametrize(
    ("h_attr", "policy", "expected"),
    [
        (" h='1'", ResendPolicy.DISCONNECT, ["1", "2", "99"]),
        ("", ResendPolicy.DISCONNECT, ["99"]),
        ("", ResendPolicy.RESEND, ["0", "1", "2", "99"]),
    ],
)
def test_refused_resumption(h_attr: str, policy: ResendPolicy, expected: list[str]) -> None:
    h = Harness()
    h.stream.resend_policy = policy
    tokens = [h.stream.enqueue(msg(n)) for n in range(3)]
    h.turn()
    server = lose_and_reconnect(h)
    h.stream.enqueue(msg(99))
    resumed = defer.Deferred.fromCoroutine(h.stream.resume(server.xmlstream))
    server.received()
    server.say(f"<failed xmlns='{SM}'{h_attr}><item-not-found "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")  # fmt: skip
    assert resumed.result is False
    assert not h.stream.sm_enabled
    # a fresh session on the same connection, as after a new bind
    h.stream.start(server.xmlstream, ME, sm=False)
    h.turn()
    bodies = [e.body for e in server.received()]
    assert bodies == expected
    if not h_attr and policy is ResendPolicy.DISCONNECT:
        assert all(t.state is StanzaState.DISCONNECTED for t in tokens)


def test_soft_limit_requests_an_ack_and_hard_limit_aborts() -> None:
    h = Harness()
    h.clock.advance(59)
    assert h.server.received() == []
    h.clock.advance(1)
    (r,) = h.server.received()
    assert r.tag == f"{{{SM}}}r"
    h.clock.advance(59)
    assert not h.server.transport.disconnecting
    h.clock.advance(1)
    assert h.server.transport.disconnecting  # aborted: the client will resume


def test_data_arriving_resets_the_liveness_timer() -> None:
    h = Harness()
    for _ in range(5):
        h.clock.advance(50)
        h.server.say(f"<a xmlns='{SM}' h='0'/>")
    assert h.server.received() == []
    assert not h.server.transport.disconnecting


def test_soft_limit_without_sm_sends_a_ping() -> None:
    h = Harness(sm=False)
    h.clock.advance(60)
    h.turn()
    (ping,) = h.server.received()
    assert ping.get("type") == "get" and ping[0].tag == "{urn:xmpp:ping}ping"


def test_stream_error_destroys_nothing_but_suspends() -> None:
    h = Harness()
    token = h.stream.enqueue(msg(1))
    h.turn()
    reasons: list[Any] = []
    h.stream.on_connection_lost.connect(reasons.append)
    h.server.say(
        "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        "</stream:error>"
    )
    assert isinstance(reasons[0], StreamError)
    assert token.state is StanzaState.SENT  # kept for the resumption


@pytest.mark.parametrize(
    ("policy", "h_attr", "expected_states", "resent"),
    [
        (ResendPolicy.RESEND, " h='7'", [StanzaState.SENT] * 2, ["0", "1", "99"]),
        (ResendPolicy.DISCONNECT, " h='7'", [StanzaState.DISCONNECTED] * 2, ["99"]),
        (ResendPolicy.RESEND, " h='x'", [StanzaState.SENT] * 2, ["0", "1", "99"]),
        (ResendPolicy.RESEND, "", [StanzaState.SENT] * 2, ["0", "1", "99"]),
    ],
)
def test_resumed_with_an_impossible_count_sends_a_stream_error_and_starts_afresh(
    policy: ResendPolicy, h_attr: str, expected_states: list[StanzaState], resent: list[str]
) -> None:
    from txxmppnode.errors import FatalError

    h = Harness()
    h.stream.resend_policy = policy
    tokens = [h.stream.enqueue(msg(n)) for n in range(2)]
    h.turn()
    pending_iq = h.stream.send(query())
    h.turn()
    server = lose_and_reconnect(h)
    h.stream.enqueue(msg(99))  # queued while disconnected
    destroyed: list[Any] = []
    h.stream.on_stream_destroyed.connect(destroyed.append)
    resumed = defer.Deferred.fromCoroutine(h.stream.resume(server.xmlstream))
    server.received()
    server.transport.clear()
    server.say(f"<resumed xmlns='{SM}' previd='sm-1'{h_attr}/>")  # 3 sent; h=7 is impossible
    # the server hears why, before the connection closes
    sent = server.transport.value()
    assert b"<undefined-condition " in sent and sent.endswith(b"</stream:stream>")
    if h_attr == " h='7'":
        assert b'<handled-count-too-high xmlns="urn:xmpp:sm:3" h="7" send-count="3"/>' in sent
    assert server.transport.disconnecting
    error = resumed.result.value
    resumed.addErrback(lambda f: None)
    assert isinstance(error, StreamError) and error.sent_by_us
    assert not isinstance(error, FatalError | ValueError)  # not a reason to stop for ever
    # the session is gone, as after a refused resumption without a count
    assert [type(r) for r in destroyed] == [type(error)]
    assert not h.stream.sm_enabled and not h.stream.running
    assert isinstance(pending_iq.result.value, ConnectionError)  # its answer cannot come
    pending_iq.addErrback(lambda f: None)
    assert [t.state for t in tokens[:2]] == [
        StanzaState.ACTIVE if s is StanzaState.SENT else s for s in expected_states
    ]
    # a fresh session on a new connection gets what the resend policy keeps, in order
    fresh = Server(h.clock)
    h.stream.start(fresh.xmlstream, ME, sm=False)
    h.turn()
    bodies = [e.body for e in fresh.received() if e.tag == "{jabber:client}message"]
    assert bodies == resent


def test_acknowledge_tells_the_handled_count_unasked_and_only_with_sm() -> None:
    h = Harness()
    h.server.say("<message from='romeo@example.net'/><message from='romeo@example.net'/>")
    assert h.server.received() == []  # nothing asked, nothing said
    h.stream.acknowledge()
    (ack,) = h.server.received()
    assert (etree.QName(ack).localname, ack.get("h")) == ("a", "2")
    without = Harness(sm=False)
    without.server.say("<message from='romeo@example.net'/>")
    without.stream.acknowledge()
    assert without.server.received() == []
