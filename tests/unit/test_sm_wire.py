"""XEP-0198 on the wire: the state table walked pair by pair, and the elements it speaks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from txxmppnode import Message
from txxmppnode.deadline import Deadline
from txxmppnode.errors import StreamError, StreamErrorCondition
from txxmppnode.sm import StreamManagement
from txxmppnode.sm_wire import (
    TRANSITIONS,
    Refused,
    Resumed,
    SMWire,
    WireInput,
    WireState,
    sm_element,
)
from txxmppnode.token import StanzaState, StanzaToken
from txxmppnode.xmlstream import XMLStream

SM = "urn:xmpp:sm:3"
PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)


class Wire:
    """An SMWire with its counters, an open XML stream over memory, and a clock."""

    def __init__(self, *, resumable: bool = False) -> None:
        self.clock = Clock()
        self.counters = StreamManagement()
        if resumable:
            self.counters.on_enabled("sess-1", True)
        self.wire = SMWire(self.counters, self.clock, Logger())
        self.transport = StringTransport()
        self.xmlstream = XMLStream("example.com", reactor=self.clock)
        self.xmlstream.makeConnection(self.transport)
        self.xmlstream.dataReceived(PEER_HEADER)
        self.transport.clear()
        self.outcomes: list[object] = []

    def deadline(self, seconds: float | None = 10) -> Deadline:
        return Deadline(self.clock, seconds, "test")

    def enable(self) -> defer.Deferred[bool]:
        d = defer.Deferred.fromCoroutine(self.wire.enable(self.xmlstream, None, self.deadline()))
        d.addBoth(self.outcomes.append)
        return d

    def resume(self) -> defer.Deferred[Resumed | Refused]:
        d = defer.Deferred.fromCoroutine(self.wire.resume(self.xmlstream, self.deadline()))
        d.addBoth(self.outcomes.append)
        return d

    def written(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data


def element(xml: str) -> etree._Element:
    return etree.fromstring(xml)


# Each state reached through the public methods, from a fresh wire.
REACH: dict[WireState, Callable[[Wire], object]] = {
    WireState.DETACHED: lambda w: None,
    WireState.HELD: lambda w: w.wire.attach(),
    WireState.ENABLING: lambda w: (w.wire.attach(), w.enable()),
    WireState.RESUMING: lambda w: (w.wire.attach(), w.resume()),
    WireState.FLOWING: lambda w: (w.wire.attach(), w.wire.release()),
}

# Each input applied through the public methods.
APPLY: dict[WireInput, Callable[[Wire], object]] = {
    WireInput.ATTACH: lambda w: w.wire.attach(),
    WireInput.DETACH: lambda w: w.wire.detach(),
    WireInput.RELEASE: lambda w: w.wire.release(),
    WireInput.ENABLE: lambda w: w.enable(),
    WireInput.RESUME: lambda w: w.resume(),
    WireInput.ANSWERED: lambda w: w.wire.answered(element(f"<failed xmlns='{SM}'/>")),
}


def test_the_table_names_every_state_and_input() -> None:
    assert {state for state, _ in TRANSITIONS} == set(WireState)
    assert {event for _, event in TRANSITIONS} == set(WireInput)
    assert set(TRANSITIONS.values()) <= set(WireState)


@pytest.mark.parametrize(
    ("state", "event"), [(state, event) for state in WireState for event in WireInput]
)
def test_every_state_and_input(state: WireState, event: WireInput) -> None:
    w = Wire(resumable=True)
    REACH[state](w)
    assert w.wire.state is state
    expected = TRANSITIONS.get((state, event))
    if expected is not None:
        APPLY[event](w)
        assert w.wire.state is expected
        assert w.wire.writing is (expected is WireState.FLOWING)
        return
    if event is WireInput.ANSWERED:
        # an answer nobody awaits is logged and ignored
        APPLY[event](w)
        assert w.wire.state is state
        return
    if event in (WireInput.ENABLE, WireInput.RESUME):
        APPLY[event](w)
        failure = w.outcomes[-1]
        assert isinstance(failure, Failure) and failure.check(RuntimeError)
        assert "not allowed" in str(failure.value)
        assert w.wire.state is state
        return
    with pytest.raises(RuntimeError, match="not allowed"):
        APPLY[event](w)
    assert w.wire.state is state


def test_detach_and_a_new_attach_fail_the_awaited_answer() -> None:
    for leave in (lambda w: w.wire.detach(), lambda w: w.wire.attach()):
        w = Wire()
        w.wire.attach()
        d = w.enable()
        leave(w)
        (failure,) = w.outcomes
        assert isinstance(failure, Failure) and failure.check(ConnectionError)
        d.addErrback(lambda f: None)
        w.wire.answered(element(f"<enabled xmlns='{SM}'/>"))  # too late: ignored
        assert not w.counters.sm_enabled


def test_enable_sends_the_request_and_applies_the_answer() -> None:
    w = Wire()
    w.wire.attach()
    w.enable()
    assert w.written() == f'<enable xmlns="{SM}" resume="true"/>'.encode()
    assert w.wire.state is WireState.ENABLING and not w.wire.writing
    w.wire.answered(element(f"<enabled xmlns='{SM}' id='s' resume='1' max='30' location='h:1'/>"))
    assert w.outcomes == [True]
    assert w.wire.state is WireState.HELD
    assert (w.counters.sm_id, w.counters.sm_resumable, w.counters.sm_max) == ("s", True, 30)
    assert w.counters.sm_location == "h:1"


def test_enable_times_out_on_the_clock_and_aborts_the_stream() -> None:
    w = Wire()
    w.wire.attach()
    w.enable()
    w.clock.advance(9.9)
    assert w.outcomes == []
    w.clock.advance(0.2)
    (failure,) = w.outcomes
    assert isinstance(failure, Failure) and failure.check(TimeoutError)
    assert w.wire.state is WireState.HELD
    assert not w.xmlstream.is_open


def test_resumed_acknowledges_and_returns_what_to_write_again() -> None:
    w = Wire(resumable=True)
    tokens = [StanzaToken(Message(id_=f"m{i}")) for i in range(3)]
    for token in tokens:
        w.counters.on_sent(token)
    w.wire.attach()
    w.resume()
    assert w.written() == f'<resume xmlns="{SM}" previd="sess-1" h="0"/>'.encode()
    w.wire.answered(element(f"<resumed xmlns='{SM}' previd='sess-1' h='1'/>"))
    (outcome,) = w.outcomes
    assert outcome == Resumed(acked=(tokens[0],), resend=tuple(tokens[1:]))
    assert tokens[0].state is StanzaState.ACKED


@pytest.mark.parametrize(("answer", "handled"), [("h='2'", 2), ("", None), ("h='x'", None)])
def test_failed_is_a_refusal_with_its_count(answer: str, handled: int | None) -> None:
    w = Wire(resumable=True)
    w.wire.attach()
    w.resume()
    w.wire.answered(element(f"<failed xmlns='{SM}' {answer}/>"))
    assert w.outcomes == [Refused(handled)]


def test_a_resumed_count_above_what_was_sent_is_answered_with_a_stream_error() -> None:
    w = Wire(resumable=True)
    w.wire.attach()
    w.resume()
    w.written()
    w.wire.answered(element(f"<resumed xmlns='{SM}' previd='sess-1' h='5'/>"))
    (outcome,) = w.outcomes
    assert isinstance(outcome, Refused) and outcome.handled is None
    assert isinstance(outcome.error, StreamError)
    assert outcome.error.condition is StreamErrorCondition.UNDEFINED_CONDITION
    sent = w.written()
    assert b'<handled-count-too-high xmlns="urn:xmpp:sm:3" h="5" send-count="0"/>' in sent
    assert w.counters.sm_enabled  # unchanged: the caller gives the session up


def test_one_ack_per_turn_and_only_with_a_session() -> None:
    w = Wire()
    assert not w.wire.ack_requested()
    assert w.wire.take_owed_ack() is None
    w.counters.on_enabled()
    w.counters.on_received()
    assert w.wire.ack_requested() and w.wire.ack_requested()
    assert w.wire.take_owed_ack() == f"<a xmlns='{SM}' h='1'/>".encode()
    assert w.wire.take_owed_ack() is None


def test_acked_applies_a_count_and_refuses_a_broken_one() -> None:
    w = Wire()
    assert w.wire.acked(w.xmlstream, sm_element("a", h="0")) is None  # no session
    w.counters.on_enabled()
    token = StanzaToken(Message(id_="m"))
    w.counters.on_sent(token)
    assert w.wire.acked(w.xmlstream, sm_element("a", h="1")) == [token]
    assert w.wire.acked(w.xmlstream, sm_element("a", h="bogus")) is None
    assert b"undefined-condition" in w.written()
    assert not w.xmlstream.is_open
