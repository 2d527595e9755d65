"""The node's metrics, its built-in handlers and the service around them, without a network."""

from __future__ import annotations

import re
from typing import Any

import pytest
from lxml import etree
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.logger import capturedLogs, formatEvent
from twisted.web.test.requesthelper import DummyRequest

from txxmppnode import IQ, JID, Message, MessageType, Presence, Stanza
from txxmppnode.client import ClientState
from txxmppnode.daemon import NodeMetrics, NodeService, NodeSettings, Secret, metrics_site
from txxmppnode.daemon.handlers import HandlerError, echo_handler, log_handler
from txxmppnode.daemon.metrics import STATES
from txxmppnode.errors import StreamError, StreamErrorCondition
from txxmppnode.presence import PresenceManagedClient
from txxmppnode.security_layer import make

from .client_harness import MemoryClient, settle


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def client(clock: task.Clock) -> PresenceManagedClient:
    return PresenceManagedClient(JID.fromstr("node@example.org/bot"), make("pw"), reactor=clock)


def sample(text: str, name: str, labels: str = "") -> str:
    selector = re.escape(name + (f"{{{labels}}}" if labels else ""))
    match = re.search(rf"^{selector} (\S+)$", text, re.MULTILINE)
    assert match, f"no {name}{{{labels}}} in:\n{text}"
    return match.group(1)


def state(metrics: NodeMetrics) -> str:
    text = metrics.render()
    (current,) = re.findall(r'^xmppnode_connection_state\{state="(\w+)"\} 1$', text, re.MULTILINE)
    assert current == metrics.state
    return current


def test_the_state_is_the_clients_and_the_counters_follow_it() -> None:
    """A run over in-memory connections: the gauge shows ``client.state`` at every step,
    including the steps that emit no signal the counters listen to (STOPPING, a session
    destroyed on a live connection)."""
    client = MemoryClient()
    metrics = NodeMetrics(client, client.clock)
    server = client.server

    def shows(expected: str) -> None:
        assert state(metrics) == expected == client.state.value

    shows("idle")
    client.start()
    shows("connecting")
    settle(client.clock)
    shows("established")
    assert metrics.last_negotiation_seconds == 0.0

    server.refuse_connections = True
    server.drop(ConnectionLost())
    shows("suspended")
    settle(client.clock)
    shows("suspended")  # the attempt to resume was refused: still suspended
    server.refuse_connections = False
    client.clock.advance(0.5)  # the back-off before the second attempt
    client.clock.advance(60)
    settle(client.clock)
    shows("established")

    client.stream.destroy(ConnectionError("the application gave the session up"))
    shows("connecting")  # no signal says so: only the client knows
    settle(client.clock)
    shows("established")

    client.stop()
    shows("stopping")
    settle(client.clock)
    shows("stopped")

    client.start()
    settle(client.clock)
    conflict = StreamError(StreamErrorCondition.CONFLICT)
    client._end_soon(conflict)
    shows("stopping")
    settle(client.clock)
    shows("failed")

    text = metrics.render()
    assert sample(text, "xmppnode_connection_attempts_total") == "5"
    assert sample(text, "xmppnode_connection_failures_total") == "1"
    assert sample(text, "xmppnode_sessions_established_total") == "3"
    assert sample(text, "xmppnode_resumptions_total") == "1"
    assert sample(text, "xmppnode_stream_errors_total", 'condition="conflict"') == "1"
    assert [line for line in text.splitlines() if "connection_state{" in line] == [
        f'xmppnode_connection_state{{state="{value}"}} {int(value == "failed")}' for value in STATES
    ]


def test_the_state_label_values_are_the_client_states() -> None:
    assert [ClientState(value) for value in STATES] == list(ClientState)


def test_cancelled_attempts_are_not_counted_as_failures(
    client: PresenceManagedClient, clock: task.Clock
) -> None:
    metrics = NodeMetrics(client, clock)
    client.on_connect_failed.emit(defer.CancelledError())  # stopped while connecting
    client.on_connect_failed.emit(ConnectionRefusedError())
    assert sample(metrics.render(), "xmppnode_connection_failures_total") == "1"


