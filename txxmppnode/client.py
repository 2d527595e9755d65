"""Client: keeps one XMPP session alive for as long as it runs.

Reconnection is Twisted's :class:`~twisted.application.internet.ClientService`:

* its *endpoint* (:class:`_StreamEndpoint`) produces an authenticated XML stream with
  :func:`~txxmppnode.connect.connect_xmlstream` -- the server's XEP-0198 ``location`` first
  when a session can be resumed, then ``override_peer``, then DNS discovery;
* its *prepareConnection* turns that stream into a session: resume it, or bind a resource and
  enable stream management, then run ``before_stream_established``;
* its *retry policy* is the client's back-off (``backoff_start``, ``backoff_factor``,
  ``backoff_cap``, ``backoff_jitter``), except that the first attempt after an established
  stream dropped goes at once: a resumption should not wait;
* ``whenConnected(failAfterFailures=max_initial_attempts)`` bounds the initial attempts; after
  one success, retries are unbounded.

What stops the client and what is retried is decided by type
(:class:`~txxmppnode.errors.FatalError`):

* **stop, no retry loop** (``on_failure(err)``): authentication refused, TLS refused or
  unavailable, no SASL mechanism, resource binding refused, the ``conflict``,
  ``host-unknown``, ``host-gone``, ``improper-addressing``, ``invalid-from`` or
  ``not-authorized`` stream errors, XMPP disabled for the domain (SRV ``.``);
* **reconnect with back-off**: network errors, timeouts, the connection closed without a
  footer, other stream errors (``system-shutdown``, ``reset``, ..., and those we send when we
  refuse the server's input), plaintext after ``<proceed/>``
  (:class:`~txxmppnode.errors.STARTTLSInjection`), a ``<resumed/>`` acknowledging more than
  we sent (the session is then destroyed and a fresh one started);
* **reconnect to the host named**: ``see-other-host`` (followed within the attempt).

Signals, in order:

* start → ``before_stream_established`` (awaited) → ``on_stream_established``;
* connection lost → ``on_stream_suspended(reason)``, then exactly one of
  ``on_stream_resumed`` (nothing was lost) or ``on_stream_destroyed(reason)`` followed by
  ``before_stream_established`` and ``on_stream_established`` on the new session;
* end of a run: exactly one of ``on_stopped`` (after :meth:`Client.stop`) or
  ``on_failure(err)``, preceded by ``on_stream_destroyed`` if a session existed.

States
------

The life cycle is one :class:`ClientState`, changed only through :data:`TRANSITIONS` (one
entry per state and :class:`ClientInput`); ``running``, ``established`` and ``suspended`` are
read from it::

    IDLE ─start─▶ CONNECTING ─established─▶ ESTABLISHED ─lost─▶ SUSPENDED ─resumed─▶ ESTABLISHED
                      ▲                          │                  │
                      └────────destroyed─────────┴──────────────────┘
    CONNECTING, ESTABLISHED, SUSPENDED ─stop / fatal─▶ STOPPING ─ended─▶ STOPPED or FAILED
    STOPPED, FAILED ─start─▶ CONNECTING

Every other pair leaves the state as it is.  The architecture page of the documentation
shows the whole table, generated from :data:`TRANSITIONS` (``docs/client_states.py``).

A suspension is transparent: the session (and ``established_event``) outlives the connection,
:meth:`Client.enqueue` queues and :meth:`Client.send` does not wait; the stanzas go out in order
after the resumption, or follow the resend policy if the session is destroyed.  A connection
attempt whose turn comes outside CONNECTING and SUSPENDED (a retry scheduled before a stop)
opens nothing.  A session destroyed while its connection is alive (``client.stream.destroy()``)
takes that connection with it: the client closes the stream, connects again at once and binds
a new session (``on_stream_destroyed``, then ``before_stream_established`` and
``on_stream_established``).
"""

from __future__ import annotations

import enum
import random
import warnings
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

