"""The stanza stream, its tokens and the XML stream, for asyncio code.

Each class faces the core object of the same name (:attr:`core`): the state lives there, once.
What the core returns as a Deferred is an asyncio future or coroutine here; callbacks may be
coroutine functions:

* IQ request handlers and ``send(..., cb=...)`` callbacks may be ``async def``: the reply (or
  the result of ``send``) waits for them;
* message and presence callbacks may be ``async def``: each call runs as a task of the loop;
* a :class:`StanzaToken` is awaitable, and ``on_state_change`` gets the token of this face.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .. import stanzastream as _core_stream
from .. import token as _core_token
from .. import xmlstream as _core_xmlstream
from ..dispatch import Dispatcher
from ..jid import JID
from ..sm import ResendPolicy
from ..stanza import IQ, Stanza
from ..token import StanzaState
from ._bridge import as_future, awaited_by_twisted, run_as_task
from ._delegate import delegate
from ._reactor import install_reactor, stdlib_twisted_logger
from .signal import Signal, face_of_core_signal

__all__ = ["StanzaStream", "StanzaToken", "XMLStream"]

StateCallback = Callable[["StanzaToken", StanzaState], object]


class StanzaToken:
    """The handle of one outgoing stanza; ``await token`` waits for the outcome of sending.

    Awaiting returns ``None`` once the state is ``SENT_WITHOUT_SM`` or ``ACKED`` and raises
    :class:`ConnectionError` (``DISCONNECTED``), the stored exception (``FAILED``) or
    :class:`RuntimeError` (``ABORTED``, ``DROPPED``).  Tokens of the same stanza compare equal.

    :param stanza: the stanza to send.
    :param on_state_change: called as ``on_state_change(token, state)`` after every change.
    """

    __slots__ = ("_core", "_loop")

    def __init__(
        self,
        stanza: etree._Element,
        *,
        on_state_change: StateCallback | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop
        self._core = _core_token.StanzaToken(
            stanza, on_state_change=_adapt_state_callback(on_state_change, loop)
        )

    @classmethod
    def _of(
        cls, core: _core_token.StanzaToken, loop: asyncio.AbstractEventLoop | None
    ) -> StanzaToken:
        token = cls.__new__(cls)
        token._core, token._loop = core, loop
        return token

    @property
    def core(self) -> _core_token.StanzaToken:
        """The Twisted-side token."""
        return self._core

    @property
    def stanza(self) -> etree._Element:
        """The stanza this token stands for."""
        return self._core.stanza

    @property
    def state(self) -> StanzaState:
        """The current :class:`~txxmppnode.StanzaState`."""
        return self._core.state

    @property
    def exception(self) -> BaseException | None:
        """In state ``FAILED``, the exception that made sending fail; ``None`` otherwise."""
        return self._core.exception

    def abort(self) -> None:
        """Withdraw the stanza from the send queue (state ``ABORTED``).

        :raises RuntimeError: if the stanza is no longer queued.
        """
        self._core.abort()

    def future(self) -> asyncio.Future[None]:
        """A new future for the outcome of sending; cancelling it stops this waiter only."""
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return as_future(self._core.deferred(), loop)

    def __await__(self) -> Generator[Any, None, None]:
        return self.future().__await__()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StanzaToken) and other._core is self._core

    def __hash__(self) -> int:
        return hash(self._core)

    def __repr__(self) -> str:
        return repr(self._core)


def _adapt_state_callback(
    callback: StateCallback | None, loop: asyncio.AbstractEventLoop | None
) -> _core_token.StateCallback | None:
    if callback is None:
        return None

    def call(core: _core_token.StanzaToken, state: StanzaState) -> object:
        return callback(StanzaToken._of(core, loop), state)

    return call


class XMLStream:
    """An XML stream (from :func:`~txxmppnode.asyncio_compat.connect_xmlstream`).

    :param core: the Twisted-side :class:`txxmppnode.xmlstream.XMLStream`.
    """

    def __init__(
        self, core: _core_xmlstream.XMLStream, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._core = core
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        #: Emitted once, when the stream starts to end, with the reason (``None``: clean).
        self.on_closing: Signal[[BaseException | None]] = Signal(loop=self._loop,
                                                                 core=core.on_closing)  # fmt: skip

    @property
    def core(self) -> _core_xmlstream.XMLStream:
        """The Twisted-side XML stream."""
        return self._core

    transport: Any = delegate("transport", "The Twisted transport under the stream.")
    is_open: bool = delegate("is_open", "True from connection until the stream starts to close.")
    tls_connection: Any = delegate("tls_connection", "The pyOpenSSL connection once TLS is on.")
    peer_header: Any = delegate("peer_header", "The peer's stream header.")

    def send(self, element: etree._Element) -> None:
        """Serialise *element* and write it.

        :raises ConnectionError: if the stream is not open.
        """
        self._core.send(element)

    def send_raw(self, data: bytes) -> None:
        """Write already serialised bytes."""
        self._core.send_raw(data)

    async def next_element(self, timeout: float | None = None) -> etree._Element:
        """The next top-level element from the peer; :class:`TimeoutError` after *timeout*."""
        return await as_future(self._core.next_element(timeout), self._loop)

    async def when_lost(self) -> BaseException | None:
        """Return the final reason (``None`` when clean) once disconnected."""
        return await as_future(self._core.when_lost(), self._loop)

    async def close(self) -> BaseException | None:
        """Close cleanly (footers exchanged, or ``close_timeout``); return the final reason."""
        return await as_future(self._core.close(), self._loop)

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the transport at once, without a footer."""
        self._core.abort(reason)


