"""XMLStream: one XML stream over one transport, as a Twisted protocol (RFC 6120 §4).

The protocol is the thin I/O shell around :class:`~txxmppnode.xmlparser.XMLStreamParser` and
:mod:`~txxmppnode.xmlwriter`: it sends our stream header when the connection is made and on
every :meth:`~XMLStream.restart`, validates the peer's header, and hands every top-level element
on, either to whoever awaits :meth:`~XMLStream.next_element` (stream negotiation) or to the
handler installed with :meth:`~XMLStream.set_element_handler` (the stanza stream).

How a stream ends, and what it reports (the reason given to :attr:`~XMLStream.on_closing` and
to :meth:`~XMLStream.when_lost`):

======================================================  =========================================
event                                                   reason
======================================================  =========================================
:meth:`~XMLStream.close` and the peer answers footer    ``None`` (a clean close)
the peer sends ``<stream:error/>``                      :class:`~txxmppnode.errors.StreamError`
we refuse the peer's input (bad XML, bad header)        ``StreamError`` with ``sent_by_us``
the peer sends its footer while we are open             :class:`ConnectionError`
the transport closes without the peer's footer          :class:`ConnectionError` -- a TCP EOF and
                                                        a TLS close_notify included, which Twisted
                                                        reports as a clean ``ConnectionDone``
TLS verification or handshake fails                     :class:`~txxmppnode.errors.TLSFailure`
:meth:`~XMLStream.abort`                                the reason given, or ``ConnectionError``
======================================================  =========================================

Flow control: the stream registers itself with its transport as a streaming producer
(``IPushProducer``).  Twisted's transports pause their producer when more than their
high-water mark waits to be written (``bufferSize``, 64 KiB for TCP; TLS passes on the pause
of the TCP transport under it) and resume it once that has drained.  While paused the stream
stops reading from the peer (``transport.pauseProducing()``) and :attr:`XMLStream.paused` is
true, so a peer that sends without reading what we answer fills its own buffers, not our
memory; the stanza stream holds its writes meanwhile and writes again on
:attr:`XMLStream.on_drained`.

All timers use the injected ``reactor`` (an ``IReactorTime``), so tests drive them with
``twisted.internet.task.Clock``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final

from lxml import etree
from OpenSSL import SSL
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import namespaces
from .errors import StreamError, StreamErrorCondition, TLSFailure
from .signal import Signal
from .xmlparser import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENT_BYTES,
    ElementReceived,
    StreamFooter,
    StreamHeader,
    XMLStreamParseError,
    XMLStreamParser,
)
from .xmlwriter import STREAM_FOOTER, serialize, stream_header

#: How long :meth:`XMLStream.close` waits for the peer's footer before dropping the transport.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
_STREAM_TAG: Final = f"{{{namespaces.STREAMS}}}stream"
_ERROR_TAG: Final = f"{{{namespaces.STREAMS}}}error"

ElementHandler = Callable[[etree._Element], None]
_CONNECTION_LOST: Final = Failure(ConnectionError("connection lost"))  # type: ignore[no-untyped-call]


@implementer(interfaces.IHandshakeListener, interfaces.IPushProducer)
class XMLStream(Protocol):
    """One XML stream to a server; see the module documentation.

    :param to: the domain the stream is addressed to (our header's ``to``).
    :param reactor: the clock for timeouts (an ``IReactorTime``).
    :param close_timeout: seconds :meth:`close` waits for the peer's footer.
    :param max_element_bytes: passed to the parser.
    :param max_depth: passed to the parser.
    """

    def __init__(
        self,
        to: str,
        *,
        reactor: interfaces.IReactorTime,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        logger: Logger | None = None,
    ) -> None:
        self.to = to
        #: Our bare JID, sent as the header's ``from`` once the stream is secure.
        self.from_: str | None = None
        self.reactor = reactor
        self.close_timeout = close_timeout
        self.log = logger or Logger()
        #: The peer's most recent stream header, or ``None`` before it arrived.
        self.peer_header: StreamHeader | None = None
        #: When the last byte arrived (``reactor.seconds()``), for liveness checks.
        self.last_received = reactor.seconds()
        #: The SASL mechanism (and channel binding type) the stream authenticated with.
        self.sasl_mechanism: str | None = None
        self.sasl_channel_binding: str | None = None
        #: Emitted once, when the stream starts to end, with the reason (``None``: clean).
        self.on_closing: Signal[[BaseException | None]] = Signal("XMLStream.on_closing")
        #: Emitted when the transport resumed us: what was waiting to be written has drained
        #: and reading goes on (see :attr:`paused`).
        self.on_drained: Signal[[]] = Signal("XMLStream.on_drained")
        self._paused = False
        self._reading_paused = False
        self._parser = XMLStreamParser(max_element_bytes=max_element_bytes, max_depth=max_depth)
        self._queue: deque[etree._Element] = deque()
        self._waiters: deque[defer.Deferred[etree._Element]] = deque()
        self._handler: ElementHandler | None = None
        #: True once a TLS handshake completed on the transport.
        self.tls_handshake_done = False
        self._handshake_waiters: list[defer.Deferred[None]] = []
        self._closing_reason: BaseException | None = None
        self._closing = False
        self._close_timer: interfaces.IDelayedCall | None = None
        self._lost: list[defer.Deferred[BaseException | None]] = []
        self._lost_reason: BaseException | None = None
        self._connected = False
        self._done = False

    # -- state ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True from connection until the stream starts to close."""
        return self._connected and not self._closing

    @property
    def tls_connection(self) -> SSL.Connection | None:
        """The pyOpenSSL connection under the stream once TLS is on, else ``None``."""
        get_handle = getattr(self.transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        return handle if isinstance(handle, SSL.Connection) else None

    @property
    def paused(self) -> bool:
        """True while the transport's write buffer is over its high-water mark.

        Nothing is read from the peer meanwhile; writers should hold back until
        :attr:`on_drained`.
        """
        return self._paused

    def when_lost(self) -> defer.Deferred[BaseException | None]:
        """A Deferred firing with the final reason (``None`` when clean) once disconnected."""
        if self._done:
            return defer.succeed(self._lost_reason)
        waiter: defer.Deferred[BaseException | None] = defer.Deferred()
        self._lost.append(waiter)
        return waiter

    # -- sending --------------------------------------------------------------------------

    def send(self, element: etree._Element) -> None:
        """Serialise *element* and write it.

        :raises ConnectionError: if the stream is not open.
        :raises ValueError: if the element cannot be serialised (nothing is written).
        """
        self.send_raw(serialize(element))

    def send_raw(self, data: bytes) -> None:
        """Write already serialised bytes (one or more complete elements)."""
        if not self.is_open:
            raise ConnectionError("the XML stream is not open")
        assert self.transport is not None
        self.transport.write(data)

    def restart(self) -> None:
        """Start a new stream on the same transport (after STARTTLS and SASL success).

        The parser forgets the old document and our new header is sent; the peer answers with
        its own header and new features.
        """
        self._parser.reset()
        self.peer_header = None
        self._send_header()

    def _send_header(self) -> None:
        self.send_raw(stream_header(to=self.to, from_=self.from_))

    # -- receiving ------------------------------------------------------------------------

    def next_element(self, timeout: float | None = None) -> defer.Deferred[etree._Element]:
        """The next top-level element from the peer (for step-by-step negotiation).

        Fails with the stream's failure if the stream ends first, and with
        :class:`TimeoutError` after *timeout* seconds.
        """
        if self._queue:
            return defer.succeed(self._queue.popleft())
        if self._done or self._closing:
            return defer.fail(self._closing_reason or ConnectionError("the XML stream is closed"))
        waiter: defer.Deferred[etree._Element] = defer.Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        if timeout is not None:
            waiter.addTimeout(timeout, self.reactor, _raise_timeout)
        return waiter

    def set_element_handler(self, handler: ElementHandler | None) -> None:
        """Deliver every element to *handler* from now on, starting with any queued ones."""
        self._handler = handler
        while handler is not None and self._queue and self._handler is handler:
            handler(self._queue.popleft())

    # -- TLS ------------------------------------------------------------------------------

    def start_tls(
        self, creator: interfaces.IOpenSSLClientConnectionCreator, timeout: float | None = None
    ) -> defer.Deferred[None]:
        """Switch the transport to TLS; the Deferred fires when the handshake completed."""
        assert self.transport is not None
        done = self.when_handshake_done(timeout)
        self.transport.startTLS(creator)  # type: ignore[attr-defined]
        return done

    def when_handshake_done(self, timeout: float | None = None) -> defer.Deferred[None]:
        """A Deferred for the completion of the TLS handshake (at once if it completed).

        For direct TLS the handshake starts with the connection; for STARTTLS use
        :meth:`start_tls`.  Fails with the stream's failure if the stream ends first.
        """
        if self.tls_handshake_done:
            return defer.succeed(None)
        if self._closing:
            return defer.fail(self._closing_reason or ConnectionError("the XML stream is closed"))
        waiter: defer.Deferred[None] = defer.Deferred(self._handshake_waiters.remove)
        self._handshake_waiters.append(waiter)
        if timeout is not None:
            waiter.addTimeout(timeout, self.reactor, _raise_timeout)
        return waiter

    def handshakeCompleted(self) -> None:
        """Called by Twisted's TLS layer when the handshake succeeded."""
        self.tls_handshake_done = True
        waiters, self._handshake_waiters = self._handshake_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- closing --------------------------------------------------------------------------

    def close(self) -> defer.Deferred[BaseException | None]:
        """Close cleanly: send our footer, wait up to ``close_timeout`` for the peer's, drop.

        The Deferred fires (with the final reason) once the transport is gone.
        """
        lost = self.when_lost()
        if self.is_open:
            self._begin_closing(None)
            assert self.transport is not None
            self.transport.write(STREAM_FOOTER)
            self._close_timer = self.reactor.callLater(self.close_timeout, self._close_timed_out)
        return lost

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the transport at once, without a footer."""
        self._begin_closing(reason or ConnectionError("the XML stream was aborted"))
        if self.transport is not None and not self._done:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.log.info("no stream footer from the peer within {timeout}s; dropping",
                      timeout=self.close_timeout)  # fmt: skip
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _begin_closing(self, reason: BaseException | None) -> None:
        """Enter the closing state once; wake waiters with *reason*; emit ``on_closing``."""
        if self._closing:
            return
        self._closing = True
        self._closing_reason = reason
        failure = reason or ConnectionError("the XML stream is closing")
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(failure)
        handshake_waiters, self._handshake_waiters = self._handshake_waiters, []
        for handshake_waiter in handshake_waiters:
            handshake_waiter.errback(failure)
        self.on_closing.emit(reason)

    def fail(self, error: StreamError, detail: etree._Element | None = None) -> None:
        """Send *error* (with an application-specific *detail* element) and end the stream."""
        element = error.to_element()
        if detail is not None:
            element.append(detail)
        self._fail(error, send=element)

    def _fail(self, reason: BaseException, *, send: etree._Element | None = None) -> None:
        """End the stream because of *reason*, sending the stream error *send* first."""
        if self._closing:
            return
        self._begin_closing(reason)
        assert self.transport is not None
        if send is not None:
            self.transport.write(serialize(send))
        self.transport.write(STREAM_FOOTER)
        self.transport.loseConnection()

    def _refuse(self, condition: StreamErrorCondition, text: str) -> None:
        """Send a stream error about the peer's input and end the stream."""
        error = StreamError(condition, text, sent_by_us=True)
        self.log.warn("refusing the peer's stream: {error}", error=error)
        self._fail(error, send=error.to_element())

    # -- IPushProducer: the transport tells us when its write buffer is full ---------------

    def pauseProducing(self) -> None:
        """The transport's write buffer is over its high-water mark: stop reading.

        Except during a TLS handshake: TLS holds what we wrote until the handshake is done
        (and pauses us meanwhile), and the handshake needs the peer's answers read.
        """
        if self._paused or self._done:
            return
        self._paused = True
        if self.tls_connection is not None and not self.tls_handshake_done:
            return
        self.log.debug("the peer is not reading what we write; reading paused")
        assert self.transport is not None
        self._reading_paused = True
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        """The transport's write buffer drained: read again and let writers go on."""
        if not self._paused or self._done:
            return
        self._paused = False
        if self._reading_paused:
            self._reading_paused = False
            self.log.debug("write buffer drained; reading again")
            assert self.transport is not None
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        self.on_drained.emit()

    def stopProducing(self) -> None:
        """The transport is going away; :meth:`connectionLost` follows."""
        self._paused = self._reading_paused = False

    # -- Protocol -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        self.last_received = self.reactor.seconds()
        register = getattr(self.transport, "registerProducer", None)
        if register is not None:
            register(self, True)
        self._send_header()

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.reactor.seconds()
        if self._closing and self._closing_reason is not None:
            return  # failing: nothing the peer says matters any more
        try:
            events = self._parser.feed(data)
        except XMLStreamParseError as refusal:
            for event in refusal.events_before:
                self._on_event(event)
            self._refuse(refusal.condition, str(refusal))
            return
        for event in events:
            if self._done or (self._closing and self._closing_reason is not None):
                return
            self._on_event(event)

    def _on_event(self, event: StreamHeader | ElementReceived | StreamFooter) -> None:
        if isinstance(event, ElementReceived):
            self._on_element(event.element)
        elif isinstance(event, StreamHeader):
            self._on_header(event)
        elif self._closing:
            # the answer to our footer
            assert self.transport is not None
            self.transport.loseConnection()
        else:
            self._fail(ConnectionError("the server closed the XML stream"))

    def _on_header(self, header: StreamHeader) -> None:
        if header.tag != _STREAM_TAG or header.nsmap.get(None) != namespaces.CLIENT:
            self._refuse(
                StreamErrorCondition.INVALID_NAMESPACE,
                f"expected <stream:stream> in {namespaces.STREAMS} with default namespace "
                f"{namespaces.CLIENT}, got {header.tag} / {header.nsmap.get(None)}",
            )
        elif header.attributes.get("version") != "1.0":
            self._refuse(
                StreamErrorCondition.UNSUPPORTED_VERSION,
                f"stream version {header.attributes.get('version')!r}; only 1.0 is supported",
            )
        elif not header.attributes.get("from") or not header.attributes.get("id"):
            missing = [a for a in ("from", "id") if not header.attributes.get(a)]
            self._refuse(
                StreamErrorCondition.BAD_FORMAT,
                f"the stream header lacks {' and '.join(missing)}",
            )
        else:
            self.peer_header = header

    def _on_element(self, element: etree._Element) -> None:
        if element.tag == _ERROR_TAG:
            error = StreamError.from_element(element)
            self.log.warn("stream error from the server: {error}", error=error)
            self._fail(error)
        elif self._handler is not None:
            self._handler(element)
        elif self._waiters:
            self._waiters.popleft().callback(element)
        else:
            self._queue.append(element)

    def connectionLost(self, reason: Failure = _CONNECTION_LOST) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self._closing:
            final = self._closing_reason
        else:
            final = _explain_loss(reason)
            self._begin_closing(final)
        self._done = True
        self._lost_reason = final
        waiters, self._lost = self._lost, []
        for waiter in waiters:
            waiter.callback(final)


def _explain_loss(reason: Failure) -> BaseException:
    """Turn an unexpected transport loss into the exception that explains it."""
    value = reason.value
    if isinstance(value, TLSFailure):
        return value
    if isinstance(value, SSL.Error):
        return TLSFailure(f"TLS failed: {_ssl_error_text(value)}")
    detail = f": {value}" if str(value) else ""
    return ConnectionError(
        f"the connection closed without the server's stream footer ({type(value).__name__}{detail})"
    )


def _ssl_error_text(error: SSL.Error) -> str:
    """Readable text of a pyOpenSSL error (its args are lists of (lib, func, reason))."""
    parts: list[str] = []
    for arg in error.args:
        if isinstance(arg, list):
            parts.extend(str(item[-1]) for item in arg if isinstance(item, tuple) and item)
        else:
            parts.append(str(arg))
    return "; ".join(parts) or repr(error)


def _raise_timeout(result: Any, timeout: float) -> Any:
    """``addTimeout``'s ``onTimeoutCancel``: a plain :class:`TimeoutError` with the time."""
    if isinstance(result, Failure) and isinstance(result.value, defer.CancelledError):
        raise TimeoutError(f"no answer within {timeout:g}s")
    return result
