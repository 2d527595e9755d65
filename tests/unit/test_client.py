"""Client rules that need no server: back-off arithmetic, API guards, deprecations."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from txxmppnode import JID
from txxmppnode.client import Client, ClientState
from txxmppnode.presence import PresenceManagedClient, PresenceServer
from txxmppnode.presence_state import PresenceState
from txxmppnode.security_layer import make
from txxmppnode.use_connected import UseConnected


def client(cls: type[Client] = Client) -> Client:
    return cls(JID.fromstr("juliet@example.com/node"), make("pw"), reactor=MemoryReactorClock())


def test_backoff_grows_by_the_factor_up_to_the_cap() -> None:
    c = client()
    c.backoff_start = timedelta(seconds=1)
    c.backoff_factor = 2.0
    c.backoff_cap = timedelta(seconds=5)
    assert [c._retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_first_retry_after_a_dropped_stream_is_immediate() -> None:
    c = client()
    c._just_dropped = True
    assert [c._retry_delay(n) for n in range(1, 4)] == [0.0, 1.0, 1.2]


def test_jitter_adds_at_most_its_fraction() -> None:
    c = client()
    c.backoff_jitter = 0.5
    delays = [c._retry_delay(1) for _ in range(200)]
    assert all(1.0 <= d <= 1.5 for d in delays)
    assert len(set(delays)) > 1


def test_start_twice_raises_and_enqueue_needs_establishment() -> None:
    c = client()
    c.start()
    with pytest.raises(RuntimeError, match="already running"):
        c.start()
    assert c.running and not c.established
    from txxmppnode import Message

    with pytest.raises(ConnectionError):
        c.enqueue(Message(body="x"))


def test_local_jid_is_read_only() -> None:
    c = client()
    with pytest.raises(AttributeError):
        c.local_jid = JID.fromstr("romeo@example.net")  # type: ignore[misc]


def test_summon_returns_one_instance() -> None:
    c = client()
    assert c.summon(PresenceServer) is c.summon(PresenceServer)


def test_use_connected_presence_argument_is_deprecated() -> None:
    c = client()
    with pytest.warns(DeprecationWarning, match="presence argument"):
        UseConnected(c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UseConnected(c, presence=PresenceState(False))
        c.connected()  # Client.connected leaves the presence alone: no warning


def test_presence_managed_client_starts_when_available_only() -> None:
    c = client(PresenceManagedClient)
    assert isinstance(c, PresenceManagedClient)
    assert c.presence == PresenceState(False)
    assert not c.running
    c.presence = PresenceState(True, "away")
    assert c.running
    assert c.summon(PresenceServer).state == PresenceState(True, "away")


def test_presence_server_stanza_carries_show_status_and_priority() -> None:
    c = client()
    server = c.summon(PresenceServer)
    server.set_presence(PresenceState(True, "dnd"), {None: "busy", "de": "beschäftigt"}, 5)
    stanza = server.make_stanza()
    assert stanza.show.value == "dnd"
    assert stanza.priority == 5
    assert stanza.status == "busy"
    assert len(stanza.findall("{jabber:client}status")) == 2
    with pytest.raises(ValueError, match="priority"):
        server.set_presence(PresenceState(True), None, 200)


def test_clock_is_the_injected_reactor() -> None:
    clock = Clock()
    c = Client(JID.fromstr("juliet@example.com"), make("pw"), reactor=clock)
    assert c.stream.reactor is clock


def test_resumption_tries_the_servers_location_first() -> None:
    from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector

    c = Client(
        JID.fromstr("juliet@example.com"),
        make("pw"),
        reactor=MemoryReactorClock(),
        override_peer=[("override.example", 5223, DirectTLSConnector())],
    )
    assert c._peer_options() == [("override.example", 5223, DirectTLSConnector())]
    c.stream._sm.on_enabled("sm-1", True, 300, "[2001:db8::5]:5333")
    assert c._peer_options()[0][0] == "override.example"  # not suspended: no resumption
    c._state = ClientState.SUSPENDED
    assert c._peer_options() == [
        ("2001:db8::5", 5333, STARTTLSConnector()),
        ("override.example", 5223, DirectTLSConnector()),
    ]


def test_send_waiting_for_the_stream_fails_when_the_client_stops() -> None:
    from twisted.internet import defer

    from txxmppnode import Message
    from txxmppnode.errors import DestructionRequested

    reactor = MemoryReactorClock()
    c = Client(JID.fromstr("juliet@example.com"), make("pw"), reactor=reactor)
    c.start()
    pending = c.send(Message(to="romeo@example.net", body="never"))
    assert not pending.called
    stopped = c.stop()
    reactor.advance(0)
    outcome: list[Any] = []
    pending.addErrback(lambda f: outcome.append(f.value))
    assert stopped.called
    assert len(outcome) == 1 and isinstance(outcome[0], DestructionRequested)
    assert isinstance(pending, defer.Deferred)
