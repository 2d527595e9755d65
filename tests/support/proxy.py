"""A loopback TCP proxy that tests put between a client and a server to inject network faults.

:class:`FaultProxy` listens on ``127.0.0.1`` and, for every accepted connection, opens a
connection to the target and forwards the bytes both ways, untouched (TLS and STARTTLS pass
through: it is only TCP).  The test decides when the network misbehaves:

* :meth:`~FaultProxy.cut` resets every current connection on both sides at once;
* :meth:`~FaultProxy.black_hole` keeps every connection open but lets nothing through (a
  silently dead link), until :meth:`~FaultProxy.restore`;
* :meth:`~FaultProxy.cut_after` resets a connection once a given number of bytes went through
  in one direction (in the middle of a burst of stanzas, say);
* :meth:`~FaultProxy.refuse` resets new connections as soon as they are accepted, until
  :meth:`~FaultProxy.accept_again`.

:meth:`~FaultProxy.barrier` orders the test's view against the client's: it fires once the
proxy has seen every connection whose TCP handshake began before it was called.

Everything here runs in the reactor thread.  Tests, which run in the pytest thread, call every
method through the reactor thread fixture, and wait for the returned Deferreds the same way::

    proxy = FaultProxy(prosody.host, prosody.starttls_port, reactor_thread.reactor)
    port = reactor_thread.run(proxy.start)
    ...  # connect the client to 127.0.0.1:port
    reactor_thread.run(proxy.cut)
    reactor_thread.run(proxy.wait_for_connections, 2, timeout=5)  # the client reconnected
    reactor_thread.run(proxy.stop)

The counters (:attr:`~FaultProxy.connections_accepted`, :attr:`~FaultProxy.bytes_from_client`,
...) are plain attributes updated in the reactor thread: read them after a
``reactor_thread.run`` call has returned, or through one (``reactor_thread.run(lambda:
proxy.active_connections)``) while traffic may still be flowing.

Closing is forwarded faithfully: a half-close (FIN) on one side half-closes the other side once
the data before it has been written, and a reset on one side resets the other side.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
from collections.abc import Callable
from typing import Final, cast

from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IListeningPort,
    IPullProducer,
    IPushProducer,
    IReactorTCP,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["LISTEN_HOST", "FaultProxy"]

#: the address the proxy listens on
LISTEN_HOST: Final = "127.0.0.1"
#: seconds the proxy waits for the target to accept a connection before resetting the client
DEFAULT_CONNECT_TIMEOUT: Final = 5.0


class _Direction(enum.Enum):
    """Which way bytes travel through the proxy."""

    FROM_CLIENT = "from the client"
    FROM_SERVER = "from the server"


class _CountWaiters:
    """Deferreds that fire once a growing count reaches the value each one waits for."""

    def __init__(self) -> None:
        """Start with nobody waiting."""
        self._waiting: list[tuple[int, defer.Deferred[int]]] = []

    def wait(self, current: int, wanted: int) -> defer.Deferred[int]:
        """Return a Deferred firing with the count once it is at least *wanted*.

        It fires at once if *current* is already enough.  Cancelling it stops the wait.
        """
        if current >= wanted:
            return defer.succeed(current)

        def cancel(waiter: defer.Deferred[int]) -> None:
            self._waiting = [entry for entry in self._waiting if entry[1] is not waiter]

        waiter: defer.Deferred[int] = defer.Deferred(cancel)
        self._waiting.append((wanted, waiter))
        return waiter

    def update(self, current: int) -> None:
        """Fire the Deferreds waiting for *current* or less."""
        ready = [waiter for wanted, waiter in self._waiting if wanted <= current]
        if not ready:
            return
        self._waiting = [entry for entry in self._waiting if entry[0] > current]
        for waiter in ready:
            waiter.callback(current)


class _CutTrigger:
    """A cut armed by :meth:`FaultProxy.cut_after`: byte limits per direction, counted per link."""

    def __init__(self, limits: dict[_Direction, int]) -> None:
        """Arm the trigger with *limits*; nothing has been counted yet."""
        self.limits = limits
        self.counted: dict[tuple[_Link, _Direction], int] = {}
        self.fired = 0
        self.waiters = _CountWaiters()

    def allow(self, link: _Link, direction: _Direction, size: int) -> tuple[int, bool]:
        """Count *size* bytes; return how many of them may pass and whether to cut after them."""
        limit = self.limits.get(direction)
        if limit is None:
            return size, False
        key = (link, direction)
        room = limit - self.counted.get(key, 0)
        if size < room:
            self.counted[key] = self.counted.get(key, 0) + size
            return size, False
        self.counted.clear()
        return room, True

    def fire(self) -> None:
        """Record that the cut happened and wake up whoever waits for it."""
        self.fired = 1
        self.waiters.update(self.fired)


@implementer(IPullProducer)
class _WhenDrained:
    """Call a function once a transport has written everything it had buffered.

    Registered as a pull producer: the transport asks for more data (``resumeProducing``) when
    its buffer is empty; the first request comes at once, from ``registerProducer`` itself.
    The function is also called if the transport loses its connection first.
    """

    def __init__(self, then: Callable[[], None]) -> None:
        """Remember *then*, the function to call."""
        self._then: Callable[[], None] | None = then
        self._requests = 0

    def resumeProducing(self) -> None:
        """The buffer is empty (on the second request: the first one is the registration)."""
        self._requests += 1
        if self._requests > 1:
            self._finish()

    def stopProducing(self) -> None:
        """The connection was lost before the buffer emptied."""
        self._finish()

    def _finish(self) -> None:
        """Call the function (once)."""
        then, self._then = self._then, None
        if then is not None:
            then()


class _Connection(Protocol):
    """A TCP connection of the proxy (either side), tracked until it is lost."""

    transport: ITCPTransport

    def __init__(self, proxy: FaultProxy) -> None:
        """Belong to *proxy*."""
        self.proxy = proxy
        self.gone = False
        self._lost_waiters: list[defer.Deferred[None]] = []

    def connectionMade(self) -> None:
        """Track the connection (the proxy waits for it in :meth:`FaultProxy.stop`)."""
        self.proxy._open_connections.add(self)
        self.transport.setTcpNoDelay(True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop tracking the connection and wake up :meth:`when_lost` waiters."""
        self.gone = True
        self.proxy._open_connections.discard(self)
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_lost(self) -> defer.Deferred[None]:
        """Return a Deferred firing once the connection is lost (at once if it is)."""
        if self.gone:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._lost_waiters.append(waiter)
        return waiter

    def abort(self) -> None:
        """Reset the connection (RST), dropping whatever is buffered."""
        if not self.gone:
            self.transport.abortConnection()