def test_stanzas_are_counted_by_kind(client: PresenceManagedClient, clock: task.Clock) -> None:
    metrics = NodeMetrics(client, clock)
    for stanza in (Message(body="a"), Message(body="b"), Presence(), IQ("get", id_="x")):
        client.stream.on_stanza_received.emit(stanza)
    client.stream.enqueue(Message(to="friend@example.org", body="queued, not yet written"))
    text = metrics.render()
    assert sample(text, "xmppnode_stanzas_received_total", 'kind="message"') == "2"
    assert sample(text, "xmppnode_stanzas_received_total", 'kind="presence"') == "1"
    assert sample(text, "xmppnode_stanzas_received_total", 'kind="iq"') == "1"
    assert sample(text, "xmppnode_stanzas_sent_total", 'kind="message"') == "1"
    assert sample(text, "xmppnode_stanzas_sent_total", 'kind="iq"') == "0"
    assert sample(text, "xmppnode_send_queue_stanzas") == "1"
    assert sample(text, "xmppnode_sm_unacked_stanzas") == "0"


def test_the_text_format(clock: task.Clock) -> None:
    odd = PresenceManagedClient(
        JID.fromstr('node@example.org/say "hi"\\'), make("pw"), reactor=clock
    )
    text = NodeMetrics(odd, clock).render()
    assert text.endswith("\n")
    assert 'xmppnode_info{jid="node@example.org/say \\"hi\\"\\\\"} 1' in text
    for line in text.splitlines():
        assert re.match(r"^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? \S+)$", line), line
    # no negotiation yet: the family is there, without a sample
    assert not re.search(r"^xmppnode_last_negotiation_duration_seconds ", text, re.MULTILINE)
    assert "# TYPE xmppnode_last_negotiation_duration_seconds gauge" in text


def test_the_site_serves_metrics(client: PresenceManagedClient, clock: task.Clock) -> None:
    metrics = NodeMetrics(client, clock)
    site = metrics_site(metrics)
    request = DummyRequest([b"metrics"])
    resource = site.getResourceFor(request)
    body = resource.render(request)
    assert body == metrics.render().encode()
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"
    ]


# -- handlers -----------------------------------------------------------------------------------


def received_chat(body: str | None, thread: str | None = None) -> Message:
    message = Message(to="node@example.org/bot", from_="friend@example.org/phone",
                      type_=MessageType.CHAT, body=body)  # fmt: skip
    if thread:
        etree.SubElement(message, "{jabber:client}thread").text = thread
    return message


def test_echo_answers_chat_messages(client: PresenceManagedClient) -> None:
    sent: list[Stanza] = []
    client.stream.on_stanza_enqueued.connect(sent.append)
    echo_handler(client)
    client.stream.dispatcher.dispatch_message(received_chat("hello", thread="t1"))
    client.stream.dispatcher.dispatch_message(received_chat(None))  # a chat state, say
    (reply,) = sent
    assert isinstance(reply, Message)
    assert (reply.body, str(reply.to), reply.type_) == (
        "hello",
        "friend@example.org/phone",
        MessageType.CHAT,
    )
    assert reply.findtext("{jabber:client}thread") == "t1"


@pytest.mark.parametrize("include_bodies", [False, True])
def test_log_writes_one_line_per_stanza(
    client: PresenceManagedClient, include_bodies: bool
) -> None:
    log_handler(client, include_bodies=include_bodies)
    with capturedLogs() as events:
        client.stream.on_stanza_received.emit(received_chat("the secret plan"))
        client.stream.on_stanza_received.emit(IQ("get", id_="q1", from_="example.org"))
    lines = [formatEvent(event) for event in events]
    assert lines[0].startswith(
        "received message type=chat from=friend@example.org/phone to=node@example.org/bot"
    )
    assert ("the secret plan" in lines[0]) is include_bodies
    assert lines[1] == "received iq type=get from=example.org to=- id=q1 children=-"
    assert events[0]["kind"] == "message" and events[1]["stanza_id"] == "q1"


# -- the service --------------------------------------------------------------------------------


def settings(*handlers: tuple[str, Any]) -> NodeSettings:
    return NodeSettings(jid=JID.fromstr("node@example.org/bot"), password=Secret("pw"),
                        handlers=handlers)  # fmt: skip


def test_handler_services_become_children(clock: task.Clock) -> None:
    extra = Service()
    node = NodeService(settings(("echo", echo_handler), ("mine", lambda client: extra)),
                       reactor=clock)  # fmt: skip
    assert list(node) == [extra]
    assert node.metrics.client is node.client
    # nothing is running: stopping is immediate
    done = node.stopService()
    assert done.called


def test_handlers_that_fail_or_return_junk(clock: task.Clock) -> None:
    def broken(client: PresenceManagedClient) -> None:
        raise RuntimeError("no database")

    with pytest.raises(HandlerError, match="handler 'broken' failed: no database"):
        NodeService(settings(("broken", broken)), reactor=clock)
    with pytest.raises(HandlerError, match="returned 42, not a Twisted service or None"):
        NodeService(settings(("junk", lambda client: 42)), reactor=clock)
