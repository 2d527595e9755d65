"""Detecting a silently dead connection: a link that neither delivers nor fails.

Dead time is measured from the last byte received.  After ``soft_timeout`` of silence the
stream asks the peer for a sign of life (an XEP-0198 ``<r/>``, or an XEP-0199 ping without stream
management); if nothing arrives within a further ``round_trip_time``, the hard limit trips and
the transport is aborted, which a client turns into a reconnect (and a resumption).  ``None``
for either disables the check.  One timer, re-armed from the time of the last byte, so a busy
stream costs nothing.
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
    """

    def __init__(
        self,
        reactor: interfaces.IReactorTime,
        last_received: Callable[[], float],
        soft_timeout: float | None,
        round_trip_time: float | None,
        on_soft: Callable[[], None],
        on_hard: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self._last_received = last_received
        self.soft_timeout = soft_timeout
        self.round_trip_time = round_trip_time
        self._on_soft = on_soft
        self._on_hard = on_hard
        self._timer: interfaces.IDelayedCall | None = None
        self._soft_fired = False

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
