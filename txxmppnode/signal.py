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

    def __init__(self, name: str = "signal") -> None:
        self.name = name
        self._listeners: dict[ListenerToken, Callable[P, Any]] = {}
        self._waiters: list[defer.Deferred[Any]] = []

    def connect(self, listener: Callable[P, Any]) -> ListenerToken:
        """Call *listener* on every emission until disconnected; return its token."""
        token = ListenerToken(next(_tokens))
        self._listeners[token] = listener
        return token

    def disconnect(self, token: ListenerToken) -> None:
        """Stop calling the listener *token* names; unknown tokens are ignored."""
        self._listeners.pop(token, None)

    def next(self) -> defer.Deferred[Any]:
        """A Deferred that fires with the next emission's arguments.

        It fires with the only argument for one-argument signals, ``None`` for none, and a
        tuple otherwise.
        """
        waiter: defer.Deferred[Any] = defer.Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def __len__(self) -> int:
        """The number of connected listeners."""
        return len(self._listeners)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments, then fire the waiters."""
        for listener in list(self._listeners.values()):
            try:
                result = listener(*args, **kwargs)
            except Exception:
                _log.failure("listener {listener!r} of {signal} raised", listener=listener,
                             signal=self.name)  # fmt: skip
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(self._log_failure, listener)
        waiters, self._waiters = self._waiters, []
        value: Any = args[0] if len(args) == 1 else (args or None)
        for waiter in waiters:
            waiter.callback(value)

    def _log_failure(self, failure: Failure, listener: Callable[P, Any]) -> None:
        _log.failure("listener {listener!r} of {signal} failed", failure, listener=listener,
                     signal=self.name)  # fmt: skip
