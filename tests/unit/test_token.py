"""Stanza tokens: the transition table, state callbacks, abort, and waiting on the outcome."""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure

from txxmppnode import Message
from txxmppnode.token import TRANSITIONS, StanzaState, StanzaToken

S = StanzaState
FINAL = [s for s in S if not TRANSITIONS[s]]
ALLOWED = [(a, b) for a in S for b in sorted(TRANSITIONS[a], key=lambda s: s.value)]
FORBIDDEN = [(a, b) for a in S for b in S if b not in TRANSITIONS[a]]
SUCCESS = {S.SENT_WITHOUT_SM, S.ACKED}
EXPECTED_ERRORS: dict[StanzaState, tuple[type[BaseException], str]] = {
    S.DISCONNECTED: (ConnectionError, "destroyed"),
    S.ABORTED: (RuntimeError, "^stanza aborted$"),
    S.DROPPED: (RuntimeError, "^stanza dropped by an outbound filter$"),
    S.FAILED: (OSError, "^write failed$"),
}


def path_to(target: StanzaState) -> list[StanzaState]:
    """The shortest allowed sequence of states from ACTIVE to *target*, found in the table."""
    queue: deque[list[StanzaState]] = deque([[]])
    while queue:
        path = queue.popleft()
        here = path[-1] if path else S.ACTIVE
        if here is target:
            return path
        queue.extend([*path, nxt] for nxt in TRANSITIONS[here] if nxt not in path)
    raise AssertionError(f"{target} unreachable")


def move(token: StanzaToken, state: StanzaState) -> None:
    token._set_state(state, OSError("write failed") if state is S.FAILED else None)


def token_in(state: StanzaState, **kwargs: Any) -> StanzaToken:
    token = StanzaToken(Message(to="romeo@example.net", id_="m1"), **kwargs)
    for step in path_to(state):
        move(token, step)
    return token


def outcome(d: defer.Deferred[Any]) -> list[object]:
    """The results *d* has fired with so far (consuming a failure)."""
    results: list[object] = []
    d.addBoth(results.append)
    return results


