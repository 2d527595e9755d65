"""Signals: named events that any number of listeners can follow.

A :class:`Signal` is emitted with arguments; every connected listener is called with them, in
the order they connected.  A listener that raises is logged and does not stop the others.  The
API is that of the reference's signals (aioxmpp's ``callbacks`` module), with Deferreds where it
has futures::

    token = client.on_stream_established.connect(lambda: print("up"))
    client.on_stream_established.disconnect(token)
    await client.on_stream_destroyed.future()

How a listener is held and when it is dropped is its *connect mode* (:class:`ConnectMode`,
also reachable as ``Signal.STRONG``, ``Signal.WEAK`` and ``Signal.AUTO_FUTURE``):

``STRONG`` (the default)
    the signal holds the listener until it is disconnected;
``WEAK``
    the signal holds the listener by a weak reference (a bound method by
    :class:`weakref.WeakMethod`, so the object it is bound to can be collected) and drops it
    once it has been collected: a listener that should not keep its owner alive;
``AUTO_FUTURE``
    the "listener" is a Deferred, fired with the next emission's value (see :meth:`future`),
    then disconnected; it is also disconnected when it fires otherwise (cancelled, say).

In every mode a listener that returns exactly ``True`` is disconnected after that call (a
one-shot listener decides for itself); any other value, a Deferred or a coroutine included,
keeps it.  A listener that returns a Deferred has the Deferred's failure logged; one that
returns a coroutine (an ``async def`` function) has it run as a Deferred, failure logged.
:meth:`Signal.context_connect` connects for the duration of a ``with`` block.

The asyncio face (:mod:`txxmppnode.asyncio_compat.signal`) adds the modes of the reference
that need an event loop, ``SPAWN_WITH_LOOP(loop)`` and ``ASYNC_WITH_LOOP(loop)``.

Why emission is cheap: the stream emits ``on_stanza_received`` once per stanza and tests the
signal for truth (``if signal:``) before that.  The connect modes are resolved when a listener
is connected (a weak listener is a small wrapper; the weak reference's callback removes it when
it is collected), so :meth:`Signal.emit` calls plain callables and looks at their result only
when it is not ``None``; waiters cost nothing while there are none (``benchmarks/signals.py``).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import weakref
from collections.abc import Callable, Iterator
from inspect import iscoroutine
from typing import Any, Final, Generic, Literal, NewType, ParamSpec, overload

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

P = ParamSpec("P")

#: What :meth:`Signal.connect` returns; give it to :meth:`Signal.disconnect`.
ListenerToken = NewType("ListenerToken", int)

_log = Logger()
_tokens = itertools.count(1)


class ConnectMode(enum.Enum):
    """How :meth:`Signal.connect` holds a listener (see the module documentation)."""

    #: Held until disconnected.
    STRONG = "strong"
    #: Held by a weak reference; dropped once collected.
    WEAK = "weak"
    #: A Deferred fired by the next emission, then disconnected.
    AUTO_FUTURE = "auto_future"


def emission_value(args: tuple[Any, ...]) -> Any:
    """What :meth:`Signal.future` fires with: the only argument, ``None``, or the tuple."""
    return args[0] if len(args) == 1 else (args or None)


def weak_caller(listener: object, collected: Callable[[], object]) -> Callable[..., Any]:
    """A callable that calls *listener*, held by a weak reference, and returns ``True``
    (disconnect me) once it is gone; *collected* is called when it is collected.

    A bound method is held by :class:`weakref.WeakMethod`, so that its object can go.

    :raises TypeError: if *listener* is not callable or cannot be weakly referenced.
    """
    if not callable(listener):
        raise TypeError(f"a listener must be callable, not {listener!r}")

    def gone(_: object) -> None:
        collected()

    ref: weakref.ref[Any]
    if hasattr(listener, "__self__") and hasattr(listener, "__func__"):
        ref = weakref.WeakMethod(listener, gone)
    else:
        ref = weakref.ref(listener, gone)

    def call_if_alive(*args: Any, **kwargs: Any) -> Any:
        alive = ref()
        if alive is None:
            return True  # collected before its weak reference's callback ran
        return alive(*args, **kwargs)

    return call_if_alive


class Signal(Generic[P]):
    """An event with listeners.

    :param name: used in log messages about failing listeners.
    """

    STRONG: Final = ConnectMode.STRONG
    WEAK: Final = ConnectMode.WEAK
    AUTO_FUTURE: Final = ConnectMode.AUTO_FUTURE

    # A client holds dozens of signals; without an instance dict each is about half the size.
    # Weak references are kept: WEAK listeners refer to their signal weakly.
    __slots__ = ("__weakref__", "_listeners", "_waiters", "name")

    def __init__(self, name: str = "signal") -> None:
        self.name = name
        self._listeners: dict[ListenerToken, Callable[..., Any]] = {}
        self._waiters: list[defer.Deferred[Any]] = []

    @overload
    def connect(
        self,
        listener: Callable[P, Any],
        mode: Literal[ConnectMode.STRONG, ConnectMode.WEAK] = ...,
    ) -> ListenerToken: ...

    @overload
    def connect(
        self, listener: defer.Deferred[Any], mode: Literal[ConnectMode.AUTO_FUTURE]
    ) -> ListenerToken: ...

    def connect(
        self,
        listener: Callable[P, Any] | defer.Deferred[Any],
        mode: ConnectMode = ConnectMode.STRONG,
    ) -> ListenerToken:
        """Call *listener* on every emission until disconnected; return its token.

        :param mode: how the listener is held (:class:`ConnectMode`).  With ``AUTO_FUTURE``,
            *listener* is a Deferred.
        :raises TypeError: if *listener* does not suit *mode* (a Deferred for ``AUTO_FUTURE``,
            a callable otherwise).
        """
        token = ListenerToken(next(_tokens))
        if mode is ConnectMode.STRONG:
            if not callable(listener):
                raise TypeError(f"a listener must be callable, not {listener!r}")
            self._listeners[token] = listener
        elif mode is ConnectMode.WEAK:
            self._listeners[token] = self._weak(listener, token)
        elif mode is ConnectMode.AUTO_FUTURE:
            if not isinstance(listener, defer.Deferred):
                raise TypeError(f"AUTO_FUTURE connects a Deferred, not {listener!r}")
            self._listeners[token] = self._auto_future(listener, token)
        else:
            raise TypeError(f"unknown connect mode {mode!r}")
        return token

    def _weak(self, listener: object, token: ListenerToken) -> Callable[..., Any]:
        signal = weakref.ref(self)

        def collected() -> None:
            alive = signal()
            if alive is not None:
                alive.disconnect(token)

        return weak_caller(listener, collected)

    def _auto_future(self, waiter: defer.Deferred[Any], token: ListenerToken) -> Callable[..., Any]:
        def forget(result: object) -> object:
            self.disconnect(token)
            return result

        waiter.addBoth(forget)

        def fulfil(*args: Any, **kwargs: Any) -> bool:
            if not waiter.called:
                waiter.callback(emission_value(args))
            return True

        return fulfil

    def disconnect(self, token: ListenerToken) -> None:
        """Stop calling the listener *token* names; unknown tokens are ignored."""
        self._listeners.pop(token, None)

    @contextlib.contextmanager
    def context_connect(
        self, listener: Callable[P, Any], mode: ConnectMode = ConnectMode.STRONG
    ) -> Iterator[ListenerToken]:
        """``with signal.context_connect(listener):`` -- connected inside the block only.

        The listener is disconnected when the block is left, however it is left.
        """
        token = self.connect(listener, mode)  # type: ignore[call-overload]
        try:
            yield token
        finally:
            self.disconnect(token)

    def future(self) -> defer.Deferred[Any]:
        """A Deferred that fires with the next emission's arguments.

        It fires with the only argument for one-argument signals, ``None`` for none, and a
        tuple otherwise, after the listeners of that emission ran.  Cancelling it stops
        waiting: it fails with :class:`~twisted.internet.defer.CancelledError` and the signal
        keeps nothing of it.
        """
        waiter: defer.Deferred[Any] = defer.Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    #: The same as :meth:`future` (this library's earlier name).
    next = future

    def __len__(self) -> int:
        """The number of connected listeners."""
        return len(self._listeners)

    def __bool__(self) -> bool:
        """Whether an emission would reach anybody: a listener or a :meth:`future`."""
        return bool(self._listeners or self._waiters)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments, then fire the waiters."""
        if self._listeners:
            for token, listener in list(self._listeners.items()):
                try:
                    result = listener(*args, **kwargs)
                except Exception:
                    _log.failure("listener {listener!r} of {signal} raised", listener=listener,
                                 signal=self.name)  # fmt: skip
                    continue
                if result is not None:
                    self._after_call(token, listener, result)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            value = emission_value(args)
            for waiter in waiters:
                waiter.callback(value)

    def _after_call(self, token: ListenerToken, listener: Callable[..., Any], result: Any) -> None:
        """What a listener's result asks for: disconnection, or watching a Deferred."""
        if result is True:
            self._listeners.pop(token, None)
        elif isinstance(result, defer.Deferred):
            result.addErrback(self._log_failure, listener)
        elif iscoroutine(result):
            defer.Deferred.fromCoroutine(result).addErrback(self._log_failure, listener)

    def _log_failure(self, failure: Failure, listener: Callable[..., Any]) -> None:
        _log.failure("listener {listener!r} of {signal} failed", failure, listener=listener,
                     signal=self.name)  # fmt: skip


async def emit_and_wait(signal: Signal[P], *args: P.args, **kwargs: P.kwargs) -> None:
    """Emit *signal* as a coroutine signal: wait for every listener that returned an awaitable.

    Listeners run in connection order, each awaited before the next; a failing listener is
    logged and the others still run.  A listener returning ``True`` is disconnected, as with
    :meth:`Signal.emit`.
    """
    from inspect import isawaitable

    for token, listener in list(signal._listeners.items()):
        try:
            result = listener(*args, **kwargs)
            if result is True:
                signal.disconnect(token)
            elif isawaitable(result):
                await result
        except Exception:
            _log.failure("listener {listener!r} of {signal} failed", listener=listener,
                         signal=signal.name)  # fmt: skip
    waiters, signal._waiters = signal._waiters, []
    value = emission_value(args)
    for waiter in waiters:
        waiter.callback(value)


class Event:
    """A flag that can be waited for, with Deferreds (the Twisted counterpart of an
    ``asyncio.Event``)."""

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