from lxml import etree
from twisted.application.internet import ClientService
from twisted.internet import defer, interfaces, protocol
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import namespaces
from .connect import PeerOption, connect_xmlstream, split_host_port
from .connector import STARTTLSConnector
from .deadline import Deadline
from .errors import DestructionRequested, FatalError
from .features import StreamFeatures
from .jid import JID
from .negotiation import bind_resource
from .presence_state import PresenceState
from .security_layer import SecurityLayer
from .service import Service, ServiceRegistry
from .signal import Event, Signal, emit_and_wait
from .stanza import Stanza
from .stanzastream import StanzaStream
from .token import StanzaToken
from .use_connected import UseConnected
from .xmlstream import XMLStream

S = TypeVar("S", bound=Service)
_SM_FEATURE = f"{{{namespaces.STREAM_MANAGEMENT}}}sm"


class ClientState(enum.Enum):
    """Where a :class:`Client` is in its life cycle."""

    #: constructed, never started
    IDLE = "idle"
    #: running without a session: connection attempts until one binds a resource
    CONNECTING = "connecting"
    #: a session on a live connection
    ESTABLISHED = "established"
    #: a session whose connection was lost: attempts to resume it
    SUSPENDED = "suspended"
    #: :meth:`Client.stop` or a fatal error: closing the stream, stopping the attempts
    STOPPING = "stopping"
    #: stopped after :meth:`Client.stop` (``on_stopped``)
    STOPPED = "stopped"
    #: stopped after a fatal error (``on_failure``)
    FAILED = "failed"


class ClientInput(enum.Enum):
    """What changes a :class:`Client`'s state."""

    START = "start"
    STOP = "stop"
    #: a resource was bound and ``before_stream_established`` ran: a new session
    ESTABLISHED = "established"
    #: the connection of the session was lost
    LOST = "lost"
    #: the session was resumed on a new connection
    RESUMED = "resumed"
    #: the session was destroyed (resumption refused or impossible)
    DESTROYED = "destroyed"
    #: an error that stops the client (``on_failure``)
    FATAL = "fatal"
    #: the retry timer: a connection attempt starts
    RETRY = "retry"
    #: the stop finished (stream closed, attempts stopped)
    ENDED = "ended"


_St, _In = ClientState, ClientInput
_RUNNING: Final = frozenset({_St.CONNECTING, _St.ESTABLISHED, _St.SUSPENDED})


def _table() -> dict[tuple[ClientState, ClientInput], ClientState]:
    table = {(state, event): state for state in _St for event in _In}  # default: ignored
    for state in (_St.IDLE, _St.STOPPED, _St.FAILED):
        table[state, _In.START] = _St.CONNECTING
    for state in _RUNNING:
        table[state, _In.STOP] = _St.STOPPING
        table[state, _In.FATAL] = _St.STOPPING
    table[_St.CONNECTING, _In.ESTABLISHED] = _St.ESTABLISHED
    table[_St.ESTABLISHED, _In.LOST] = _St.SUSPENDED
    table[_St.SUSPENDED, _In.RESUMED] = _St.ESTABLISHED
    table[_St.SUSPENDED, _In.DESTROYED] = _St.CONNECTING
    table[_St.ESTABLISHED, _In.DESTROYED] = _St.CONNECTING
    table[_St.STOPPING, _In.ENDED] = _St.STOPPED
    return table


#: The client's one state table: (state, input) → next state, for every pair.  A pair that
#: maps a state to itself is ignored (a retry timer in CONNECTING, a loss while STOPPING, ...).
#: ``ENDED`` in STOPPING leads to STOPPED, or to FAILED when the stop was caused by an error.
TRANSITIONS: Final[Mapping[tuple[ClientState, ClientInput], ClientState]] = _table()


class _SessionHandle(protocol.Protocol):
    """What ClientService holds for one established session; the XMLStream does the work."""


