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
:meth:`~XMLStream.close` and the peer answers footer    ``None`` (a clean close), or the
                                                        reason given to ``close``
the peer sends ``<stream:error/>``                      :class:`~txxmppnode.errors.StreamError`
we refuse the peer's input (bad XML, bad header)        ``StreamError`` with ``sent_by_us``
plaintext after ``<proceed/>`` (see :meth:`start_tls`)  :class:`~.errors.STARTTLSInjection`
the peer sends its footer while we are open             :class:`ConnectionError`
the transport closes without the peer's footer          :class:`ConnectionError` -- a TCP EOF and
                                                        a TLS close_notify included, which Twisted
                                                        reports as a clean ``ConnectionDone``
TLS verification or handshake fails                     :class:`~txxmppnode.errors.TLSFailure`
:meth:`~XMLStream.abort`                                the reason given, or ``ConnectionError``
======================================================  =========================================

What reaches the peer when we end the stream: :meth:`~XMLStream.close` writes our footer and
waits for the peer's; a refusal of the peer's input and :meth:`~XMLStream.fail` write the stream
error and our footer, then close the TCP connection once they are written
(``loseConnection``).  Either way the transport is dropped (``abortConnection``) after
``close_timeout`` at the latest, and :meth:`~XMLStream.abort` never drops a stream error that
is still on its way -- only the timeout does.

Input is discarded at each change of document: :meth:`~XMLStream.restart` and
:meth:`~XMLStream.start_tls` forget the parser's state, the bytes it buffered and the elements
nobody has taken yet, so nothing the peer sent before (in plaintext, for STARTTLS) is ever used
after (RFC 6120 §5.4.3.3).

Flow control: the stream registers itself with its transport as a streaming producer
(``IPushProducer``).  Twisted's transports pause their producer when more than their
high-water mark waits to be written (``bufferSize``, 64 KiB for TCP; TLS passes on the pause
of the TCP transport under it) and resume it once that has drained.  While paused the stream
stops reading from the peer (``transport.pauseProducing()``) and :attr:`XMLStream.paused` is
true, so a peer that sends without reading what we answer fills its own buffers, not our
memory; the stanza stream holds its writes meanwhile and writes again on
:attr:`XMLStream.on_drained`.

