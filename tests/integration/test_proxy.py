"""The fault-injecting proxy, checked against the real Prosody and a recording TCP server.

Prosody shows that the proxy is transparent (stream header and features, direct TLS, a clean
close) and that every fault looks right from the client's side.  The recording server, a plain
Twisted server in this module, shows exactly what the server's side receives, how its
connection ends, and that a half-close passes through.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from twisted.internet import defer, endpoints, error, ssl
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.prosody import ProsodyServer
from tests.support.proxy import FaultProxy
from tests.support.reactor import ReactorThread

MakeProxy = Callable[..., FaultProxy]

# how long a test waits to conclude that nothing arrives (only for asserting an absence)
SILENCE: Final = 0.3
# the end of the first server response on the STARTTLS port
FEATURES_END: Final = b"</stream:features>"


def stream_header(domain: str) -> bytes:
    """Return the opening of a client stream to *domain*."""
    return (
        b"<?xml version='1.0'?>"
        b"<stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' "
        b"to='" + domain.encode() + b"' version='1.0'>"
    )


class RawClient(Protocol):
    """A TCP client that records what it receives and how its connection ended."""

    transport: Any

    def __init__(self) -> None:
        """Start with nothing received."""
        self.received = bytearray()
        self.reason: Failure | None = None
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._waiters: list[tuple[Callable[[bytes], bool], defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        """Record *data* and fire the waits it satisfies."""
        self.received += data
        waiting, self._waiters = self._waiters, []
        for ready, waiter in waiting:
            if ready(bytes(self.received)):
                waiter.callback(bytes(self.received))
            else:
                self._waiters.append((ready, waiter))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail the pending waits and fire :attr:`lost` with *reason*."""
        self.reason = reason
        waiting, self._waiters = self._waiters, []
        for _, waiter in waiting:
            waiter.errback(reason)
        self.lost.callback(None)

    async def ended(self) -> Failure:
        """Wait for the connection to end; return why it did."""
        await self.lost
        assert self.reason is not None
        return self.reason

    def wait_until(self, ready: Callable[[bytes], bool]) -> defer.Deferred[bytes]:
        """Return a Deferred firing with everything received once ``ready(received)`` holds."""
        if ready(bytes(self.received)):
            return defer.succeed(bytes(self.received))
        if self.reason is not None:
            return defer.fail(self.reason)

        def cancel(waiter: defer.Deferred[bytes]) -> None:
            self._waiters = [entry for entry in self._waiters if entry[1] is not waiter]

        waiter: defer.Deferred[bytes] = defer.Deferred(cancel)
        self._waiters.append((ready, waiter))
        return waiter

    def wait_for(self, marker: bytes) -> defer.Deferred[bytes]:
        """Return a Deferred firing with everything received once *marker* is in it."""
        return self.wait_until(lambda received: marker in received)

    async def expect_silence(self, reactor: Any, seconds: float = SILENCE) -> None:
        """Check that nothing arrives and the connection stays open for *seconds*."""
        before = len(self.received)
        something = self.wait_until(lambda received: len(received) > before)
        something.addTimeout(seconds, reactor)
        with pytest.raises(defer.TimeoutError):
            await something
        assert len(self.received) == before
        assert self.reason is None, self.reason
        assert self.transport is not None and self.transport.connected


