"""Run Twisted code on the global reactor from synchronous (pytest) code.

The reactor cannot be restarted once stopped, so it runs for the whole process in one daemon
thread, started on first use; tests hand it work with :func:`run_in_reactor`, which blocks until
the returned Deferred (or coroutine) finishes or a timeout cancels it::

    features = run_in_reactor(fetch_features, server, timeout=5)

Twisted's log events of level warning and above (unhandled errors in Deferreds, for instance)
are forwarded to the standard :mod:`logging` module under the ``twisted`` logger, where pytest
captures them with the test that was running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, overload

from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    STDLibLogObserver,
    globalLogBeginner,
)
from twisted.python.failure import Failure

__all__ = ["DEFAULT_TIMEOUT", "ReactorThread", "get_reactor_thread", "run_in_reactor"]

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 10.0
# how much longer than the timeout the caller waits for the reactor to report the cancellation
_GRACE: Final = 5.0

_logging_started = False


def _forward_twisted_logs() -> None:
    """Send Twisted's warnings and errors to :mod:`logging` (once per process)."""
    global _logging_started
    if _logging_started:
        return
    _logging_started = True
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(STDLibLogObserver(name="twisted"), [predicate])],
        redirectStandardIO=False,
    )


class ReactorThread:
    """The global reactor running in a daemon thread.

    :param reactor: the reactor to run; the global one (installed on import) by default.
    """

    def __init__(self, reactor: Any = None) -> None:
        """Remember the reactor; nothing runs until :meth:`start`."""
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the reactor thread is running."""
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start the reactor in its thread (once) and wait until it runs."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the reactor was stopped and cannot be restarted")
            if self._thread is not None:
                return
            _forward_twisted_logs()
            started = threading.Event()
            self.reactor.callWhenRunning(started.set)
            self._thread = threading.Thread(
                target=self.reactor.run,
                kwargs={"installSignalHandlers": False},
                name="twisted-reactor",
                daemon=True,
            )
            self._thread.start()
            if not started.wait(timeout):
                raise RuntimeError(f"the reactor did not start within {timeout} s")

    @overload
    def run(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> T: ...

    @overload
    def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> T: ...

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn(*args, **kwargs)`` in the reactor thread and return its eventual result.

        *fn* may return a plain value, a Deferred or a coroutine.  After *timeout* seconds the
        Deferred is cancelled and :class:`twisted.internet.defer.TimeoutError` is raised here;
        a failure is raised here as its original exception.
        """
        self.start()
        outcome: queue.SimpleQueue[object] = queue.SimpleQueue()

        def call() -> None:
            d = defer.maybeDeferred(fn, *args, **kwargs)
            d.addTimeout(timeout, self.reactor)
            d.addBoth(outcome.put)

        self.reactor.callFromThread(call)
        try:
            result = outcome.get(timeout=timeout + _GRACE)
        except queue.Empty:
            raise RuntimeError(
                f"the reactor did not finish {fn!r} within {timeout + _GRACE} s (is it blocked?)"
            ) from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop the reactor and join its thread; safe to repeat."""
        with self._lock:
            thread, self._stopped = self._thread, True
            if thread is None or not thread.is_alive():
                return
            self.reactor.callFromThread(self.reactor.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the reactor thread did not stop within {timeout} s")


_reactor_thread: ReactorThread | None = None


def get_reactor_thread() -> ReactorThread:
    """Return the process-wide :class:`ReactorThread` for the global reactor."""
    global _reactor_thread
    if _reactor_thread is None:
        _reactor_thread = ReactorThread()
    return _reactor_thread


@overload
def run_in_reactor(
    fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> T: ...


@overload
def run_in_reactor(
    fn: Callable[..., T], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> T: ...


def run_in_reactor(
    fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> Any:
    """Run ``fn(*args, **kwargs)`` on the global reactor; see :meth:`ReactorThread.run`."""
    return get_reactor_thread().run(fn, *args, timeout=timeout, **kwargs)
