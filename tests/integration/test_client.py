"""Client against the real servers, with faults from the test-controlled proxy.

The scenarios that take ``xmpp_server`` (or ``make_xmpp_server``) run against Prosody and
against ejabberd."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from twisted.internet import defer

from tests.conftest import XMPPServer
from tests.support.prosody import ProsodyServer
from tests.support.proxy import FaultProxy
from tests.support.reactor import ReactorThread
from txxmppnode import JID, Message
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.errors import (
    AuthenticationFailure,
    FatalStreamError,
    SASLUnavailable,
    StreamErrorCondition,
)
from txxmppnode.presence import PresenceManagedClient, PresenceServer
from txxmppnode.presence_state import PresenceState
from txxmppnode.security_layer import make
from txxmppnode.token import StanzaState


class Recorder:
    """Every signal of a client, in order, as (name, argument) pairs."""

    NAMES = (
        "before_stream_established",
        "on_stream_established",
        "on_stream_suspended",
        "on_stream_resumed",
        "on_stream_destroyed",
        "on_stopped",
        "on_failure",
    )

    def __init__(self, client: Client) -> None:
        self.events: list[tuple[str, Any]] = []
        for name in self.NAMES:
            getattr(client, name).connect(
                lambda *args, name=name: self.events.append((name, args[0] if args else None))
            )

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
def clients(
    reactor_thread: ReactorThread,
) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make_client(
        server: XMPPServer,
        account: str = "juliet",
        *,
        port: int | None = None,
        password: str | None = None,
        cls: type[Client] = Client,
        resource: str = "node",
        **options: Any,
    ) -> Client:
        security = make(
            password if password is not None else server.accounts[account],
            trust_root=str(server.ca_pem_path),
        )
        client = cls(
            JID.fromstr(f"{server.jid(account)}/{resource}"),
            security,
            override_peer=[("127.0.0.1", port or server.starttls_port, STARTTLSConnector())],
            negotiation_timeout=timedelta(seconds=5),
            **options,
        )
        client.backoff_start = timedelta(seconds=0.05)
        made.append(client)
        return client

    yield make_client
    for client in made:
        reactor_thread.run(client.stop, timeout=10)


def start_and_wait(reactor_thread: ReactorThread, client: Client) -> None:
    def start() -> defer.Deferred[Any]:
        established = client.on_stream_established.next()
        client.start()
        return established

    reactor_thread.run(start, timeout=15)


def test_start_establishes_a_bound_stream_and_sends(
    xmpp_server: XMPPServer, clients: Callable[..., Client], reactor_thread: ReactorThread
) -> None:
    juliet = clients(xmpp_server)
    romeo = clients(xmpp_server, "romeo")
    recorder = Recorder(juliet)
    start_and_wait(reactor_thread, juliet)
    start_and_wait(reactor_thread, romeo)
    assert recorder.names() == ["before_stream_established", "on_stream_established"]
    assert juliet.established and juliet.running and not juliet.suspended
    assert str(juliet.local_jid) == xmpp_server.jid("juliet") + "/node"
    assert juliet.stream.sm_enabled

    async def exchange() -> str:
        got = romeo.stream.on_stream_destroyed  # keep a name for mypy; unused
        del got
        arrived: defer.Deferred[Any] = defer.Deferred()
        romeo.stream.register_message_callback("chat", None, arrived.callback)
        await juliet.send(Message(to=str(romeo.local_jid), type_="chat", body="hello"))
        message = await arrived
        return str(message.body)

    assert reactor_thread.run(lambda: defer.Deferred.fromCoroutine(exchange())) == "hello"
    reactor_thread.run(juliet.stop)
    assert recorder.names()[-2:] == ["on_stream_destroyed", "on_stopped"]
    assert not juliet.running


def test_enqueue_needs_an_established_stream(
    prosody: ProsodyServer, clients: Callable[..., Client]
) -> None:
    juliet = clients(prosody)
    with pytest.raises(ConnectionError, match="not established"):
        juliet.enqueue(Message(body="too early"))


def test_cut_connection_is_suspended_then_resumed_and_nothing_lost(
    xmpp_server: XMPPServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(xmpp_server.starttls_port)
    juliet = clients(xmpp_server, port=proxy.port)
    romeo = clients(xmpp_server, "romeo")
    start_and_wait(reactor_thread, juliet)
    start_and_wait(reactor_thread, romeo)
    recorder = Recorder(juliet)
    bodies: list[str] = []
    reactor_thread.run(
        romeo.stream.register_message_callback, "chat", None, lambda m: bodies.append(m.body)
    )

    async def scenario() -> list[Any]:
        suspended = juliet.on_stream_suspended.next()
        resumed = juliet.on_stream_resumed.next()
        first = [juliet.enqueue(Message(to=str(romeo.local_jid), type_="chat", body=str(n)))
                 for n in range(5)]  # fmt: skip
        proxy.cut_after(bytes_from_client=300)
        await suspended
        # queued while suspended: the stream outlives the connection
        later = [juliet.stream.enqueue(Message(to=str(romeo.local_jid), type_="chat",
                                               body=str(n))) for n in range(5, 10)]  # fmt: skip
        await resumed
        tokens = first + later
        await defer.gatherResults([t.deferred() for t in tokens])
        while len(bodies) < 10:
            await romeo.stream.send(Message(to=str(romeo.local_jid), type_="normal"))
        return tokens

    tokens = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=30)
    assert bodies == [str(n) for n in range(10)]
    assert all(t.state is StanzaState.ACKED for t in tokens)
    assert recorder.names() == ["on_stream_suspended", "on_stream_resumed"]
    assert juliet.established


def test_server_restart_destroys_and_reestablishes_and_presence_is_resent(
    make_xmpp_server: Callable[..., XMPPServer],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
) -> None:
    server = make_xmpp_server()
    juliet = clients(server, cls=PresenceManagedClient)
    assert isinstance(juliet, PresenceManagedClient)
    recorder = Recorder(juliet)
    sent: list[Any] = []
    reactor_thread.run(lambda: juliet.summon(PresenceServer).on_presence_sent.connect(sent.append))

    def go_available() -> defer.Deferred[Any]:
        established = juliet.on_stream_established.next()
        juliet.set_presence(PresenceState(True, "chat"), "here", priority=7)
        return established

    reactor_thread.run(go_available, timeout=15)
    assert len(sent) == 1 and sent[0].priority == 7 and sent[0].status == "here"

    def restart() -> defer.Deferred[Any]:
        established = juliet.on_stream_established.next()
        server.restart()
        return established

    reactor_thread.run(restart, timeout=30)
    assert recorder.names() == [
        "before_stream_established",
        "on_stream_established",
        "on_stream_suspended",
        "on_stream_destroyed",
        "before_stream_established",
        "on_stream_established",
    ]
    assert len(sent) == 2  # the initial presence went out again on the new session
    assert sent[1].show.value == "chat" and sent[1].priority == 7


def test_wrong_password_fails_after_one_attempt(
    xmpp_server: XMPPServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(xmpp_server.starttls_port)
    juliet = clients(xmpp_server, port=proxy.port, password="wrong")
    recorder = Recorder(juliet)

    def start() -> defer.Deferred[Any]:
        failed = juliet.on_failure.next()
        juliet.start()
        return failed

    error = reactor_thread.run(start, timeout=15)
    assert isinstance(error, AuthenticationFailure)
    assert error.condition == "not-authorized"
    assert recorder.names() == ["on_failure"]
    assert not juliet.running
    assert proxy.connections_accepted == 1


def test_max_initial_attempts_with_backoff(
    prosody: ProsodyServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(prosody.starttls_port)
    juliet = clients(prosody, port=proxy.port, max_initial_attempts=3)
    delays: list[float] = []
    policy = juliet._retry_delay

    def recording_policy(attempts: int) -> float:
        delays.append(policy(attempts))
        return delays[-1]

    juliet._retry_delay = recording_policy  # type: ignore[method-assign]

    def start() -> defer.Deferred[Any]:
        proxy.refuse()
        failed = juliet.on_failure.next()
        juliet.start()
        return failed

    error = reactor_thread.run(start, timeout=15)
    assert isinstance(error, OSError)
    assert proxy.connections_refused == 3
    assert delays[:2] == pytest.approx([0.05, 0.06])  # backoff_start, then * backoff_factor
    assert not juliet.running


def test_refused_attempts_then_success_within_the_bound(
    prosody: ProsodyServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(prosody.starttls_port)
    juliet = clients(prosody, port=proxy.port, max_initial_attempts=4)

    async def scenario() -> None:
        proxy.refuse()
        established = juliet.on_stream_established.next()
        juliet.start()
        await proxy.wait_for_refusals(2)
        proxy.accept_again()
        await established

    reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=15)
    assert juliet.established
    assert proxy.connections_refused == 2


def test_stop_during_negotiation_leaves_no_open_socket(
    prosody: ProsodyServer, clients: Callable[..., Client], reactor_thread: ReactorThread
) -> None:
    from twisted.internet import protocol, reactor

    connected: defer.Deferred[None] = defer.Deferred()
    closed: defer.Deferred[None] = defer.Deferred()

    class Silent(protocol.Protocol):
        """Accepts, never answers: the negotiation hangs; records the close."""

        def connectionMade(self) -> None:
            connected.callback(None)

        def connectionLost(self, reason: Any = None) -> None:
            closed.callback(None)

    port = reactor_thread.run(
        lambda: reactor.listenTCP(  # type: ignore[attr-defined]
            0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1"
        )
    )
    juliet = clients(prosody, port=port.getHost().port)
    recorder = Recorder(juliet)

    async def scenario() -> None:
        juliet.start()
        await connected
        await juliet.stop()
        await closed  # the server saw our socket go

    try:
        reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=15)
    finally:
        reactor_thread.run(port.stopListening)
    assert not juliet.running
    assert recorder.names() == ["on_stopped"]


def test_conflict_from_a_second_session_is_fatal(
    prosody: ProsodyServer, clients: Callable[..., Client], reactor_thread: ReactorThread
) -> None:
    first = clients(prosody)
    second = clients(prosody)  # the same full JID
    start_and_wait(reactor_thread, first)
    recorder = Recorder(first)

    def replace() -> defer.Deferred[Any]:
        failed = first.on_failure.next()
        second.start()
        return failed

    error = reactor_thread.run(replace, timeout=15)
    assert isinstance(error, FatalStreamError)
    assert error.condition is StreamErrorCondition.CONFLICT
    assert recorder.names() == ["on_stream_destroyed", "on_failure"]
    assert not first.running


def test_use_connected_timeout_stops_the_client(
    prosody: ProsodyServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(prosody.starttls_port)
    juliet = clients(prosody, port=proxy.port)

    async def scenario() -> BaseException | None:
        proxy.black_hole()
        try:
            async with juliet.connected(timeout=0.5):
                pass
        except TimeoutError as exc:
            return exc
        return None

    error = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=15)
    assert isinstance(error, TimeoutError)
    assert not juliet.running


def test_use_connected_gives_the_stream_and_stops_after_the_block(
    prosody: ProsodyServer, clients: Callable[..., Client], reactor_thread: ReactorThread
) -> None:
    juliet = clients(prosody)

    class Boom(Exception):
        pass

    async def scenario() -> Any:
        try:
            async with juliet.connected(timeout=10) as stream:
                assert stream is juliet.stream and juliet.established
                raise Boom
        except Boom as exc:
            return exc

    assert isinstance(reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario())), Boom)
    assert not juliet.running


def test_tcp_closed_without_a_footer_reconnects(
    xmpp_server: XMPPServer,
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(xmpp_server.starttls_port)
    juliet = clients(xmpp_server, port=proxy.port)
    start_and_wait(reactor_thread, juliet)
    recorder = Recorder(juliet)

    async def scenario() -> Any:
        suspended = juliet.on_stream_suspended.next()
        resumed = juliet.on_stream_resumed.next()
        assert proxy.hang_up() == 1  # FIN, no </stream:stream>
        reason = await suspended
        await resumed
        return reason

    reason = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=15)
    assert type(reason) is ConnectionError
    assert "without the server's stream footer" in str(reason)
    assert recorder.names() == ["on_stream_suspended", "on_stream_resumed"]
    assert proxy.connections_accepted == 2


def test_no_acceptable_mechanism_stops_the_client_after_one_attempt(
    make_prosody: Callable[..., ProsodyServer],
    clients: Callable[..., Client],
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    # only ANONYMOUS offered: no retry can fix that, so no back-off loop either
    server = make_prosody(config_lua='authentication = "anonymous"', accounts=())
    proxy = make_fault_proxy(server.starttls_port)
    juliet = clients(server, port=proxy.port, password="any")

    def start() -> defer.Deferred[Any]:
        failed = juliet.on_failure.next()
        juliet.start()
        return failed

    error = reactor_thread.run(start, timeout=15)
    assert isinstance(error, SASLUnavailable)
    assert not juliet.running
    assert proxy.connections_accepted == 1


def test_a_clean_stop_acknowledges_so_nothing_is_delivered_again_elsewhere(
    xmpp_server: XMPPServer, clients: Callable[..., Client], reactor_thread: ReactorThread
) -> None:
    first = clients(xmpp_server, resource="first")
    second = clients(xmpp_server, resource="second")
    romeo = clients(xmpp_server, "romeo")
    for client in (first, second, romeo):
        start_and_wait(reactor_thread, client)
    got_first: list[str] = []
    got_second: list[str] = []
    sentinel: defer.Deferred[None] = defer.Deferred()

    def at_second(message: Any) -> None:
        got_second.append(str(message.body))
        if message.body == "sentinel" and not sentinel.called:
            sentinel.callback(None)

    async def scenario() -> None:
        arrived: defer.Deferred[Any] = defer.Deferred()
        first.stream.register_message_callback("chat", None, arrived.callback)
        second.stream.register_message_callback("chat", None, at_second)
        to_first = Message(to=str(first.local_jid), type_="chat", body="once")
        await romeo.send(to_first)
        got_first.append(str((await arrived).body))
        await first.stop()  # received, not yet acknowledged unless the stop says so
        await romeo.send(Message(to=str(second.local_jid), type_="chat", body="sentinel"))
        await sentinel

    reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=15)
    assert got_first == ["once"]
    # a server redelivers unacknowledged messages of a closed session to the other resources
    # (before the sentinel, which was sent after the stop): none may come
    assert got_second == ["sentinel"]
