"""Detecting a silently dead connection: a link that neither delivers nor fails.

Dead time is measured from the last byte received.  After ``soft_timeout`` of silence the
stream asks the peer for a sign of life (an XEP-0198 ``<r/>``, or an XEP-0199 ping without stream
management); if nothing arrives within a further ``round_trip_time``, the hard limit trips and
the transport is aborted, which a client turns into a reconnect (and a resumption).  ``None``
for either disables the check.  One timer, re-armed from the time of the last byte, so a busy
stream costs nothing.

Bytes arriving are not enough, though: a server that sends whitespace keep-alives but never
answers an XEP-0198 ``<r/>`` looks alive and acknowledges nothing, and everything we send piles
up unacknowledged.  So an answer that is due (:meth:`LivenessMonitor.expect_answer`) must come
within the same hard limit, ``soft_timeout + round_trip_time``, whatever else arrives; if it
does not, *on_unanswered* is called, which a stream treats like a dead link.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import interfaces


class LivenessMonitor:
    """Watch the silence on a stream; call *on_soft* then *on_hard* as the limits pass.

    :param reactor: the clock.
    :param last_received: returns when the last byte arrived (``reactor.seconds()`` time).
    :param soft_timeout: seconds of silence before *on_soft*, or ``None``.
    :param round_trip_time: further seconds before *on_hard*, or ``None``.
    :param on_unanswered: called when an expected answer (:meth:`expect_answer`) did not come
        within :attr:`hard_limit`; ``None`` to not watch answers.
    """

    # one per connection, for the connection's life
    __slots__ = (
        "_answer_timer",
        "_last_received",
        "_on_hard",
        "_on_soft",
        "_on_unanswered",
        "_soft_fired",
        "_timer",
        "_unanswered",
        "reactor",
        "round_trip_time",
        "soft_timeout",
    )

    def __init__(
        self,
        reactor: interfaces.IReactorTime,
        last_received: Callable[[], float],
        soft_timeout: float | None,
        round_trip_time: float | None,
        on_soft: Callable[[], None],
        on_hard: Callable[[], None],
        on_unanswered: Callable[[], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self._last_received = last_received
        self.soft_timeout = soft_timeout
        self.round_trip_time = round_trip_time
        self._on_soft = on_soft
        self._on_hard = on_hard
        self._on_unanswered = on_unanswered
        self._timer: interfaces.IDelayedCall | None = None
        self._soft_fired = False
        # requests whose answer is due, and the timer for the oldest of them
        self._unanswered = 0
        self._answer_timer: interfaces.IDelayedCall | None = None

    @property
    def hard_limit(self) -> float | None:
        """Seconds of silence after which the connection is given up."""
        if self.soft_timeout is None or self.round_trip_time is None:
            return None
        return self.soft_timeout + self.round_trip_time

    def start(self) -> None:
        """Begin watching (again); harmless when already running."""
        self._soft_fired = False
        if self.soft_timeout is not None and self._timer is None:
            self._arm()

    def stop(self) -> None:
        """Stop watching."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._unanswered = 0
        self._cancel_answer_timer()

    @property
    def unanswered(self) -> int:
        """How many requests sent with :meth:`expect_answer` are still unanswered."""
        return self._unanswered

    def expect_answer(self) -> None:
        """A request went out that the peer must answer (an XEP-0198 ``<r/>``)."""
        self._unanswered += 1
        hard = self.hard_limit
        if self._answer_timer is None and hard is not None and self._on_unanswered is not None:
            self._answer_timer = self.reactor.callLater(hard, self._answer_overdue)

    def answered(self) -> None:
        """An answer came (an ``<a/>``); the next unanswered request gets a full hard limit."""
        if self._unanswered == 0:
            return  # unsolicited
        self._unanswered -= 1
        self._cancel_answer_timer()
        if self._unanswered:
            self._unanswered -= 1
            self.expect_answer()

    def _cancel_answer_timer(self) -> None:
        if self._answer_timer is not None and self._answer_timer.active():
            self._answer_timer.cancel()
        self._answer_timer = None

    def _answer_overdue(self) -> None:
        self._answer_timer = None
        assert self._on_unanswered is not None
        self._on_unanswered()

    def _arm(self) -> None:
        assert self.soft_timeout is not None
        last = self._last_received()
        hard = self.hard_limit
        if self._soft_fired and hard is not None:
            deadline = last + hard
        else:
            deadline = last + self.soft_timeout
        delay = max(0.0, deadline - self.reactor.seconds())
        self._timer = self.reactor.callLater(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        assert self.soft_timeout is not None
        silence = self.reactor.seconds() - self._last_received()
        hard = self.hard_limit
        if silence < self.soft_timeout:
            self._soft_fired = False  # data arrived meanwhile
        elif hard is not None and silence >= hard:
            self._on_hard()
            return
        elif not self._soft_fired:
            self._soft_fired = True
            self._on_soft()
            if hard is None:
                self._soft_fired = False
        self._arm()
