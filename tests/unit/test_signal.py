"""The core signal API: future(), connect modes, listeners that disconnect themselves, and
context_connect."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import capturedLogs

from txxmppnode.signal import ConnectMode, Event, Signal, emit_and_wait


class Owner:
    """Something with a bound method, to be held weakly."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def listener(self, value: Any) -> None:
        self.seen.append(value)


# -- future() --------------------------------------------------------------------------------


def test_future_fires_with_the_next_emission_only() -> None:
    signal: Signal[[int]] = Signal("test")
    waiting = signal.future()
    assert not waiting.called
    signal.emit(1)
    assert waiting.result == 1
    signal.emit(2)
    assert waiting.result == 1
    assert signal.next is not None and Signal.next is Signal.future


@pytest.mark.parametrize(("args", "value"), [((), None), ((1,), 1), ((1, 2), (1, 2))])
def test_future_value_by_number_of_arguments(args: tuple[Any, ...], value: Any) -> None:
    signal: Signal[...] = Signal("test")
    waiting = signal.future()
    signal.emit(*args)
    assert waiting.result == value


def test_a_cancelled_future_leaves_nothing_behind() -> None:
    signal: Signal[[int]] = Signal("test")
    waiting = signal.future()
    assert signal  # an emission would reach somebody
    waiting.cancel()
    failures: list[Any] = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(defer.CancelledError)
    assert not signal and signal._waiters == []
    signal.emit(1)  # nothing to fire, nothing raised


def test_a_signal_with_only_a_future_is_true_so_guarded_emissions_reach_it() -> None:
    signal: Signal[[int]] = Signal("test")
    assert not signal and len(signal) == 0
    waiting = signal.future()
    assert signal and len(signal) == 0  # len() counts listeners only
    if signal:  # what the stream does before emitting per stanza
        signal.emit(7)
    assert waiting.result == 7


# -- listeners returning True ----------------------------------------------------------------


def test_a_listener_returning_true_is_disconnected_after_that_call() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []

    def until_two(value: int) -> bool:
        seen.append(value)
        return value == 2

    signal.connect(until_two)
    for value in (1, 2, 3):
        signal.emit(value)
    assert seen == [1, 2]
    assert len(signal) == 0


@pytest.mark.parametrize("result", [1, "yes", [0], defer.succeed(None)], ids=repr)
def test_other_true_values_keep_the_listener(result: Any) -> None:
    signal: Signal[[]] = Signal("test")
    calls: list[None] = []

    def listener() -> Any:
        calls.append(None)
        return result

    signal.connect(listener)
    signal.emit()
    signal.emit()
    assert len(calls) == 2 and len(signal) == 1


def test_a_coroutine_listener_runs_and_its_failure_is_logged() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []

    async def listener(value: int) -> None:
        seen.append(value)
        raise ValueError("broken")

    signal.connect(listener)
    with capturedLogs() as events:
        signal.emit(5)
    assert seen == [5]
    assert any(event.get("log_failure") is not None for event in events)
    assert len(signal) == 1


def test_a_coroutine_signal_disconnects_listeners_returning_true() -> None:
    signal: Signal[[]] = Signal("test")
    calls: list[str] = []

    def once() -> bool:
        calls.append("once")
        return True

    signal.connect(once)
    defer.Deferred.fromCoroutine(emit_and_wait(signal))
    defer.Deferred.fromCoroutine(emit_and_wait(signal))
    assert calls == ["once"]


# -- WEAK ------------------------------------------------------------------------------------


def test_a_weak_bound_method_does_not_keep_its_object_and_is_dropped() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []
    owner = Owner(seen)
    signal.connect(owner.listener, Signal.WEAK)
    signal.emit(1)
    assert seen == [1] and len(signal) == 1
    del owner
    gc.collect()
    assert len(signal) == 0  # removed when collected, before any emission
    signal.emit(2)
    assert seen == [1]


def test_a_weak_function_is_dropped_when_collected() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []

    def listener(value: int) -> None:
        seen.append(value)

    signal.connect(listener, ConnectMode.WEAK)
    signal.emit(1)
    del listener
    gc.collect()
    signal.emit(2)
    assert seen == [1] and len(signal) == 0


def test_a_strong_bound_method_keeps_its_object() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []
    owner = Owner(seen)
    signal.connect(owner.listener)  # STRONG is the default
    del owner
    gc.collect()
    signal.emit(1)
    assert seen == [1]


def test_a_weak_signal_outlived_by_its_listener_does_no_harm() -> None:
    seen: list[int] = []
    owner = Owner(seen)
    signal: Signal[[int]] = Signal("test")
    signal.connect(owner.listener, Signal.WEAK)
    del signal
    gc.collect()
    del owner  # the weak reference's callback finds no signal
    gc.collect()


def test_a_weak_listener_returning_true_is_disconnected() -> None:
    signal: Signal[[]] = Signal("test")

    class Once:
        def __call__(self) -> bool:
            return True

    once = Once()
    signal.connect(once, Signal.WEAK)
    signal.emit()
    assert len(signal) == 0


# -- AUTO_FUTURE -----------------------------------------------------------------------------


def test_auto_future_fires_the_deferred_once_and_disconnects() -> None:
    signal: Signal[[int, str]] = Signal("test")
    waiting: defer.Deferred[Any] = defer.Deferred()
    signal.connect(waiting, Signal.AUTO_FUTURE)
    assert len(signal) == 1
    signal.emit(1, "a")
    assert waiting.result == (1, "a")
    assert len(signal) == 0
    signal.emit(2, "b")
    assert waiting.result == (1, "a")


def test_auto_future_is_disconnected_when_the_deferred_is_cancelled() -> None:
    signal: Signal[[int]] = Signal("test")
    waiting: defer.Deferred[Any] = defer.Deferred()
    signal.connect(waiting, Signal.AUTO_FUTURE)
    waiting.cancel()
    waiting.addErrback(lambda failure: None)
    assert len(signal) == 0
    signal.emit(1)


def test_modes_refuse_what_they_cannot_hold() -> None:
    signal: Signal[[int]] = Signal("test")
    with pytest.raises(TypeError, match="AUTO_FUTURE connects a Deferred"):
        signal.connect(lambda value: None, Signal.AUTO_FUTURE)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="must be callable"):
        signal.connect(defer.Deferred(), Signal.WEAK)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="must be callable"):
        signal.connect(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unknown connect mode"):
        signal.connect(lambda value: None, "spawn")  # type: ignore[call-overload]
    assert len(signal) == 0


# -- context_connect -------------------------------------------------------------------------


def test_context_connect_disconnects_on_exit_also_after_an_error() -> None:
    signal: Signal[[int]] = Signal("test")
    seen: list[int] = []
    with signal.context_connect(seen.append) as token:
        assert isinstance(token, int)
        signal.emit(1)
    signal.emit(2)
    with pytest.raises(RuntimeError), signal.context_connect(seen.append):
        signal.emit(3)
        raise RuntimeError("leaves the block")
    signal.emit(4)
    assert seen == [1, 3] and len(signal) == 0


def test_signals_and_events_keep_no_instance_dict_but_can_be_weakly_referenced() -> None:
    signal: Signal[[]] = Signal("s")
    assert not hasattr(signal, "__dict__")
    assert not hasattr(Event(), "__dict__")
    assert weakref.ref(signal)() is signal
