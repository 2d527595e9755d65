"""The asyncio face's conversions, without a network and without a reactor.

Signals, events and tokens are Deferred-based in the core and need no reactor, so they are
exercised here under ``asyncio.run`` in the test process.  Nothing here may install a reactor
(this process has Twisted's default one); what needs the asyncio reactor runs in subprocesses
(``tests/integration/test_client_faces.py``).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet import defer

import txxmppnode
from txxmppnode import asyncio_compat
from txxmppnode import signal as core_signal
from txxmppnode.asyncio_compat._bridge import as_deferred, awaited_by_twisted
from txxmppnode.asyncio_compat.signal import CoroutineSignal, Event, Signal
from txxmppnode.asyncio_compat.stream import StanzaToken
from txxmppnode.stanza import Message
from txxmppnode.token import StanzaState


def test_every_public_name_has_an_asyncio_counterpart() -> None:
    assert set(txxmppnode.__all__) <= set(asyncio_compat.__all__)
    for name in asyncio_compat.__all__:
        assert getattr(asyncio_compat, name) is not None


def test_framework_neutral_names_are_the_same_objects() -> None:
    for name in ("JID", "Message", "IQ", "PresenceState", "StanzaState", "errors",
                 "STARTTLSConnector", "SecurityLayer"):  # fmt: skip
        assert getattr(asyncio_compat, name) is getattr(txxmppnode, name)
    for name in ("Client", "PresenceManagedClient", "UseConnected", "StanzaStream", "Service"):
        assert getattr(asyncio_compat, name) is not getattr(txxmppnode, name)


def test_importing_the_face_installs_no_reactor() -> None:
    code = "import sys, txxmppnode.asyncio_compat; print('twisted.internet.reactor' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_signal_next_is_an_asyncio_future_and_listeners_may_be_coroutines() -> None:
    async def scenario() -> list[Any]:
        signal: Signal[[int]] = Signal("test")
        seen: list[Any] = []

        async def listener(value: int) -> None:
            await asyncio.sleep(0)
            seen.append(("coroutine", value))

        signal.connect(listener)
        token = signal.connect(lambda value: seen.append(("plain", value)))
        following = signal.next()
        assert isinstance(following, asyncio.Future)
        signal.emit(1)
        seen.append(("next", await following))
        signal.disconnect(token)
        signal.emit(2)
        await asyncio.sleep(0.01)
        return seen

    assert asyncio.run(scenario()) == [
        ("plain", 1),
        ("next", 1),
        ("coroutine", 1),
        ("coroutine", 2),
    ]


def test_cancelling_next_removes_the_waiter_from_the_core_signal() -> None:
    async def scenario() -> int:
        core: core_signal.Signal[[]] = core_signal.Signal("core")
        signal: Signal[[]] = Signal(core=core)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(signal.next(), 0.01)
        return len(core._waiters)

    assert asyncio.run(scenario()) == 0


def test_a_failing_coroutine_listener_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        signal: Signal[[]] = Signal("Noisy.on_thing")

        async def broken() -> None:
            raise ValueError("boom")

        signal.connect(broken)
        signal.emit()
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="txxmppnode.asyncio_compat._bridge"):
        asyncio.run(scenario())
    assert "listener of Noisy.on_thing failed" in caplog.text
    assert "ValueError: boom" in caplog.text


def test_coroutine_signal_awaits_each_listener_in_turn() -> None:
    async def scenario() -> list[str]:
        signal: CoroutineSignal[[]] = CoroutineSignal("before")
        order: list[str] = []

        async def slow() -> None:
            await asyncio.sleep(0.02)
            order.append("slow")

        signal.connect(slow)
        signal.connect(lambda: order.append("plain"))
        waiter = signal.next()
        await signal.emit_and_wait()
        order.append("emitted")
        await waiter
        return order

    assert asyncio.run(scenario()) == ["slow", "plain", "emitted"]


def test_event_wait() -> None:
    async def scenario() -> bool:
        event = Event()
        waiting = asyncio.ensure_future(event.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        event.set()
        return await waiting and event.is_set()

    assert asyncio.run(scenario())


def test_stanza_token_is_awaitable_and_reports_failures() -> None:
    async def scenario() -> list[Any]:
        seen: list[Any] = []
        token = StanzaToken(Message(body="hi"), on_state_change=lambda t, s: seen.append((t, s)))
        token.core._set_state(StanzaState.SENT_WITHOUT_SM)
        await token
        aborted = StanzaToken(Message(body="no"))
        aborted.abort()
        with pytest.raises(RuntimeError, match="aborted"):
            await aborted
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 1
    token, state = seen[0]
    assert isinstance(token, StanzaToken) and state is StanzaState.SENT_WITHOUT_SM


def test_cancelling_a_token_future_stops_that_waiter_only() -> None:
    async def scenario() -> StanzaState:
        token = StanzaToken(Message(body="hi"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(token.future(), 0.01)
        assert token.core._waiters == []
        token.core._set_state(StanzaState.SENT)
        token.core._set_state(StanzaState.ACKED)
        await token
        return token.state

    assert asyncio.run(scenario()) is StanzaState.ACKED


def test_twisted_code_awaits_coroutine_callbacks() -> None:
    async def callback(value: int) -> int:
        await asyncio.sleep(0.01)
        return value * 2

    async def twisted_side(function: Any) -> int:
        result: int = await function(21)
        return result

    async def scenario() -> int:
        wrapped = awaited_by_twisted(callback)
        return await defer.Deferred.fromCoroutine(twisted_side(wrapped)).asFuture(
            asyncio.get_running_loop()
        )

    assert asyncio.run(scenario()) == 42


def test_a_cancelled_task_fails_the_deferred_with_twisteds_cancelled_error() -> None:
    async def scenario() -> type[BaseException]:
        task = asyncio.ensure_future(asyncio.sleep(10))
        deferred = as_deferred(task, asyncio.get_running_loop())
        failures: list[Any] = []
        deferred.addErrback(failures.append)
        task.cancel()
        await asyncio.sleep(0.01)
        return type(failures[0].value)

    assert asyncio.run(scenario()) is defer.CancelledError