class _Barrier(Protocol):
    """The proxy's end of a :meth:`FaultProxy.barrier` connection: counted nowhere, closed."""

    def __init__(self, probe: socket.socket, waiter: defer.Deferred[int], seen: int) -> None:
        """Fire *waiter* with *seen* once connected, then close both ends."""
        self.probe, self.waiter, self.seen = probe, waiter, seen

    def connectionMade(self) -> None:
        """Close both ends of the barrier connection, then fire the waiter."""
        self.probe.close()
        self.transport.loseConnection()
        self.waiter.callback(self.seen)


class _Refused(_Connection):
    """A connection accepted while the proxy refuses: reset at once."""

    def connectionMade(self) -> None:
        """Reset the connection."""
        super().connectionMade()
        self.proxy.connections_refused += 1
        self.proxy._refusal_waiters.update(self.proxy.connections_refused)
        self.abort()


@implementer(IHalfCloseableProtocol)
class _Side(_Connection):
    """One side of a proxied connection: the client's connection, or ours to the server."""

    def __init__(self, proxy: FaultProxy, link: _Link, direction: _Direction) -> None:
        """Be the side of *link* whose received bytes travel in *direction*."""
        super().__init__(proxy)
        self.link = link
        self.direction = direction
        self.read_closed = False
        self.write_closed = False

    def connectionMade(self) -> None:
        """Tell the link this side is connected."""
        super().connectionMade()
        self.link.side_connected(self)

    def dataReceived(self, data: bytes) -> None:
        """Hand the bytes to the link."""
        self.link.received(self, data)

    def readConnectionLost(self) -> None:
        """The peer half-closed (FIN): tell the link; close once both halves are closed."""
        self.read_closed = True
        self.link.end_of_data(self)
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        """Our half-close went out; close once both halves are closed."""
        self.write_closed = True
        self._close_if_done()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the link this side is gone."""
        super().connectionLost(reason)
        self.link.side_lost(self, reason)

    def _close_if_done(self) -> None:
        """Close the connection once neither direction is open any more."""
        if self.read_closed and self.write_closed and not self.gone:
            self.transport.loseConnection()

    def half_close(self) -> None:
        """Send FIN once the buffered data is written; keep reading."""
        if not self.gone and not self.write_closed:
            self.transport.loseWriteConnection()

    def close(self) -> None:
        """Close cleanly once the buffered data is written."""
        if not self.gone:
            self.transport.loseConnection()

    def pause(self) -> None:
        """Stop reading from the connection."""
        if not self.gone:
            cast(IPushProducer, self.transport).pauseProducing()


class _Link:
    """One proxied connection: the client's side, our side to the server, and their state."""

    def __init__(self, proxy: FaultProxy) -> None:
        """Create the client's side; the server's side comes once the client is connected."""
        self.proxy = proxy
        self.client = _Side(proxy, self, _Direction.FROM_CLIENT)
        self.server: _Side | None = None
        #: black-holed: nothing goes through any more, and nothing is closed on purpose
        self.dead = proxy._black_holed
        #: reset by the proxy (cut, stop, failed connection to the target)
        self.aborted = False
        #: a cut_after fired: nothing goes through while the last bytes are written
        self.cutting = False
        self._connecting: defer.Deferred[_Side] | None = None
        # what the client sent before the server's side was connected, and whether it
        # half-closed too
        self._pending: list[bytes] = []
        self._client_ended = False

    # -- the two sides ------------------------------------------------------------------------

    def side_connected(self, side: _Side) -> None:
        """Start the link when the client is connected; forward the waiting bytes to the server."""
        if side is self.client:
            self.proxy._accepted(self)
            if not self.dead:
                self._connect()
            return
        self.server = side
        if self.aborted:
            side.abort()
            return
        pending, self._pending = self._pending, []
        if self.dead:
            self.proxy._count_dropped(_Direction.FROM_CLIENT, sum(map(len, pending)))
            return
        for data in pending:
            self._forward(_Direction.FROM_CLIENT, data)
        if self._client_ended and not self.cutting:
            side.half_close()

    def _connect(self) -> None:
        """Open the connection to the target."""
        endpoint = self.proxy._target_endpoint()
        self._connecting = endpoints.connectProtocol(
            endpoint, _Side(self.proxy, self, _Direction.FROM_SERVER)
        )
        self._connecting.addCallbacks(self._connected, self._not_connected)

    def _connected(self, side: _Side) -> None:
        """The connection to the target is up (:meth:`side_connected` already ran)."""
        self._connecting = None

    def _not_connected(self, reason: Failure) -> None:
        """No connection to the target (refused, timed out or cancelled): reset the client."""
        self._connecting = None
        self.abort()
        self.proxy._forget_if_closed(self)

    def peer(self, side: _Side) -> _Side | None:
        """Return the other side of *side* (``None``: the server's side is not connected)."""
        return self.server if side is self.client else self.client

    def received(self, side: _Side, data: bytes) -> None:
        """Forward *data* received on *side*, buffer it, or drop it."""
        if self.dead or self.aborted or self.cutting:
            self.proxy._count_dropped(side.direction, len(data))
        elif side is self.client and self.server is None:
            self._pending.append(data)
        else:
            self._forward(side.direction, data)

    def end_of_data(self, side: _Side) -> None:
        """*side* was half-closed by its peer: half-close the other side, as a router would."""
        if self.aborted or self.cutting:
            return
        if self.dead:
            # nothing travels on a dead link, not even an answer to the FIN: the connection
            # stays half-open until cut() or stop()
            return
        other = self.peer(side)
        if other is None:
            self._client_ended = True
        elif other.gone:
            side.close()
        else:
            other.half_close()

    def side_lost(self, side: _Side, reason: Failure) -> None:
        """*side* is gone: close the other one the same way (clean close, or reset)."""
        if side is self.client and self._connecting is not None:
            self._connecting.cancel()
        if not (self.dead or self.aborted or self.cutting):
            other = self.peer(side)
            if other is not None and not other.gone:
                if reason.check(ConnectionDone):
                    other.close()
                else:
                    self.abort()
        self.proxy._forget_if_closed(self)

    @property
    def closed(self) -> bool:
        """Whether no connection of this link remains open or being opened."""
        server_gone = self.server is None or self.server.gone
        return self.client.gone and server_gone and self._connecting is None

    # -- forwarding and faults ----------------------------------------------------------------

    def _forward(self, direction: _Direction, data: bytes) -> None:
        """Write *data* to the other side, unless an armed cut stops it part of the way."""
        destination = self.server if direction is _Direction.FROM_CLIENT else self.client
        assert destination is not None
        if self.aborted or self.cutting:
            self.proxy._count_dropped(direction, len(data))
            return
        allowed, trigger = self.proxy._allow(self, direction, len(data))
        if allowed:
            destination.transport.write(data[:allowed])
            self.proxy._count_forwarded(direction, allowed)
        if trigger is None:
            return
        self.proxy._count_dropped(direction, len(data) - allowed)
        self.cutting = True
        self.client.pause()
        if self.server is not None:
            self.server.pause()

        def finish() -> None:
            self.abort()
            trigger.fire()

        if allowed and not destination.gone:
            # abortConnection drops what is still buffered: reset once the bytes are out
            consumer = cast(IConsumer, destination.transport)
            consumer.registerProducer(_WhenDrained(finish), False)
        else:
            finish()

    def black_hole(self) -> None:
        """Stop forwarding for good; keep both connections open."""
        self.dead = True
        pending, self._pending = self._pending, []
        self.proxy._count_dropped(_Direction.FROM_CLIENT, sum(map(len, pending)))

    def abort(self) -> None:
        """Reset both sides now and stop connecting to the target."""
        if self.aborted:
            return
        self.aborted = True
        if self._connecting is not None:
            self._connecting.cancel()
        self.client.abort()
        if self.server is not None:
            self.server.abort()
        self.proxy._forget(self)


