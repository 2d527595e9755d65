"""The client's life cycle over in-memory connections: suspension, stop, restart, services.

Every connection goes to the :class:`~tests.unit.client_harness.FakeServer`; every timer runs on
the injected :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionLost

from txxmppnode import Message
from txxmppnode.client import ClientState
from txxmppnode.token import StanzaState

from .client_harness import MemoryClient, established, settle


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
