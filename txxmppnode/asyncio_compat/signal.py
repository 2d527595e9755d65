"""Signals and events for asyncio code: the core's, with asyncio futures and coroutine listeners.

A :class:`Signal` here is a face over a :class:`txxmppnode.signal.Signal` (the core emits it):

* ``connect(listener, mode=None)`` takes a plain callable or a coroutine function; a coroutine
  function's coroutine runs as a task of the loop at each emission, and its failure is logged;
* ``future()`` (or ``next()``) returns an :class:`asyncio.Future` for the next emission
  (cancel it to stop waiting);
* ``disconnect(token)``, ``context_connect(...)``, ``emit(...)`` and ``len()`` are the core's.

The connect modes are those of the reference, ``Signal.STRONG`` (the default), ``Signal.WEAK``
and ``Signal.AUTO_FUTURE`` as in the core (``AUTO_FUTURE`` takes an :class:`asyncio.Future`
here, or a Deferred), and two that need the event loop:

``Signal.SPAWN_WITH_LOOP(loop)``
    the listener is a coroutine function; each emission starts its coroutine as a task of
    *loop* (the client's loop for ``None``), whose failure is logged.  The listener's result
    never disconnects it.
``Signal.ASYNC_WITH_LOOP(loop)``
    the listener is a plain callable, called by ``loop.call_soon`` after the emission rather
    than during it (so it sees the state after every listener ran); its result is ignored.

In the STRONG and WEAK modes a listener returning exactly ``True`` is disconnected.

A :class:`CoroutineSignal` (``before_stream_established``) is awaited by the core: a coroutine
listener is awaited before the next listener runs and before ``on_stream_established``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Generic, ParamSpec

from twisted.internet.defer import Deferred

from .. import signal as _core
from ._bridge import as_future, awaited_by_twisted, run_as_task, spawn

__all__ = [
    "AsyncWithLoop",
    "ConnectMode",
    "CoroutineSignal",
    "Event",
    "ListenerToken",
    "Signal",
    "SpawnWithLoop",
    "face_of_core_signal",
]

P = ParamSpec("P")
ListenerToken = _core.ListenerToken
ConnectMode = _core.ConnectMode


@dataclass(frozen=True)
class SpawnWithLoop:
    """The ``SPAWN_WITH_LOOP(loop)`` connect mode: a task of *loop* per emission."""

    loop: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True)
class AsyncWithLoop:
    """The ``ASYNC_WITH_LOOP(loop)`` connect mode: ``loop.call_soon`` per emission."""

    loop: asyncio.AbstractEventLoop | None = None


Mode = ConnectMode | SpawnWithLoop | AsyncWithLoop


def _loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    return loop if loop is not None else asyncio.get_running_loop()


class Signal(Generic[P]):
    """An event with listeners, for asyncio code.

    :param name: used in log messages about failing listeners.
    :param loop: the loop for futures and listener tasks (the running loop when ``None``).
    :param core: the core signal to face; a new one when ``None``.
    """

    def __init__(
        self,
        name: str = "signal",
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        core: _core.Signal[P] | None = None,
    ) -> None:
        self._core: _core.Signal[P] = core if core is not None else _core.Signal(name)
        self._loop = loop

    @property
    def name(self) -> str:
        """The name used in log messages."""
        return self._core.name

    @property
    def core(self) -> _core.Signal[P]:
        """The Twisted-side signal this one faces."""
        return self._core

    STRONG: Final = ConnectMode.STRONG
    WEAK: Final = ConnectMode.WEAK
    AUTO_FUTURE: Final = ConnectMode.AUTO_FUTURE

    @staticmethod
    def SPAWN_WITH_LOOP(loop: asyncio.AbstractEventLoop | None = None) -> SpawnWithLoop:
        """The connect mode that runs a coroutine function as a task of *loop* per emission."""
        return SpawnWithLoop(loop)

    @staticmethod
    def ASYNC_WITH_LOOP(loop: asyncio.AbstractEventLoop | None = None) -> AsyncWithLoop:
        """The connect mode that calls the listener with ``loop.call_soon`` per emission."""
        return AsyncWithLoop(loop)

    def connect(self, listener: Any, mode: Mode | None = None) -> ListenerToken:
        """Call *listener* on every emission until disconnected; return its token.

        By default (``STRONG``) a coroutine function (or any listener returning an
        awaitable) runs as a task.  *mode* is described in the module documentation.

        :raises TypeError: if *listener* does not suit *mode*.
        """
        core = self._core
        if mode is None or mode is ConnectMode.STRONG:
            return core.connect(self._adapt(listener))
        if mode is ConnectMode.WEAK:
            tokens: list[ListenerToken] = []

            def collected() -> None:
                for token in tokens:
                    core.disconnect(token)

            tokens.append(core.connect(self._adapt(_core.weak_caller(listener, collected))))
            return tokens[0]
        if mode is ConnectMode.AUTO_FUTURE:
            if isinstance(listener, Deferred):
                return core.connect(listener, ConnectMode.AUTO_FUTURE)
            if not isinstance(listener, asyncio.Future):
                raise TypeError(f"AUTO_FUTURE connects a future, not {listener!r}")
            return self._auto_future(listener)
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {listener!r}")
        if isinstance(mode, SpawnWithLoop):
            what = f"listener of {self.name}"

            def start_task(*args: Any, **kwargs: Any) -> None:
                spawn(listener(*args, **kwargs), what, _loop(mode.loop or self._loop))

            return core.connect(start_task)
        if isinstance(mode, AsyncWithLoop):

            def call_soon(*args: Any, **kwargs: Any) -> None:
                loop = _loop(mode.loop or self._loop)
                loop.call_soon(functools.partial(listener, *args, **kwargs))

            return core.connect(call_soon)
        raise TypeError(f"unknown connect mode {mode!r}")

    def _adapt(self, listener: Callable[..., Any]) -> Callable[..., Any]:
        """The callable the core calls for a STRONG or WEAK *listener*."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {listener!r}")
        return run_as_task(listener, f"listener of {self.name}", self._loop)

    def _auto_future(self, future: asyncio.Future[Any]) -> ListenerToken:
        def fulfil(*args: Any, **kwargs: Any) -> bool:
            if not future.done():
                future.set_result(_core.emission_value(args))
            return True

        token = self._core.connect(fulfil)
        future.add_done_callback(lambda _: self._core.disconnect(token))
        return token

    def disconnect(self, token: ListenerToken) -> None:
        """Stop calling the listener *token* names; unknown tokens are ignored."""
        self._core.disconnect(token)

    @contextlib.contextmanager
    def context_connect(self, listener: Any, mode: Mode | None = None) -> Iterator[ListenerToken]:
        """``with signal.context_connect(listener):`` -- connected inside the block only."""
        token = self.connect(listener, mode)
        try:
            yield token
        finally:
            self.disconnect(token)

    def future(self) -> asyncio.Future[Any]:
        """A future with the next emission's arguments.

        It gets the only argument for one-argument signals, ``None`` for none, and a tuple
        otherwise.  Cancelling it stops waiting.
        """
        return as_future(self._core.future(), _loop(self._loop))

    #: The same as :meth:`future`.
    next = future

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments, then resolve the waiting futures."""
        self._core.emit(*args, **kwargs)

    def __len__(self) -> int:
        """The number of connected listeners."""
        return len(self._core)

    def __bool__(self) -> bool:
        """Whether an emission would reach anybody (a listener or a future)."""
        return bool(self._core)


class CoroutineSignal(Signal[P]):
    """A signal whose emission awaits its coroutine listeners, one after the other."""

    def _adapt(self, listener: Callable[..., Any]) -> Callable[..., Any]:
        """A coroutine a STRONG or WEAK listener returns is awaited in turn."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {listener!r}")
        return awaited_by_twisted(listener, self._loop)

    async def emit_and_wait(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Emit, awaiting every listener that returned an awaitable."""
        deferred = Deferred.fromCoroutine(_core.emit_and_wait(self._core, *args, **kwargs))
        await as_future(deferred, _loop(self._loop))


class Event:
    """A flag that can be waited for (the interface of :class:`asyncio.Event`).

    :param core: the core :class:`txxmppnode.signal.Event` to face; a new one when ``None``.
    """

    def __init__(
        self, *, loop: asyncio.AbstractEventLoop | None = None, core: _core.Event | None = None
    ) -> None:
        self._core = core if core is not None else _core.Event()
        self._loop = loop

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._core.is_set()

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._core.set()

    def clear(self) -> None:
        """Clear the flag."""
        self._core.clear()

    async def wait(self) -> bool:
        """Return ``True`` once the flag is set (at once if it is)."""
        await as_future(self._core.wait(), _loop(self._loop))
        return True


def face_of_core_signal(
    owner: Any, core: object, name: str, loop: asyncio.AbstractEventLoop | None
) -> Signal[...]:
    """For ``__getattr__`` of faces: the asyncio face of the core's signal *name*.

    Signals the core gains are so mirrored without a change here; the face is cached on
    *owner*.  Anything else the core has is Twisted-side and stays behind ``owner.core``.

    :raises AttributeError: if the core's attribute *name* is missing or not a signal.
    """
    value = getattr(core, name) if not name.startswith("_") else None
    if not isinstance(value, _core.Signal):
        raise AttributeError(
            f"{type(owner).__name__!r} object has no attribute {name!r}"
            + (f" (the Twisted-side one is .core.{name})" if value is not None else "")
        )
    face: Signal[...] = Signal(loop=loop, core=value)
    owner.__dict__[name] = face
    return face