class _ListeningFactory(Factory):
    """Build a link for each accepted connection, or a refused connection."""

    noisy = False

    def __init__(self, proxy: FaultProxy) -> None:
        """Serve *proxy*."""
        self.proxy = proxy

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """Return the client's side of a new link, a connection to reset at once, or the end of
        a barrier connection."""
        proxy = self.proxy
        barrier = proxy._barriers.pop(addr.port, None) if isinstance(addr, IPv4Address) else None
        if barrier is not None:
            return _Barrier(*barrier, proxy.connections_accepted + proxy.connections_refused)
        if proxy._refusing:
            return _Refused(proxy)
        return _Link(proxy).client


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port`` with injected faults.

    Call every method in the reactor thread (``reactor_thread.run(proxy.cut)`` from a test).

    :param target_host: the server's address (an IPv4 or IPv6 literal, or a host name).
    :param target_port: the server's port.
    :param reactor: the reactor to listen and connect with.
    :param connect_timeout: seconds to wait for the server to accept each connection; if it
        does not (or refuses), the client's connection is reset.

    Counters (totals since :meth:`start`):

    * :attr:`connections_accepted`: connections accepted and proxied (or black-holed);
    * :attr:`connections_refused`: connections reset at once because of :meth:`refuse`;
    * :attr:`active_connections`: proxied connections not closed yet (see the property);
    * :attr:`bytes_from_client` / :attr:`bytes_from_server`: bytes forwarded in each direction;
    * :attr:`bytes_dropped_from_client` / :attr:`bytes_dropped_from_server`: bytes received but
      not forwarded (black hole, or arriving while a cut happens).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        reactor: IReactorTCP,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """Prepare the proxy; nothing listens until :meth:`start`."""
        self.target_host = target_host
        self.target_port = target_port
        self.reactor = reactor
        self.connect_timeout = connect_timeout

        self.connections_accepted = 0
        self.connections_refused = 0
        self.bytes_from_client = 0
        self.bytes_from_server = 0
        self.bytes_dropped_from_client = 0
        self.bytes_dropped_from_server = 0

        self._listening: IListeningPort | None = None
        self._port: int | None = None
        self._stopped = False
        self._refusing = False
        self._black_holed = False
        self._trigger: _CutTrigger | None = None
        self._last_trigger: _CutTrigger | None = None
        # proxied connections not closed yet
        self._links: set[_Link] = set()
        # every TCP connection (either side) not lost yet
        self._open_connections: set[_Connection] = set()
        self._connection_waiters = _CountWaiters()
        self._refusal_waiters = _CountWaiters()
        # (active connections wanted at most, waiter)
        self._idle_waiters: list[tuple[int, defer.Deferred[int]]] = []
        # barrier connections not accepted yet, by their local port
        self._barriers: dict[int, tuple[socket.socket, defer.Deferred[int]]] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> defer.Deferred[int]:
        """Listen on a free port of ``127.0.0.1``; return a Deferred firing with the port."""
        if self._listening is not None or self._stopped:
            raise RuntimeError("a FaultProxy starts only once")
        endpoint = endpoints.TCP4ServerEndpoint(self.reactor, 0, interface=LISTEN_HOST)
        listening: defer.Deferred[IListeningPort] = endpoint.listen(_ListeningFactory(self))

        def started(port: IListeningPort) -> int:
            self._listening = port
            self._port = cast(IPv4Address, port.getHost()).port
            return self._port

        return listening.addCallback(started)

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once :meth:`start` has fired; kept after stop)."""
        if self._port is None:
            raise RuntimeError("the port is chosen by start(); start the proxy first")
        return self._port

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and reset every connection; safe to repeat.

        The Deferred fires once the port is closed and every connection is gone.
        """
        self._stopped = True
        closing: list[defer.Deferred[None]] = []
        if self._listening is not None:
            closed = self._listening.stopListening()
            closing.append(closed if closed is not None else defer.succeed(None))
        self._trigger = None
        for link in list(self._links):
            link.abort()
        for connection in list(self._open_connections):
            connection.abort()
            closing.append(connection.when_lost())
        gathered = defer.gatherResults(closing, consumeErrors=True)
        return gathered.addCallback(lambda _: None)

    # -- faults -------------------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every current connection on both sides (RST); return how many were cut.

        The client sees its connection lost (reset), the server sees its client vanish.
        Black-holed connections are cut too.  New connections work as before.
        """
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    def hang_up(self) -> int:
        """Close every current connection cleanly on both sides (FIN), as a server that drops
        its TCP connection without ending the XML stream would; return how many."""
        links = list(self._links)
        for link in links:
            link.client.close()
            if link.server is not None:
                link.server.close()
        return len(links)

    def black_hole(self) -> None:
        """Let nothing through any more, on current and new connections, but close nothing.

        This is a silently dead link: bytes from either side are dropped (and counted in the
        ``bytes_dropped_*`` counters) and the proxy sends no FIN and no RST on its own, not
        even in answer to a FIN: a side that closes is not reported to the other, and the
        proxy's end of that connection stays half-open.  New connections are accepted, but no
        connection is opened to the server for them (nothing reaches it).  Lasts until
        :meth:`restore`; black-holed connections end only with :meth:`cut` or :meth:`stop`
        (or when a peer resets them).
        """
        self._black_holed = True
        for link in self._links:
            link.black_hole()

    def restore(self) -> None:
        """Forward normally again on NEW connections.

        The connections black-holed so far stay dead: their bytes are still dropped, as by a
        router that lost its state, so the client must notice and reconnect (or the test
        calls :meth:`cut` to end them).
        """
        self._black_holed = False

    @property
    def black_holed(self) -> bool:
        """Whether new connections are black-holed (:meth:`black_hole` without :meth:`restore`)."""
        return self._black_holed

    def cut_after(
        self, bytes_from_client: int | None = None, bytes_from_server: int | None = None
    ) -> None:
        """Arm a one-shot cut once a connection has forwarded that many more bytes one way.

        Bytes are counted from now on, on each connection separately (current ones and those
        accepted later).  The first connection to reach a limit forwards exactly up to it; the
        proxy then stops reading from both sides, waits until those last bytes are written,
        and resets both sides.  A limit of 0 cuts on the next bytes in that direction without
        forwarding any.  Other connections are not affected, and the trigger is then spent.
        Wait for it with :meth:`wait_for_cut`.
        """
        limits: dict[_Direction, int] = {}
        for direction, limit in (
            (_Direction.FROM_CLIENT, bytes_from_client),
            (_Direction.FROM_SERVER, bytes_from_server),
        ):
            if limit is not None:
                if limit < 0:
                    raise ValueError(f"the byte limit {direction.value} must not be negative")
                limits[direction] = limit
        if not limits:
            raise ValueError("give bytes_from_client, bytes_from_server or both")
        if self._trigger is not None:
            raise RuntimeError("a cut_after is already armed and has not fired")
        self._trigger = self._last_trigger = _CutTrigger(limits)

    @property
    def cut_armed(self) -> bool:
        """Whether a :meth:`cut_after` is armed and has not fired yet."""
        return self._trigger is not None

    def wait_for_cut(self) -> defer.Deferred[int]:
        """Return a Deferred firing once the last :meth:`cut_after` has reset its connection.

        It fires at once if that already happened; cancel it to stop waiting.
        """
        trigger = self._last_trigger
        if trigger is None:
            raise RuntimeError("no cut_after was armed")
        return trigger.waiters.wait(trigger.fired, 1)

    def refuse(self) -> None:
        """Reset new connections as soon as they are accepted (the server is unreachable).

        The proxy still listens, so the client's TCP handshake succeeds and the connection is
        reset right away: the client usually sees its connection made, then lost; if the
        reset arrives before its reactor noticed the handshake, the connection attempt fails
        instead.  Current connections are not affected.  Lasts until :meth:`accept_again`.
        """
        self._refusing = True

    def accept_again(self) -> None:
        """Proxy new connections again after :meth:`refuse`."""
        self._refusing = False

    # -- observation --------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        """Proxied connections not closed yet.

        A connection counts until both of its sides are closed; one the proxy resets
        (:meth:`cut`, :meth:`cut_after`, :meth:`stop`) stops counting at once.  Black-holed
        connections count until :meth:`cut` (see :meth:`black_hole`).
        """
        return len(self._links)

    def wait_for_connections(self, count: int) -> defer.Deferred[int]:
        """Return a Deferred firing once *count* connections were accepted in total.

        It fires with :attr:`connections_accepted`, at once if the count is already reached;
        refused connections do not count (see :meth:`wait_for_refusals`).  Cancel it to stop
        waiting (``reactor_thread.run``'s timeout does).
        """
        return self._connection_waiters.wait(self.connections_accepted, count)

    def wait_for_refusals(self, count: int) -> defer.Deferred[int]:
        """Return a Deferred firing once *count* connections were refused in total."""
        return self._refusal_waiters.wait(self.connections_refused, count)

    def barrier(self) -> defer.Deferred[int]:
        """Connect to the proxy now; fire once it accepted that connection.

        The TCP handshake starts before this returns (a plain non-blocking ``connect()``, not a
        reactor connection, which would start one reactor turn later).  The kernel queues
        accepted connections in the order their handshakes completed and the proxy accepts
        them in that order, so when the Deferred fires the proxy has seen every connection
        begun before this call and none begun after it (on loopback a handshake completes
        within the ``connect()`` call).  It fires with the connections seen so far
        (:attr:`connections_accepted` plus :attr:`connections_refused`); the barrier
        connection itself counts in neither and is closed at once.

        Call it from a signal listener (``on_stopped``) to split the connections a client
        made into those begun before the signal and those begun after.
        """
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        error = probe.connect_ex((LISTEN_HOST, self.port))
        waiter: defer.Deferred[int] = defer.Deferred()
        if error not in (0, errno.EINPROGRESS):
            probe.close()
            waiter.errback(OSError(error, f"barrier connection: {os.strerror(error)}"))
            return waiter
        self._barriers[probe.getsockname()[1]] = (probe, waiter)
        return waiter

    def wait_until_idle(self, at_most: int = 0) -> defer.Deferred[int]:
        """Return a Deferred firing once :attr:`active_connections` is *at_most* or fewer.

        It fires with the number of active connections, at once if there are few enough.
        Cancel it to stop waiting.
        """
        if len(self._links) <= at_most:
            return defer.succeed(len(self._links))

        def cancel(waiter: defer.Deferred[int]) -> None:
            self._idle_waiters = [entry for entry in self._idle_waiters if entry[1] is not waiter]

        waiter: defer.Deferred[int] = defer.Deferred(cancel)
        self._idle_waiters.append((at_most, waiter))
        return waiter

    def __repr__(self) -> str:
        """Return the addresses and the state."""
        listening = f"{LISTEN_HOST}:{self._port}" if self._port is not None else "not started"
        state = [
            name
            for name, on in (
                ("black hole", self._black_holed),
                ("refusing", self._refusing),
                ("cut armed", self._trigger is not None),
                ("stopped", self._stopped),
            )
            if on
        ]
        return (
            f"<FaultProxy {listening} -> {self.target_host}:{self.target_port}, "
            f"{self.active_connections} active{''.join(', ' + s for s in state)}>"
        )

    # -- for the links ------------------------------------------------------------------------

    def _target_endpoint(self) -> IStreamClientEndpoint:
        """Return the endpoint of the server."""
        if ":" in self.target_host:
            return endpoints.TCP6ClientEndpoint(
                self.reactor, self.target_host, self.target_port, timeout=self.connect_timeout
            )
        return endpoints.TCP4ClientEndpoint(
            self.reactor, self.target_host, self.target_port, timeout=self.connect_timeout
        )

    def _accepted(self, link: _Link) -> None:
        """Count a new proxied connection."""
        self._links.add(link)
        self.connections_accepted += 1
        self._connection_waiters.update(self.connections_accepted)

    def _forget_if_closed(self, link: _Link) -> None:
        """Stop counting *link* as active once all its connections are closed."""
        if link.closed:
            self._forget(link)

    def _forget(self, link: _Link) -> None:
        """Stop counting *link* as active; wake up the :meth:`wait_until_idle` calls satisfied."""
        if link not in self._links:
            return
        self._links.discard(link)
        active = len(self._links)
        ready = [waiter for at_most, waiter in self._idle_waiters if active <= at_most]
        if ready:
            self._idle_waiters = [entry for entry in self._idle_waiters if active > entry[0]]
            for waiter in ready:
                waiter.callback(active)

    def _allow(
        self, link: _Link, direction: _Direction, size: int
    ) -> tuple[int, _CutTrigger | None]:
        """Return how many of *size* bytes may be forwarded, and the trigger if it fires.

        A trigger that fires is disarmed: it cuts one connection only.
        """
        trigger = self._trigger
        if trigger is None:
            return size, None
        allowed, cut = trigger.allow(link, direction, size)
        if not cut:
            return allowed, None
        self._trigger = None
        return allowed, trigger

    def _count_forwarded(self, direction: _Direction, size: int) -> None:
        """Add *size* to the forwarded bytes in *direction*."""
        if direction is _Direction.FROM_CLIENT:
            self.bytes_from_client += size
        else:
            self.bytes_from_server += size

    def _count_dropped(self, direction: _Direction, size: int) -> None:
        """Add *size* to the dropped bytes in *direction*."""
        if direction is _Direction.FROM_CLIENT:
            self.bytes_dropped_from_client += size
        else:
            self.bytes_dropped_from_server += size
