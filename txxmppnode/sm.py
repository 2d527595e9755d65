"""Client-side state of XEP-0198 stream management (``urn:xmpp:sm:3``), without I/O.

The stanza stream feeds a :class:`StreamManagement` with what happened on the wire and acts on
what it returns; nothing here reads, writes or schedules.

Theory of operation
-------------------

After ``<enabled/>`` both sides count stanzas from zero, modulo 2\\ :sup:`32`.  We count the
stanzas we *handled* (:attr:`~StreamManagement.sm_inbound_ctr`, sent back in ``<a h/>``); the
server tells us in its ``<a h/>`` how many of ours it handled.  Every stanza we write is
appended to the unacknowledged queue; an ``h`` of *n* more than the last one removes the *n*
oldest from it.  What has been acknowledged is :attr:`~StreamManagement.sm_outbound_base`, so
``sm_outbound_base + len(unacked)`` is the number we sent.  An ``h`` above that is a protocol
violation (:class:`HandledCountTooHigh`); since counters wrap, an ``h`` below the base counts
as one that wrapped and is too high as well.

The queue holds :class:`~txxmppnode.token.StanzaToken` s, and, for stanzas nobody waits for
(the replies the stream sends to the server's requests), only their serialised ``bytes``: a
flood of requests must not cost a token and an element tree per reply.  Such entries are
counted, acknowledged and written again like the others, but have no state to change.

When the transport is lost, a resumable session stays as it is, queue and counters included,
and the stream writes nothing until it has sent ``<resume previd h/>`` on a new connection.
``<resumed h/>`` acknowledges up to ``h``; the rest are written again, before anything newly
queued, and stay in the queue in their order.  ``<failed/>`` ends the session; a fresh bind and
``<enable/>`` follow, and the unacknowledged stanzas are sent once more on the new session or
reported lost, see :class:`ResendPolicy`.  A session that is not resumable is destroyed with
its transport.

Rules
-----

Events are accepted in these states only (:data:`EVENTS`, checked first in every method);
anything else raises :class:`RuntimeError`::

    state       event                                       next state
    DISABLED    on_enabled                                  ENABLED
    ENABLED     on_sent, on_received, ack_answer, on_ack    ENABLED
    ENABLED     on_resumed (resumable only)                 ENABLED
    ENABLED     on_resume_failed (resumable only)           DISABLED
    any         destroy                                     DISABLED

Counts outside 0..2\\ :sup:`32`-1 raise :class:`ValueError`; a count above what was sent
raises :class:`HandledCountTooHigh`.  Either way nothing changes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from lxml import etree

from . import namespaces
from .token import StanzaState, StanzaToken

#: Counters of XEP-0198 are unsigned 32-bit integers.
MODULUS: Final = 2**32

#: What the unacknowledged queue holds: a token, or the bytes of a stanza nobody waits for.
Entry: TypeAlias = StanzaToken | bytes


class SMState(enum.Enum):
    """The state of the stream management session."""

    #: no session: stanzas are written without being counted
    DISABLED = "disabled"
    #: ``<enabled/>`` received; the session lasts until destroyed or refused resumption
    ENABLED = "enabled"

    __hash__ = object.__hash__  # looked up per stanza in EVENTS: by identity, in C


_D, _E = SMState.DISABLED, SMState.ENABLED

#: event → {state in which it is accepted: state after it}.
EVENTS: Final[Mapping[str, Mapping[SMState, SMState]]] = {
    "on_enabled": {_D: _E},
    "on_sent": {_E: _E},
    "on_received": {_E: _E},
    "ack_answer": {_E: _E},
    "on_ack": {_E: _E},
    "on_resumed": {_E: _E},
    "on_resume_failed": {_E: _D},
    "destroy": {_D: _D, _E: _D},
}


class ResendPolicy(enum.Enum):
    """What to do with unacknowledged stanzas when resumption fails without a count.

    A ``<failed/>`` without ``h`` leaves unknown which of them the server handled.
    """

    #: report them lost (``DISCONNECTED``): no stanza is delivered twice, some may be missing
    DISCONNECT = "disconnect"
    #: send them again on the new session: none is missing, some may be delivered twice
    RESEND = "resend"


@dataclass(frozen=True)
class ResumeFailedOutcome:
    """What :meth:`StreamManagement.on_resume_failed` did with the unacknowledged stanzas.

    Each is a tuple of :data:`Entry`; the tokens among them changed state as said.

    :ivar acked: acknowledged by the ``h`` of ``<failed/>`` (now ``ACKED``).
    :ivar resend: to be queued again at the front, in this order (now ``ACTIVE``).
    :ivar disconnected: reported lost (now ``DISCONNECTED``).
    """

    acked: tuple[Entry, ...] = ()
    resend: tuple[Entry, ...] = ()
    disconnected: tuple[Entry, ...] = ()


class HandledCountTooHigh(ValueError):
    """The server acknowledged more stanzas than we sent.

    XEP-0198 answers it with an ``undefined-condition`` stream error carrying
    :meth:`to_element`.

    :ivar h: the count the server sent.
    :ivar send_count: the number of stanzas we sent (mod 2\\ :sup:`32`), the highest valid h.
    """

    def __init__(self, h: int, send_count: int) -> None:
        super().__init__(f"server acknowledged h={h}, more than our send count {send_count}")
        self.h = h
        self.send_count = send_count

    def to_element(self) -> etree._Element:
        """The ``<handled-count-too-high/>`` element for the stream error."""
        element = etree.Element(
            f"{{{namespaces.STREAM_MANAGEMENT}}}handled-count-too-high",
            nsmap={None: namespaces.STREAM_MANAGEMENT},
        )
        element.set("h", str(self.h))
        element.set("send-count", str(self.send_count))
        return element


def _check_h(h: int) -> int:
    if not 0 <= h < MODULUS:
        raise ValueError(f"h must be in 0..{MODULUS - 1}, got {h}")
    return h


class StreamManagement:
    """The stream management session of one client: counters and unacknowledged stanzas.

    :param counter_start: the value both counters take on ``<enabled/>``.  XEP-0198 says 0;
        other values only serve to exercise wrap-around in tests.
    """

    def __init__(self, *, counter_start: int = 0) -> None:
        self._counter_start = _check_h(counter_start)
        self._state = SMState.DISABLED
        self._unacked: deque[Entry] = deque()
        self._reset()

    def _reset(self) -> None:
        self._id: str | None = None
        self._resumable = False
        self._max: int | None = None
        self._location: str | None = None
        self._outbound_base = self._inbound_ctr = self._counter_start

    def _expect(self, event: str, *, resumable: bool = False) -> SMState:
        """Check that *event* is allowed now; return the state after it."""
        try:
            next_state = EVENTS[event][self._state]
        except KeyError:
            raise RuntimeError(
                f"stream management: {event} is not allowed in state {self._state.name}"
            ) from None
        if resumable and not self._resumable:
            raise RuntimeError(f"stream management: {event} needs a resumable session")
        return next_state

    # -- what the public API shows ---------------------------------------------------------

    @property
    def state(self) -> SMState:
        """The :class:`SMState`."""
        return self._state

    @property
    def sm_enabled(self) -> bool:
        """Whether a session exists; it outlives the transport until resumed or destroyed."""
        return self._state is SMState.ENABLED

    @property
    def sm_id(self) -> str | None:
        """The session id for resumption, or ``None``."""
        return self._id

    @property
    def sm_resumable(self) -> bool:
        """Whether the server offered to resume the session."""
        return self._resumable

    @property
    def sm_max(self) -> int | None:
        """How many seconds the server keeps a lost session, or ``None`` if it did not say."""
        return self._max

    @property
    def sm_location(self) -> str | None:
        """Where the server prefers us to reconnect for resumption, or ``None``."""
        return self._location

    @property
    def sm_outbound_base(self) -> int:
        """The count of our stanzas the server acknowledged, mod 2\\ :sup:`32`."""
        return self._outbound_base

    @property
    def sm_inbound_ctr(self) -> int:
        """The count of stanzas we received and handled, mod 2\\ :sup:`32`."""
        return self._inbound_ctr

    @property
    def sm_unacked_list(self) -> list[StanzaToken]:
        """A copy of the unacknowledged tokens, oldest first (without the bytes entries)."""
        return [entry for entry in self._unacked if isinstance(entry, StanzaToken)]

    @property
    def unacked_count(self) -> int:
        """How many entries (tokens and bytes) await acknowledgement."""
        return len(self._unacked)

    # -- events ----------------------------------------------------------------------------

    def on_enabled(
        self,
        id_: str | None = None,
        resume: bool = False,
        max_: int | None = None,
        location: str | None = None,
    ) -> None:
        """``<enabled/>``: the session starts; both counters start from zero.

        It is resumable only with both *resume* and an *id_*.
        """
        next_state = self._expect("on_enabled")
        if max_ is not None and max_ < 0:
            raise ValueError(f"max must not be negative, got {max_}")
        self._reset()
        self._id = id_
        self._resumable = resume and id_ is not None
        self._max = max_
        self._location = location
        self._state = next_state

    def on_sent(self, token: Entry) -> None:
        """*token*'s stanza was written: it joins the unacknowledged queue (``SENT``).

        A ``SENT`` token is one written again after resumption: it is already in the queue,
        at its place, and stays there.  A bytes entry just joins the queue.
        """
        self._state = self._expect("on_sent")
        if isinstance(token, bytes):
            self._unacked.append(token)
            return
        if token.state is StanzaState.SENT:
            if token not in self._unacked:
                raise RuntimeError(f"{token!r} is SENT but not awaiting acknowledgement")
            return
        if token.state is not StanzaState.ACTIVE:
            raise RuntimeError(f"cannot send {token!r}: it is not queued")
        self._unacked.append(token)
        token._set_state(StanzaState.SENT)

    def on_received(self) -> None:
        """We handled an inbound stanza."""
        self._state = self._expect("on_received")
        self._inbound_ctr = (self._inbound_ctr + 1) % MODULUS

    def ack_answer(self) -> int:
        """The ``h`` for our ``<a h/>`` or ``<resume h/>``: the stanzas we handled."""
        self._state = self._expect("ack_answer")
        return self._inbound_ctr

    def on_ack(self, h: int) -> list[Entry]:
        """The server's ``<a h/>``: return the newly acknowledged entries, oldest first (``ACKED``).

        :raises HandledCountTooHigh: if *h* acknowledges more than we sent.
        """
        self._state = self._expect("on_ack")
        return _mark(self._pop_acked(h), StanzaState.ACKED)

    def on_resumed(self, h: int) -> list[Entry]:
        """``<resumed h/>``: acknowledge up to *h*; return the entries to write again, in order.

        They stay in the queue as ``SENT``; write them before anything newly queued.

        :raises HandledCountTooHigh: if *h* acknowledges more than we sent (nothing changes).
        """
        next_state = self._expect("on_resumed", resumable=True)
        acked = self._pop_acked(h)
        self._state = next_state
        _mark(acked, StanzaState.ACKED)
        return list(self._unacked)

    def on_resume_failed(
        self, h: int | None, *, policy: ResendPolicy = ResendPolicy.DISCONNECT
    ) -> ResumeFailedOutcome:
        """``<failed/>`` in answer to ``<resume/>``: the session is gone.

        With *h*, the tokens it covers become ``ACKED`` and the rest ``ACTIVE``, to be queued
        again at the front and sent once on the new session.  Without *h*, *policy* decides.

        :raises HandledCountTooHigh: if *h* acknowledges more than we sent (nothing changes).
        """
        next_state = self._expect("on_resume_failed", resumable=True)
        acked = self._pop_acked(h) if h is not None else []
        rest = list(self._unacked)
        self._unacked.clear()
        self._reset()
        self._state = next_state
        _mark(acked, StanzaState.ACKED)
        if h is None and policy is ResendPolicy.DISCONNECT:
            _mark(rest, StanzaState.DISCONNECTED)
            return ResumeFailedOutcome(acked=tuple(acked), disconnected=tuple(rest))
        _mark(rest, StanzaState.ACTIVE)
        return ResumeFailedOutcome(acked=tuple(acked), resend=tuple(rest))

    def destroy(self) -> list[Entry]:
        """The stream is gone for good: unacknowledged tokens become ``DISCONNECTED``.

        Return them, oldest first.  Allowed in every state.
        """
        self._state = self._expect("destroy")
        lost = list(self._unacked)
        self._unacked.clear()
        self._reset()
        return _mark(lost, StanzaState.DISCONNECTED)

    def _pop_acked(self, h: int) -> list[Entry]:
        """Take what *h* acknowledges off the queue, unmarked; change nothing if *h* is invalid.

        Callers mark the tokens last, so ``on_state_change`` callbacks see a consistent session.
        """
        count = (_check_h(h) - self._outbound_base) % MODULUS
        if count > len(self._unacked):
            raise HandledCountTooHigh(h, (self._outbound_base + len(self._unacked)) % MODULUS)
        acked = [self._unacked.popleft() for _ in range(count)]
        self._outbound_base = h
        return acked


def _mark(entries: list[Entry], state: StanzaState) -> list[Entry]:
    for entry in entries:
        if isinstance(entry, StanzaToken):
            entry._set_state(state)
    return entries


__all__ = [
    "EVENTS",
    "MODULUS",
    "Entry",
    "HandledCountTooHigh",
    "ResendPolicy",
    "ResumeFailedOutcome",
    "SMState",
    "StreamManagement",
]