@implementer(interfaces.IStreamClientEndpoint)
class _StreamEndpoint:
    """ClientService's endpoint: an authenticated XML stream from :func:`connect_xmlstream`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def connect(self, factory: interfaces.IProtocolFactory) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._client._connect(factory))


class Client:
    """An XMPP client session that reconnects and resumes on its own; see the module docs.

    :param local_jid: the account (with a resource, to ask for that resource).
    :param security_layer: from :func:`~txxmppnode.security_layer.make`.
    :param negotiation_timeout: bound of each step of a connection: the TCP connection (name
        resolution included), STARTTLS, the TLS handshake, each SASL round, resource binding,
        the legacy session, ``<enable/>`` and ``<resume/>``.  Each step's deadline is fixed
        when it starts; nothing the server sends meanwhile extends it.  A step that overruns
        fails the attempt with :class:`TimeoutError`, which is retried like a network error
        (an unanswered ``<resume/>`` gives the session up first: see
        :meth:`StanzaStream.resume`).
    :param max_initial_attempts: connection attempts before the first success counts as a
        failure (``None``: unbounded).
    :param override_peer: ``(host, port, connector)`` options tried before DNS discovery.
    :param reactor: the reactor (clock, TCP); the global one by default.
    :param resolver: the DNS resolver for discovery (an ``IResolver``).

    Services (:meth:`summon`) live as long as the client object: a stop leaves them in place,
    so a restarted client keeps the same instances, with their listeners.
    """

    backoff_start: timedelta = timedelta(seconds=1)
    backoff_factor: float = 1.2
    backoff_cap: timedelta = timedelta(seconds=60)
    #: Random spread added to each back-off delay, as a fraction of it (0 = none).
    backoff_jitter: float = 0.0
    #: Seconds the server should keep the session after a fault (XEP-0198 ``max``); ``None``
    #: leaves it to the server, 0 asks for stream management without resumption.
    resumption_timeout: int | None = None
    #: After a session is lost (not resumable, or its resumption refused): True binds a new
    #: session (``on_stream_destroyed`` then ``on_stream_established``); False stops the
    #: client with ``on_failure`` (a :class:`ConnectionError`) instead.
    allow_implicit_reconnect: bool = True

    def __init__(
        self,
        local_jid: JID | str,
        security_layer: SecurityLayer,
        *,
        negotiation_timeout: timedelta = timedelta(seconds=60),
        max_initial_attempts: int | None = 4,
        override_peer: Sequence[PeerOption] = (),
        reactor: Any = None,
        logger: Logger | None = None,
        resolver: interfaces.IResolver | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._local_jid = JID.fromstr(local_jid) if isinstance(local_jid, str) else local_jid
        self._resource = self._local_jid.resource
        self.security_layer = security_layer
        self.negotiation_timeout = negotiation_timeout
        self.max_initial_attempts = max_initial_attempts
        self.override_peer = list(override_peer)
        self.reactor = reactor
        self.resolver = resolver
        self.logger = logger or Logger(namespace="txxmppnode.client")
        self.stream = StanzaStream(self._local_jid.bare(), reactor=reactor, logger=self.logger)
        #: The features of the latest stream, before binding (``None`` before the first).
        self.stream_features: StreamFeatures | None = None
        self.established_event = Event()

        self.on_failure: Signal[[BaseException]] = Signal("Client.on_failure")
        self.on_stopped: Signal[[]] = Signal("Client.on_stopped")
        self.before_stream_established: Signal[[]] = Signal("Client.before_stream_established")
        self.on_stream_established: Signal[[]] = Signal("Client.on_stream_established")
        self.on_stream_suspended: Signal[[BaseException | None]] = Signal(
            "Client.on_stream_suspended"
        )
        self.on_stream_resumed: Signal[[]] = Signal("Client.on_stream_resumed")
        self.on_stream_destroyed: Signal[[BaseException | None]] = Signal(
            "Client.on_stream_destroyed"
        )
        #: Emitted when a connection attempt starts (the first one and every retry).
        self.on_connecting: Signal[[]] = Signal("Client.on_connecting")
        #: Emitted with the error when a connection attempt fails (it may be retried).
        self.on_connect_failed: Signal[[BaseException]] = Signal("Client.on_connect_failed")
        #: Emitted with the delay in seconds whenever the next attempt is scheduled.
        self.on_retry_scheduled: Signal[[float]] = Signal("Client.on_retry_scheduled")

        self._services = ServiceRegistry(self)
        # send() calls waiting for the stream; they fail when the run ends instead of hanging
        self._waiting_sends: list[defer.Deferred[None]] = []
        self._end_reason: BaseException | None = None
        self._state = ClientState.IDLE
        self._failure: BaseException | None = None  # why the client is stopping, if an error
        self._stopping: defer.Deferred[None] | None = None  # the one stop in progress
        self._service: ClientService | None = None
        self._xmlstream: XMLStream | None = None
        self._just_dropped = False
        self._session_to_destroy = False  # STOPPING: a session is left for _end to destroy
        self.stream.on_connection_lost.connect(self._on_connection_lost)
        self.stream.on_stream_destroyed.connect(self._on_stream_destroyed)

    # -- state ----------------------------------------------------------------------------

    @property
    def local_jid(self) -> JID:
        """Our address: the bound full JID once established (read-only)."""
        return self._local_jid

    @property
    def state(self) -> ClientState:
        """Where the client is in its life cycle (see the module documentation)."""
        return self._state

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the client stopped or failed (STOPPING included)."""
        return self._state in _RUNNING or self._state is ClientState.STOPPING

    @property
    def established(self) -> bool:
        """True while a session exists: from resource binding until it is destroyed, through
        suspensions (``established_event`` is set exactly then)."""
        return self._state in (ClientState.ESTABLISHED, ClientState.SUSPENDED)

    @property
    def suspended(self) -> bool:
        """True between a connection loss and the resumption or destruction that follows."""
        return self._state is ClientState.SUSPENDED

    def _input(self, event: ClientInput) -> ClientState:
        """Apply *event* through :data:`TRANSITIONS`; keep ``established_event`` in step."""
        before = self._state
        after = TRANSITIONS[before, event]
        if after is ClientState.STOPPED and self._failure is not None:
            after = ClientState.FAILED
        if after is not before:
            self.logger.debug("{before} --{event}--> {after}", before=before.value,
                              event=event.value, after=after.value)  # fmt: skip
        if after is ClientState.STOPPING and before is not after:
            self._session_to_destroy = before in (ClientState.ESTABLISHED, ClientState.SUSPENDED)
        self._state = after
        if self.established:
            if not self.established_event.is_set():
                self.established_event.set()
        else:
            self.established_event.clear()
        return after

    # -- control --------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting and keep the session alive until :meth:`stop`.

        :raises RuntimeError: if the client is running.
        """
        if self.running:
            raise RuntimeError("the client is already running")
        self._input(ClientInput.START)
        self._failure = None
        self._stopping = None
        self._end_reason = None
        self._just_dropped = False
        self._service = ClientService(
            _StreamEndpoint(self),
            protocol.Factory.forProtocol(_SessionHandle),
            retryPolicy=self._retry_delay,
            clock=self.reactor,
            prepareConnection=self._prepare,
        )
        self._service.startService()
        first = self._service.whenConnected(failAfterFailures=self.max_initial_attempts)
        first.addErrback(self._initial_attempts_failed)

    def stop(self) -> defer.Deferred[None]:
        """Close the stream cleanly and stop; fires when stopped (``on_stopped`` emitted).

        In any state this ends in exactly one ``on_stopped`` (or the ``on_failure`` of an
        error that was stopping the client already), ``running`` False, no connection left
        and no later attempt (a retry scheduled before the stop opens nothing; an attempt under
        way is cancelled where it is, in its host-name lookup too, and tries no other peer and
        no DNS discovery).  A TCP handshake already sent when the stop came may still reach
        the server, which then sees the connection closed at once.  Until the next
        :meth:`start`, every call returns the same Deferred, in progress or fired; a call on a
        client never started fires at once.
        """
        if self._stopping is not None and (not self._stopping.called or not self.running):
            return self._stopping
        if not self.running:
            return defer.succeed(None)
        self._stopping = defer.Deferred.fromCoroutine(self._end(None))
        return self._stopping

    def connected(self, **kwargs: Any) -> Any:
        """``async with client.connected(timeout=...) as stream:`` -- see UseConnected."""
        kwargs.setdefault("presence", PresenceState(False))  # leaves the presence alone
        return UseConnected(self, **kwargs)

    def summon(self, class_: type[S]) -> S:
        """The instance of service *class_*, summoned (with its dependencies) if needed."""
        return self._services.summon(class_)

    def _can_send(self) -> bool:
        """A session exists, or one is being set up on a live stream (the phase of
        ``before_stream_established``, whose listeners may send on the new stream)."""
        return self.established or (self._state in _RUNNING and self.stream.running)

    # -- sending --------------------------------------------------------------------------

    def enqueue(self, stanza: Stanza, **kwargs: Any) -> StanzaToken:
        """Queue *stanza*; see :meth:`StanzaStream.enqueue`.

        During a suspension the stanza is queued: it goes out, in order, after the
        resumption (or follows the resend policy if the session is destroyed).

        :raises ConnectionError: if there is no session (before resource binding or after it
            was destroyed); nothing is queued.
        """
        if not self._can_send():
            raise ConnectionError("the stream is not established")
        return self.stream.enqueue(stanza, **kwargs)

    def send(self, stanza: Stanza, *, timeout: float | None = None, cb: Any = None) -> Any:
        """Send *stanza* once the stream is established; see :meth:`StanzaStream.send`.

        While there is no session this waits for one (a suspension does not count: the
        stanza is queued for the resumption; from a ``before_stream_established`` listener it
        goes out on the new stream); if the client stops or fails first, it fails with
        :class:`~txxmppnode.errors.DestructionRequested` or the failure.

        :param timeout: seconds from this call, waiting for the stream included, until the
            response to an IQ request -- or, for a message or a presence (an extension of the
            reference API, where *timeout* concerns IQ responses only), until the server
            acknowledged it (stream management) or it was written (without).  Then it fails
            with :class:`TimeoutError`: a stanza not written yet is withdrawn and never sent;
            one written already may still arrive.
        :raises QueueFull: ``stream.max_unacked`` stanzas are held already; nothing is queued.
        """
        deadline = Deadline(self.reactor, timeout, "sending the stanza")

        async def send_when_ready() -> Any:
            if not self._can_send():
                ready = self.established_event.wait()
                self._waiting_sends.append(ready)
                try:
                    await deadline.wait(ready)
                except TimeoutError:
                    raise TimeoutError(
                        f"the stream was not established within {timeout:g}s; nothing was sent"
                    ) from None
                except defer.CancelledError:
                    if self._end_reason is None:
                        raise
                    raise self._end_reason from None
                finally:
                    if ready in self._waiting_sends:
                        self._waiting_sends.remove(ready)
            return await self.stream.send(stanza, timeout=deadline.remaining(), cb=cb)

        return defer.Deferred.fromCoroutine(send_when_ready())

    # -- ClientService plumbing -----------------------------------------------------------

    def _retry_delay(self, failed_attempts: int) -> float:
        """The back-off before attempt *failed_attempts* + 1 (0 right after a drop)."""
        step = failed_attempts - 1 if self._just_dropped else failed_attempts
        if step <= 0:
            if self._state in _RUNNING:
                self.on_retry_scheduled.emit(0.0)
            return 0.0
        delay = min(
            self.backoff_cap.total_seconds(),
            self.backoff_start.total_seconds() * self.backoff_factor ** (step - 1),
        )
        if self.backoff_jitter:
            delay += delay * self.backoff_jitter * random.random()
        self.logger.info("reconnecting in {delay:.2f}s", delay=delay)
        if self._state in _RUNNING:
            self.on_retry_scheduled.emit(delay)
        return delay

    def _peer_options(self) -> list[PeerOption]:
        options = list(self.override_peer)
        location = self.stream.sm_location
        if self.suspended and self.stream.sm_resumable and location:
            host, port = split_host_port(location, 5222)
            options.insert(0, (host, port, STARTTLSConnector()))
        return options

    async def _open_stream(self) -> tuple[XMLStream, etree._Element]:
        """An authenticated XML stream and its features (:func:`connect_xmlstream`)."""
        _, xmlstream, features = await connect_xmlstream(
            self._local_jid.bare(),
            self.security_layer,
            negotiation_timeout=self.negotiation_timeout.total_seconds(),
            override_peer=self._peer_options(),
            reactor=self.reactor,
            logger=self.logger,
            resolver=self.resolver,
        )
        return xmlstream, features

    async def _connect(self, factory: interfaces.IProtocolFactory) -> protocol.Protocol:
        self._input(ClientInput.RETRY)
        if self._state not in (ClientState.CONNECTING, ClientState.SUSPENDED):
            # a retry that was due when the client began to stop: open nothing
            raise defer.CancelledError("the client is stopping")
        self.on_connecting.emit()
        try:
            xmlstream, features = await self._open_stream()
        except Exception as exc:
            self.on_connect_failed.emit(exc)
            self._maybe_fatal(exc)
            raise
        if self._state not in (ClientState.CONNECTING, ClientState.SUSPENDED):
            xmlstream.abort(defer.CancelledError("the client is stopping"))
            raise defer.CancelledError("the client is stopping")
        self._xmlstream = xmlstream
        self.stream_features = StreamFeatures(features)
        handle = factory.buildProtocol(xmlstream.transport.getPeer())  # type: ignore[union-attr]
        assert handle is not None
        handle.makeConnection(xmlstream.transport)  # type: ignore[arg-type]
        return handle  # type: ignore[return-value]

    def _prepare(self, handle: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._establish(handle))

    async def _establish(self, handle: Any) -> None:
        xmlstream, features = self._xmlstream, self.stream_features
        assert xmlstream is not None and features is not None
        try:
            timeout = self.negotiation_timeout.total_seconds()
            resumed = self.suspended and await self.stream.resume(xmlstream, timeout=timeout)
            if not resumed:
                if self.suspended:
                    self.stream.destroy(ConnectionError("the session could not be resumed"))
                if self._state is not ClientState.CONNECTING:
                    raise defer.CancelledError("the client is stopping")
                bound = await bind_resource(xmlstream, features.element, self._resource, timeout)
                self._local_jid = bound
                await self.stream.start(
                    xmlstream,
                    bound,
                    sm=features.find(_SM_FEATURE) is not None,
                    resumption_timeout=self.resumption_timeout,
                    timeout=timeout,
                )
                await emit_and_wait(self.before_stream_established)
            if self._state not in (ClientState.CONNECTING, ClientState.SUSPENDED):
                raise defer.CancelledError("the client is stopping")
        except Exception as exc:
            # the server hears what we decided (a stream error, our footer) before the close
            if isinstance(exc, defer.CancelledError):
                xmlstream.abort(exc)
            else:
                xmlstream.close(exc)
            self.on_connect_failed.emit(exc)
            self._maybe_fatal(exc)
            raise

        # from now on ClientService hears about the connection's end
        def tell_client_service(reason: BaseException | None) -> None:
            handle.connectionLost(Failure(reason or ConnectionDone()))  # type: ignore[no-untyped-call]

        xmlstream.when_lost().addCallback(tell_client_service)
        self._just_dropped = False
        self._input(ClientInput.RESUMED if resumed else ClientInput.ESTABLISHED)
        if resumed:
            self.logger.info("stream resumed")
            self.on_stream_resumed.emit()
        else:
            self.logger.info("stream established as {jid}", jid=str(self._local_jid))
            self.on_stream_established.emit()

    def _on_connection_lost(self, reason: BaseException | None) -> None:
        if self._state not in _RUNNING:
            return
        if isinstance(reason, FatalError):
            self._maybe_fatal(reason)
            return
        if self._state is not ClientState.ESTABLISHED:
            return
        self.logger.info("stream suspended: {reason}", reason=reason)
        self._input(ClientInput.LOST)
        self._just_dropped = True
        self.on_stream_suspended.emit(reason)
        if not self.stream.sm_resumable:
            self.stream.destroy(reason)

    def _on_stream_destroyed(self, reason: BaseException | None) -> None:
        before = self._state
        lost = before in (ClientState.ESTABLISHED, ClientState.SUSPENDED)
        self._session_to_destroy = False
        self._input(ClientInput.DESTROYED)
        self.on_stream_destroyed.emit(reason)
        if lost and not self.allow_implicit_reconnect:
            self.logger.error("the session was lost; allow_implicit_reconnect is false")
            self._end_soon(ConnectionError(f"the session was lost and not resumed: {reason}"))
        elif before is ClientState.ESTABLISHED:
            # destroyed on a live connection (stream.destroy() called by the application): a
            # new session needs a new stream, so end this one; the retry goes at once
            xmlstream = self._xmlstream
            if xmlstream is not None and xmlstream.is_open:
                self.logger.info("the session was destroyed: closing its stream for a new one")
                self._just_dropped = True
                xmlstream.close()

    def _maybe_fatal(self, exc: BaseException) -> None:
        if isinstance(exc, FatalError | ValueError):
            self.logger.error("giving up: {error}", error=exc)
            self._end_soon(exc)

    def _initial_attempts_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, defer.CancelledError) or self._state not in _RUNNING:
            return
        reason = failure.value
        assert reason is not None
        self.logger.error("no connection after {n} attempts: {error}",
                          n=self.max_initial_attempts, error=reason)  # fmt: skip
        self._end_soon(reason)

    def _end_soon(self, failure: BaseException) -> None:
        """Stop with *failure* at once; the work runs after the current turn, since
        ClientService must not be stopped from inside its own handling of a failed attempt."""
        if self._state not in _RUNNING:
            return
        self._failure = failure
        self._input(ClientInput.FATAL)
        stopping: defer.Deferred[None] = defer.Deferred()
        self._stopping = stopping

        def run() -> None:
            defer.Deferred.fromCoroutine(self._end(failure)).chainDeferred(stopping)

        self.reactor.callLater(0, run)

    async def _end(self, failure: BaseException | None) -> None:
        """Stop once: close the stream, destroy the session, emit on_stopped or on_failure."""
        if failure is None:
            self._input(ClientInput.STOP)
        service = self._service
        xmlstream, self._xmlstream = self._xmlstream, None
        if xmlstream is not None and xmlstream.is_open:
            self.stream.flush()  # what was queued (an unavailable presence) goes first
            self.stream.acknowledge()  # so that the server delivers nothing of ours again
            await xmlstream.close()
        if self._session_to_destroy:
            self._session_to_destroy = False
            self.stream.destroy(failure or DestructionRequested("the client was stopped"))
        if service is not None:
            await service.stopService()
        self._service = None
        self._end_reason = failure or DestructionRequested("the client was stopped")
        for waiting in list(self._waiting_sends):
            waiting.cancel()
        self._input(ClientInput.ENDED)
        if failure is None:
            self.logger.info("stopped")
            self.on_stopped.emit()
        else:
            self.on_failure.emit(failure)


def __getattr__(name: str) -> Any:
    """``AbstractClient``: the deprecated alias of :class:`Client` (with a warning)."""
    if name == "AbstractClient":
        warnings.warn("AbstractClient is deprecated: use Client", DeprecationWarning, stacklevel=2)
        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
