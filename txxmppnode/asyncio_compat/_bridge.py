"""Deferreds to asyncio futures and back, and adapters for the application's callables.

Two directions meet in the asyncio face:

* results of the Twisted core (Deferreds) are handed to asyncio code as futures of the loop
  (:func:`as_future`, ``Deferred.asFuture``): cancelling the future cancels the Deferred, so
  ``asyncio.wait_for`` and task cancellation reach the operation underneath;
* awaitables of asyncio code (coroutines of ``async def`` callbacks, futures, tasks) are handed to
  the core as Deferreds (:func:`as_deferred`, ``Deferred.fromFuture``): the core awaits them as
  it awaits its own.

Callbacks the core calls come in two kinds: those whose result the core awaits (IQ handlers,
``before_stream_established`` listeners, password providers) are wrapped by
:func:`awaited_by_twisted`; those it only calls (signal listeners, message callbacks) are
wrapped by :func:`run_as_task`, which runs a coroutine result as a task of the loop and logs its
failure.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from txaio import aio as txaio_aio

__all__ = ["as_deferred", "as_future", "awaited_by_twisted", "run_as_task", "spawn"]

T = TypeVar("T")

_log = txaio_aio.make_logger()  # type: ignore[no-untyped-call]
# tasks started for callbacks: referenced until done (the loop keeps weak references only)
_background: set[asyncio.Future[Any]] = set()


def as_future(deferred: Deferred[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """A future of *loop* with the outcome of *deferred*; cancelling it cancels *deferred*."""
    return deferred.asFuture(loop)


def as_deferred(awaitable: Awaitable[T], loop: asyncio.AbstractEventLoop) -> Deferred[T]:
    """A Deferred with the outcome of *awaitable* (run as a task of *loop* if a coroutine).

    Cancelling the Deferred cancels the task.  A cancelled task fails the Deferred with
    Twisted's :class:`~twisted.internet.defer.CancelledError`, which Twisted code expects
    (asyncio's is a ``BaseException``, which it would let through).
    """
    if isinstance(awaitable, Deferred):
        return awaitable
    future = asyncio.ensure_future(awaitable, loop=loop)
    if future is not awaitable:  # a task of ours: referenced until done
        _background.add(future)
        future.add_done_callback(_background.discard)
    return Deferred.fromFuture(future).addErrback(_twisted_cancellation)


def _twisted_cancellation(failure: Failure) -> Failure:
    if isinstance(failure.value, asyncio.CancelledError):
        raise defer.CancelledError() from failure.value
    return failure


def _loop_of(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    return loop if loop is not None else asyncio.get_running_loop()


def awaited_by_twisted(
    function: Callable[..., Any], loop: asyncio.AbstractEventLoop | None = None
) -> Callable[..., Any]:
    """Wrap *function* so that an awaitable it returns becomes a Deferred.

    For callables whose result the core awaits: an ``async def`` function's coroutine runs as a
    task of the loop and the core awaits it through the Deferred.
    """

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if isawaitable(result) and not isinstance(result, Deferred):
            return as_deferred(result, _loop_of(loop))
        return result

    return call


def run_as_task(
    function: Callable[..., Any], what: str, loop: asyncio.AbstractEventLoop | None = None
) -> Callable[..., Any]:
    """Wrap *function* so that an awaitable it returns runs as a task of the loop.

    For callables whose result the core ignores (signal listeners, stanza callbacks).  A
    failing task is logged, naming *what* it was.
    """

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if isawaitable(result) and not isinstance(result, Deferred):
            spawn(result, what, _loop_of(loop))
            return None
        return result

    return call


def spawn(
    awaitable: Awaitable[Any], what: str, loop: asyncio.AbstractEventLoop
) -> asyncio.Future[Any]:
    """Run *awaitable* as a task of *loop*, keep it referenced until done, log its failure."""
    task = asyncio.ensure_future(awaitable, loop=loop)
    _background.add(task)
    task.add_done_callback(functools.partial(_finished, what))
    return task


def _finished(what: str, task: asyncio.Future[Any]) -> None:
    _background.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        text = "".join(traceback.format_exception(error)).rstrip()
        _log.error("{what} failed: {text}", what=what, text=text)
