"""A server that answers a client's stream header with XML shaped to hurt its parser.

:class:`HostileParserServer` listens on ``127.0.0.1``.  For every connection it waits for the
client's stream header, writes the bytes it was given (a stream header with thousands of
attributes, a DOCTYPE after the header, an element with more children than the client accepts,
...) in pieces of :data:`PIECE` bytes, as a server flushing a large write would, and then says
nothing more: whatever the client does next, it decides on its own.  Everything the client sent
is recorded, so a test can check which stream error it received::

    server = HostileParserServer(payload)
    port = reactor_thread.run(server.start)
    ...  # connect an XMLStream to 127.0.0.1:port
    received = reactor_thread.run(server.when_closed)  # everything the client wrote
    reactor_thread.run(server.stop)

Everything here runs in the reactor thread.
"""

from __future__ import annotations

from typing import Final

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

__all__ = ["LISTEN_HOST", "PIECE", "HostileParserServer"]

#: the address the server listens on
LISTEN_HOST: Final = "127.0.0.1"
#: the payload is written in pieces of this size
PIECE: Final = 16 * 1024


class _Connection(Protocol):
    def __init__(self, server: HostileParserServer) -> None:
        self.server = server
        self.received = bytearray()
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.answered and b">" in self.received:  # the client's header is complete
            self.answered = True
            assert self.transport is not None
            payload = self.server.payload
            for offset in range(0, len(payload), PIECE):
                self.transport.write(payload[offset : offset + PIECE])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.server._closed(bytes(self.received))


class HostileParserServer:
    """Answer each client's stream header with *payload*; record what the client sends.

    :param payload: the bytes to send (a stream header and whatever follows it).
    :param reactor: the reactor to listen with (the global one by default).
    """

    def __init__(self, payload: bytes, reactor: IReactorTCP | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.payload = payload
        self._reactor = reactor
        self._port: IListeningPort | None = None
        self._waiters: list[defer.Deferred[bytes]] = []
        #: what each closed connection had received from its client, in order of closing
        self.closed: list[bytes] = []

    def start(self) -> defer.Deferred[int]:
        """Listen; fire with the port number."""
        factory = Factory.forProtocol(lambda: _Connection(self))
        endpoint = endpoints.TCP4ServerEndpoint(self._reactor, 0, interface=LISTEN_HOST)

        def listening(port: IListeningPort) -> int:
            self._port = port
            return int(port.getHost().port)  # type: ignore[attr-defined]

        return endpoint.listen(factory).addCallback(listening)

    def when_closed(self) -> defer.Deferred[bytes]:
        """Fire with what the client sent, once the first connection has closed."""
        if self.closed:
            return defer.succeed(self.closed[0])
        waiter: defer.Deferred[bytes] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def stop(self) -> defer.Deferred[None]:
        """Stop listening (connections still open are left to their clients)."""
        if self._port is None:
            return defer.succeed(None)
        port, self._port = self._port, None
        return defer.maybeDeferred(port.stopListening)  # type: ignore[return-value]

    def _closed(self, received: bytes) -> None:
        self.closed.append(received)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(received)
