"""XEP-0198 on the wire: negotiating a session and the elements that carry it.

:mod:`~txxmppnode.sm` counts and holds the unacknowledged stanzas, without I/O.  This module
speaks for it: it builds ``<enable/>``, ``<resume/>``, ``<a/>`` and ``<r/>``, waits for the
server's answer to ``<enable/>`` or ``<resume/>`` under a :class:`~txxmppnode.deadline.Deadline`,
reads the server's ``<a/>``, notes its ``<r/>`` for the end of the turn, and answers a count
that acknowledges what we never sent with the stream error XEP-0198 §4 prescribes.

It holds no stanzas and no XML stream: the stanza stream owns the queue and the stream it is
attached to, passes the stream in where something must be written, and is told what was
acknowledged, what to write again and when it may write.  Keeping the protocol here leaves
:mod:`~txxmppnode.stanzastream` the queue and the dispatch glue.

States
------

Whether the stanza stream may write is one :class:`WireState`, changed only through
:data:`TRANSITIONS`; an input not listed for a state raises :class:`RuntimeError` (only a bug
in the library can ask for one)::

    DETACHED ─attach─▶ HELD ─enable─▶ ENABLING ─answered─▶ HELD ─release─▶ FLOWING
                        │  ─resume─▶ RESUMING ─answered─▶ HELD
    any ─detach─▶ DETACHED            any ─attach─▶ HELD

HELD, ENABLING and RESUMING hold every write: after ``<enable/>`` or ``<resume/>`` nothing
may be written before the answer, or the counts of both sides would differ (XEP-0198 §3, §5).
``answered`` is the server's ``<enabled/>``, ``<resumed/>`` or ``<failed/>``, or the deadline
passing; the stanza stream then releases the writes, or the connection is given up.  A
release while DETACHED changes nothing (the connection ended in between).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from lxml import etree
from twisted.internet import defer
from twisted.logger import Logger

from . import namespaces
from .deadline import Deadline
from .errors import StreamError, StreamErrorCondition
from .sm import Entry, HandledCountTooHigh, ResendPolicy, ResumeFailedOutcome, StreamManagement
from .token import StanzaState
from .xmlstream import XMLStream

SM: Final = namespaces.STREAM_MANAGEMENT
#: Our acknowledgement request, as written after every batch of counted stanzas.
R: Final = f"<r xmlns='{SM}'/>".encode()
#: The tags of the server's answers to ``<enable/>`` and ``<resume/>``.
ANSWERS: Final = frozenset({f"{{{SM}}}enabled", f"{{{SM}}}resumed", f"{{{SM}}}failed"})
_RESUMED: Final = f"{{{SM}}}resumed"
_ENABLED: Final = f"{{{SM}}}enabled"
_A_TEMPLATE: Final = b"<a xmlns='" + SM.encode() + b"' h='%d'/>"


def sm_element(name: str, **attributes: str) -> etree._Element:
    """A stream management element ``<name xmlns='urn:xmpp:sm:3' .../>``."""
    element = etree.Element(f"{{{SM}}}{name}", nsmap={None: SM})
    for key, value in attributes.items():
        element.set(key, value)
    return element


class WireState(enum.Enum):
    """Whether stanzas may be written, and which answer is awaited."""

    #: no XML stream attached
    DETACHED = "detached"
    #: attached; writing waits until the session is set up (enabled, resumed or not wanted)
    HELD = "held"
    #: ``<enable/>`` sent, its answer awaited
    ENABLING = "enabling"
    #: ``<resume/>`` sent, its answer awaited
    RESUMING = "resuming"
    #: the session is set up: stanzas are written
    FLOWING = "flowing"


class WireInput(enum.Enum):
    """What changes a :class:`WireState`."""

    ATTACH = "attach"
    ENABLE = "enable"
    RESUME = "resume"
    #: the server answered ``<enable/>`` or ``<resume/>``, or the deadline passed
    ANSWERED = "answered"
    RELEASE = "release"
    DETACH = "detach"


_W, _I = WireState, WireInput

#: (state, input) → next state; a pair not listed raises :class:`RuntimeError`.
TRANSITIONS: Final[Mapping[tuple[WireState, WireInput], WireState]] = {
    **{(state, _I.ATTACH): _W.HELD for state in _W},
    **{(state, _I.DETACH): _W.DETACHED for state in _W},
    (_W.HELD, _I.ENABLE): _W.ENABLING,
    (_W.HELD, _I.RESUME): _W.RESUMING,
    (_W.ENABLING, _I.ANSWERED): _W.HELD,
    (_W.RESUMING, _I.ANSWERED): _W.HELD,
    (_W.HELD, _I.RELEASE): _W.FLOWING,
    (_W.FLOWING, _I.RELEASE): _W.FLOWING,
    (_W.DETACHED, _I.RELEASE): _W.DETACHED,
}


@dataclass(frozen=True)
class Resumed:
    """The server resumed the session (``<resumed h/>``).

    :ivar acked: the entries its ``h`` acknowledged (the tokens among them are ``ACKED``).
    :ivar resend: the entries to write again, in their order, before anything newly queued.
    """

    acked: tuple[Entry, ...]
    resend: tuple[Entry, ...]


@dataclass(frozen=True)
class Refused:
    """The session cannot be resumed.

    :ivar handled: the ``h`` of the server's ``<failed/>``, or ``None`` when it gave none (or
        the answer was broken): :class:`~txxmppnode.sm.ResendPolicy` decides then.
    :ivar error: the stream error we sent because ``<resumed/>`` was broken, else ``None``.
    """

    handled: int | None
    error: StreamError | None = None


class SMWire:
    """XEP-0198 as spoken for one stanza stream, over its successive XML streams.

    :param counters: the session's counters and unacknowledged queue.
    :param reactor: the clock of the deadlines.
    :param log: where negotiation outcomes are logged (the stanza stream's logger).
    """

    def __init__(self, counters: StreamManagement, reactor: object, log: Logger) -> None:
        self.counters = counters
        self.reactor = reactor
        self.log = log
        self._state = WireState.DETACHED
        #: Whether stanzas may be written now: the state is FLOWING.  Read for every batch
        #: the stanza stream writes, so it is kept as a plain attribute, set with the state.
        self.writing = False
        #: An ``<r/>`` came this turn; its ``<a/>`` goes out with the next batch
        #: (:meth:`take_owed_ack`).
        self.ack_owed = False
        # the answer to <enable/> or <resume/>, while ENABLING or RESUMING
        self._pending: defer.Deferred[etree._Element] | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> WireState:
        """The :class:`WireState`."""
        return self._state

    def _input(self, event: WireInput) -> None:
        try:
            self._state = TRANSITIONS[self._state, event]
        except KeyError:
            raise RuntimeError(
                f"stream management: {event.value} is not allowed in state {self._state.name}"
            ) from None
        self.writing = self._state is WireState.FLOWING

    def attach(self) -> None:
        """A new XML stream is attached: hold writes until :meth:`release`."""
        self._fail_pending(ConnectionError("the stream was detached"))
        self._input(WireInput.ATTACH)
        self.ack_owed = False

    def release(self) -> None:
        """The session is set up (or none is wanted): writes may go out."""
        self._input(WireInput.RELEASE)

    def detach(self, reason: BaseException | None = None) -> None:
        """The XML stream is gone: an awaited answer fails with *reason*; nothing is owed."""
        self._input(WireInput.DETACH)
        self.ack_owed = False
        self._fail_pending(reason or ConnectionError("the stream was detached"))

    def _fail_pending(self, reason: BaseException) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.called:
            pending.errback(reason)

    # -- negotiation -----------------------------------------------------------------------

    async def enable(
        self, xmlstream: XMLStream, resumption_timeout: int | None, deadline: Deadline
    ) -> bool:
        """Send ``<enable/>`` and apply the answer; return whether the session is on.

        *resumption_timeout* 0 asks for no resumption; another number is sent as ``max``.

        :raises TimeoutError: no answer by *deadline*; *xmlstream* is aborted with it.
        """
        attributes = {"resume": "false" if resumption_timeout == 0 else "true"}
        if resumption_timeout:
            attributes["max"] = str(int(resumption_timeout))
        try:
            answer = await self._exchange(
                xmlstream, WireInput.ENABLE, sm_element("enable", **attributes), deadline
            )
        except TimeoutError as exc:
            self.log.warn("{error}; giving up this connection", error=exc)
            xmlstream.abort(exc)
            raise
        if answer.tag == _ENABLED:
            max_ = answer.get("max")
            self.counters.on_enabled(
                answer.get("id"),
                answer.get("resume") in ("true", "1"),
                int(max_) if max_ and max_.isdigit() else None,
                answer.get("location"),
            )
            self.log.info(
                "stream management enabled (resumable: {resumable})",
                resumable=self.counters.sm_resumable,
            )
        else:
            self.log.info("the server refused stream management")
        return self.counters.sm_enabled

    async def resume(self, xmlstream: XMLStream, deadline: Deadline) -> Resumed | Refused:
        """Send ``<resume previd h/>``; return what the server made of it.

        A ``<resumed/>`` without a valid ``h``, or acknowledging more than we sent, is
        answered with the stream error of :meth:`violation` on *xmlstream* and returned as
        :class:`Refused` with that error (the counters did not change).  After a
        :class:`Refused` the caller gives the session up with :meth:`give_up`.

        :raises TimeoutError: no answer by *deadline* (nothing changed).
        """
        counters = self.counters
        assert counters.sm_id is not None
        request = sm_element("resume", previd=counters.sm_id, h=str(counters.ack_answer()))
        answer = await self._exchange(xmlstream, WireInput.RESUME, request, deadline)
        h = answer.get("h")
        if answer.tag != _RESUMED:
            return Refused(int(h) if h and h.isdigit() else None)
        unacked = counters.sm_unacked_list
        try:
            resend = counters.on_resumed(int(h or ""))
        except (ValueError, HandledCountTooHigh) as exc:
            return Refused(None, self.violation(xmlstream, exc))
        acked = tuple(t for t in unacked if t.state is StanzaState.ACKED)
        return Resumed(acked=acked, resend=tuple(resend))

    def give_up(self, handled: int | None, policy: ResendPolicy) -> ResumeFailedOutcome:
        """The session cannot be resumed: settle its unacknowledged stanzas.

        *handled* is the ``h`` of the refusal (``None``: unknown, *policy* decides).  A count
        above what was sent is logged and treated as unknown.
        """
        try:
            return self.counters.on_resume_failed(handled, policy=policy)
        except HandledCountTooHigh as exc:
            self.log.warn("ignoring the h of a refused resumption: {error}", error=exc)
            return self.counters.on_resume_failed(None, policy=policy)

    async def _exchange(
        self, xmlstream: XMLStream, event: WireInput, request: etree._Element, deadline: Deadline
    ) -> etree._Element:
        """Send *request* and wait for the answer, which :meth:`answered` hands over."""
        self._input(event)
        waiting: defer.Deferred[etree._Element] = defer.Deferred()
        self._pending = waiting
        xmlstream.send(request)
        try:
            return await deadline.wait(waiting)
        finally:
            # answered or timed out; a detach or a new attach failed it and moved on already
            if self._pending is waiting:
                self._pending = None
                self._input(WireInput.ANSWERED)

    def answered(self, element: etree._Element) -> None:
        """The server sent ``<enabled/>``, ``<resumed/>`` or ``<failed/>``."""
        pending = self._pending
        if pending is not None and not pending.called:
            pending.callback(element)
        else:
            self.log.warn("unexpected {tag} from the server", tag=element.tag)

    # -- acknowledgements ------------------------------------------------------------------

    def ack_requested(self) -> bool:
        """The server sent ``<r/>``: return whether an ``<a/>`` is now owed (stream management
        is on); it goes out with the next batch, once per turn however many ``<r/>`` came."""
        if not self.counters.sm_enabled:
            return False
        self.ack_owed = True
        return True

    def take_owed_ack(self) -> bytes | None:
        """The ``<a h/>`` owed for this turn's ``<r/>``, or ``None``; nothing is owed after."""
        owed, self.ack_owed = self.ack_owed, False
        if owed and self.counters.sm_enabled:
            return _A_TEMPLATE % self.counters.ack_answer()
        return None

    def acknowledge(self, xmlstream: XMLStream | None) -> None:
        """Write ``<a h/>`` unasked, if the session is on and *xmlstream* open."""
        if xmlstream is not None and xmlstream.is_open and self.counters.sm_enabled:
            xmlstream.send(sm_element("a", h=str(self.counters.ack_answer())))

    def acked(self, xmlstream: XMLStream | None, element: etree._Element) -> list[Entry] | None:
        """Apply the server's ``<a h/>``; return what it acknowledged.

        ``None`` when stream management is off, or when the count is invalid or too high: the
        stream error of :meth:`violation` was then sent on *xmlstream*.
        """
        if not self.counters.sm_enabled:
            return None
        try:
            return self.counters.on_ack(int(element.get("h", "")))
        except (ValueError, HandledCountTooHigh) as exc:
            self.violation(xmlstream, exc)
            return None

    def violation(self, xmlstream: XMLStream | None, exc: BaseException) -> StreamError:
        """The server sent a count that is invalid or acknowledges what we never sent.

        Send the ``undefined-condition`` stream error (with the ``<handled-count-too-high/>``
        of XEP-0198 §4 when it applies) on *xmlstream*, which ends it; return the error.
        """
        self.log.error("stream management violation: {error}", error=exc)
        error = StreamError(StreamErrorCondition.UNDEFINED_CONDITION, str(exc), sent_by_us=True)
        error.__cause__ = exc
        if xmlstream is not None:
            detail = exc.to_element() if isinstance(exc, HandledCountTooHigh) else None
            xmlstream.fail(error, detail)
        return error


__all__ = [
    "ANSWERS",
    "TRANSITIONS",
    "R",
    "Refused",
    "Resumed",
    "SMWire",
    "WireInput",
    "WireState",
    "sm_element",
]
