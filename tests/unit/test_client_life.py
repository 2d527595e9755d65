"""The client's life cycle over in-memory connections: suspension, stop, restart, services.

Every connection goes to the :class:`~tests.unit.client_harness.FakeServer`; every timer runs on
the injected :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from lxml import etree
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from txxmppnode import Message
from txxmppnode.client import TRANSITIONS, ClientInput, ClientState, _StreamEndpoint
from txxmppnode.presence import PresenceManagedClient, PresenceServer
from txxmppnode.presence_state import PresenceState
from txxmppnode.token import StanzaState

from .client_harness import MemoryClient, Recorder, established, settle


def chat(body: str) -> Message:
    return Message(to="romeo@example.net", type_="chat", body=body)


# -- 1. a suspension is transparent --------------------------------------------------------


def suspend(client: MemoryClient) -> None:
    """An RST, with the server refusing connections so that the session stays suspended."""
    client.server.refuse_connections = True
    client.server.drop(ConnectionLost())
    settle(client.clock)
    assert client.state is ClientState.SUSPENDED


def resume(client: MemoryClient) -> None:
    client.server.refuse_connections = False
    client.clock.advance(60)
    settle(client.clock)


def test_suspension_keeps_the_session_established_and_queues_in_order() -> None:
    client, recorder = established()
    client.enqueue(chat("before"))
    settle(client.clock)
    suspend(client)
    assert client.established and client.suspended and client.running
    assert client.established_event.is_set()
    token = client.enqueue(chat("during-1"))  # no ConnectionError
    sent = client.send(chat("during-2"))  # queued at once, not waiting for the stream
    assert token.state is StanzaState.ACTIVE
    assert client.stream.queue_length == 2
    assert not sent.called
    resume(client)
    assert client.state is ClientState.ESTABLISHED
    assert recorder.names[-2:] == ["on_stream_suspended", "on_stream_resumed"]
    assert client.server.bodies() == ["before", "during-1", "during-2"]
    assert token.state is StanzaState.ACKED
    assert sent.called
    assert client.server.connections == 2


def test_stanzas_queued_during_a_suspension_go_out_on_a_new_session_if_destroyed() -> None:
    client, recorder = established()
    suspend(client)
    token = client.enqueue(chat("queued"))
    client.server.refuse_resumption = True
    resume(client)
    assert recorder.names[-3:] == [
        "on_stream_destroyed",
        "before_stream_established",
        "on_stream_established",
    ]
    assert client.established_event.is_set()
    assert client.server.bodies() == ["queued"]
    assert token.state is StanzaState.ACKED


def test_established_event_is_cleared_when_the_session_is_destroyed() -> None:
    client, _ = established()
    client.server.resumable = False
    client.stop()
    settle(client.clock)
    client.start()
    settle(client.clock)
    client.server.refuse_connections = True
    client.server.drop(ConnectionLost())
    settle(client.clock)
    assert client.state is ClientState.CONNECTING
    assert not client.established_event.is_set()
    with pytest.raises(ConnectionError):
        client.enqueue(chat("no session"))


# -- 2. stop() racing a connection reset ---------------------------------------------------


def assert_stopped_for_good(client: MemoryClient, recorder: Recorder) -> None:
    assert recorder.names.count("on_stopped") == 1
    assert "on_failure" not in recorder.names
    assert not client.running and client.state is ClientState.STOPPED
    assert client.server.xmlstream is None or not client.server.xmlstream.is_open
    attempts = client.attempts
    client.server.refuse_connections = False
    client.clock.advance(3600)
    settle(client.clock)
    assert client.attempts == attempts, "a connection attempt after the stop"
    assert recorder.names.count("on_stopped") == 1


@pytest.mark.parametrize("refusing", [True, False], ids=["reconnect-refused", "reconnect-ok"])
@pytest.mark.parametrize("turns", range(8))
def test_stop_in_the_turns_after_a_reset_stops_for_good(turns: int, refusing: bool) -> None:
    client, recorder = established()
    client.server.refuse_connections = refusing
    client.server.drop(ConnectionLost())
    for _ in range(turns):
        client.clock.advance(0)
    first = client.stop()
    second = client.stop()
    assert second is first
    settle(client.clock)
    assert first.called
    assert_stopped_for_good(client, recorder)


@pytest.mark.parametrize("where", ["idle", "connecting", "established", "suspended", "stopped"])
def test_stop_in_any_state_ends_in_one_on_stopped(where: str) -> None:
    client = MemoryClient()
    recorder = Recorder(client)
    if where != "idle":
        client.server.refuse_connections = where == "connecting"
        client.start()
        settle(client.clock)
    if where == "suspended":
        client.server.refuse_connections = True
        client.server.drop(ConnectionLost())
        settle(client.clock)
    if where == "stopped":
        client.stop()
        settle(client.clock)
    assert client.state.value == where
    stopped = client.stop()
    settle(client.clock)
    assert stopped.called
    if where == "idle":
        assert client.state is ClientState.IDLE and recorder.names == []
        return
    assert_stopped_for_good(client, recorder)


def test_stop_while_a_fatal_error_stops_the_client_returns_that_stop() -> None:
    client, recorder = established()
    client._end_soon(ValueError("fatal"))
    stopping = client.stop()
    assert client.stop() is stopping
    settle(client.clock)
    assert stopping.called
    assert recorder.names[-2:] == ["on_stream_destroyed", "on_failure"]
    assert client.state is ClientState.FAILED and not client.running


# -- 3. and 4. presence: the PresenceServer drives the client; services outlive a stop -------


def presences(client: MemoryClient) -> list[str]:
    return [
        str(element.get("type", "available"))
        for _, element in client.server.stanzas
        if etree.QName(element).localname == "presence"
    ]


def managed() -> tuple[MemoryClient, PresenceServer]:
    class ManagedMemoryClient(MemoryClient, PresenceManagedClient):
        pass

    client = ManagedMemoryClient()
    return client, client.summon(PresenceServer)


def test_presence_server_drives_the_presence_managed_client() -> None:
    client, server = managed()
    server.set_presence(PresenceState(True))
    assert client.running
    settle(client.clock)
    assert client.established and presences(client) == ["available"]
    server.set_presence(PresenceState(False))
    settle(client.clock)
    assert not client.running
    assert presences(client) == ["available", "unavailable"]  # sent once, before the stop


def test_presence_is_sent_again_after_a_restart_by_the_same_service() -> None:
    client, server = managed()
    sent: list[str] = []
    client.on_presence_sent.connect(lambda: sent.append("sent"))
    client.presence = PresenceState(True)
    settle(client.clock)
    client.presence = PresenceState(False)
    settle(client.clock)
    client.presence = PresenceState(True)
    settle(client.clock)
    assert client.summon(PresenceServer) is server
    assert presences(client) == ["available", "unavailable", "available"]
    assert sent == ["sent", "sent"]
    client.stop()
    settle(client.clock)
    client.start()  # a stop and start keep the presence (and the service)
    settle(client.clock)
    assert presences(client)[-1] == "available"
    assert client.summon(PresenceServer) is server


# -- 5. send() from a before_stream_established listener -----------------------------------


def test_a_before_stream_established_listener_awaiting_send_does_not_deadlock() -> None:
    client = MemoryClient()
    recorder = Recorder(client)
    outcome: list[str] = []

    async def prepare() -> None:
        await client.send(chat("from the listener"))
        outcome.append("sent")

    client.before_stream_established.connect(prepare)
    client.start()
    settle(client.clock)
    assert outcome == ["sent"]
    assert client.established and "on_stream_established" in recorder.names
    assert client.server.bodies() == ["from the listener"]
    assert client.server.stanzas[0][0] == 1  # on the new stream


# -- the state table -----------------------------------------------------------------------


def test_the_transition_table_covers_every_pair() -> None:
    assert set(TRANSITIONS) == {(s, i) for s in ClientState for i in ClientInput}
    running = {ClientState.CONNECTING, ClientState.ESTABLISHED, ClientState.SUSPENDED}
    for (state, event), after in TRANSITIONS.items():
        if event is ClientInput.STOP or event is ClientInput.FATAL:
            assert after is (ClientState.STOPPING if state in running else state)
        if event is ClientInput.START:
            stopped = (ClientState.IDLE, ClientState.STOPPED, ClientState.FAILED)
            assert after is (ClientState.CONNECTING if state in stopped else state)
        if state is ClientState.STOPPING:
            assert after is (ClientState.STOPPED if event is ClientInput.ENDED else state)
        if event is ClientInput.RETRY:
            assert after is state  # a retry timer never changes the state


# -- 6. names of the spec ------------------------------------------------------------------


def test_without_implicit_reconnect_a_lost_session_stops_with_an_error() -> None:
    client, recorder = established()
    client.allow_implicit_reconnect = False
    client.server.refuse_resumption = True
    client.server.drop(ConnectionLost())
    settle(client.clock)
    assert recorder.names[-2:] == ["on_stream_destroyed", "on_failure"]
    assert client.state is ClientState.FAILED
    assert client.server.connections == 2  # the resumption was tried, no new session bound


def test_abstract_client_is_a_deprecated_alias() -> None:
    import txxmppnode.client

    with pytest.warns(DeprecationWarning, match="AbstractClient"):
        assert txxmppnode.client.AbstractClient is txxmppnode.client.Client


def test_use_connected_timeout_and_presence_are_writable_with_a_warning() -> None:
    from txxmppnode.use_connected import UseConnected

    use = UseConnected(MemoryClient(), presence=PresenceState(False))
    with pytest.warns(DeprecationWarning):
        use.timeout = 5
    with pytest.warns(DeprecationWarning):
        use.presence = PresenceState(True)
    with pytest.warns(DeprecationWarning):
        assert use.timeout == 5 and use.presence == PresenceState(True)


def test_stream_features_answer_feature_queries() -> None:
    client, _ = established()
    features = client.stream_features
    assert features is not None

    class Bind:
        TAG = ("urn:ietf:params:xml:ns:xmpp-bind", "bind")

    assert features.has_feature(Bind) and Bind in features
    assert "{urn:xmpp:sm:3}sm" in features
    assert "{urn:ietf:params:xml:ns:xmpp-session}session" not in features
    assert features.find("{urn:xmpp:sm:3}sm") is not None  # still the element's methods
    with pytest.raises(KeyError):
        features["{urn:ietf:params:xml:ns:xmpp-session}session"]


# -- the state table, walked: every (state, input) pair on a live client ---------------------

St, In = ClientState, ClientInput
#: the states ``running`` is true in
RUNNING_OR_STOPPING = {St.CONNECTING, St.ESTABLISHED, St.SUSPENDED, St.STOPPING}
#: what each declared transition emits, once the client has settled after it (the server
#: accepts connections unless the state was reached with it refusing them)
EFFECTS: dict[tuple[ClientState, ClientInput], tuple[list[str], ClientState]] = {
    **{
        (state, In.START): (
            ["on_connecting", "before_stream_established", "on_stream_established"],
            St.ESTABLISHED,
        )
        for state in (St.IDLE, St.STOPPED, St.FAILED)
    },
    (St.CONNECTING, In.STOP): (["on_stopped"], St.STOPPED),
    (St.ESTABLISHED, In.STOP): (["on_stream_destroyed", "on_stopped"], St.STOPPED),
    (St.SUSPENDED, In.STOP): (["on_stream_destroyed", "on_stopped"], St.STOPPED),
    (St.CONNECTING, In.FATAL): (["on_failure"], St.FAILED),
    (St.ESTABLISHED, In.FATAL): (["on_stream_destroyed", "on_failure"], St.FAILED),
    (St.SUSPENDED, In.FATAL): (["on_stream_destroyed", "on_failure"], St.FAILED),
    (St.CONNECTING, In.ESTABLISHED): (
        ["on_connecting", "before_stream_established", "on_stream_established"],
        St.ESTABLISHED,
    ),
    (St.ESTABLISHED, In.LOST): (
        ["on_stream_suspended", "on_connecting", "on_stream_resumed"],
        St.ESTABLISHED,
    ),
    (St.SUSPENDED, In.RESUMED): (["on_connecting", "on_stream_resumed"], St.ESTABLISHED),
    # the session is gone: the connection it was on is closed and a new session bound
    (St.ESTABLISHED, In.DESTROYED): (
        [
            "on_stream_destroyed",
            "on_connecting",
            "before_stream_established",
            "on_stream_established",
        ],
        St.ESTABLISHED,
    ),
    (St.SUSPENDED, In.DESTROYED): (["on_stream_destroyed"], St.CONNECTING),
    (St.STOPPING, In.ENDED): (["on_stream_destroyed", "on_stopped"], St.STOPPED),
}


class Transitions:
    """The client's transition log (its debug lines), as (before, input, after)."""

    def __init__(self) -> None:
        self.seen: list[tuple[ClientState, ClientInput, ClientState]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if "before" in event and "after" in event:
            self.seen.append(
                (
                    ClientState(event["before"]),
                    ClientInput(event["event"]),
                    ClientState(event["after"]),
                )
            )


class Walker:
    """A MemoryClient brought to a state by real events, with its signals and transitions."""

    NAMES = (*Recorder.NAMES, "on_connecting")

    def __init__(self, state: ClientState) -> None:
        self.transitions = Transitions()
        self.client = client = MemoryClient(logger=Logger(observer=self.transitions))
        self.signals: list[str] = []
        for name in self.NAMES:
            getattr(client, name).connect(lambda *_, name=name: self.signals.append(name))
        server = client.server
        if state is St.CONNECTING:
            server.refuse_connections = True
            client.start()
        elif state is not St.IDLE:
            client.start()
            settle(client.clock)
            if state is St.SUSPENDED:
                server.refuse_connections = True
                server.drop(ConnectionLost())
            elif state is St.STOPPING:
                client.stop()  # waits for the server's footer: one turn
                assert client.state is St.STOPPING
                return
            elif state is St.STOPPED:
                client.stop()
            elif state is St.FAILED:
                client._end_soon(ValueError("fatal"))
        settle(client.clock)
        assert client.state is state, (state, self.signals)

    def drive(self, event: ClientInput) -> None:
        """Make *event* happen to the client: the real event where the state has one, else
        the client's single entry for inputs (what it does should the event reach it)."""
        client, server, state = self.client, self.client.server, self.client.state
        if event is In.START:
            with contextlib.suppress(RuntimeError):  # refused while running
                client.start()
        elif event is In.STOP:
            client.stop()
        elif event is In.ESTABLISHED and state is St.CONNECTING:
            server.refuse_connections = False
            client.clock.advance(60)  # the retry timer: a connection, a resource bound
            settle(client.clock)
        elif event is In.LOST:
            if state is St.ESTABLISHED:
                server.drop(ConnectionLost())  # an RST
            else:
                client.stream.on_connection_lost.emit(ConnectionLost())
        elif event is In.RESUMED and state is St.SUSPENDED:
            server.refuse_connections = False
            client.clock.advance(60)
            settle(client.clock)
        elif event is In.DESTROYED:
            client.stream.destroy(ConnectionError("the session is gone"))
        elif event is In.FATAL:
            client._end_soon(ValueError("fatal"))
        elif event is In.RETRY:  # what ClientService calls when the retry timer fires
            attempt = _StreamEndpoint(client).connect(Factory.forProtocol(Protocol))
            attempt.addErrback(lambda failure: None)
        elif event is In.ENDED and state is St.STOPPING:
            settle(client.clock)  # the server's footer arrives, the stop ends
        else:
            client._input(event)


def assert_derived(client: MemoryClient) -> None:
    """``running``, ``established``, ``suspended`` and ``established_event`` follow the state."""
    state = client.state
    assert client.running is (state in RUNNING_OR_STOPPING)
    assert client.established is (state in (St.ESTABLISHED, St.SUSPENDED))
    assert client.established_event.is_set() is client.established
    assert client.suspended is (state is St.SUSPENDED)


@pytest.mark.parametrize("event", list(ClientInput), ids=lambda event: event.value)
@pytest.mark.parametrize("state", list(ClientState), ids=lambda state: state.value)
def test_every_state_and_input(state: ClientState, event: ClientInput) -> None:
    walker = Walker(state)
    client = walker.client
    signals, transitions = len(walker.signals), len(walker.transitions.seen)
    attempts = client.attempts
    walker.drive(event)
    after = TRANSITIONS[state, event]
    new_transitions = walker.transitions.seen[transitions:]
    new_signals = walker.signals[signals:]
    if after is state:
        # ignored (or refused): the state and everything derived from it stay as they were
        assert new_transitions == [] and client.state is state
        assert_derived(client)
        relayed = ["on_stream_destroyed"] if event is In.DESTROYED else []
        retried = event is In.RETRY and state in (St.CONNECTING, St.SUSPENDED)
        assert new_signals == (["on_connecting"] if retried else relayed)
        assert client.attempts == attempts + retried
    else:
        assert new_transitions[0] == (state, event, after)
        assert_derived(client)
        settle(client.clock)
        expected_signals, final = EFFECTS[state, event]
        assert walker.signals[signals:] == expected_signals
        assert client.state is final
    settle(client.clock)
    assert_derived(client)


def test_the_effects_table_names_every_declared_transition() -> None:
    declared = {pair for pair, after in TRANSITIONS.items() if after is not pair[0]}
    assert declared == set(EFFECTS)