def _core_xml(xmlstream: XMLStream | _core_xmlstream.XMLStream) -> _core_xmlstream.XMLStream:
    return xmlstream.core if isinstance(xmlstream, XMLStream) else xmlstream


class StanzaStream:
    """Queues, IQ correlation, dispatch and XEP-0198 over successive XML streams.

    A :class:`~txxmppnode.asyncio_compat.Client` has one (``client.stream``); the arguments
    are those of :class:`txxmppnode.StanzaStream`, with *loop* instead of the reactor and a
    :class:`logging.Logger` as *logger*.
    """

    def __init__(
        self,
        local_jid: JID,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        logger: Any = None,
        soft_timeout: timedelta | None = timedelta(seconds=60),
        round_trip_time: timedelta | None = timedelta(seconds=60),
        resend_policy: ResendPolicy = ResendPolicy.DISCONNECT,
    ) -> None:
        reactor = install_reactor(loop)
        self._bind(
            _core_stream.StanzaStream(
                local_jid,
                reactor=reactor,
                logger=_twisted_logger(logger),
                soft_timeout=soft_timeout,
                round_trip_time=round_trip_time,
                resend_policy=resend_policy,
            ),
            loop if loop is not None else asyncio.get_running_loop(),
        )

    @classmethod
    def _of(cls, core: _core_stream.StanzaStream, loop: asyncio.AbstractEventLoop) -> StanzaStream:
        stream = cls.__new__(cls)
        stream._bind(core, loop)
        return stream

    def _bind(self, core: _core_stream.StanzaStream, loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self._loop = loop
        #: Emitted with the reason when the stream's state is lost.
        self.on_stream_destroyed: Signal[[BaseException | None]] = Signal(
            loop=loop, core=core.on_stream_destroyed
        )
        #: Emitted with the reason when the attached XML stream ends.
        self.on_connection_lost: Signal[[BaseException | None]] = Signal(
            loop=loop, core=core.on_connection_lost
        )
        d = core
        self.app_inbound_message_filter = d.app_inbound_message_filter
        self.service_inbound_message_filter = d.service_inbound_message_filter
        self.app_inbound_presence_filter = d.app_inbound_presence_filter
        self.service_inbound_presence_filter = d.service_inbound_presence_filter
        self.app_outbound_message_filter = d.app_outbound_message_filter
        self.service_outbound_message_filter = d.service_outbound_message_filter
        self.app_outbound_presence_filter = d.app_outbound_presence_filter
        self.service_outbound_presence_filter = d.service_outbound_presence_filter

    @property
    def core(self) -> _core_stream.StanzaStream:
        """The Twisted-side stanza stream."""
        return self._core

    def __getattr__(self, name: str) -> Signal[...]:
        """Every other signal of the core stream, as an asyncio signal."""
        if "_core" not in self.__dict__:
            raise AttributeError(name)
        return face_of_core_signal(self, self._core, name, self._loop)

    # -- state (the core's) -----------------------------------------------------------------

    local_jid: JID = delegate("local_jid", "Our address (the bound full JID once started).")
    running: bool = delegate("running", "True while attached to an XML stream.")
    sm_enabled: bool = delegate("sm_enabled", "Whether XEP-0198 stream management is on.")
    sm_id: str | None = delegate("sm_id")
    sm_resumable: bool = delegate("sm_resumable")
    sm_max: int | None = delegate("sm_max")
    sm_location: str | None = delegate("sm_location")
    sm_outbound_base: int = delegate("sm_outbound_base")
    sm_inbound_ctr: int = delegate("sm_inbound_ctr")
    queue_length: int = delegate("queue_length", "Stanzas waiting to be written.")
    dispatcher: Dispatcher = delegate("dispatcher", "The core's dispatcher of received stanzas.")
    soft_timeout: timedelta | None = delegate("soft_timeout", writable=True)
    round_trip_time: timedelta | None = delegate("round_trip_time", writable=True)
    resend_policy: ResendPolicy = delegate("resend_policy", writable=True)

    @property
    def xmlstream(self) -> XMLStream | None:
        """The XML stream attached now, or ``None`` while suspended or stopped."""
        core = self._core.xmlstream
        return None if core is None else XMLStream(core, loop=self._loop)

    @property
    def sm_unacked_list(self) -> list[StanzaToken]:
        """The stanzas sent but not acknowledged, oldest first (a copy)."""
        return [StanzaToken._of(t, self._loop) for t in self._core.sm_unacked_list]

    # -- registration -----------------------------------------------------------------------

    def register_iq_request_handler(
        self, type_: Any, payload_tag: str, handler: Any, *, with_send_reply: bool = False
    ) -> None:
        """Serve IQ requests of *type_* whose payload is *payload_tag* (Clark notation).

        *handler(iq)* returns the result payload (an element or ``None``), or is a coroutine
        function returning it, or raises :class:`~txxmppnode.errors.XMPPError`; see
        :meth:`txxmppnode.StanzaStream.register_iq_request_handler`.

        :raises ValueError: if a handler is registered for the pair already.
        """
        self._core.register_iq_request_handler(
            type_, payload_tag, awaited_by_twisted(handler, self._loop),
            with_send_reply=with_send_reply,
        )  # fmt: skip

    def unregister_iq_request_handler(self, type_: Any, payload_tag: str) -> None:
        self._core.unregister_iq_request_handler(type_, payload_tag)

    def register_message_callback(self, type_: Any, from_: Any, cb: Callable[..., Any]) -> None:
        """Call *cb* with received messages of *type_* from *from_* (``None``: any).

        A coroutine function runs as a task for each message.
        """
        self._core.register_message_callback(
            type_, from_, run_as_task(cb, "message callback", self._loop)
        )

    def unregister_message_callback(self, type_: Any, from_: Any) -> None:
        self._core.unregister_message_callback(type_, from_)

    def register_presence_callback(self, type_: Any, from_: Any, cb: Callable[..., Any]) -> None:
        """Call *cb* with received presences of *type_* from *from_* (``None``: any).

        A coroutine function runs as a task for each presence.
        """
        self._core.register_presence_callback(
            type_, from_, run_as_task(cb, "presence callback", self._loop)
        )

    def unregister_presence_callback(self, type_: Any, from_: Any) -> None:
        self._core.unregister_presence_callback(type_, from_)

    # -- sending ----------------------------------------------------------------------------

    def enqueue(self, stanza: Stanza, **kwargs: Any) -> StanzaToken:
        """Queue *stanza* for sending; return its (awaitable) token.

        :raises ValueError: the stanza is invalid or cannot be serialised; nothing is queued.
        """
        callback = kwargs.pop("on_state_change", None)
        if callback is not None:
            kwargs["on_state_change"] = _adapt_state_callback(callback, self._loop)
        return StanzaToken._of(self._core.enqueue(stanza, **kwargs), self._loop)

    def send(
        self, stanza: Stanza, *, timeout: float | None = None, cb: Callable[[IQ], Any] | None = None
    ) -> asyncio.Future[Any]:
        """Send *stanza*; for an IQ request, the future gets the response's payload.

        *cb* may be a coroutine function.  Cancelling the future stops waiting for the
        response.

        :raises ValueError: (in the future) *cb* given for anything but an IQ request.
        :raises XMPPError: the response is an error.
        :raises TimeoutError: no response in *timeout* seconds.
        """
        adapted = None if cb is None else awaited_by_twisted(cb, self._loop)
        return as_future(self._core.send(stanza, timeout=timeout, cb=adapted), self._loop)

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the loop iteration."""
        self._core.flush()

    # -- life cycle (driven by the client) --------------------------------------------------

    async def start(
        self,
        xmlstream: XMLStream | _core_xmlstream.XMLStream,
        bound_jid: JID,
        *,
        sm: bool = False,
        resumption_timeout: int | None = None,
    ) -> bool:
        """Attach to a bound *xmlstream*; return whether stream management got enabled."""
        started: Deferred[bool] = self._core.start(
            _core_xml(xmlstream), bound_jid, sm=sm, resumption_timeout=resumption_timeout
        )
        return await as_future(started, self._loop)

    async def resume(self, xmlstream: XMLStream | _core_xmlstream.XMLStream) -> bool:
        """Resume the suspended session on *xmlstream*; ``False`` if the server refused."""
        resumed = Deferred.fromCoroutine(self._core.resume(_core_xml(xmlstream)))
        return await as_future(resumed, self._loop)

    def suspend(self, reason: BaseException | None = None) -> None:
        """The XML stream is gone but the session may be resumed: keep every state."""
        self._core.suspend(reason)

    def destroy(self, reason: BaseException | None = None) -> None:
        """Lose the session: queued and unacknowledged stanzas and pending IQs fail."""
        self._core.destroy(reason)


def _twisted_logger(logger: Any) -> Logger | None:
    """The core's logger for *logger*: a :mod:`logging` logger, a Twisted one, or ``None``."""
    if logger is None or isinstance(logger, Logger):
        return logger
    return stdlib_twisted_logger(logger, "txxmppnode.stanzastream")