def errors_logged(events: Sequence[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("log_failure") is not None or e.get("isError")]


# -- the table -------------------------------------------------------------------------------


def test_a_new_token_is_active() -> None:
    token = StanzaToken(Message(id_="x"))
    assert token.state is S.ACTIVE
    assert token.exception is None
    assert token.stanza.get("id") == "x"


def test_the_table_covers_every_state_and_final_states_are_the_documented_ones() -> None:
    assert set(TRANSITIONS) == set(S)
    assert set(FINAL) == set(S) - {S.ACTIVE, S.SENT}
    assert TRANSITIONS[S.SENT] == {S.ACKED, S.DISCONNECTED, S.ACTIVE}


@pytest.mark.parametrize(("before", "after"), ALLOWED, ids=lambda s: s.name)
def test_allowed_transitions(before: StanzaState, after: StanzaState) -> None:
    seen: list[tuple[StanzaToken, StanzaState]] = []
    token = token_in(before, on_state_change=lambda t, s: seen.append((t, s)))
    seen.clear()
    move(token, after)
    assert token.state is after
    assert seen == [(token, after)]


@pytest.mark.parametrize(("before", "after"), FORBIDDEN, ids=lambda s: s.name)
def test_forbidden_transitions_raise_and_change_nothing(
    before: StanzaState, after: StanzaState
) -> None:
    seen: list[StanzaState] = []
    token = token_in(before, on_state_change=lambda t, s: seen.append(s))
    seen.clear()
    with pytest.raises(RuntimeError, match=f"from {before.name} to {after.name}"):
        move(token, after)
    assert token.state is before
    assert seen == []


def test_failed_needs_an_exception_and_keeps_it() -> None:
    token = token_in(S.ACTIVE)
    with pytest.raises(ValueError, match="exception"):
        token._set_state(S.FAILED)
    error = OSError("boom")
    token._set_state(S.FAILED, error)
    assert token.exception is error


def test_an_exception_is_refused_with_other_states() -> None:
    token = token_in(S.ACTIVE)
    with pytest.raises(ValueError, match="exception"):
        token._set_state(S.SENT, OSError("boom"))
    assert token.state is S.ACTIVE


# -- callbacks and abort ---------------------------------------------------------------------


def test_on_state_change_sees_every_change_in_order() -> None:
    seen: list[tuple[StanzaToken, StanzaState, StanzaState]] = []
    token = StanzaToken(Message(), on_state_change=lambda t, s: seen.append((t, s, t.state)))
    for state in (S.SENT, S.ACTIVE, S.SENT, S.ACKED):
        token._set_state(state)
    assert seen == [
        (token, S.SENT, S.SENT),
        (token, S.ACTIVE, S.ACTIVE),
        (token, S.SENT, S.SENT),
        (token, S.ACKED, S.ACKED),
    ]


def test_a_raising_callback_is_logged_and_does_not_stop_the_transition() -> None:
    def broken(token: StanzaToken, state: StanzaState) -> None:
        raise ZeroDivisionError("callback bug")

    token = StanzaToken(Message(), on_state_change=broken)
    waiter = outcome(token.deferred())
    with capturedLogs() as events:
        token._set_state(S.SENT_WITHOUT_SM)
    assert token.state is S.SENT_WITHOUT_SM
    assert waiter == [None]
    (event,) = errors_logged(events)
    assert isinstance(event["log_failure"].value, ZeroDivisionError)


def test_abort_while_queued() -> None:
    seen: list[StanzaState] = []
    token = StanzaToken(Message(), on_state_change=lambda t, s: seen.append(s))
    token.abort()
    assert token.state is S.ABORTED
    assert seen == [S.ABORTED]


@pytest.mark.parametrize("state", [s for s in S if s is not S.ACTIVE], ids=lambda s: s.name)
def test_abort_is_refused_once_no_longer_queued(state: StanzaState) -> None:
    token = token_in(state)
    with pytest.raises(RuntimeError, match="can only be aborted while queued"):
        token.abort()
    assert token.state is state


def test_repr_shows_tag_id_and_state() -> None:
    token = token_in(S.SENT)
    assert repr(token) == "<StanzaToken message id='m1' SENT>"


# -- waiting ---------------------------------------------------------------------------------


def check_outcome(results: list[object], state: StanzaState) -> None:
    assert len(results) == 1
    if state in SUCCESS:
        assert results == [None]
        return
    (failure,) = results
    assert isinstance(failure, Failure)
    error_type, pattern = EXPECTED_ERRORS[state]
    assert isinstance(failure.value, error_type)
    with pytest.raises(error_type, match=pattern):
        failure.raiseException()


@pytest.mark.parametrize("state", FINAL, ids=lambda s: s.name)
def test_waiters_fire_when_a_final_state_is_reached(state: StanzaState) -> None:
    token = StanzaToken(Message())
    path = path_to(state)
    first, second = token.deferred(), token.deferred()
    assert first is not second
    results = outcome(first), outcome(second)
    for step in path[:-1]:
        move(token, step)
        assert results == ([], [])
    move(token, path[-1])
    for result in results:
        check_outcome(result, state)


@pytest.mark.parametrize("state", FINAL, ids=lambda s: s.name)
def test_waiters_asked_for_in_a_final_state_have_already_fired(state: StanzaState) -> None:
    token = token_in(state)
    check_outcome(outcome(token.deferred()), state)
    check_outcome(outcome(token.deferred()), state)


def test_the_failed_waiter_gets_the_stored_exception() -> None:
    token = StanzaToken(Message())
    waiter = outcome(token.deferred())
    error = OSError("broken pipe")
    token._set_state(S.FAILED, error)
    (failure,) = waiter
    assert isinstance(failure, Failure)
    assert failure.value is error
    (later,) = outcome(token.deferred())
    assert isinstance(later, Failure)
    assert later.value is error


def test_sent_is_not_final_and_a_refused_resumption_keeps_waiting() -> None:
    token = StanzaToken(Message())
    results = outcome(token.deferred())
    token._set_state(S.SENT)
    token._set_state(S.ACTIVE)
    token._set_state(S.SENT)
    assert results == []
    token._set_state(S.ACKED)
    assert results == [None]


def test_await_token_in_a_twisted_coroutine() -> None:
    token = StanzaToken(Message())

    async def send() -> str:
        await token
        return "acked"

    done = outcome(defer.Deferred.fromCoroutine(send()))
    assert done == []
    token._set_state(S.SENT)
    assert done == []
    token._set_state(S.ACKED)
    assert done == ["acked"]


def test_await_token_raises_the_failure_in_the_coroutine() -> None:
    token = StanzaToken(Message())

    async def send() -> str:
        try:
            await token
        except ConnectionError as error:
            return f"lost: {error}"
        return "sent"

    done = outcome(defer.Deferred.fromCoroutine(send()))
    token._set_state(S.DISCONNECTED)
    assert len(done) == 1
    assert str(done[0]).startswith("lost: the stream was destroyed")


def test_await_a_token_that_is_already_done() -> None:
    token = token_in(S.SENT_WITHOUT_SM)

    async def send() -> int:
        await token
        return 1

    assert outcome(defer.Deferred.fromCoroutine(send())) == [1]


def test_cancelling_one_waiter_leaves_the_others() -> None:
    token = StanzaToken(Message())
    kept, cancelled = token.deferred(), token.deferred()
    kept_results, cancelled_results = outcome(kept), outcome(cancelled)
    cancelled.cancel()
    (failure,) = cancelled_results
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, defer.CancelledError)
    token._set_state(S.SENT_WITHOUT_SM)
    assert kept_results == [None]
    assert len(cancelled_results) == 1


