"""Signals: listeners, one-shot waiters, cancellation, and the storage made on first use."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from txxmppnode.signal import Event, Signal, emit_and_wait


def test_a_signal_without_listeners_or_waiters_emits_nothing_and_has_length_zero() -> None:
    signal: Signal[[int]] = Signal("s")
    assert len(signal) == 0
    assert not signal
    signal.emit(1)  # nothing connected: nothing happens
    token = signal.connect(lambda n: None)
    assert len(signal) == 1
    signal.disconnect(token)
    signal.disconnect(token)  # unknown tokens are ignored
    assert len(signal) == 0


def test_next_fires_once_and_a_cancelled_waiter_never_fires() -> None:
    signal: Signal[[int]] = Signal("s")
    seen: list[Any] = []
    kept, cancelled = signal.next(), signal.next()
    kept.addCallback(seen.append)
    cancelled.addErrback(lambda f: seen.append(type(f.value).__name__))
    cancelled.cancel()
    signal.emit(7)
    signal.emit(8)
    assert seen == ["CancelledError", 7]


def test_a_waiter_made_by_a_listener_fires_with_that_emission_only() -> None:
    signal: Signal[[int]] = Signal("s")
    made: list[defer.Deferred[Any]] = []
    signal.connect(lambda n: made.append(signal.next()))
    signal.emit(1)  # listeners run before the waiters are taken
    assert made[0].result == 1
    signal.emit(2)
    assert made[1].result == 2
    assert len(made) == 2


def test_emit_and_wait_runs_listeners_then_fires_waiters() -> None:
    signal: Signal[[]] = Signal("s")
    order: list[str] = []
    waiter = signal.next()
    waiter.addCallback(lambda _: order.append("waiter"))
    signal.connect(lambda: order.append("listener"))
    defer.ensureDeferred(emit_and_wait(signal))
    assert order == ["listener", "waiter"]


def test_signals_and_events_keep_no_instance_dict() -> None:
    assert not hasattr(Signal("s"), "__dict__")
    assert not hasattr(Event(), "__dict__")