class Recorded(Protocol):
    """One connection of the :class:`RecordingServer`."""

    transport: Any

    def __init__(self, server: RecordingServer) -> None:
        """Belong to *server*."""
        self.server = server
        self.received = bytearray()
        self.reason: Failure | None = None
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._size_waiters: list[tuple[int, defer.Deferred[None]]] = []

    def connectionMade(self) -> None:
        """Let the server's waiters know."""
        self.server.connected(self)

    def dataReceived(self, data: bytes) -> None:
        """Record *data*."""
        self.received += data
        ready = [w for size, w in self._size_waiters if len(self.received) >= size]
        self._size_waiters = [e for e in self._size_waiters if len(self.received) < e[0]]
        for waiter in ready:
            waiter.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Record *reason* and fire :attr:`lost`."""
        self.reason = reason
        self.lost.callback(None)

    async def ended(self) -> Failure:
        """Wait for the connection to end; return why it did."""
        await self.lost
        assert self.reason is not None
        return self.reason

    def wait_for_size(self, size: int) -> defer.Deferred[None]:
        """Return a Deferred firing once *size* bytes were received in total."""
        if len(self.received) >= size:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._size_waiters.append((size, waiter))
        return waiter


@implementer(IHalfCloseableProtocol)
class AnsweringFin(Recorded):
    """A :class:`Recorded` connection that answers the client's FIN, then closes."""

    def readConnectionLost(self) -> None:
        """Send the server's answer and close."""
        self.transport.write(self.server.answer_to_fin or b"")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Nothing to do: the connection closes after the answer."""


class RecordingServer(Factory):
    """A TCP server that records the bytes and the end of each connection.

    It sends nothing, except :attr:`answer_to_fin` (if set) when a client half-closes.
    """

    def __init__(self) -> None:
        """Start with no connection."""
        self.answer_to_fin: bytes | None = None
        self.connections: list[Recorded] = []
        self._unclaimed: list[Recorded] = []
        self._waiters: list[defer.Deferred[Recorded]] = []

    def buildProtocol(self, addr: Any) -> Recorded:
        """Return a recording protocol."""
        return Recorded(self) if self.answer_to_fin is None else AnsweringFin(self)

    def connected(self, connection: Recorded) -> None:
        """Record *connection* and hand it to the first waiter."""
        self.connections.append(connection)
        if self._waiters:
            self._waiters.pop(0).callback(connection)
        else:
            self._unclaimed.append(connection)

    def next_connection(self) -> defer.Deferred[Recorded]:
        """Return a Deferred firing with the next connection not handed out yet."""
        if self._unclaimed:
            return defer.succeed(self._unclaimed.pop(0))
        waiter: defer.Deferred[Recorded] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter


@pytest.fixture
def recording_server(reactor_thread: ReactorThread) -> Iterator[tuple[RecordingServer, int]]:
    """Yield ``(server, port)``: a :class:`RecordingServer` listening on 127.0.0.1."""
    server = RecordingServer()
    endpoint = endpoints.TCP4ServerEndpoint(reactor_thread.reactor, 0, interface="127.0.0.1")
    port: IListeningPort = reactor_thread.run(endpoint.listen, server)
    try:
        yield server, port.getHost().port  # type: ignore[attr-defined]
    finally:
        reactor_thread.run(port.stopListening)
        for connection in server.connections:
            if connection.transport is not None:
                reactor_thread.run(connection.transport.abortConnection)


async def connect(reactor: Any, port: int) -> RawClient:
    """Connect a :class:`RawClient` to 127.0.0.1:*port*."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    return await endpoints.connectProtocol(endpoint, RawClient())


async def open_stream(reactor: Any, port: int, domain: str) -> tuple[RawClient, bytes]:
    """Connect to *port*, send a stream header and return the client and the stream features."""
    client = await connect(reactor, port)
    client.transport.write(stream_header(domain))
    return client, await client.wait_for(FEATURES_END)


async def connect_expecting_reset(reactor: Any, port: int) -> None:
    """Connect to *port* and check that the connection is reset (or fails) at once."""
    try:
        client = await connect(reactor, port)
    except error.ConnectError:
        # the reset arrived before the client's reactor saw the handshake complete
        return
    assert_reset(await client.ended())


def assert_reset(reason: Failure | None) -> None:
    """Check that a connection ended with a reset, not a clean close."""
    assert reason is not None
    assert not reason.check(error.ConnectionDone), reason
    assert reason.check(error.ConnectionLost), reason


# -- transparency -----------------------------------------------------------------------------