The stream's life (connecting, open, reading the answer to ``<starttls/>``, closing, failing,
dropping, closed) is one :class:`~txxmppnode.xmlstream_state.XMLStreamState`, read as
:attr:`XMLStream.state` and changed only through the table of
:mod:`~txxmppnode.xmlstream_state`.

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
from .errors import STARTTLSInjection, StreamError, StreamErrorCondition, TLSFailure
from .signal import Signal
from .xmlparser import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENT_BYTES,
    ElementReceived,
    Event,
    StreamFooter,
    StreamHeader,
    XMLStreamParseError,
    XMLStreamParser,
)
from .xmlstream_state import (
    DEAF_STATES,
    ENDING_STATES,
    OPEN_STATES,
    TRANSITIONS,
    XMLStreamInput,
    XMLStreamState,
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
    :param close_timeout: seconds :meth:`close` waits for the peer's footer, and the longest
        the transport is kept after we ended the stream with an error, for the error to be
        written.
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
        self._state = XMLStreamState.CONNECTING
        # why the stream ends, from when it starts to end
        self._closing_reason: BaseException | None = None
        # bumped whenever received input is discarded: events parsed before are not delivered
        self._generation = 0
        # TLS_ANSWER_READ, TAIL_HELD: the bytes that followed the answer to <starttls/>
        self._plaintext_tail = b""
        self._close_timer: interfaces.IDelayedCall | None = None
        self._lost: list[defer.Deferred[BaseException | None]] = []
        self._lost_reason: BaseException | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> XMLStreamState:
        """Where the stream is in its life (see :mod:`~txxmppnode.xmlstream_state`)."""
        return self._state

    @property
    def is_open(self) -> bool:
        """True from connection until the stream starts to close."""
        return self._state in OPEN_STATES

    def _input(self, event: XMLStreamInput) -> XMLStreamState:
        """Apply *event* through the table; return the state before it."""
        before = self._state
        self._state = TRANSITIONS[before, event]
        return before

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
        if self._state is XMLStreamState.CLOSED:
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

        Everything received so far and not yet taken is discarded -- elements waiting in the
        queue, the parser's state and any bytes it buffered -- and our new header is sent; the
        peer answers with its own header and new features.
        """
        self._discard_input()
        self._send_header()

    def _discard_input(self) -> None:
        """Forget everything received: the parser's document, its buffer and queued elements."""
        if self._queue:
            self.log.info("discarding {n} elements received before the stream changed",
                          n=len(self._queue))  # fmt: skip
            self._queue.clear()
        self._parser.reset()
        self.peer_header = None
        self._generation += 1

    def _send_header(self) -> None:
        self.send_raw(stream_header(to=self.to, from_=self.from_))

    # -- receiving ------------------------------------------------------------------------

    def next_element(
        self, timeout: float | None = None, *, last_in_plaintext: bool = False
    ) -> defer.Deferred[etree._Element]:
        """The next top-level element from the peer (for step-by-step negotiation).

        Fails with the stream's failure if the stream ends first, and with
        :class:`TimeoutError` after *timeout* seconds.

        :param last_in_plaintext: the element is the answer to ``<starttls/>``: input is parsed
            only up to its closing ``>``; what follows is held, unparsed, for :meth:`start_tls`
            to check (it must be nothing), and parsed only if the stream goes on without TLS
            (the next :meth:`next_element`, or :meth:`close`).
        """
        self._release_plaintext()
        if last_in_plaintext:
            self._input(XMLStreamInput.TLS_ANSWER_AWAITED)
        if self._queue:
            return defer.succeed(self._queue.popleft())
        if self._state in ENDING_STATES:
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
        """Switch the transport to TLS; the Deferred fires when the handshake completed.

        Call it on the peer's ``<proceed/>``, read with ``next_element(last_in_plaintext=True)``.
        TLS starts right after its closing ``>`` (RFC 6120 §5.4.2.3), so anything the peer sent
        after it in plaintext is a protocol violation, and the way a man in the middle would
        inject stream features: then TLS is not started, nothing more is written (the peer
        expects a TLS handshake), the TCP connection is closed and the Deferred fails with
        :class:`~txxmppnode.errors.STARTTLSInjection` -- as it does when the ``<proceed/>``
        arrived with earlier data, before ``<starttls/>`` was sent.  Otherwise everything
        received in plaintext is discarded before the handshake starts.

        :raises RuntimeError: if the answer to ``<starttls/>`` was not read as described.
        """
        assert self.transport is not None
        state = self._state
        if state in ENDING_STATES:
            return defer.fail(self._closing_reason or ConnectionError("the XML stream is closed"))
        if state not in (
            XMLStreamState.READING_TLS_ANSWER,
            XMLStreamState.TLS_ANSWER_READ,
            XMLStreamState.TAIL_HELD,
        ):
            raise RuntimeError("start_tls() before next_element(last_in_plaintext=True)")
        tail, self._plaintext_tail = self._plaintext_tail, b""
        if state is not XMLStreamState.TLS_ANSWER_READ:
            if state is XMLStreamState.READING_TLS_ANSWER:
                problem = "the server's <proceed/> arrived before <starttls/> was sent"
            else:
                problem = f"the server sent {len(tail)} bytes of plaintext after <proceed/>"
            error = STARTTLSInjection(f"{problem}; TLS was not started and nothing was used")
            self.log.warn("{error}", error=error)
            self._end(XMLStreamInput.TLS_STARTED, error)  # DROPPING
            self.transport.loseConnection()
            self._arm_close_timer()
            return defer.fail(error)
        self._input(XMLStreamInput.TLS_STARTED)
        self._discard_input()
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
        if self._state in ENDING_STATES:
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

    def close(self, reason: BaseException | None = None) -> defer.Deferred[BaseException | None]:
        """Close cleanly: send our footer, wait up to ``close_timeout`` for the peer's, drop.

        :param reason: why the stream ends when that is not a clean close (a negotiation that
            failed after whatever we had to tell the peer was sent, ``<abort/>`` say); it is
            the reason ``on_closing`` and :meth:`when_lost` report instead of ``None``.

        The Deferred fires (with the final reason) once the transport is gone.  Nothing is
        written if the stream is closing already.
        """
        lost = self.when_lost()
        if self.is_open:
            held, self._plaintext_tail = self._plaintext_tail, b""
            self._end(XMLStreamInput.CLOSE, reason)
            assert self.transport is not None
            self.transport.write(STREAM_FOOTER)
            self._arm_close_timer()
            if held and self._state is XMLStreamState.CLOSING:
                self._parse(held)  # the peer's footer may be there
        return lost

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the transport at once, without a footer.

        Except while a stream error of ours is on its way (a refusal of the peer's input, or
        :meth:`fail`): the transport then closes once the error is written, and is dropped
        ``close_timeout`` after the error at the latest -- never with the error unwritten.
        """
        if self._state is XMLStreamState.CLOSED:
            return
        self._end(XMLStreamInput.DROP, reason or ConnectionError("the XML stream was aborted"))
        if self.transport is None:
            return
        if self._state is XMLStreamState.FAILING and self._close_timer is not None:
            return
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self._state is not XMLStreamState.CLOSED:
            self._close_timer = self.reactor.callLater(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.log.info("the stream did not close within {timeout}s; dropping the connection",
                      timeout=self.close_timeout)  # fmt: skip
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _end(self, event: XMLStreamInput, reason: BaseException | None) -> None:
        """Apply *event*; if the stream was not ending yet, it starts to end with *reason*:
        waiters fail with it and ``on_closing`` is emitted with it, once."""
        if self._input(event) in ENDING_STATES or self._state not in ENDING_STATES:
            return
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

    def _fail(
        self, reason: BaseException, *, send: etree._Element | None = None, footer: bool = True
    ) -> None:
        """End the stream because of *reason*: write the stream error *send* and our footer
        (unless *footer* is false), close once they are written, drop after ``close_timeout``.
        """
        if self._state not in OPEN_STATES:
            return
        data = serialize(send) if send is not None else b""
        if footer:
            data += STREAM_FOOTER
        self._end(XMLStreamInput.FAIL if data else XMLStreamInput.DROP, reason)
        assert self.transport is not None
        if data:
            self.transport.write(data)
        self.transport.loseConnection()
        self._arm_close_timer()

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
        if self._paused or self._state is XMLStreamState.CLOSED:
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
        if not self._paused or self._state is XMLStreamState.CLOSED:
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
        self._input(XMLStreamInput.CONNECTION_MADE)
        self.last_received = self.reactor.seconds()
        register = getattr(self.transport, "registerProducer", None)
        if register is not None:
            register(self, True)
        self._send_header()

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.reactor.seconds()
        state = self._state
        if state in DEAF_STATES:
            return  # nothing the peer says matters any more
        if state is XMLStreamState.TLS_ANSWER_READ or state is XMLStreamState.TAIL_HELD:
            self._hold(data)  # after the answer to <starttls/>
        elif state is XMLStreamState.READING_TLS_ANSWER:
            self._read_tls_answer(data)
        else:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        events = self._feed(data)
        if events:
            self._deliver(events)

    def _hold(self, data: bytes) -> None:
        """Keep *data*, which followed the answer to ``<starttls/>``, unparsed."""
        if data:
            self._plaintext_tail += data
            self._input(XMLStreamInput.PLAINTEXT_AFTER_ANSWER)

    def _feed(self, data: bytes) -> list[Event] | None:
        """Parse *data*; on a refusal, deliver what came before it, refuse, return ``None``."""
        try:
            return self._parser.feed(data)
        except XMLStreamParseError as refusal:
            self._deliver(refusal.events_before)
            self._refuse(refusal.condition, str(refusal))
            return None

    def _deliver(self, events: list[Event]) -> None:
        """Hand *events* on in order, until the stream fails or the input is discarded."""
        generation = self._generation
        remaining = iter(events)
        for event in remaining:
            if self._state in DEAF_STATES or self._state is XMLStreamState.CLOSED:
                return
            if self._generation != generation:
                dropped = 1 + sum(1 for _ in remaining)
                self.log.info("discarding {n} events received before the stream changed",
                              n=dropped)  # fmt: skip
                return
            self._on_event(event)

    def _read_tls_answer(self, data: bytes) -> None:
        """Parse *data* up to the closing ``>`` of the answer to ``<starttls/>``, hold the rest.

        Input is fed in pieces that end at a ``>``, the only byte that can complete an
        element, so the bytes after the answer are known exactly; they are held before the
        answer is delivered, for :meth:`start_tls` to check.
        """
        start = 0
        while start < len(data) and self._state is XMLStreamState.READING_TLS_ANSWER:
            end = data.find(b">", start)
            stop = len(data) if end < 0 else end + 1
            events = self._feed(data[start:stop])
            start = stop
            if not events:
                continue
            if any(isinstance(event, ElementReceived) for event in events):
                self._input(XMLStreamInput.TLS_ANSWER_RECEIVED)
                self._hold(data[start:])
            self._deliver(events)

    def _release_plaintext(self) -> None:
        """The stream goes on without TLS: parse what followed the answer to ``<starttls/>``."""
        if self._state not in (XMLStreamState.TLS_ANSWER_READ, XMLStreamState.TAIL_HELD):
            return
        tail, self._plaintext_tail = self._plaintext_tail, b""
        self._input(XMLStreamInput.PLAINTEXT_RELEASED)
        if tail:
            self._parse(tail)

    def _on_event(self, event: StreamHeader | ElementReceived | StreamFooter) -> None:
        if isinstance(event, ElementReceived):
            self._on_element(event.element)
        elif isinstance(event, StreamHeader):
            self._on_header(event)
        elif self._state is XMLStreamState.CLOSING:
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
        ending = self._state in ENDING_STATES
        final = self._closing_reason if ending else _explain_loss(reason)
        self._lost_reason = final  # set first: on_closing listeners may ask when_lost()
        self._end(XMLStreamInput.CONNECTION_LOST, final)
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
