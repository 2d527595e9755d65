"""twisted.words' XML stream (``twisted.words.xish``) on the receive and send paths.

``compare.py`` imports this module.  twisted.words is the XMPP support shipped in Twisted: its
``jabber.xmlstream.XmlStream`` parses with expat into ``domish`` elements and dispatches them
to observers registered with XPath-like strings.  It builds no typed stanzas and validates no
addresses, so it is the cost of "XML in, callbacks out" on Twisted without the work
txxmppnode does for its callers.

The receive round registers the eleven handlers of ``benchmarks/dispatch.py`` as observers:

=====================================================  ==================================
txxmppnode (dispatch.py)                               twisted.words observer
=====================================================  ==================================
message callback (chat, anyone)                        ``/message[@type='chat']``
presence callback (any type, anyone)                   ``/presence``
disco#info get handler, answers                        ``/iq[@type='get']/query[@xmlns=
                                                       '...disco#info']``, answers with
                                                       ``toResponse`` and ``send``
message and presence callbacks for four other          ``/message[@from='...']``,
senders (never match)                                  ``/presence[@from='...']``
IQ handlers for four other payloads (never match)      ``/iq[@type='...']/name[@xmlns=
                                                       '...']``
=====================================================  ==================================

Each observer is tested against every stanza (xish has no index).  Like slixmpp's string
matchers, the sender observers compare ``from`` as written, not as an address.  ``send``
writes to the transport at once, one write per stanza; there is no reactor turn to wait for.

The send round builds the stanzas of ``benchmarks/send.py`` as ``domish`` elements, gives
each an id with ``addUniqueId`` (a counter: xish has no random ids) and sends it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from _stream import (
    CAPS,
    CHATSTATES,
    DISCO_INFO,
    PEER_JID,
    SERVER_HEADER,
    timed,
)
from dispatch import (
    FEATURES,
    IDENTITY,
    OTHER_IQS,
    OTHER_MESSAGE_SENDERS,
    OTHER_PRESENCE_SENDERS,
    check_replies,
    expected_calls,
)
from send import BODY, CAPS_ATTRIBUTES, DISCO_NODE, STATUS, check_written
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

__all__ = ["xish_receive_round", "xish_send_round"]


def _connected() -> tuple[xmlstream.XmlStream, StringTransport]:
    transport = StringTransport()
    stream = xmlstream.XmlStream(xmlstream.Authenticator())
    stream.makeConnection(transport)
    return stream, transport


def _xpath_payload(type_: str, clark: str) -> str:
    namespace, _, name = clark[1:].partition("}")
    return f"/iq[@type='{type_}']/{name}[@xmlns='{namespace}']"


def xish_receive_round(pieces: list[bytes], count: int) -> float:
    stream, transport = _connected()
    calls: Counter[str] = Counter()

    def counting(name: str) -> Any:
        def callback(element: domish.Element) -> None:
            calls[name] += 1

        return callback

    def disco_info(iq: domish.Element) -> None:
        calls["disco#info"] += 1
        reply = xmlstream.toResponse(iq, "result")
        query = reply.addElement((DISCO_INFO, "query"))
        node = iq.query.getAttribute("node")
        if node:
            query["node"] = node
        query.addElement("identity", None).attributes.update(IDENTITY)
        for feature in FEATURES:
            query.addElement("feature")["var"] = feature
        stream.send(reply)

    stream.addObserver("/message[@type='chat']", counting("message"))
    stream.addObserver("/presence", counting("presence"))
    stream.addObserver(_xpath_payload("get", f"{{{DISCO_INFO}}}query"), disco_info)
    for sender in OTHER_MESSAGE_SENDERS:
        stream.addObserver(f"/message[@from='{sender}']", counting(f"message {sender}"))
    for sender in OTHER_PRESENCE_SENDERS:
        stream.addObserver(f"/presence[@from='{sender}']", counting(f"presence {sender}"))
    for type_, payload in OTHER_IQS:
        stream.addObserver(_xpath_payload(type_, payload), counting(f"iq {payload}"))
    transport.clear()

    def receive() -> None:
        for piece in pieces:
            stream.dataReceived(piece)

    seconds = timed(receive)
    assert transport.connected, "twisted.words dropped the stream"
    assert calls == expected_calls(count), calls
    check_replies(transport.value(), count)
    return seconds


def _message(n: int) -> domish.Element:
    message = domish.Element((None, "message"))
    message["to"] = PEER_JID
    message["type"] = "chat"
    message.addUniqueId()
    message.addElement("body", content=BODY.format(n=n))
    message.addElement((CHATSTATES, "active"))
    return message


def _presence(n: int) -> domish.Element:
    presence = domish.Element((None, "presence"))
    presence.addUniqueId()
    presence.addElement("show", content="away")
    presence.addElement("status", content=STATUS.format(n=n))
    presence.addElement("priority", content="5")
    presence.addElement((CAPS, "c")).attributes.update(CAPS_ATTRIBUTES)
    return presence


def _iq(n: int) -> domish.Element:
    iq = domish.Element((None, "iq"))
    iq["to"] = PEER_JID
    iq["type"] = "get"
    iq.addUniqueId()
    iq.addElement((DISCO_INFO, "query"))["node"] = DISCO_NODE
    return iq


def xish_send_round(count: int) -> tuple[float, int]:
    stream, transport = _connected()
    stream.dataReceived(SERVER_HEADER)
    transport.clear()
    build = (_message, _presence, _iq)
    send = stream.send

    def run() -> None:
        for n in range(count):
            send(build[n % 3](n))

    seconds = timed(run)
    data = transport.value()
    check_written(data, count)
    return seconds, len(data)
