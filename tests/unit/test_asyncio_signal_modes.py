"""The connect modes of the asyncio face's signals, under ``asyncio.run`` (no reactor needed:
signals are Deferred-based in the core)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from twisted.internet import defer

from txxmppnode.asyncio_compat.signal import CoroutineSignal, Signal


async def turns(count: int = 5) -> None:
    """Let the loop run *count* iterations (tasks and call_soon callbacks), no time passing."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_future_is_an_asyncio_future_and_next_its_alias() -> None:
    async def scenario() -> Any:
        signal: Signal[[int]] = Signal("test")
        waiting = signal.future()
        assert isinstance(waiting, asyncio.Future)
        assert signal  # somebody waits
        signal.emit(3)
        return await waiting, Signal.next is Signal.future

    assert asyncio.run(scenario()) == (3, True)


def test_strong_and_weak_listeners_and_true_disconnects() -> None:
    class Owner:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def listener(self, value: int) -> None:
            self.seen.append(value)

    async def scenario() -> dict[str, Any]:
        signal: Signal[[int]] = Signal("test")
        owner = Owner()
        seen = owner.seen
        signal.connect(owner.listener, Signal.WEAK)
        once: list[int] = []
        signal.connect(lambda value: once.append(value) or True)
        signal.emit(1)
        del owner
        gc.collect()
        left = len(signal)
        signal.emit(2)
        return {"weak": seen, "once": once, "left": left}

    assert asyncio.run(scenario()) == {"weak": [1], "once": [1], "left": 0}


def test_a_weak_coroutine_method_runs_as_a_task_while_alive() -> None:
    class Owner:
        def __init__(self) -> None:
            self.seen: list[int] = []

        async def listener(self, value: int) -> None:
            await asyncio.sleep(0)
            self.seen.append(value)

    async def scenario() -> list[int]:
        signal: Signal[[int]] = Signal("test")
        owner = Owner()
        signal.connect(owner.listener, Signal.WEAK)
        signal.emit(1)
        await turns()
        return owner.seen

    assert asyncio.run(scenario()) == [1]


def test_auto_future_takes_an_asyncio_future_or_a_deferred() -> None:
    async def scenario() -> dict[str, Any]:
        signal: Signal[[int]] = Signal("test")
        future = asyncio.get_running_loop().create_future()
        deferred: defer.Deferred[Any] = defer.Deferred()
        signal.connect(future, Signal.AUTO_FUTURE)
        signal.connect(deferred, Signal.AUTO_FUTURE)
        cancelled = asyncio.get_running_loop().create_future()
        signal.connect(cancelled, Signal.AUTO_FUTURE)
        cancelled.cancel()
        await turns(1)  # the done callback disconnects the cancelled one
        connected = len(signal)
        signal.emit(9)
        signal.emit(10)
        return {
            "future": await future,
            "deferred": deferred.result,
            "connected": connected,
            "left": len(signal),
        }

    assert asyncio.run(scenario()) == {"future": 9, "deferred": 9, "connected": 2, "left": 0}


def test_auto_future_refuses_a_callable() -> None:
    async def scenario() -> None:
        with pytest.raises(TypeError, match="AUTO_FUTURE connects a future"):
            Signal("test").connect(print, Signal.AUTO_FUTURE)

    asyncio.run(scenario())


def test_spawn_with_loop_runs_a_task_per_emission_and_never_disconnects() -> None:
    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        signal: Signal[[int]] = Signal("test")
        seen: list[tuple[int, bool]] = []

        async def listener(value: int) -> bool:
            seen.append((value, asyncio.get_running_loop() is loop))
            return True  # a task's result: does not disconnect

        signal.connect(listener, Signal.SPAWN_WITH_LOOP(loop))
        signal.connect(listener, Signal.SPAWN_WITH_LOOP(None))  # the face's or running loop
        signal.emit(1)
        during = list(seen)  # tasks, not calls: nothing ran yet
        signal.emit(2)
        await turns()
        return {"during": during, "seen": sorted(seen), "left": len(signal)}

    result = asyncio.run(scenario())
    assert result == {
        "during": [],
        "seen": [(1, True), (1, True), (2, True), (2, True)],
        "left": 2,
    }


def test_async_with_loop_calls_soon_after_the_emission() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        signal: Signal[[str]] = Signal("test")
        order: list[str] = []
        signal.connect(lambda value: order.append(f"later {value}"), Signal.ASYNC_WITH_LOOP(loop))
        signal.connect(lambda value: order.append(f"now {value}"))
        signal.emit("a")
        order.append("emitted")
        await turns(1)
        return order

    assert asyncio.run(scenario()) == ["now a", "emitted", "later a"]


def test_context_connect_on_the_face() -> None:
    async def scenario() -> list[int]:
        signal: Signal[[int]] = Signal("test")
        seen: list[int] = []
        with signal.context_connect(seen.append):
            signal.emit(1)
        signal.emit(2)
        return seen

    assert asyncio.run(scenario()) == [1]


def test_a_coroutine_signal_listener_returning_true_is_disconnected() -> None:
    async def scenario() -> list[str]:
        signal: CoroutineSignal[[]] = CoroutineSignal("test")
        calls: list[str] = []

        async def awaited() -> None:
            await asyncio.sleep(0)
            calls.append("awaited")

        def once() -> bool:
            calls.append("once")
            return True

        signal.connect(awaited)
        signal.connect(once, Signal.STRONG)
        await signal.emit_and_wait()
        await signal.emit_and_wait()
        return calls

    assert asyncio.run(scenario()) == ["awaited", "once", "awaited"]
