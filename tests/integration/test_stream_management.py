"""Stream management against the real Prosody, with faults injected by a proxy under test control.

Juliet talks to Prosody through the proxy; Romeo is connected directly and counts what arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from lxml import etree
from twisted.internet import defer

from tests.conftest import XMPPServer
from tests.support.proxy import FaultProxy
from tests.support.reactor import ReactorThread
from tests.support.session import Session
from txxmppnode import IQ, JID, Message
from txxmppnode.security_layer import make
from txxmppnode.token import StanzaState


class Inbox:
    """Romeo's received chat bodies; a Deferred fires when *expected* have arrived."""

    def __init__(self, expected: int) -> None:
        self.bodies: list[str] = []
        self.expected = expected
        self.complete: defer.Deferred[None] = defer.Deferred()

    def __call__(self, message: Any) -> None:
        self.bodies.append(message.body)
        if len(self.bodies) >= self.expected and not self.complete.called:
            self.complete.callback(None)


@pytest.fixture
def sessions(
    xmpp_server: XMPPServer,
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> Iterator[Callable[..., tuple[Session, Session, FaultProxy]]]:
    opened: list[Session] = []

    def open_pair(**juliet_options: Any) -> tuple[Session, Session, FaultProxy]:
        proxy = make_fault_proxy(xmpp_server.starttls_port)
        ca = str(xmpp_server.ca_pem_path)
        juliet = Session(
            JID.fromstr(xmpp_server.jid("juliet")),
            make(xmpp_server.accounts["juliet"], trust_root=ca),
            "127.0.0.1",
            proxy.port,
            **juliet_options,
        )
        romeo = Session(
            JID.fromstr(xmpp_server.jid("romeo")),
            make(xmpp_server.accounts["romeo"], trust_root=ca),
            "127.0.0.1",
            xmpp_server.starttls_port,
        )
        opened.extend([juliet, romeo])
        for session in (juliet, romeo):
            reactor_thread.run(lambda s=session: defer.Deferred.fromCoroutine(s.connect()))
        return juliet, romeo, proxy

    yield open_pair
    for session in opened:
        reactor_thread.run(session.close, timeout=10)


def message_to(romeo: Session, n: int) -> Message:
    return Message(to=f"{romeo.jid}/{romeo.resource}", type_="chat", body=str(n))


def test_1000_messages_survive_cuts_exactly_once_and_in_order(
    sessions: Callable[..., tuple[Session, Session, FaultProxy]], reactor_thread: ReactorThread
) -> None:
    juliet, romeo, proxy = sessions()
    inbox = Inbox(1000)
    reactor_thread.run(romeo.stream.register_message_callback, "chat", None, inbox)
    assert juliet.stream.sm_resumable

    async def scenario() -> list[Any]:
        tokens = []
        # cuts in both directions, armed in the middle of bursts: lost stanzas and lost acks
        cuts = {2: {"bytes_from_client": 9000}, 5: {"bytes_from_server": 20},
                8: {"bytes_from_client": 4000}}  # fmt: skip
        for burst in range(10):
            if burst in cuts:
                lost = juliet.stream.on_connection_lost.next()
                proxy.cut_after(**cuts[burst])
            for n in range(burst * 100, burst * 100 + 100):
                tokens.append(juliet.stream.enqueue(message_to(romeo, n)))
            if burst in cuts:
                await lost
                await juliet.when_up()
        await defer.gatherResults([t.deferred() for t in tokens])
        await inbox.complete
        return tokens

    tokens = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=60)
    assert inbox.bodies == [str(n) for n in range(1000)]
    assert all(t.state is StanzaState.ACKED for t in tokens)
    assert juliet.resumptions == 3
    assert juliet.connections == 4


def test_black_holed_connection_is_detected_within_the_hard_limit_and_resumed(
    sessions: Callable[..., tuple[Session, Session, FaultProxy]], reactor_thread: ReactorThread
) -> None:
    juliet, romeo, proxy = sessions(
        soft_timeout=timedelta(seconds=0.5), round_trip_time=timedelta(seconds=0.5)
    )
    inbox = Inbox(20)
    reactor_thread.run(romeo.stream.register_message_callback, "chat", None, inbox)

    async def scenario() -> tuple[float, list[Any], Any]:
        lost = juliet.stream.on_connection_lost.next()
        # as soon as the loss is noticed the network heals, before the reconnect is accepted
        juliet.stream.on_connection_lost.connect(lambda reason: proxy.restore())
        proxy.black_hole()
        started = time.monotonic()
        tokens = [juliet.stream.enqueue(message_to(romeo, n)) for n in range(20)]
        reason = await lost
        detected = time.monotonic() - started
        await defer.gatherResults([t.deferred() for t in tokens])
        await inbox.complete
        return detected, tokens, reason

    detected, tokens, reason = reactor_thread.run(
        lambda: defer.Deferred.fromCoroutine(scenario()), timeout=30
    )
    assert isinstance(reason, TimeoutError)
    assert detected < 1.0 + 0.5  # the hard limit, plus scheduling slack
    assert inbox.bodies == [str(n) for n in range(20)]
    assert all(t.state is StanzaState.ACKED for t in tokens)
    assert juliet.resumptions == 1


def test_iq_request_pending_across_a_resumption_gets_its_response(
    sessions: Callable[..., tuple[Session, Session, FaultProxy]], reactor_thread: ReactorThread
) -> None:
    juliet, romeo, proxy = sessions()
    called: defer.Deferred[None] = defer.Deferred()
    gate: defer.Deferred[None] = defer.Deferred()

    async def answer(iq: IQ) -> Any:
        called.callback(None)
        await gate  # answer only once juliet's connection was cut and resumed
        reply = etree.Element("{jabber:iq:version}query", nsmap={None: "jabber:iq:version"})
        etree.SubElement(reply, "{jabber:iq:version}name").text = "txxmppnode"
        return reply

    reactor_thread.run(
        romeo.stream.register_iq_request_handler, "get", "{jabber:iq:version}query", answer
    )

    async def scenario() -> Any:
        payload = etree.Element("{jabber:iq:version}query", nsmap={None: "jabber:iq:version"})
        request = IQ("get", to=f"{romeo.jid}/{romeo.resource}", payload=payload)
        lost = juliet.stream.on_connection_lost.next()
        pending = juliet.stream.send(request, timeout=20)
        await called
        proxy.cut()
        await lost
        await juliet.when_up()
        gate.callback(None)
        return await pending

    payload = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=30)
    assert payload.findtext("{jabber:iq:version}name") == "txxmppnode"
    assert juliet.resumptions == 1
