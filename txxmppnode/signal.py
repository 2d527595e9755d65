"""Signals: named events that any number of listeners can follow.

A :class:`Signal` is emitted with arguments; every connected listener is called with them, in
the order they connected.  A listener that raises is logged and does not stop the others.
:meth:`Signal.next` returns a Deferred for the next emission only, which suits code that waits
for one event::

    token = client.on_stream_established.connect(lambda: print("up"))
    client.on_stream_established.disconnect(token)
    await client.on_stream_destroyed.next()
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Generic, NewType, ParamSpec

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

P = ParamSpec("P")

#: What :meth:`Signal.connect` returns; give it to :meth:`Signal.disconnect`.
ListenerToken = NewType("ListenerToken", int)

_log = Logger()
_tokens = itertools.count(1)


class Signal(Generic[P]):
    """An event with listeners.

    :param name: used in log messages about failing listeners.
    """

    # a client holds a few dozen signals, most never connected: no __dict__ each
    __slots__ = ("_listeners", "_waiters", "name")

    def __init__(self, name: str = "signal") -> None:
        self.name = name
        # made on first use: most signals of an idle client never get a listener or waiter
        self._listeners: dict[ListenerToken, Callable[P, Any]] | None = None
        self._waiters: list[defer.Deferred[Any]] | None = None

    def connect(self, listener: Callable[P, Any]) -> ListenerToken:
        """Call *listener* on every emission until disconnected; return its token."""
        token = ListenerToken(next(_tokens))
        if self._listeners is None:
            self._listeners = {}
        self._listeners[token] = listener
        return token

    def disconnect(self, token: ListenerToken) -> None:
        """Stop calling the listener *token* names; unknown tokens are ignored."""
        if self._listeners is not None:
            self._listeners.pop(token, None)

    def next(self) -> defer.Deferred[Any]:
        """A Deferred that fires with the next emission's arguments.

        It fires with the only argument for one-argument signals, ``None`` for none, and a
        tuple otherwise.
        """
        waiter: defer.Deferred[Any] = defer.Deferred(self._forget)
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    def _forget(self, waiter: defer.Deferred[Any]) -> None:
        """Canceller of :meth:`next`'s Deferreds: stop waiting."""
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)

    def __len__(self) -> int:
        """The number of connected listeners."""
        return 0 if self._listeners is None else len(self._listeners)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments, then fire the waiters."""
        for listener in list(self._listeners.values()) if self._listeners else ():
            try:
                result = listener(*args, **kwargs)
            except Exception:
                _log.failure("listener {listener!r} of {signal} raised", listener=listener,
                             signal=self.name)  # fmt: skip
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(self._log_failure, listener)
        waiters, self._waiters = self._waiters or (), None
        value: Any = args[0] if len(args) == 1 else (args or None)
        for waiter in waiters:
            waiter.callback(value)

    def _log_failure(self, failure: Failure, listener: Callable[P, Any]) -> None:
        _log.failure("listener {listener!r} of {signal} failed", failure, listener=listener,
                     signal=self.name)  # fmt: skip


async def emit_and_wait(signal: Signal[P], *args: P.args, **kwargs: P.kwargs) -> None:
    """Emit *signal* as a coroutine signal: wait for every listener that returned an awaitable.

    Listeners run in connection order, each awaited before the next; a failing listener is
    logged and the others still run.
    """
    from inspect import isawaitable

    for listener in list(signal._listeners.values()) if signal._listeners else ():
        try:
            result = listener(*args, **kwargs)
            if isawaitable(result):
                await result
        except Exception:
            _log.failure("listener {listener!r} of {signal} failed", listener=listener,
                         signal=signal.name)  # fmt: skip
    waiters, signal._waiters = signal._waiters or (), None
    value: Any = args[0] if len(args) == 1 else (args or None)
    for waiter in waiters:
        waiter.callback(value)


class Event:
    """A flag that can be waited for, with Deferreds (the Twisted counterpart of an
    ``asyncio.Event``)."""

    # one per client and service
    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[defer.Deferred[None]] = []

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def clear(self) -> None:
        """Clear the flag; later :meth:`wait` calls wait for the next :meth:`set`."""
        self._set = False

    def wait(self) -> defer.Deferred[None]:
        """A Deferred firing when the flag is set (at once if it is)."""
        if self._set:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter
