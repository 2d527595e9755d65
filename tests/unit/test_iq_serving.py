"""Serving IQ requests: plain calls for plain handlers, awaiting only what must be awaited."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from txxmppnode import IQ, JID
from txxmppnode.dispatch import Dispatcher
from txxmppnode.errors import ErrorCondition, XMPPError
from txxmppnode.iq_serving import IQServer
from txxmppnode.stanza import Stanza
from txxmppnode.stanzastream import StanzaStream
from txxmppnode.xmlstream import XMLStream

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
ME = JID.fromstr("juliet@example.com/balcony")


class Server:
    """An IQServer over a real dispatcher whose replies land in a list."""

    def __init__(self) -> None:
        self.dispatcher = Dispatcher()
        self.replies: list[tuple[Stanza, bytes]] = []
        self.server = IQServer(self.dispatcher, self._sink, Logger())

    def _sink(self, stanza: Stanza, data: bytes) -> None:
        self.replies.append((stanza, data))

    def request(self, payload: str = "<q xmlns='urn:x'/>", id_: str = "1") -> None:
        iq = IQ("get", id_=id_, from_="romeo@example.net/a")
        iq.append(etree.fromstring(payload))
        self.server.serve(iq)

    def types(self) -> list[str | None]:
        return [stanza.get("type") for stanza, _ in self.replies]


@pytest.fixture
def coroutines_started(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every coroutine run through ``Deferred.fromCoroutine`` from now on."""
    started: list[object] = []
    original = defer.Deferred.fromCoroutine

    def counting(coro: Any) -> defer.Deferred[Any]:
        started.append(coro)
        return original(coro)

    monkeypatch.setattr(defer.Deferred, "fromCoroutine", staticmethod(counting))
    return started


def test_a_plain_handler_is_answered_by_a_plain_call(coroutines_started: list[object]) -> None:
    """Through the stanza stream: the request is answered with no coroutine or Deferred."""
    clock = Clock()
    stream = StanzaStream(ME.bare(), reactor=clock)
    transport = StringTransport()
    xmlstream = XMLStream("example.com", reactor=clock)
    xmlstream.makeConnection(transport)
    xmlstream.dataReceived(PEER_HEADER)
    stream.start(xmlstream, ME, sm=False)
    calls: list[IQ] = []

    def plain(iq: IQ) -> etree._Element:
        calls.append(iq)
        return etree.Element("{urn:x}answer", nsmap={None: "urn:x"})

    stream.register_iq_request_handler("get", "{urn:x}q", plain)
    transport.clear()
    del coroutines_started[:]
    for n in range(3):
        xmlstream.dataReceived(f"<iq type='get' id='r{n}'><q xmlns='urn:x'/></iq>".encode())
    xmlstream.dataReceived(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    clock.advance(0)
    assert len(calls) == 3
    written = transport.value()
    for id_ in ("r0", "r1", "r2", "p"):
        assert f'id="{id_}"'.encode() in written
    assert written.count(b'type="result"') == 4
    assert coroutines_started == []


def test_a_coroutine_handler_is_awaited_once(coroutines_started: list[object]) -> None:
    s = Server()
    later: defer.Deferred[None] = defer.Deferred()

    async def slow(iq: IQ) -> etree._Element:
        await later
        return etree.Element("{urn:x}late", nsmap={None: "urn:x"})

    s.dispatcher.register_iq_request_handler("get", "{urn:x}q", slow)
    s.request()
    assert s.replies == []
    assert len(coroutines_started) == 1
    later.callback(None)
    ((reply, data),) = s.replies
    assert reply.get("type") == "result" and b"<late" in data


@pytest.mark.parametrize("fail", [False, True])
def test_a_handler_returning_a_deferred_is_answered_when_it_fires(fail: bool) -> None:
    s = Server()
    later: defer.Deferred[Any] = defer.Deferred()
    s.dispatcher.register_iq_request_handler("get", "{urn:x}q", lambda iq: later)
    s.request()
    assert s.replies == []
    if fail:
        later.errback(XMPPError(ErrorCondition.ITEM_NOT_FOUND))
        ((reply, _),) = s.replies
        assert reply.error.condition is ErrorCondition.ITEM_NOT_FOUND  # type: ignore[union-attr]
    else:
        later.callback(None)
        assert s.types() == ["result"]


def test_plain_handlers_raising_and_returning_nonsense_get_error_replies() -> None:
    s = Server()

    def refuse(iq: IQ) -> None:
        raise XMPPError(ErrorCondition.FORBIDDEN, "no")

    def crash(iq: IQ) -> None:
        raise KeyError("bug")

    s.dispatcher.register_iq_request_handler("get", "{urn:x}refuse", refuse)
    s.dispatcher.register_iq_request_handler("get", "{urn:x}crash", crash)
    s.dispatcher.register_iq_request_handler("get", "{urn:x}odd", lambda iq: 42)
    s.request("<refuse xmlns='urn:x'/>", "1")
    s.request("<crash xmlns='urn:x'/>", "2")
    s.request("<odd xmlns='urn:x'/>", "3")
    conditions = [stanza.error.condition for stanza, _ in s.replies]  # type: ignore[attr-defined]
    assert conditions == [
        ErrorCondition.FORBIDDEN,
        ErrorCondition.UNDEFINED_CONDITION,
        ErrorCondition.UNDEFINED_CONDITION,
    ]


def test_send_reply_answers_once_from_a_plain_handler() -> None:
    s = Server()
    second: list[BaseException] = []

    def early(iq: IQ, send_reply: Any) -> etree._Element:
        send_reply(None)
        try:
            send_reply(None)
        except RuntimeError as exc:
            second.append(exc)
        return etree.Element("{urn:x}ignored", nsmap={None: "urn:x"})

    s.dispatcher.register_iq_request_handler("get", "{urn:x}q", early, with_send_reply=True)
    s.request()
    assert s.types() == ["result"]
    assert b"ignored" not in s.replies[0][1]
    assert len(second) == 1 and "answered already" in str(second[0])


def test_a_plain_handler_with_send_reply_that_does_not_use_it_is_answered_by_its_result() -> None:
    s = Server()
    s.dispatcher.register_iq_request_handler(
        "get", "{urn:x}q", lambda iq, send_reply: None, with_send_reply=True
    )
    s.request()
    assert s.types() == ["result"]


def test_no_payload_no_handler_and_errors_are_answered_as_before() -> None:
    s = Server()
    s.server.serve(IQ("get", id_="e"))
    s.request("<unknown xmlns='urn:x'/>", "u")
    error = IQ("error", id_="x")
    s.server.reply_error(error, ErrorCondition.BAD_REQUEST, None)  # never an error for an error
    conditions = [stanza.error.condition for stanza, _ in s.replies]  # type: ignore[attr-defined]
    assert conditions == [ErrorCondition.BAD_REQUEST, ErrorCondition.SERVICE_UNAVAILABLE]