def test_forwards_the_stream_both_ways_and_the_close(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """The server's stream header and features come back; its closing comes back cleanly."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        client, received = await open_stream(reactor, proxy.port, prosody.domain)
        assert received.startswith(b"<?xml version='1.0'?><stream:stream ")
        assert f"from='{prosody.domain}'".encode() in received
        assert b"<stream:features>" in received
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in received
        assert proxy.bytes_from_client == len(stream_header(prosody.domain))
        assert proxy.bytes_from_server == len(received)
        assert (proxy.connections_accepted, proxy.active_connections) == (1, 1)

        # the server answers the client's closing tag and closes: a clean close, relayed
        client.transport.write(b"</stream:stream>")
        reason = await client.ended()
        assert reason.check(error.ConnectionDone), reason
        assert client.received.endswith(b"</stream:stream>")
        await proxy.wait_until_idle()
        assert proxy.bytes_dropped_from_client == proxy.bytes_dropped_from_server == 0

    reactor_thread.run(scenario)


def test_forwards_a_half_close(
    recording_server: tuple[RecordingServer, int],
    reactor_thread: ReactorThread,
    make_fault_proxy: MakeProxy,
) -> None:
    """The client's FIN reaches the server after its data; the server's answer still comes back."""
    server, port = recording_server
    server.answer_to_fin = b"goodbye"
    proxy = make_fault_proxy(port)

    async def scenario() -> None:
        accepted = server.next_connection()
        client = await connect(reactor_thread.reactor, proxy.port)
        client.transport.write(b"bye")
        client.transport.loseWriteConnection()
        recorded = await accepted
        reason = await client.ended()
        assert reason.check(error.ConnectionDone), reason
        assert bytes(client.received) == b"goodbye"
        assert (await recorded.ended()).check(error.ConnectionDone)
        assert bytes(recorded.received) == b"bye"
        assert await proxy.wait_until_idle() == 0

    reactor_thread.run(scenario)


def test_direct_tls_passes_through(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """A TLS handshake through the proxy verifies the server's certificate; SASL is offered."""
    proxy = make_fault_proxy(prosody.direct_tls_port)
    assert prosody.ca_pem_path is not None
    trust = ssl.Certificate.loadPEM(prosody.ca_pem_path.read_bytes())

    async def scenario() -> bytes:
        tcp = endpoints.TCP4ClientEndpoint(reactor_thread.reactor, "127.0.0.1", proxy.port)
        endpoint: IStreamClientEndpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS(prosody.domain, trustRoot=trust), tcp
        )
        client = await endpoints.connectProtocol(endpoint, RawClient())
        client.transport.write(stream_header(prosody.domain))
        try:
            return await client.wait_for(FEATURES_END)
        finally:
            client.transport.abortConnection()

    features = reactor_thread.run(scenario)
    assert b"<mechanism>PLAIN</mechanism>" in features


# -- cut ----------------------------------------------------------------------------------------