def test_a_waiter_cancelled_by_an_earlier_waiter_while_firing() -> None:
    token = StanzaToken(Message())
    first, second = token.deferred(), token.deferred()
    first.addCallback(lambda _: second.cancel())
    second_results = outcome(second)
    token._set_state(S.SENT_WITHOUT_SM)
    assert first.called
    (failure,) = second_results
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, defer.CancelledError)


def test_a_callback_moving_the_token_on_keeps_order_and_fires_waiters_once() -> None:
    seen: list[StanzaState] = []

    def resend_at_once(token: StanzaToken, state: StanzaState) -> None:
        seen.append(state)
        if state is S.ACTIVE:
            token._set_state(S.SENT)

    token = token_in(S.SENT, on_state_change=resend_at_once)
    seen.clear()
    waiter = outcome(token.deferred())
    token._set_state(S.ACTIVE)
    assert token.state is S.SENT
    token._set_state(S.ACKED)
    assert seen == [S.ACTIVE, S.SENT, S.ACKED]
    assert waiter == [None]


# -- no noise from failures nobody waits for -------------------------------------------------


def test_the_check_for_unhandled_errors_works() -> None:
    with capturedLogs() as events:
        defer.fail(RuntimeError("nobody looked"))
        gc.collect()
    assert errors_logged(events)


@pytest.mark.parametrize("state", [s for s in FINAL if s not in SUCCESS], ids=lambda s: s.name)
def test_failing_without_waiters_logs_nothing(state: StanzaState) -> None:
    with capturedLogs() as events:
        token = token_in(state)
        consumed = token.deferred()
        consumed.addErrback(lambda f: None)
        del token, consumed
        gc.collect()
    assert errors_logged(events) == []


def test_cancelled_waiters_log_nothing_when_the_token_fails_later() -> None:
    with capturedLogs() as events:
        token = StanzaToken(Message())
        waiter = token.deferred()
        waiter.addErrback(lambda f: None)
        waiter.cancel()
        token._set_state(S.DISCONNECTED)
        del token, waiter
        gc.collect()
    assert errors_logged(events) == []
