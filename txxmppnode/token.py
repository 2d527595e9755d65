"""Stanza tokens: the handle the stream returns for every stanza it is asked to send.

A :class:`StanzaToken` follows one stanza from the send queue to the server's acknowledgement.
Its :class:`StanzaState` says where the stanza is now, ``on_state_change`` reports every step,
and :meth:`StanzaToken.deferred` (or ``await token``) waits for the outcome.

Rules
-----

* Every change of state is checked against :data:`TRANSITIONS`, the one table below.  Any other
  change raises :class:`RuntimeError`: only a bug in the library can ask for one.
* The stream drives the token through ``_set_state``; applications read it, wait on it, or
  :meth:`~StanzaToken.abort` it while it is still queued.
* A state without successors is *final*.  Waiters fire when one is reached: with ``None`` for
  ``SENT_WITHOUT_SM`` and ``ACKED``, with an exception for the others.  ``SENT`` is not final:
  when the resumption of a stream fails, unacknowledged stanzas go back to ``ACTIVE`` to be
  sent again on the new stream.
* Deferreds exist only once somebody asks for one, so a stanza that nobody waits on never
  causes an "Unhandled error in Deferred" when it fails.

Theory of operation
-------------------

::

    ACTIVE ──written, stream management on──▶ SENT ──acknowledged──▶ ACKED
      │  ▲                                     │
      │  └──────── resumption refused ─────────┤
      │                                        └── stream destroyed ──▶ DISCONNECTED
      ├── written, stream management off ──▶ SENT_WITHOUT_SM
      ├── abort() ──▶ ABORTED
      ├── an outbound filter dropped it ──▶ DROPPED
      ├── stream destroyed ──▶ DISCONNECTED
      └── serialisation or transport error ──▶ FAILED
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

from lxml import etree
from twisted.internet import defer
from twisted.logger import Logger

_log = Logger()


class StanzaState(enum.Enum):
    """Where a stanza is on its way to the server."""

    #: queued, not yet written
    ACTIVE = "active"
    #: written with stream management on; not yet acknowledged by the server
    SENT = "sent"
    #: the server acknowledged it (XEP-0198)
    ACKED = "acked"
    #: written without stream management: nothing more will be known about it
    SENT_WITHOUT_SM = "sent-without-sm"
    #: aborted by the application while queued
    ABORTED = "aborted"
    #: an outbound filter dropped it
    DROPPED = "dropped"
    #: the stream was destroyed while it was queued or unacknowledged
    DISCONNECTED = "disconnected"
    #: serialising or writing it failed; :attr:`StanzaToken.exception` says why
    FAILED = "failed"

    # Members are singletons compared by identity; hashing them by identity (in C) instead of
    # by name (Enum's own __hash__, in Python) makes every look-up in TRANSITIONS cheaper.
    __hash__ = object.__hash__


_S = StanzaState

#: The allowed changes of state: state → the states it may change to.  Empty means final.
TRANSITIONS: Final[Mapping[StanzaState, frozenset[StanzaState]]] = {
    _S.ACTIVE: frozenset(
        {_S.SENT, _S.SENT_WITHOUT_SM, _S.ABORTED, _S.DROPPED, _S.DISCONNECTED, _S.FAILED}
    ),
    _S.SENT: frozenset({_S.ACKED, _S.DISCONNECTED, _S.ACTIVE}),
    _S.ACKED: frozenset(),
    _S.SENT_WITHOUT_SM: frozenset(),
    _S.ABORTED: frozenset(),
    _S.DROPPED: frozenset(),
    _S.DISCONNECTED: frozenset(),
    _S.FAILED: frozenset(),
}

#: The final states in which waiters succeed; in the other final states they fail.
_SUCCESS: Final = frozenset({_S.SENT_WITHOUT_SM, _S.ACKED})

StateCallback = Callable[["StanzaToken", StanzaState], object]


class StanzaToken:
    """The handle of one outgoing stanza.

    :param stanza: the stanza to send.
    :param on_state_change: called as ``on_state_change(token, state)`` after every change of
        state, before waiters fire.  Exceptions it raises are logged and otherwise ignored.
    """

    __slots__ = ("_exception", "_on_state_change", "_stanza", "_state", "_waiters")

    def __init__(
        self, stanza: etree._Element, *, on_state_change: StateCallback | None = None
    ) -> None:
        self._stanza = stanza
        self._state = StanzaState.ACTIVE
        self._exception: BaseException | None = None
        self._on_state_change = on_state_change
        # Created by the first deferred(): most stanzas are never waited on.
        self._waiters: list[defer.Deferred[None]] | None = None

    @property
    def stanza(self) -> etree._Element:
        """The stanza this token stands for."""
        return self._stanza

    @property
    def state(self) -> StanzaState:
        """The current :class:`StanzaState`."""
        return self._state

    @property
    def exception(self) -> BaseException | None:
        """In state ``FAILED``, the exception that made sending fail; ``None`` otherwise."""
        return self._exception

    def abort(self) -> None:
        """Withdraw the stanza from the send queue (state ``ABORTED``).

        :raises RuntimeError: if the stanza is no longer queued: what was written cannot be
            taken back.
        """
        if self._state is not StanzaState.ACTIVE:
            raise RuntimeError(
                f"a stanza can only be aborted while queued (ACTIVE), not in {self._state.name}"
            )
        self._set_state(StanzaState.ABORTED)

    def deferred(self) -> defer.Deferred[None]:
        """A new Deferred for the outcome of sending.

        It fires with ``None`` once the state is ``SENT_WITHOUT_SM`` or ``ACKED``, and fails
        with :class:`ConnectionError` (``DISCONNECTED``), the stored exception (``FAILED``) or
        :class:`RuntimeError` (``ABORTED``, ``DROPPED``).  In a final state it has already
        fired.  Cancelling it stops this waiter only.
        """
        if not TRANSITIONS[self._state]:
            error = self._error()
            return defer.succeed(None) if error is None else defer.fail(error)
        waiter: defer.Deferred[None] = defer.Deferred(self._forget)
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    def __await__(self) -> Generator[Any, Any, None]:
        """``await token`` in a coroutine run by Twisted waits as :meth:`deferred` does."""
        return self.deferred().__await__()

    def __repr__(self) -> str:
        tag = self._stanza.tag
        name = etree.QName(tag).localname if isinstance(tag, str) else repr(tag)
        return f"<StanzaToken {name} id={self._stanza.get('id')!r} {self._state.name}>"

    def _set_state(self, state: StanzaState, exception: BaseException | None = None) -> None:
        """Move to *state*; for the stream only.

        :param exception: the cause, required with ``FAILED`` and refused otherwise.
        :raises RuntimeError: if :data:`TRANSITIONS` forbids the change.
        :raises ValueError: if *exception* does not match *state*.
        """
        if state not in TRANSITIONS[self._state]:
            raise RuntimeError(
                f"stanza token cannot change from {self._state.name} to {state.name}"
            )
        if (exception is None) != (state is not StanzaState.FAILED):
            raise ValueError("an exception must be given with FAILED, and only with FAILED")
        self._state = state
        self._exception = exception
        if self._on_state_change is not None:
            try:
                self._on_state_change(self, state)
            except Exception:
                _log.failure(
                    "on_state_change callback of {token!r} raised", token=self, state=state
                )
        if self._waiters:
            self._fire_waiters()

    def _error(self) -> BaseException | None:
        """The exception waiters fail with in the current final state, or ``None``."""
        state = self._state
        if state in _SUCCESS:
            return None
        if state is StanzaState.FAILED:
            assert self._exception is not None
            return self._exception
        if state is StanzaState.DISCONNECTED:
            return ConnectionError("the stream was destroyed before the stanza was acknowledged")
        if state is StanzaState.ABORTED:
            return RuntimeError("stanza aborted")
        assert state is StanzaState.DROPPED, state
        return RuntimeError("stanza dropped by an outbound filter")

    def _fire_waiters(self) -> None:
        if TRANSITIONS[self._state] or not self._waiters:
            return
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            # a callback of an earlier waiter may have cancelled this one
            if waiter.called:
                continue
            error = self._error()
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    def _forget(self, waiter: defer.Deferred[None]) -> None:
        """Canceller of waiters: drop *waiter*; it then fails with ``CancelledError``."""
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)


__all__ = ["TRANSITIONS", "StanzaState", "StanzaToken"]