def test_cut_resets_the_client_and_new_connections_work(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """After cut() the client's connection is reset; the next connection gets its features."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        client, _ = await open_stream(reactor, proxy.port, prosody.domain)
        assert proxy.cut() == 1
        assert proxy.active_connections == 0
        assert_reset(await client.ended())

        again, received = await open_stream(reactor, proxy.port, prosody.domain)
        assert b"<stream:features>" in received
        assert (proxy.connections_accepted, proxy.active_connections) == (2, 1)
        again.transport.loseConnection()
        await again.lost

    reactor_thread.run(scenario)


def test_cut_resets_the_server_side(
    recording_server: tuple[RecordingServer, int],
    reactor_thread: ReactorThread,
    make_fault_proxy: MakeProxy,
) -> None:
    """The server sees its client vanish: its connection is reset, after the bytes sent."""
    server, port = recording_server
    proxy = make_fault_proxy(port)

    async def scenario() -> None:
        accepted = server.next_connection()
        client = await connect(reactor_thread.reactor, proxy.port)
        client.transport.write(b"hello")
        recorded = await accepted
        await recorded.wait_for_size(5)
        proxy.cut()
        assert_reset(await recorded.ended())
        assert_reset(await client.ended())
        assert bytes(recorded.received) == b"hello"

    reactor_thread.run(scenario)


# -- black hole -------------------------------------------------------------------------------


def test_black_hole_keeps_current_connections_open_and_silent(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """A black-holed stream gets no answer and stays open, even after restore()."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor
    closing = b"</stream:stream>"

    async def scenario() -> None:
        client, _ = await open_stream(reactor, proxy.port, prosody.domain)
        proxy.black_hole()
        # forwarded, this would make the server close the stream
        client.transport.write(closing)
        await client.expect_silence(reactor)
        assert proxy.bytes_dropped_from_client == len(closing)

        proxy.restore()
        again, received = await open_stream(reactor, proxy.port, prosody.domain)
        assert b"<stream:features>" in received
        again.transport.loseConnection()
        await again.lost
        assert await proxy.wait_until_idle(at_most=1) == 1

        # restore() does not revive the dead connection
        client.transport.write(closing)
        await client.expect_silence(reactor)
        assert proxy.bytes_dropped_from_client == 2 * len(closing)
        assert proxy.active_connections == 1
        # nor is the client's FIN answered
        client.transport.loseWriteConnection()
        await client.expect_silence(reactor)

        assert proxy.cut() == 1
        assert_reset(await client.ended())

    reactor_thread.run(scenario)


def test_black_hole_accepts_new_connections_without_answering(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """A connection made during the black hole is accepted but nothing comes back."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        proxy.black_hole()
        client = await connect(reactor, proxy.port)
        assert await proxy.wait_for_connections(1) == 1
        client.transport.write(stream_header(prosody.domain))
        await client.expect_silence(reactor)
        assert proxy.bytes_from_client == proxy.bytes_from_server == 0
        assert proxy.bytes_dropped_from_client == len(stream_header(prosody.domain))

        proxy.restore()
        again, received = await open_stream(reactor, proxy.port, prosody.domain)
        assert b"<stream:features>" in received
        again.transport.loseConnection()
        await again.lost
        client.transport.loseConnection()
        await client.lost

    reactor_thread.run(scenario)


# -- cut_after ----------------------------------------------------------------------------------


@pytest.mark.parametrize("writes", [1, 10], ids=["one-write", "ten-writes"])
def test_cut_after_bytes_from_client_is_exact(
    writes: int,
    recording_server: tuple[RecordingServer, int],
    reactor_thread: ReactorThread,
    make_fault_proxy: MakeProxy,
) -> None:
    """Armed on a live connection, the cut lets exactly N more bytes reach the server."""
    server, port = recording_server
    proxy = make_fault_proxy(port)
    before, limit, burst = b"0123456789", 25, bytes(range(100))

    async def scenario() -> None:
        accepted = server.next_connection()
        client = await connect(reactor_thread.reactor, proxy.port)
        client.transport.write(before)
        recorded = await accepted
        await recorded.wait_for_size(len(before))

        proxy.cut_after(bytes_from_client=limit)
        assert proxy.cut_armed
        size = len(burst) // writes
        for start in range(0, len(burst), size):
            client.transport.write(burst[start : start + size])
        await proxy.wait_for_cut()

        assert_reset(await recorded.ended())
        assert_reset(await client.ended())
        assert bytes(recorded.received) == before + burst[:limit]
        assert proxy.bytes_from_client == len(before) + limit
        assert not proxy.cut_armed
        assert proxy.active_connections == 0

    reactor_thread.run(scenario)


def test_cut_after_cuts_one_connection_only(
    recording_server: tuple[RecordingServer, int],
    reactor_thread: ReactorThread,
    make_fault_proxy: MakeProxy,
) -> None:
    """The first connection to reach the limit is cut; the others and later ones go on."""
    server, port = recording_server
    proxy = make_fault_proxy(port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        first_accepted = server.next_connection()
        first = await connect(reactor, proxy.port)
        first_recorded = await first_accepted
        second_accepted = server.next_connection()
        second = await connect(reactor, proxy.port)
        second_recorded = await second_accepted

        proxy.cut_after(bytes_from_client=4)
        first.transport.write(b"abc")
        second.transport.write(b"wxyz!")
        await proxy.wait_for_cut()
        assert_reset(await second.ended())
        assert bytes(second_recorded.received) == b"wxyz"

        first.transport.write(b"def")
        await first_recorded.wait_for_size(6)
        assert bytes(first_recorded.received) == b"abcdef"
        assert first.reason is None
        first.transport.loseConnection()
        await first_recorded.lost

    reactor_thread.run(scenario)


def test_cut_after_bytes_from_client_against_prosody(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """Armed before connecting: the stream header is cut after N bytes; no answer comes."""
    proxy = make_fault_proxy(prosody.starttls_port)
    limit = 40
    header = stream_header(prosody.domain)
    assert len(header) > limit

    async def scenario() -> None:
        proxy.cut_after(bytes_from_client=limit)
        client = await connect(reactor_thread.reactor, proxy.port)
        client.transport.write(header)
        assert_reset(await client.ended())
        await proxy.wait_for_cut()
        assert proxy.bytes_from_client == limit
        assert proxy.bytes_from_server == 0
        assert client.received == b""
        await proxy.wait_until_idle()

    reactor_thread.run(scenario)


def test_cut_after_bytes_from_server_against_prosody(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """The client receives exactly the first N bytes of the server's answer, then a reset."""
    proxy = make_fault_proxy(prosody.starttls_port)
    limit = 30

    async def scenario() -> None:
        proxy.cut_after(bytes_from_server=limit)
        client = await connect(reactor_thread.reactor, proxy.port)
        client.transport.write(stream_header(prosody.domain))
        assert_reset(await client.ended())
        assert len(client.received) == limit
        assert client.received.startswith(b"<?xml version='1.0'?><stream")
        assert proxy.bytes_from_server == limit

    reactor_thread.run(scenario)


def test_cut_after_arguments(reactor_thread: ReactorThread, make_fault_proxy: MakeProxy) -> None:
    """A limit is required, must not be negative, and only one cut is armed at a time."""
    proxy = make_fault_proxy(9)
    with pytest.raises(ValueError, match="give bytes_from_client"):
        reactor_thread.run(proxy.cut_after)
    with pytest.raises(ValueError, match="negative"):
        reactor_thread.run(proxy.cut_after, bytes_from_server=-1)
    with pytest.raises(RuntimeError, match="no cut_after"):
        reactor_thread.run(proxy.wait_for_cut)
    reactor_thread.run(proxy.cut_after, 10, 10)
    with pytest.raises(RuntimeError, match="already armed"):
        reactor_thread.run(proxy.cut_after, 5)


# -- refuse -------------------------------------------------------------------------------------


def test_refuse_resets_new_connections_until_accept_again(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """While refusing, a connection is reset at once; accept_again() lets the next one in."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        proxy.refuse()
        await connect_expecting_reset(reactor, proxy.port)
        assert await proxy.wait_for_refusals(1) == 1
        await connect_expecting_reset(reactor, proxy.port)
        assert await proxy.wait_for_refusals(2) == 2
        assert (proxy.connections_accepted, proxy.active_connections) == (0, 0)

        proxy.accept_again()
        again, received = await open_stream(reactor, proxy.port, prosody.domain)
        assert b"<stream:features>" in received
        assert (proxy.connections_accepted, proxy.connections_refused) == (1, 2)
        again.transport.loseConnection()
        await again.lost

    reactor_thread.run(scenario, timeout=5)


def test_unreachable_target_resets_the_client(
    reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """When the target refuses the connection, the client's connection is reset."""
    unused = endpoints.TCP4ServerEndpoint(reactor_thread.reactor, 0, interface="127.0.0.1")
    port: IListeningPort = reactor_thread.run(unused.listen, Factory.forProtocol(Protocol))
    closed_port = port.getHost().port  # type: ignore[attr-defined]
    reactor_thread.run(port.stopListening)
    proxy = make_fault_proxy(closed_port)

    async def scenario() -> None:
        await connect_expecting_reset(reactor_thread.reactor, proxy.port)
        assert await proxy.wait_until_idle() == 0
        assert proxy.connections_accepted == 1

    reactor_thread.run(scenario)


# -- observation and life cycle ---------------------------------------------------------------


def test_wait_for_connections(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """The Deferred fires when the total reaches n, at once if it already has."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    with pytest.raises(defer.TimeoutError):
        reactor_thread.run(proxy.wait_for_connections, 1, timeout=0.05)

    async def scenario() -> None:
        second = proxy.wait_for_connections(2)
        first = await connect(reactor, proxy.port)
        assert await proxy.wait_for_connections(1) == 1
        assert not second.called
        proxy.cut()
        await first.lost
        again = await connect(reactor, proxy.port)
        assert await second == 2
        again.transport.loseConnection()
        await again.lost

    reactor_thread.run(scenario)
    assert reactor_thread.run(proxy.wait_for_connections, 1) == 2


def test_stop_resets_connections_and_closes_the_port(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """stop() resets the current connections; then nothing listens on the port."""
    proxy = make_fault_proxy(prosody.starttls_port)
    reactor = reactor_thread.reactor

    async def scenario() -> None:
        client, _ = await open_stream(reactor, proxy.port, prosody.domain)
        await proxy.stop()
        assert_reset(await client.ended())
        with pytest.raises(error.ConnectionRefusedError):
            await connect(reactor, proxy.port)
        await proxy.stop()

    reactor_thread.run(scenario)


def test_barrier_counts_connections_begun_before_it_and_none_after(
    prosody: ProsodyServer, reactor_thread: ReactorThread, make_fault_proxy: MakeProxy
) -> None:
    """Handshakes begun before barrier() are counted when it fires, even when their client
    gave up at once (a cancelled attempt); one begun after it is not, nor is the barrier's."""
    proxy = make_fault_proxy(prosody.starttls_port)

    def begin_and_abandon() -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        probe.connect_ex(("127.0.0.1", proxy.port))
        probe.close()  # before the proxy's loop ran: it still accepts the connection

    async def scenario() -> tuple[int, int, int]:
        proxy.refuse()
        begin_and_abandon()
        begin_and_abandon()
        first = proxy.barrier()
        begin_and_abandon()
        before = await first
        after = await proxy.barrier()
        return before, after, proxy.connections_refused

    assert reactor_thread.run(scenario, timeout=5) == (2, 3, 3)
    assert reactor_thread.run(lambda: proxy.connections_accepted) == 0
