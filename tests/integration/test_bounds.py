"""Deadlines and memory bounds against a hostile server (tests/support/hostile_bounds.py).

Each test runs a real client on the reactor thread against a real server on 127.0.0.1 that
misbehaves in one way; the last one checks that ``send(timeout=)`` of a message just works
against the real Prosody.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from twisted.internet import defer, endpoints, reactor, task

from tests.support.hostile_bounds import (
    DOMAIN,
    END,
    TRIGGER,
    Behaviour,
    HostileServer,
    unsent_bytes,
)
from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread
from txxmppnode import JID, Message
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.security_layer import make
from txxmppnode.stanzastream import StanzaStream
from txxmppnode.xmlstream import XMLStream

#: What the kernel may hold for a client socket whose send buffer we shrink.
SMALL_SEND_BUFFER = 16 * 2**10


@pytest.fixture
def hostile(reactor_thread: ReactorThread) -> Iterator[Callable[..., tuple[HostileServer, int]]]:
    servers: list[HostileServer] = []

    def start(behaviour: Behaviour, **options: Any) -> tuple[HostileServer, int]:
        server = HostileServer(reactor, behaviour, **options)
        servers.append(server)
        return server, reactor_thread.run(server.start)

    yield start
    for server in servers:
        reactor_thread.run(server.stop)


@pytest.fixture
def clients(reactor_thread: ReactorThread) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []
    servers: list[HostileServer] = []

    def make_client(server: HostileServer, port: int, **options: Any) -> Client:
        servers.append(server)
        client = Client(
            JID.fromstr(f"juliet@{DOMAIN}/hostile"),
            make("any password", trust_root=str(server.ca_pem_path)),
            override_peer=[("127.0.0.1", port, STARTTLSConnector())],
            negotiation_timeout=timedelta(seconds=1),
            **options,
        )
        client.backoff_start = timedelta(seconds=0.05)
        made.append(client)
        return client

    yield make_client
    for client in made:
        for server in servers:
            reactor_thread.run(server.resume_reading)  # to read the client's footer
        reactor_thread.run(client.stop, timeout=10)


def failure_of_first_attempt(reactor_thread: ReactorThread, client: Client) -> BaseException:
    def start() -> defer.Deferred[Any]:
        failed = client.on_connect_failed.next()
        client.start()
        return failed

    return reactor_thread.run(start, timeout=10)  # type: ignore[no-any-return]


def establish(reactor_thread: ReactorThread, client: Client) -> None:
    def start() -> defer.Deferred[Any]:
        established = client.on_stream_established.next()
        client.start()
        return established

    reactor_thread.run(start, timeout=10)


def when(condition: Callable[[], bool]) -> defer.Deferred[None]:
    """Fires once *condition* holds, checked every 10 ms on the reactor."""
    done: defer.Deferred[None] = defer.Deferred()

    def check() -> None:
        if condition():
            poll.stop()
            done.callback(None)

    poll = task.LoopingCall(check)
    poll.start(0.01)
    return done


def end_of_flood(stream: StanzaStream) -> defer.Deferred[Any]:
    arrived: defer.Deferred[Any] = defer.Deferred()
    stream.register_message_callback(
        None, None, lambda m: m.body == END and not arrived.called and arrived.callback(m)
    )
    return arrived


def trigger(stream: StanzaStream) -> None:
    stream.enqueue(Message(to=DOMAIN, body=TRIGGER))


def shrink_send_buffer(xmlstream: XMLStream) -> None:
    tcp = xmlstream.transport.socket  # type: ignore[union-attr]  # TLS or not
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SEND_BUFFER)


# -- deadlines ----------------------------------------------------------------------------------


def test_a_server_that_answers_bind_with_chatter_times_out_at_the_deadline(
    hostile: Callable[..., tuple[HostileServer, int]],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    server, port = hostile(Behaviour.BIND_CHATTER)
    client = clients(server, port)
    started = time.monotonic()
    error = failure_of_first_attempt(reactor_thread, client)
    elapsed = time.monotonic() - started
    assert isinstance(error, TimeoutError) and "resource binding" in str(error)
    assert elapsed < 5  # one deadline of 1 s after SASL, though a presence came every 0.4 s


def test_a_server_that_never_answers_enable_times_out_and_is_retried(
    hostile: Callable[..., tuple[HostileServer, int]],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    server, port = hostile(Behaviour.ENABLE_SILENT)
    client = clients(server, port)
    error = failure_of_first_attempt(reactor_thread, client)
    assert isinstance(error, TimeoutError) and "<enable/>" in str(error)
    # a failed negotiation step: the client tries again, on a new connection
    reactor_thread.run(lambda: when(lambda: len(server.connections) >= 2), timeout=10)
    assert not client.established


# -- memory under floods --------------------------------------------------------------------


def test_a_flood_of_r_from_a_server_that_never_reads_leaves_little_to_write(
    hostile: Callable[..., tuple[HostileServer, int]],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    server, port = hostile(Behaviour.R_FLOOD, flood_bytes=4 * 2**20)  # about 160,000 <r/>
    client = clients(server, port)
    establish(reactor_thread, client)
    xmlstream = client.stream.xmlstream
    assert xmlstream is not None and client.stream.sm_enabled

    def flood() -> defer.Deferred[Any]:
        shrink_send_buffer(xmlstream)
        arrived = end_of_flood(client.stream)
        trigger(client.stream)
        return arrived

    reactor_thread.run(flood, timeout=60)
    # one <a/> per reactor turn, not one per <r/>: what waits to be written is small
    assert reactor_thread.run(lambda: unsent_bytes(xmlstream.transport)) < 64 * 2**10


@pytest.mark.parametrize("over", ["tls", "plain tcp"])
def test_a_flood_of_requests_from_a_server_that_never_reads_pauses_the_client(
    over: str,
    hostile: Callable[..., tuple[HostileServer, int]],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    behaviour = Behaviour.IQ_FLOOD if over == "tls" else Behaviour.RAW_IQ_FLOOD
    server, port = hostile(behaviour, flood_bytes=2 * 2**20)  # about 22,000 requests
    if over == "tls":
        client = clients(server, port)
        establish(reactor_thread, client)
        stream = client.stream
    else:
        stream = StanzaStream(JID.fromstr(f"juliet@{DOMAIN}"), reactor=reactor)

        async def connect_plain() -> None:
            xmlstream = XMLStream(DOMAIN, reactor=reactor)
            endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            await endpoints.connectProtocol(endpoint, xmlstream)
            await xmlstream.next_element(5)  # the (empty) features
            await stream.start(xmlstream, JID.fromstr(f"juliet@{DOMAIN}/raw"), sm=False)

        reactor_thread.run(lambda: defer.Deferred.fromCoroutine(connect_plain()))
    xmlstream = stream.xmlstream
    assert xmlstream is not None and not stream.sm_enabled
    arrived: list[defer.Deferred[Any]] = []

    def flood() -> defer.Deferred[None]:
        shrink_send_buffer(xmlstream)
        arrived.append(end_of_flood(stream))
        trigger(stream)
        return when(lambda: xmlstream.paused)

    reactor_thread.run(flood, timeout=30)
    # the client stopped reading: what it holds to write is its transport's high-water mark
    # plus at most the replies to one read
    assert reactor_thread.run(lambda: unsent_bytes(xmlstream.transport)) < 512 * 2**10
    assert not arrived[0].called
    # the server reads again: the client drains, reads on, and answers every request
    reactor_thread.run(server.resume_reading)
    reactor_thread.run(lambda: arrived[0], timeout=60)
    flood_requests = server.connections[-1].flood
    assert flood_requests is not None
    reactor_thread.run(lambda: when(lambda: server.stanzas >= flood_requests.count), timeout=30)
    if over == "plain tcp":
        reactor_thread.run(xmlstream.close)


def test_a_server_that_acknowledges_nothing_loses_the_connection(
    hostile: Callable[..., tuple[HostileServer, int]],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    server, port = hostile(Behaviour.NO_ACK)
    client = clients(server, port)
    client.stream.soft_timeout = timedelta(seconds=0.5)
    client.stream.round_trip_time = timedelta(seconds=0.5)
    establish(reactor_thread, client)

    def send_and_wait() -> defer.Deferred[Any]:
        suspended = client.on_stream_suspended.next()
        sent = client.send(Message(to=f"romeo@{DOMAIN}", body="never acknowledged"), timeout=0.5)
        outcome: list[Any] = []
        sent.addBoth(outcome.append)
        return suspended.addCallback(lambda reason: (reason, outcome))

    reason, outcome = reactor_thread.run(send_and_wait, timeout=10)
    # keep-alives came every 0.4 s, yet the unanswered <r/> made the link count as dead
    assert isinstance(reason, TimeoutError) and "<r/>" in str(reason)
    assert isinstance(outcome[0].value, TimeoutError)  # send(timeout=) gave up first


# -- against the real Prosody -------------------------------------------------------------------


def test_send_with_a_timeout_succeeds_against_prosody(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    client = Client(
        JID.fromstr(prosody.jid("juliet") + "/bounds"),
        make(prosody.accounts["juliet"], trust_root=str(prosody.ca_pem_path)),
        override_peer=[("127.0.0.1", prosody.starttls_port, STARTTLSConnector())],
        negotiation_timeout=timedelta(seconds=5),
    )
    try:
        establish(reactor_thread, client)
        assert client.stream.sm_enabled

        async def send_both() -> list[Any]:
            return [
                await client.send(Message(to=prosody.jid("romeo"), body="hi"), timeout=5),
                await client.send(Message(to=prosody.jid("romeo"), body="again"), timeout=5),
            ]

        assert reactor_thread.run(lambda: defer.Deferred.fromCoroutine(send_both())) == [
            None,
            None,
        ]
        assert client.stream.sm_unacked_list == []
    finally:
        reactor_thread.run(client.stop, timeout=10)
