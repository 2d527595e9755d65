"""StanzaStream: the stanza layer that outlives single connections.

One :class:`StanzaStream` serves a client for its whole life.  It is *attached* to one
:class:`~txxmppnode.xmlstream.XMLStream` at a time and holds everything that must survive a
network fault: the send queue, the stanzas the server has not acknowledged yet, and the IQ
requests waiting for a response.

Life cycle, driven by the client::

    stream.start(xmlstream, bound_jid, sm=True)    fresh session (after resource binding)
    ... the connection breaks ...
    stream.suspend(reason)                          state kept; enqueue() still works
    await stream.resume(xmlstream)                  True: resumed, nothing lost
                                                    False: refused, state destroyed -> bind, start
    stream.destroy(reason)                          for good: unacked and queued tokens fail

Sending: :meth:`enqueue` checks and serialises the stanza at once (a stanza that cannot be sent
fails here, with nothing written), and the queue is written in one transport write per reactor
turn, followed by an ``<r/>`` when stream management is on.

Bounds, against a server that does not cooperate:

* at most :attr:`~StanzaStream.max_unacked` stanzas are held for the server (queued, or
  written and not yet acknowledged); beyond that :meth:`~StanzaStream.enqueue` raises
  :class:`~txxmppnode.errors.QueueFull`, and a server whose requests would make the stream
  hold more through the replies it owes them is given up like a dead link;
* replies to the server's requests are held as serialised bytes only (no token, no element);
* nothing is written while the XML stream is paused (its transport's write buffer is full; it
  stops reading meanwhile), and what was queued goes out when it drains;
* every ``<r/>`` of one reactor turn gets one ``<a/>``, written at the end of the turn;
* an ``<r/>`` the server leaves unanswered for the hard liveness limit ends the connection
  like silence does, whatever keep-alives arrive (:mod:`~txxmppnode.liveness`).

Receiving: the stream counts stanzas for XEP-0198 and hands them on: IQ responses to
:mod:`~txxmppnode.iq_tracker`, IQ requests to :mod:`~txxmppnode.iq_serving` (handlers, pings,
error replies), messages and presences through the filters to their callbacks
(:mod:`~txxmppnode.dispatch`).  Stream management elements go to
:mod:`~txxmppnode.sm_wire`, which also negotiates the session (``<enable/>``, ``<resume/>``)
and decides when writing may go on; :mod:`~txxmppnode.sm` counts.  This module is the queue
and the glue between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Final

from lxml import etree
from twisted.internet import defer, interfaces
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import namespaces
from .deadline import Deadline
from .dispatch import Dispatcher
from .errors import DestructionRequested, ErrorCondition, QueueFull
from .iq_serving import PING, IQServer
from .iq_tracker import IQTracker
from .jid import JID
from .liveness import LivenessMonitor
from .signal import Signal
from .sm import Entry, ResendPolicy, StreamManagement
from .sm_wire import ANSWERS, R, Refused, SMWire
from .stanza import IQ, IQType, Message, Presence, Stanza
from .token import StanzaState, StanzaToken
from .xmlstream import XMLStream
from .xmlwriter import serialize

SM: Final = namespaces.STREAM_MANAGEMENT
#: Seconds the server has to answer ``<enable/>`` or ``<resume/>`` (the client passes its own
#: ``negotiation_timeout``).
DEFAULT_SM_TIMEOUT: Final = 60.0
#: How many stanzas a stream holds for the server (queued or unacknowledged) by default.
DEFAULT_MAX_UNACKED: Final = 5000
_R_TAG: Final = f"{{{SM}}}r"
_A_TAG: Final = f"{{{SM}}}a"


def _seconds(value: timedelta | float | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


class StanzaStream:
    """The send queue and the dispatch of what arrives, over successive XML streams.

    :param local_jid: our account; the bound full JID replaces it at :meth:`start`.
    :param reactor: the clock and the turn-based write batching (an ``IReactorTime``).
    :param soft_timeout: silence before asking the server for a sign of life.
    :param round_trip_time: further silence before the connection is given up.
    :param resend_policy: what to do with unacknowledged stanzas when the server refuses a
        resumption without saying what it received (see :class:`~txxmppnode.sm.ResendPolicy`).
    :param max_unacked: how many stanzas the stream holds for the server at most: queued,
        plus written and not yet acknowledged (with stream management), the stream's own
        replies to the server's requests included (:data:`DEFAULT_MAX_UNACKED`; ``None``: no
        limit).  Also settable as :attr:`max_unacked`.  At the limit :meth:`enqueue` raises
        :class:`~txxmppnode.errors.QueueFull`; a reply the stream owes the server that would go
        beyond it is still queued, but the connection is aborted with ``QueueFull`` (a
        server that floods requests and acknowledges nothing is treated as a dead link: the
        session is suspended and resumed).
    """

    def __init__(
        self,
        local_jid: JID,
        *,
        reactor: Any,
        logger: Logger | None = None,
        soft_timeout: timedelta | None = timedelta(seconds=60),
        round_trip_time: timedelta | None = timedelta(seconds=60),
        resend_policy: ResendPolicy = ResendPolicy.DISCONNECT,
        max_unacked: int | None = DEFAULT_MAX_UNACKED,
    ) -> None:
        self.local_jid = local_jid
        #: The limit of :meth:`enqueue`: see the class documentation.
        self.max_unacked = max_unacked
        self.reactor = reactor
        self.log = logger or Logger()
        self.soft_timeout = soft_timeout
        self.round_trip_time = round_trip_time
        self.resend_policy = resend_policy
        self.dispatcher = Dispatcher()
        d = self.dispatcher
        # the filter chains, for the services and the application
        self.app_inbound_message_filter = d.app_inbound_message_filter
        self.service_inbound_message_filter = d.service_inbound_message_filter
        self.app_inbound_presence_filter = d.app_inbound_presence_filter
        self.service_inbound_presence_filter = d.service_inbound_presence_filter
        self.app_outbound_message_filter = d.app_outbound_message_filter
        self.service_outbound_message_filter = d.service_outbound_message_filter
        self.app_outbound_presence_filter = d.app_outbound_presence_filter
        self.service_outbound_presence_filter = d.service_outbound_presence_filter
        #: Emitted with the reason when the stream's state is lost (tokens failed, IQs failed).
        self.on_stream_destroyed: Signal[[BaseException | None]] = Signal(
            "StanzaStream.on_stream_destroyed"
        )
        #: Emitted with the reason when the attached XML stream ends (the session is
        #: suspended: resume it or destroy it).
        self.on_connection_lost: Signal[[BaseException | None]] = Signal(
            "StanzaStream.on_connection_lost"
        )
        #: Emitted with every stanza received (message, presence or IQ), before any filter.
        self.on_stanza_received: Signal[[Stanza]] = Signal("StanzaStream.on_stanza_received")
        #: Emitted with every stanza queued for sending, after the outbound filters (once per
        #: stanza, however often stream management writes it again).
        self.on_stanza_enqueued: Signal[[Stanza]] = Signal("StanzaStream.on_stanza_enqueued")
        self._sm = StreamManagement()
        # XEP-0198 on the wire; its state says whether writing may go on
        self._wire = SMWire(self._sm, reactor, self.log)
        self._iq = IQTracker(reactor)
        self._iq.local_jid = local_jid
        self._iq_server = IQServer(self.dispatcher, self._queue_reply, self.log)
        # tokens, and the bare bytes of the replies we owe the server (see sm.Entry)
        self._queue: deque[Entry] = deque()
        # the serialised stanza of each token still to be written or acknowledged
        self._data: dict[StanzaToken, bytes] = {}
        self._xmlstream: XMLStream | None = None
        self._flush_call: interfaces.IDelayedCall | None = None
        self._liveness: LivenessMonitor | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while attached to an XML stream."""
        return self._xmlstream is not None

    @property
    def xmlstream(self) -> XMLStream | None:
        """The XML stream attached now, or ``None`` while suspended or stopped."""
        return self._xmlstream

    @property
    def sm_enabled(self) -> bool:
        """Whether XEP-0198 stream management is on for the current session."""
        return self._sm.sm_enabled

    @property
    def sm_id(self) -> str | None:
        return self._sm.sm_id

    @property
    def sm_resumable(self) -> bool:
        return self._sm.sm_resumable

    @property
    def sm_max(self) -> int | None:
        return self._sm.sm_max

    @property
    def sm_location(self) -> str | None:
        return self._sm.sm_location

    @property
    def sm_outbound_base(self) -> int:
        return self._sm.sm_outbound_base

    @property
    def sm_inbound_ctr(self) -> int:
        return self._sm.sm_inbound_ctr

    @property
    def sm_unacked_list(self) -> list[StanzaToken]:
        """The stanzas sent but not acknowledged, oldest first (a copy)."""
        return self._sm.sm_unacked_list

    @property
    def queue_length(self) -> int:
        """Stanzas waiting to be written."""
        return len(self._queue)

    @property
    def unacked_count(self) -> int:
        """Stanzas held for the server: queued, plus written and not yet acknowledged.

        This is what :attr:`max_unacked` limits; the stream's replies to the server count.
        """
        return len(self._queue) + self._sm.unacked_count

    # -- registration (delegated to the dispatcher) -----------------------------------------

    def register_iq_request_handler(
        self, type_: Any, payload_tag: str, handler: Any, *, with_send_reply: bool = False
    ) -> None:
        """Serve IQ requests of *type_* whose payload is *payload_tag* (Clark notation).

        *handler(iq)* returns the result payload (an element or ``None``), a Deferred or an
        awaitable of one, or raises :class:`~txxmppnode.errors.XMPPError` for an error reply;
        any other exception becomes ``undefined-condition`` and is logged.  With
        *with_send_reply*, it is called as ``handler(iq, send_reply)`` and may call
        ``send_reply(payload_or_error)`` itself to answer before it returns.

        :raises ValueError: if a handler is registered for the pair already.
        """
        self.dispatcher.register_iq_request_handler(
            type_, payload_tag, handler, with_send_reply=with_send_reply
        )

    def unregister_iq_request_handler(self, type_: Any, payload_tag: str) -> None:
        self.dispatcher.unregister_iq_request_handler(type_, payload_tag)

    def register_message_callback(self, type_: Any, from_: Any, cb: Callable[..., Any]) -> None:
        self.dispatcher.register_message_callback(type_, from_, cb)

    def unregister_message_callback(self, type_: Any, from_: Any) -> None:
        self.dispatcher.unregister_message_callback(type_, from_)

    def register_presence_callback(self, type_: Any, from_: Any, cb: Callable[..., Any]) -> None:
        self.dispatcher.register_presence_callback(type_, from_, cb)

    def unregister_presence_callback(self, type_: Any, from_: Any) -> None:
        self.dispatcher.unregister_presence_callback(type_, from_)

    # -- sending ---------------------------------------------------------------------------

    def enqueue(self, stanza: Stanza, **kwargs: Any) -> StanzaToken:
        """Queue *stanza* for sending; return its token.

        The stanza gets an unpredictable id if it has none, is checked (RFC 6120 rules) and
        serialised now; outbound filters run now too.

        :raises QueueFull: :attr:`max_unacked` stanzas are held for the server already (see
            :attr:`unacked_count`); nothing is queued.  Try again once the server acknowledged
            some (``on_state_change`` of earlier tokens tells when).
        :raises ValueError: the stanza is invalid or cannot be serialised; nothing is queued.
        """
        limit = self.max_unacked
        if limit is not None and self.unacked_count >= limit:
            raise QueueFull(
                f"{self.unacked_count} stanzas are queued or unacknowledged (max_unacked)"
            )
        stanza.autoset_id()
        stanza.validate()
        token = StanzaToken(stanza, **kwargs)
        filtered: Stanza | None = stanza
        if isinstance(stanza, Message | Presence):
            filtered = self.dispatcher.filter_outbound(stanza)
        if filtered is None:
            token._set_state(StanzaState.DROPPED)
            return token
        self._data[token] = serialize(filtered)
        self._queue.append(token)
        self._schedule_flush()
        if self.on_stanza_enqueued:
            self.on_stanza_enqueued.emit(filtered)
        return token

    def send(
        self, stanza: Stanza, *, timeout: float | None = None, cb: Callable[[IQ], Any] | None = None
    ) -> defer.Deferred[Any]:
        """Send *stanza*; for an IQ request, fire with the response's payload.

        Anything else fires with ``None`` once the server acknowledged the stanza (with
        stream management) or once it was written (without), as :meth:`StanzaToken.deferred`.

        :param timeout: for an IQ request, the seconds the response may take; for anything
            else, the seconds until the acknowledgement (stream management) or the write
            (without).  This extends the reference API, where *timeout* concerns IQ responses
            only.  A stanza still queued when the time is up is withdrawn (``ABORTED``) and
            never written; one already written stays in the unacknowledged queue and may still
            reach its recipient.
        :raises ValueError: *cb* given for anything but an IQ request.
        :raises QueueFull: :attr:`max_unacked` stanzas are held already; nothing is queued.
        :raises XMPPError: the response is an error.
        :raises ErroneousStanza: the response cannot be understood.
        :raises TimeoutError: no response, acknowledgement or write in *timeout* seconds.
        """
        is_request = isinstance(stanza, IQ) and stanza.type_.is_request
        if cb is not None and not is_request:
            return defer.fail(ValueError("cb is only allowed with IQ requests"))
        try:
            token = self.enqueue(stanza)
        except (ValueError, QueueFull) as exc:
            return defer.fail(exc)
        if not is_request:
            return self._delivered(token, timeout)
        return self._iq.request(token, timeout, cb)

    def _delivered(self, token: StanzaToken, timeout: float | None) -> defer.Deferred[None]:
        """The outcome of *token*, failing with :class:`TimeoutError` after *timeout*."""
        outcome = token.deferred()
        if timeout is None:
            return outcome

        def timed_out(result: Any, seconds: float) -> Any:
            if not isinstance(result, Failure):
                return result
            if token.state is StanzaState.ACTIVE:
                token.abort()  # not written yet: it never will be
                raise TimeoutError(f"the stanza was not sent within {seconds:g}s (withdrawn)")
            raise TimeoutError(f"the server did not acknowledge the stanza within {seconds:g}s")

        return outcome.addTimeout(timeout, self.reactor, timed_out)

    def _schedule_flush(self) -> None:
        if self._flush_call is None and self._xmlstream is not None and self._wire.writing:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def acknowledge(self) -> None:
        """Tell the server, unasked, how many stanzas were handled (XEP-0198 ``<a h/>``).

        Sent before a clean close: a server still holding stanzas we received but did not
        acknowledge yet delivers them again on closing (to another resource of the account,
        or to offline storage), which would hand them twice to the account.  Nothing is
        written without stream management or a stream.
        """
        self._wire.acknowledge(self._xmlstream)

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the reactor turn."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush()

    def _flush(self) -> None:
        """Write everything queued in one transport write (one batch per reactor turn).

        The batch starts with the ``<a/>`` owed for this turn's ``<r/>`` and ends with an
        ``<r/>`` of ours.  Nothing is written while the XML stream is paused.
        """
        self._flush_call = None
        xmlstream = self._xmlstream
        wire = self._wire
        if xmlstream is None or not wire.writing or xmlstream.paused:
            return
        batch: list[bytes] = []
        if wire.ack_owed:
            ack = wire.take_owed_ack()
            if ack is not None:
                batch.append(ack)
        requested = False
        while self._queue:
            token = self._queue.popleft()
            if isinstance(token, bytes):  # a reply we owe the server
                batch.append(token)
                if self._sm.sm_enabled:
                    self._sm.on_sent(token)
                    requested = True
                continue
            if token.state is not StanzaState.ACTIVE:
                self._data.pop(token, None)  # aborted while queued
                continue
            batch.append(self._data[token])
            if self._sm.sm_enabled:
                self._sm.on_sent(token)
                requested = True
            else:
                self._data.pop(token, None)
                token._set_state(StanzaState.SENT_WITHOUT_SM)
        if requested:
            batch.append(R)
            if self._liveness is not None:
                self._liveness.expect_answer()
        if batch:
            try:
                xmlstream.send_raw(b"".join(batch))
            except ConnectionError as exc:
                self.log.info("write failed, keeping the stanzas for later: {error}", error=exc)

    def _forget_acked(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if isinstance(entry, StanzaToken):
                self._data.pop(entry, None)

    # -- life cycle -------------------------------------------------------------------------

    def start(
        self,
        xmlstream: XMLStream,
        bound_jid: JID,
        *,
        sm: bool = False,
        resumption_timeout: int | None = None,
        timeout: float | None = DEFAULT_SM_TIMEOUT,
    ) -> defer.Deferred[bool]:
        """Attach to a freshly bound *xmlstream*; with *sm*, enable stream management first.

        The Deferred fires with whether stream management got enabled; the queue is written
        once the server answered ``<enable/>`` (so every stanza is counted) or at once.

        :param timeout: seconds the server has to answer ``<enable/>``, from when it is sent;
            nothing it sends meanwhile extends them (``None``: no limit).
        :raises TimeoutError: (through the Deferred) no answer to ``<enable/>`` in time.  The
            XML stream is aborted with it, as a failed negotiation step: a client reconnects
            and tries again.  Queued stanzas stay queued for the next session.
        """
        self.local_jid = bound_jid
        self._iq.local_jid = bound_jid
        self._attach(xmlstream)
        if not sm:
            self._release()
            return defer.succeed(False)
        return defer.Deferred.fromCoroutine(self._enable(xmlstream, resumption_timeout, timeout))

    async def _enable(
        self, xmlstream: XMLStream, resumption_timeout: int | None, timeout: float | None
    ) -> bool:
        deadline = Deadline(self.reactor, timeout, "stream management (<enable/>)")
        enabled = await self._wire.enable(xmlstream, resumption_timeout, deadline)
        self._release()
        return enabled

    async def resume(
        self, xmlstream: XMLStream, *, timeout: float | None = DEFAULT_SM_TIMEOUT
    ) -> bool:
        """Resume the suspended session on *xmlstream* (authenticated, not bound).

        True: resumed; the unacknowledged stanzas are written again in their original order,
        before anything queued meanwhile.  False: the server refused; the old session is
        destroyed (see :attr:`resend_policy`) and the caller binds and :meth:`start` s anew.

        :param timeout: seconds the server has to answer ``<resume/>``, from when it is sent;
            nothing it sends meanwhile extends them (``None``: no limit).
        :raises TimeoutError: no answer in time.  The resumption failed as if refused without
            ``h`` (:attr:`resend_policy` decides about the unacknowledged stanzas, and the
            session is destroyed), and *xmlstream* is aborted with the error: nothing more can
            be done on a stream whose server went quiet.  The caller binds anew on another
            connection.
        :raises StreamError: ``<resumed/>`` acknowledged more stanzas than we sent, or had no
            valid ``h``.  The ``undefined-condition`` stream error (with XEP-0198's
            ``<handled-count-too-high/>``) was sent and *xmlstream* is closing; the session is
            destroyed as on a refusal without a count, so :attr:`resend_policy` decides about
            the unacknowledged stanzas, and the caller starts a fresh session on a new
            connection.  Not a :class:`~txxmppnode.errors.FatalError`.
        """
        if not (self._sm.sm_enabled and self._sm.sm_resumable and self._sm.sm_id):
            raise RuntimeError("there is no resumable session")
        self._attach(xmlstream)
        deadline = Deadline(self.reactor, timeout, "stream resumption (<resume/>)")
        try:
            outcome = await self._wire.resume(xmlstream, deadline)
        except TimeoutError as exc:
            self.log.warn("{error}; the session is given up", error=exc)
            self._end_session(None, ConnectionError("the stream could not be resumed"))
            xmlstream.abort(exc)
            raise
        if isinstance(outcome, Refused):
            # A broken <resumed/> (its count wrong or missing) was answered with a stream
            # error, and the session is given up as if the server had refused it without a
            # count: the resend policy decides about the unacknowledged stanzas.  Its bug is
            # no reason to stop: the next connection starts afresh.
            error = outcome.error
            refused = ConnectionError("the stream could not be resumed")
            self._end_session(outcome.handled, error or refused)
            if error is not None:
                raise error
            return False
        self._forget_acked(outcome.acked)
        data = b"".join(self._bytes_of(entry) for entry in outcome.resend)
        if data:
            xmlstream.send_raw(data + R)
            if self._liveness is not None:
                self._liveness.expect_answer()
        self._release()
        self.log.info("stream resumed; {n} stanzas sent again", n=len(outcome.resend))
        return True

    def _bytes_of(self, entry: Entry) -> bytes:
        return entry if isinstance(entry, bytes) else self._data[entry]

    def _end_session(self, handled: int | None, reason: BaseException) -> None:
        """The session cannot be resumed: settle its stanzas and report it destroyed.

        The unacknowledged stanzas up to *handled* are acknowledged; the others are queued
        again at the front for the next session, or reported lost, as :attr:`resend_policy`
        says when *handled* is ``None``.  Pending IQ requests fail with *reason*.
        """
        outcome = self._wire.give_up(handled, self.resend_policy)
        for token in reversed(outcome.resend):
            self._queue.appendleft(token)
        self._forget_acked(outcome.acked)
        self._forget_acked(outcome.disconnected)
        self.log.info("resumption failed; {n} stanzas will be sent again", n=len(outcome.resend))
        self._detach()
        self._iq.fail_all(reason)
        self.on_stream_destroyed.emit(reason)

    def suspend(self, reason: BaseException | None = None) -> None:
        """The XML stream is gone but the session may be resumed: keep every state."""
        self.log.debug("stream suspended: {reason}", reason=reason)  # the client reports it
        self._detach()

    def destroy(self, reason: BaseException | None = None) -> None:
        """Lose the session: queued and unacknowledged stanzas and pending IQs fail."""
        self._detach()
        failure = reason or DestructionRequested("the stream was destroyed")
        self._iq.fail_all(failure)
        self._forget_acked(self._sm.destroy())
        queued, self._queue = self._queue, deque()
        for token in queued:
            if isinstance(token, bytes):
                continue
            self._data.pop(token, None)
            if token.state is StanzaState.ACTIVE:
                token._set_state(StanzaState.DISCONNECTED)
        self.on_stream_destroyed.emit(reason)

    def _attach(self, xmlstream: XMLStream) -> None:
        self._xmlstream = xmlstream
        self._wire.attach()
        xmlstream.set_element_handler(self._on_element)
        xmlstream.on_closing.connect(lambda reason: self._on_closing(xmlstream, reason))
        xmlstream.on_drained.connect(lambda: self._on_drained(xmlstream))
        self._liveness = LivenessMonitor(
            self.reactor,
            lambda: xmlstream.last_received,
            _seconds(self.soft_timeout),
            _seconds(self.round_trip_time),
            self._on_soft_limit,
            lambda: xmlstream.abort(TimeoutError(self._silence_message())),
            lambda: xmlstream.abort(TimeoutError(self._unanswered_message())),
        )
        self._liveness.start()

    def _on_drained(self, xmlstream: XMLStream) -> None:
        if xmlstream is self._xmlstream:
            self._schedule_flush()

    def _unanswered_message(self) -> str:
        seconds = (_seconds(self.soft_timeout) or 0) + (_seconds(self.round_trip_time) or 0)
        return f"the server answered no acknowledgement request (<r/>) for {seconds:g}s"

    def _silence_message(self) -> str:
        seconds = (_seconds(self.soft_timeout) or 0) + (_seconds(self.round_trip_time) or 0)
        return f"nothing received from the server for {seconds:g}s"

    def _release(self) -> None:
        self._wire.release()
        self._schedule_flush()

    def _detach(self) -> None:
        if self._liveness is not None:
            self._liveness.stop()
            self._liveness = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._xmlstream is not None:
            self._xmlstream.set_element_handler(None)
        self._xmlstream = None
        self._wire.detach(ConnectionError("the stream was detached"))

    def _on_closing(self, xmlstream: XMLStream, reason: BaseException | None) -> None:
        """The attached XML stream ends: keep the session (suspend) and tell the owner."""
        if xmlstream is not self._xmlstream:
            return
        self._wire.detach(reason or ConnectionError("the stream closed"))
        self.suspend(reason)
        self.on_connection_lost.emit(reason)

    def _on_soft_limit(self) -> None:
        xmlstream = self._xmlstream
        if xmlstream is None or not xmlstream.is_open:
            return
        if self._sm.sm_enabled:
            xmlstream.send_raw(R)
            if self._liveness is not None:
                self._liveness.expect_answer()
        else:
            ping = IQ(IQType.GET, payload=etree.Element(PING, nsmap={None: namespaces.PING}))
            result = self.send(ping, timeout=_seconds(self.round_trip_time))
            result.addErrback(lambda f: None)  # the hard limit handles silence

    # -- receiving ---------------------------------------------------------------------------

    def _on_element(self, element: etree._Element) -> None:
        tag = element.tag
        if isinstance(element, Message | Presence | IQ):
            if self._sm.sm_enabled:
                self._sm.on_received()
            if self.on_stanza_received:
                self.on_stanza_received.emit(element)
            try:
                self._on_stanza(element)
            except Exception:
                self.log.failure("while handling {tag}", tag=tag)
        elif tag == _R_TAG:
            # answered at the end of the turn: a flood of <r/> gets one <a/> per turn
            if self._xmlstream is not None and self._wire.ack_requested():
                self._schedule_flush()
        elif tag == _A_TAG:
            acked = self._wire.acked(self._xmlstream, element)
            if acked is not None:
                if self._liveness is not None:
                    self._liveness.answered()
                self._forget_acked(acked)
        elif tag in ANSWERS:
            self._wire.answered(element)
        else:
            self.log.debug("ignoring {tag}", tag=tag)

    def _on_stanza(self, stanza: Message | Presence | IQ) -> None:
        if isinstance(stanza, IQ):
            self._on_iq(stanza)
            return
        try:
            _ = stanza.type_, stanza.from_
        except ValueError as exc:
            self._iq_server.reply_error(stanza, ErrorCondition.BAD_REQUEST, str(exc))
            return
        filtered = self.dispatcher.filter_inbound(stanza)
        if filtered is None:
            return
        if isinstance(filtered, Message):
            handled = self.dispatcher.dispatch_message(filtered)
        else:
            handled = self.dispatcher.dispatch_presence(filtered)
        if not handled:
            self.log.debug(
                "no callback for {tag} from {sender}", tag=stanza.tag, sender=stanza.get("from")
            )

    def _on_iq(self, iq: IQ) -> None:
        try:
            type_ = iq.type_
        except ValueError:
            self._iq_server.reply_error(iq, ErrorCondition.BAD_REQUEST, "invalid IQ type")
            return
        if type_.is_request:
            self._iq_server.serve(iq)
        elif not self._iq.handle_response(iq):
            self.log.debug("unexpected IQ response {id}", id=iq.id_)

    def _queue_reply(self, reply: Stanza, data: bytes) -> None:
        """Queue the bytes of a reply we owe the server (nobody waits for it).

        It counts against :attr:`max_unacked`, but is never refused: the server asked for
        it.  If it goes beyond the limit, the server is sending requests faster than it
        acknowledges our answers, and the connection is aborted with
        :class:`~txxmppnode.errors.QueueFull`; reading stops there, so the excess is bounded.
        """
        limit = self.max_unacked
        if limit is not None and self.unacked_count >= limit and self._xmlstream is not None:
            error = QueueFull(
                f"the server left {self.unacked_count} stanzas unacknowledged and keeps sending "
                "requests (max_unacked)"
            )
            self.log.warn("{error}; giving up this connection", error=error)
            self._xmlstream.abort(error)
        self._queue.append(data)
        self._schedule_flush()
        if self.on_stanza_enqueued:
            self.on_stanza_enqueued.emit(reply)
