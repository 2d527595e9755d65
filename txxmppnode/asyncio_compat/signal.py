"""Signals and events for asyncio code: the core's, with asyncio futures and coroutine listeners.

A :class:`Signal` here is a face over a :class:`txxmppnode.signal.Signal` (the core emits it):

* ``connect(listener)`` takes a plain callable or a coroutine function; a coroutine function's
  coroutine runs as a task of the loop at each emission, and its failure is logged;
* ``next()`` returns an :class:`asyncio.Future` for the next emission (cancel it to stop
  waiting);
* ``disconnect(token)``, ``emit(...)`` and ``len()`` are the core's.

A :class:`CoroutineSignal` (``before_stream_established``) is awaited by the core: a coroutine
listener is awaited before the next listener runs and before ``on_stream_established``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, ParamSpec

from twisted.internet.defer import Deferred

from .. import signal as _core
from ._bridge import as_future, awaited_by_twisted, run_as_task

__all__ = ["CoroutineSignal", "Event", "ListenerToken", "Signal", "face_of_core_signal"]

P = ParamSpec("P")
ListenerToken = _core.ListenerToken


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

    def connect(self, listener: Callable[P, Any]) -> ListenerToken:
        """Call *listener* on every emission until disconnected; return its token.

        A coroutine function (or any listener returning an awaitable) runs as a task.
        """
        return self._core.connect(run_as_task(listener, f"listener of {self.name}", self._loop))

    def disconnect(self, token: ListenerToken) -> None:
        """Stop calling the listener *token* names; unknown tokens are ignored."""
        self._core.disconnect(token)

    def next(self) -> asyncio.Future[Any]:
        """A future with the next emission's arguments.

        It gets the only argument for one-argument signals, ``None`` for none, and a tuple
        otherwise.  Cancelling it stops waiting.
        """
        return as_future(self._core.next(), _loop(self._loop))

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments, then resolve the waiting futures."""
        self._core.emit(*args, **kwargs)

    def __len__(self) -> int:
        """The number of connected listeners."""
        return len(self._core)


class CoroutineSignal(Signal[P]):
    """A signal whose emission awaits its coroutine listeners, one after the other."""

    def connect(self, listener: Callable[P, Any]) -> ListenerToken:
        """Call *listener* on every emission; a coroutine it returns is awaited in turn."""
        return self._core.connect(awaited_by_twisted(listener, self._loop))

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
