"""XEP-0198 client state: enable, acknowledge, resume, fail, destroy; counters modulo 2**32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from txxmppnode import Message
from txxmppnode.sm import (
    EVENTS,
    MODULUS,
    HandledCountTooHigh,
    ResendPolicy,
    ResumeFailedOutcome,
    SMState,
    StreamManagement,
)
from txxmppnode.token import StanzaState, StanzaToken

SM_NS = "urn:xmpp:sm:3"
S = StanzaState


def make_tokens(n: int, first: int = 1, **kwargs: Any) -> list[StanzaToken]:
    return [StanzaToken(Message(id_=f"m{i}"), **kwargs) for i in range(first, first + n)]


def enabled(counter_start: int = 0, *, resume: bool = True) -> StreamManagement:
    sm = StreamManagement(counter_start=counter_start)
    sm.on_enabled("sess-1", resume, 300, "other.example.com:5222")
    return sm


def send(sm: StreamManagement, n: int, first: int = 1) -> list[StanzaToken]:
    tokens = make_tokens(n, first)
    for token in tokens:
        sm.on_sent(token)
    return tokens


def states(tokens: list[StanzaToken]) -> list[StanzaState]:
    return [t.state for t in tokens]


def lost_with(n: int, acked: int = 0) -> tuple[StreamManagement, list[StanzaToken]]:
    """A session whose transport was lost after sending *n* and getting *acked* acknowledged."""
    sm = enabled()
    tokens = send(sm, n)
    sm.on_ack(acked)
    return sm, tokens


def assert_reset(sm: StreamManagement) -> None:
    assert sm.state is SMState.DISABLED
    assert not sm.sm_enabled
    assert (sm.sm_id, sm.sm_resumable, sm.sm_max, sm.sm_location) == (None, False, None, None)
    assert (sm.sm_outbound_base, sm.sm_inbound_ctr, sm.sm_unacked_list) == (0, 0, [])


# -- enable ----------------------------------------------------------------------------------


def test_a_new_session_is_disabled() -> None:
    assert_reset(StreamManagement())


def test_enabled_sets_the_session_and_counters() -> None:
    sm = enabled()
    assert sm.state is SMState.ENABLED
    assert sm.sm_enabled
    assert sm.sm_id == "sess-1"
    assert sm.sm_resumable
    assert sm.sm_max == 300
    assert sm.sm_location == "other.example.com:5222"
    assert (sm.sm_outbound_base, sm.sm_inbound_ctr, sm.sm_unacked_list) == (0, 0, [])


def test_a_session_is_resumable_only_with_resume_and_an_id() -> None:
    sm = StreamManagement()
    sm.on_enabled(None, True)
    assert not sm.sm_resumable
    sm = StreamManagement()
    sm.on_enabled("sess", False)
    assert not sm.sm_resumable
    assert sm.sm_id == "sess"


def test_a_negative_max_is_refused() -> None:
    sm = StreamManagement()
    with pytest.raises(ValueError, match="max"):
        sm.on_enabled("sess", True, -1)
    assert sm.state is SMState.DISABLED


def test_the_counter_start_must_be_a_counter() -> None:
    with pytest.raises(ValueError, match="h must be in"):
        StreamManagement(counter_start=MODULUS)


# -- the state table -------------------------------------------------------------------------

CALLS: dict[str, Callable[[StreamManagement], object]] = {
    "on_enabled": lambda sm: sm.on_enabled("sess", True),
    "on_sent": lambda sm: sm.on_sent(make_tokens(1)[0]),
    "on_received": lambda sm: sm.on_received(),
    "on_ack": lambda sm: sm.on_ack(0),
    "ack_answer": lambda sm: sm.ack_answer(),
    "on_resumed": lambda sm: sm.on_resumed(0),
    "on_resume_failed": lambda sm: sm.on_resume_failed(0),
    "destroy": lambda sm: sm.destroy(),
}


def in_state(state: SMState) -> StreamManagement:
    sm = StreamManagement()
    if state is SMState.ENABLED:
        sm.on_enabled("sess", True)
    return sm


def test_every_method_event_is_in_the_table() -> None:
    assert set(CALLS) == set(EVENTS)


@pytest.mark.parametrize(
    ("event", "state"),
    [(e, s) for e in EVENTS for s in SMState if s in EVENTS[e]],
    ids=str,
)
def test_allowed_events_lead_to_the_tabled_state(event: str, state: SMState) -> None:
    sm = in_state(state)
    CALLS[event](sm)
    assert sm.state is EVENTS[event][state]


@pytest.mark.parametrize(
    ("event", "state"),
    [(e, s) for e in EVENTS for s in SMState if s not in EVENTS[e]],
    ids=str,
)
def test_events_in_the_wrong_state_raise(event: str, state: SMState) -> None:
    sm = in_state(state)
    with pytest.raises(RuntimeError, match=f"{event} is not allowed in state {state.name}"):
        CALLS[event](sm)
    assert sm.state is state


@pytest.mark.parametrize("event", ["on_resumed", "on_resume_failed"])
def test_resumption_events_need_a_resumable_session(event: str) -> None:
    sm = enabled(resume=False)
    (token,) = send(sm, 1)
    with pytest.raises(RuntimeError, match=f"{event} needs a resumable session"):
        CALLS[event](sm)
    assert sm.state is SMState.ENABLED
    assert sm.sm_unacked_list == [token]


# -- sending and acknowledging ---------------------------------------------------------------


def test_sent_tokens_wait_for_acknowledgement_in_order() -> None:
    sm = enabled()
    tokens = send(sm, 3)
    assert sm.sm_unacked_list == tokens
    assert states(tokens) == [S.SENT] * 3


@pytest.mark.parametrize("state", [S.ABORTED, S.DROPPED, S.SENT_WITHOUT_SM])
def test_only_queued_tokens_can_be_sent(state: StanzaState) -> None:
    sm = enabled()
    (token,) = make_tokens(1)
    token._set_state(state)
    with pytest.raises(RuntimeError, match="not queued"):
        sm.on_sent(token)
    assert sm.sm_unacked_list == []


def test_a_sent_token_must_be_awaiting_acknowledgement() -> None:
    sm = enabled()
    (stray,) = make_tokens(1)
    stray._set_state(S.SENT)
    with pytest.raises(RuntimeError, match="not awaiting acknowledgement"):
        sm.on_sent(stray)
    assert sm.sm_unacked_list == []


@pytest.mark.parametrize("h", range(6))
def test_ack_of_h_acknowledges_the_h_oldest(h: int) -> None:
    sm = enabled()
    tokens = send(sm, 5)
    assert sm.on_ack(h) == tokens[:h]
    assert states(tokens) == [S.ACKED] * h + [S.SENT] * (5 - h)
    assert sm.sm_unacked_list == tokens[h:]
    assert sm.sm_outbound_base == h


def test_a_repeated_h_acknowledges_nothing_more() -> None:
    sm = enabled()
    tokens = send(sm, 4)
    assert sm.on_ack(2) == tokens[:2]
    assert sm.on_ack(2) == []
    assert sm.on_ack(4) == tokens[2:]
    assert sm.on_ack(4) == []
    assert sm.sm_unacked_list == []


def test_acknowledged_tokens_fire_their_waiters() -> None:
    sm = enabled()
    (token,) = send(sm, 1)
    results: list[object] = []
    token.deferred().addBoth(results.append)
    sm.on_ack(1)
    assert results == [None]


def test_callbacks_see_the_session_already_updated() -> None:
    sm = enabled()
    seen: list[tuple[int, StanzaState]] = []
    tokens = make_tokens(3, on_state_change=lambda t, s: seen.append((sm.sm_outbound_base, s)))
    for token in tokens:
        sm.on_sent(token)
    seen.clear()
    sm.on_ack(3)
    assert seen == [(3, S.ACKED)] * 3


def test_handled_count_too_high() -> None:
    sm = enabled()
    tokens = send(sm, 3)
    sm.on_ack(1)
    with pytest.raises(HandledCountTooHigh) as caught:
        sm.on_ack(4)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.h, error.send_count) == (4, 3)
    assert "h=4" in str(error)
    assert "3" in str(error)
    # nothing changed
    assert sm.sm_unacked_list == tokens[1:]
    assert sm.sm_outbound_base == 1
    assert states(tokens) == [S.ACKED, S.SENT, S.SENT]


def test_an_h_going_backwards_counts_as_too_high() -> None:
    sm = enabled()
    send(sm, 3)
    sm.on_ack(2)
    with pytest.raises(HandledCountTooHigh) as caught:
        sm.on_ack(1)
    assert caught.value.send_count == 3


def test_handled_count_too_high_element() -> None:
    element = HandledCountTooHigh(10, 7).to_element()
    assert element.tag == f"{{{SM_NS}}}handled-count-too-high"
    assert (element.get("h"), element.get("send-count")) == ("10", "7")
    assert etree.tostring(element) == (
        b'<handled-count-too-high xmlns="urn:xmpp:sm:3" h="10" send-count="7"/>'
    )


@pytest.mark.parametrize("h", [-1, MODULUS, MODULUS + 5])
def test_an_h_outside_32_bits_is_refused(h: int) -> None:
    sm = enabled()
    send(sm, 2)
    with pytest.raises(ValueError, match="h must be in") as caught:
        sm.on_ack(h)
    assert not isinstance(caught.value, HandledCountTooHigh)
    assert len(sm.sm_unacked_list) == 2


def test_unacked_list_is_a_copy() -> None:
    sm = enabled()
    tokens = send(sm, 2)
    copy = sm.sm_unacked_list
    copy.clear()
    copy.extend(make_tokens(5))
    assert sm.sm_unacked_list == tokens
    assert sm.sm_unacked_list is not sm.sm_unacked_list
    assert sm.on_ack(2) == tokens


# -- counters wrap at 2**32 ------------------------------------------------------------------


def test_the_inbound_counter_wraps() -> None:
    sm = enabled(MODULUS - 2)
    assert sm.ack_answer() == MODULUS - 2
    answers = []
    for _ in range(4):
        sm.on_received()
        answers.append(sm.ack_answer())
    assert answers == [MODULUS - 1, 0, 1, 2]
    assert sm.sm_inbound_ctr == 2


def test_the_outbound_counter_wraps() -> None:
    sm = enabled(MODULUS - 2)
    tokens = send(sm, 7)
    assert sm.on_ack(3) == tokens[:5]
    assert sm.sm_outbound_base == 3
    assert sm.on_ack(4) == tokens[5:6]
    with pytest.raises(HandledCountTooHigh) as caught:
        sm.on_ack(6)
    assert (caught.value.h, caught.value.send_count) == (6, 5)
    assert sm.on_ack(5) == tokens[6:]


def test_ack_just_below_the_wrap() -> None:
    sm = enabled(MODULUS - 3)
    tokens = send(sm, 3)
    assert sm.on_ack(MODULUS - 1) == tokens[:2]
    assert sm.on_ack(0) == tokens[2:]


# -- resumption ------------------------------------------------------------------------------


def test_resumed_acknowledges_and_returns_the_rest_in_order() -> None:
    sm, tokens = lost_with(5, acked=2)
    resend = sm.on_resumed(3)
    assert resend == tokens[3:]
    assert states(tokens) == [S.ACKED] * 3 + [S.SENT] * 2
    assert sm.state is SMState.ENABLED
    assert sm.sm_outbound_base == 3
    # written again first, then something new: no duplicates, order kept
    for token in resend:
        sm.on_sent(token)
    (new,) = send(sm, 1, first=6)
    assert sm.sm_unacked_list == [*tokens[3:], new]
    assert states(tokens[3:]) == [S.SENT] * 2
    assert sm.on_ack(6) == [*tokens[3:], new]


def test_resumed_with_everything_acknowledged() -> None:
    sm, tokens = lost_with(2)
    assert sm.on_resumed(2) == []
    assert states(tokens) == [S.ACKED] * 2


def test_resumed_with_a_count_too_high_changes_nothing() -> None:
    sm, tokens = lost_with(3, acked=1)
    with pytest.raises(HandledCountTooHigh):
        sm.on_resumed(4)
    assert sm.state is SMState.ENABLED
    assert sm.sm_outbound_base == 1
    assert sm.sm_unacked_list == tokens[1:]


def test_resume_failed_with_h_resends_the_rest_once() -> None:
    sm, tokens = lost_with(5, acked=1)
    outcome = sm.on_resume_failed(2)
    assert outcome == ResumeFailedOutcome(acked=tuple(tokens[1:2]), resend=tuple(tokens[2:]))
    assert states(tokens) == [S.ACKED, S.ACKED, S.ACTIVE, S.ACTIVE, S.ACTIVE]
    assert_reset(sm)
    # a fresh session: they are sent as new stanzas, each once
    sm.on_enabled("sess-2", True)
    for token in outcome.resend:
        sm.on_sent(token)
    assert sm.sm_unacked_list == tokens[2:]
    assert sm.on_ack(3) == tokens[2:]


@pytest.mark.parametrize("policy", list(ResendPolicy))
def test_with_h_the_policy_does_not_matter(policy: ResendPolicy) -> None:
    sm, tokens = lost_with(2)
    outcome = sm.on_resume_failed(0, policy=policy)
    assert outcome == ResumeFailedOutcome(resend=tuple(tokens))


def test_resume_failed_without_h_disconnects_by_default() -> None:
    sm, tokens = lost_with(4, acked=1)
    results: list[object] = []
    tokens[3].deferred().addBoth(results.append)
    outcome = sm.on_resume_failed(None)
    assert outcome == ResumeFailedOutcome(disconnected=tuple(tokens[1:]))
    assert states(tokens) == [S.ACKED] + [S.DISCONNECTED] * 3
    assert len(results) == 1
    assert_reset(sm)


def test_resume_failed_without_h_may_resend() -> None:
    sm, tokens = lost_with(3, acked=1)
    outcome = sm.on_resume_failed(None, policy=ResendPolicy.RESEND)
    assert outcome == ResumeFailedOutcome(resend=tuple(tokens[1:]))
    assert states(tokens) == [S.ACKED, S.ACTIVE, S.ACTIVE]
    assert_reset(sm)


def test_resume_failed_with_a_count_too_high_changes_nothing() -> None:
    sm, tokens = lost_with(2)
    with pytest.raises(HandledCountTooHigh):
        sm.on_resume_failed(3)
    assert sm.state is SMState.ENABLED
    assert sm.sm_id == "sess-1"
    assert states(tokens) == [S.SENT, S.SENT]


# -- destroy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
def test_destroy_disconnects_every_unacked_token(resume: bool) -> None:
    sm = enabled(resume=resume)
    tokens = send(sm, 3)
    sm.on_ack(1)
    sm.on_received()
    assert sm.destroy() == tokens[1:]
    assert states(tokens) == [S.ACKED, S.DISCONNECTED, S.DISCONNECTED]
    assert_reset(sm)
    assert sm.destroy() == []


def test_a_destroyed_session_can_be_enabled_again() -> None:
    sm = enabled()
    send(sm, 2)
    sm.destroy()
    sm.on_enabled("sess-2", False)
    assert sm.sm_id == "sess-2"
    assert sm.sm_unacked_list == []


# -- properties ------------------------------------------------------------------------------

OPS = st.lists(st.sampled_from(["send", "ack", "too-high", "receive", "resume"]), max_size=40)


@given(
    start=st.one_of(st.just(0), st.integers(MODULUS - 10, MODULUS - 1), st.integers(0, MODULUS)),
    ops=OPS,
    data=st.data(),
)
def test_random_sends_and_acks_keep_the_invariants(
    start: int, ops: list[str], data: st.DataObject
) -> None:
    start %= MODULUS
    acked_seen: list[StanzaToken] = []

    def record(token: StanzaToken, state: StanzaState) -> None:
        if state is S.ACKED:
            acked_seen.append(token)

    sm = enabled(start)
    sent: list[StanzaToken] = []
    acked: list[StanzaToken] = []
    received = 0
    for op in ops:
        unacked = len(sent) - len(acked)
        if op == "send":
            count = data.draw(st.integers(1, 4))
            for token in make_tokens(count, len(sent), on_state_change=record):
                sm.on_sent(token)
                sent.append(token)
        elif op == "ack":
            h = (sm.sm_outbound_base + data.draw(st.integers(0, unacked))) % MODULUS
            acked.extend(sm.on_ack(h))
        elif op == "too-high":
            h = (sm.sm_outbound_base + unacked + data.draw(st.integers(1, 1000))) % MODULUS
            with pytest.raises(HandledCountTooHigh):
                sm.on_ack(h)
        elif op == "receive":
            sm.on_received()
            received += 1
        else:
            h = (sm.sm_outbound_base + data.draw(st.integers(0, unacked))) % MODULUS
            before = sm.sm_unacked_list
            resend = sm.on_resumed(h)
            acked.extend(before[: len(before) - len(resend)])
            assert resend == before[len(before) - len(resend) :]
            for token in resend:
                sm.on_sent(token)

        assert len(sm.sm_unacked_list) == len(sent) - len(acked)
        assert acked == sent[: len(acked)]  # acknowledged in FIFO order
        assert sm.sm_unacked_list == sent[len(acked) :]
        assert acked_seen == acked  # each ACKED exactly once, oldest first
        assert all(t.state is S.ACKED for t in acked)
        assert all(t.state is S.SENT for t in sm.sm_unacked_list)
        assert sm.sm_outbound_base == (start + len(acked)) % MODULUS
        assert sm.ack_answer() == (start + received) % MODULUS
