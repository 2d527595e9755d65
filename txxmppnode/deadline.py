"""Deadlines: one time limit for a whole step, however many waits the step is made of.

A per-wait timeout restarts with every wait.  A step that waits in a loop -- for the answer to
an IQ among unrelated stanzas, for the answer to ``<enable/>`` among whitespace keep-alives --
would then never end against a peer that keeps sending something else.  A :class:`Deadline` is
fixed once, when the step starts, on the injected clock; every wait of the step gets only the
time that is left, so nothing the peer sends can extend it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer, interfaces
from twisted.python.failure import Failure

T = TypeVar("T")


class Deadline:
    """The end of one step, ``seconds`` after it was created on *clock*.

    :param clock: the ``IReactorTime`` the deadline is measured on.
    :param seconds: the time the step may take; ``None`` for no limit.
    :param step: what the step is, for the :class:`TimeoutError` message (``"resource
        binding"``).
    """

    def __init__(self, clock: interfaces.IReactorTime, seconds: float | None, step: str) -> None:
        self.clock = clock
        self.seconds = seconds
        self.step = step
        #: When the step must be over (``clock.seconds()`` time), or ``None``.
        self.at = None if seconds is None else clock.seconds() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a limit."""
        if self.at is None:
            return None
        return max(0.0, self.at - self.clock.seconds())

    def error(self) -> TimeoutError:
        """The :class:`TimeoutError` this deadline fails with."""
        return TimeoutError(f"{self.step}: no answer within {self.seconds:g}s")

    def wait(self, waiting: defer.Deferred[T]) -> defer.Deferred[T]:
        """Bound *waiting* by the time left; it fails with :meth:`error` at the deadline.

        At the deadline *waiting* is cancelled (its canceller runs), and whatever failure the
        cancellation produced (a :class:`~twisted.internet.defer.CancelledError`, or what a
        canceller made of it) becomes the :class:`TimeoutError`.
        """
        remaining = self.remaining()
        if remaining is None:
            return waiting

        def timed_out(result: Any, timeout: float) -> Any:
            # called only when the timer fired: the failure is the cancellation's
            if isinstance(result, Failure):
                raise self.error() from result.value
            return result

        return waiting.addTimeout(remaining, self.clock, timed_out)


__all__ = ["Deadline"]
