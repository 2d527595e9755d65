"""Receive-path throughput: txxmppnode's XMLStream and StanzaStream against slixmpp.

Run ``make bench-dispatch`` (or ``.venv/bin/python benchmarks/dispatch.py``).  The input is the
byte stream of ``benchmarks/parse.py`` -- 20,000 mixed stanzas: a chat message with body and
chat state, a presence with status and entity capabilities, a disco#info IQ get; the messages
and IQs are addressed to our JID ``juliet@example.com/balcony`` -- fed in 4 KiB chunks through
the whole receive path of each client, with eleven handlers registered:

====================================  ======================================================
txxmppnode (StanzaStream, no SM)      slixmpp (ClientXMPP)
====================================  ======================================================
message callback (chat, anyone)       ``add_event_handler("message")``, checks type chat
presence callback (any type, anyone)  ``add_event_handler("presence")``
disco#info get handler, answers       ``Callback`` on ``MatchXPath`` ``iq[@type='get']/
with an identity and two features     {disco#info}query``, answers with ``iq.reply()``
message callbacks for two other       ``Callback`` on ``MatchXPath`` ``message[@from=...]``
senders (never match)                 for the same two senders
presence callbacks for two other      ``Callback`` on ``MatchXPath`` ``presence[@from=...]``
senders (never match)                 for the same two senders
IQ handlers for four other payloads   ``Callback`` on ``MatchXPath`` for the same four
(never match)                         ``iq[@type=...]/payload`` pairs
====================================  ======================================================

The callbacks count their calls, and every round checks that all stanzas reached the three
matching handlers, none reached the other eight, and that one disco#info result per IQ was
written, outside the measured time.  The replies are part of the measured work: txxmppnode
writes them in one transport write per reactor turn, its ``Clock`` advanced after each chunk;
slixmpp writes each from its ``run_filters`` task, the asyncio loop run after each chunk until
its send queue is empty.

Where the two setups differ:

* slixmpp's ``ClientXMPP`` also tests its ten built-in handlers against every stanza (``IM``,
  ``IMError``, ``Presence``, ``Stream Error``, ``Roster Update``, and those for stream features,
  STARTTLS and SASL), and its ``Presence`` handler updates the roster for each presence before
  it fires the events; the message and presence events are how slixmpp applications receive
  these stanzas.  txxmppnode's StanzaStream has a built-in ping handler and no roster.
* slixmpp's matchers compare the ``from`` attribute as a string, so its sender handlers would
  match the bare JID only; txxmppnode's would match any resource of it.  Neither matches here.
* slixmpp tests its handlers one by one against each stanza; txxmppnode looks the stanza up
  in dictionaries, so its eight non-matching handlers cost nothing per stanza.
* txxmppnode's reactor turns come from a test ``Clock``; slixmpp's from a real asyncio loop
  (with a zero-timeout poll per iteration), a few per chunk.

It prints stanzas/s and MB/s of input for each (best of several rounds) and the ratio of the
throughputs, txxmppnode/slixmpp.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import slixmpp
from _stream import (
    CHATSTATES,
    CLIENT,
    DISCO_INFO,
    AsyncioPeer,
    TwistedPeer,
    best_of,
    count_range,
    new_loop,
    stanzas_in,
    timed,
)
from lxml import etree
from parse import chunks, make_stream
from slixmpp.plugins.xep_0030.stanza import DiscoInfo
from slixmpp.stanza import Iq
from slixmpp.xmlstream import register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from txxmppnode import IQ

DISCO_QUERY = f"{{{DISCO_INFO}}}query"
IDENTITY = {"category": "client", "type": "pc", "name": "bench"}
FEATURES = (DISCO_INFO, CHATSTATES)
#: Senders that never write to us: (message senders, presence senders).
OTHER_MESSAGE_SENDERS = ("mercutio@example.net", "tybalt@example.net")
OTHER_PRESENCE_SENDERS = ("benvolio@example.net", "paris@example.net")
#: IQ requests nobody sends us: (type, payload).
OTHER_IQS = (
    ("get", "{jabber:iq:version}query"),
    ("get", "{urn:xmpp:time}time"),
    ("get", "{jabber:iq:last}query"),
    ("set", "{jabber:iq:private}query"),
)


def expected_calls(count: int) -> Counter[str]:
    return Counter(
        {
            "message": len(count_range(count, 0)),
            "presence": len(count_range(count, 1)),
            "disco#info": len(count_range(count, 2)),
        }
    )


def check_replies(data: bytes, count: int) -> None:
    """One disco#info result per request, in order, with the node, identity and features."""
    replies = stanzas_in(data)
    assert [r.get("id") for r in replies] == [f"d{n}" for n in count_range(count, 2)]
    for reply in replies:
        assert reply.tag == f"{{{CLIENT}}}iq" and reply.get("type") == "result", reply.attrib
        assert reply.get("to") == "romeo@example.net/orchard"
        (query,) = reply
        assert query.tag == DISCO_QUERY and query.get("node"), query.tag
        identities = query.findall(f"{{{DISCO_INFO}}}identity")
        assert [dict(i.attrib) for i in identities] == [IDENTITY]
        features = [f.get("var") for f in query.findall(f"{{{DISCO_INFO}}}feature")]
        assert sorted(features) == sorted(FEATURES)


def counting(calls: Counter[str], name: str) -> Callable[[Any], None]:
    def callback(stanza: Any) -> None:
        calls[name] += 1

    return callback


# -- txxmppnode -----------------------------------------------------------------------------


def txxmppnode_round(pieces: list[bytes], count: int) -> float:
    peer = TwistedPeer()
    stream = peer.stream
    calls: Counter[str] = Counter()

    def disco_info(iq: IQ) -> etree._Element:
        calls["disco#info"] += 1
        query = etree.Element(DISCO_QUERY, nsmap={None: DISCO_INFO})
        request = iq.payload
        node = None if request is None else request.get("node")
        if node:
            query.set("node", node)
        etree.SubElement(query, f"{{{DISCO_INFO}}}identity", IDENTITY)
        for feature in FEATURES:
            etree.SubElement(query, f"{{{DISCO_INFO}}}feature", var=feature)
        return query

    stream.register_message_callback("chat", None, counting(calls, "message"))
    stream.register_presence_callback(None, None, counting(calls, "presence"))
    stream.register_iq_request_handler("get", DISCO_QUERY, disco_info)
    for sender in OTHER_MESSAGE_SENDERS:
        stream.register_message_callback(None, sender, counting(calls, f"message {sender}"))
    for sender in OTHER_PRESENCE_SENDERS:
        stream.register_presence_callback(None, sender, counting(calls, f"presence {sender}"))
    for type_, payload in OTHER_IQS:
        stream.register_iq_request_handler(type_, payload, counting(calls, f"iq {payload}"))
    peer.start()

    def receive() -> None:
        for piece in pieces:
            peer.xmlstream.dataReceived(piece)
            peer.turn()

    seconds = timed(receive)
    assert peer.xmlstream.is_open
    assert calls == expected_calls(count), calls
    check_replies(peer.written(), count)
    return seconds


# -- slixmpp --------------------------------------------------------------------------------


def xpath_callback(name: str, xpath: str, callback: Callable[[Any], None]) -> Callback:
    return Callback(name, MatchXPath(xpath), callback)


def slixmpp_round(loop: asyncio.AbstractEventLoop, pieces: list[bytes], count: int) -> float:
    peer = AsyncioPeer(loop)
    xmpp = peer.xmpp
    calls: Counter[str] = Counter()

    def on_message(message: Any) -> None:
        if message["type"] == "chat":
            calls["message"] += 1

    def disco_info(iq: Any) -> None:
        calls["disco#info"] += 1
        reply = iq.reply()
        info = reply["disco_info"]
        node = iq["disco_info"]["node"]
        if node:
            info["node"] = node
        info.add_identity(IDENTITY["category"], IDENTITY["type"], name=IDENTITY["name"])
        for feature in FEATURES:
            info.add_feature(feature)
        reply.send()

    xmpp.add_event_handler("message", on_message)
    xmpp.add_event_handler("presence", counting(calls, "presence"))
    xpath = f"{{{CLIENT}}}iq[@type='get']/{DISCO_QUERY}"
    xmpp.register_handler(xpath_callback("disco#info", xpath, disco_info))
    for sender in OTHER_MESSAGE_SENDERS:
        name = f"message {sender}"
        xpath = f"{{{CLIENT}}}message[@from='{sender}']"
        xmpp.register_handler(xpath_callback(name, xpath, counting(calls, name)))
    for sender in OTHER_PRESENCE_SENDERS:
        name = f"presence {sender}"
        xpath = f"{{{CLIENT}}}presence[@from='{sender}']"
        xmpp.register_handler(xpath_callback(name, xpath, counting(calls, name)))
    for type_, payload in OTHER_IQS:
        name = f"iq {payload}"
        xpath = f"{{{CLIENT}}}iq[@type='{type_}']/{payload}"
        xmpp.register_handler(xpath_callback(name, xpath, counting(calls, name)))
    peer.start()

    async def receive() -> None:
        for piece in pieces:
            xmpp.data_received(piece)
            await peer.turn()

    seconds = timed(lambda: loop.run_until_complete(receive()))
    peer.close()
    assert xmpp.transport is not None, "slixmpp dropped the stream"
    assert calls == expected_calls(count), calls
    check_replies(peer.written(), count)
    return seconds


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--stanzas", type=int, default=20_000)
    options.add_argument("--chunk", type=int, default=4096, help="bytes per feed")
    options.add_argument("--rounds", type=int, default=7, help="best of this many rounds")
    args = options.parse_args()

    data = make_stream(args.stanzas)
    pieces = chunks(data, args.chunk)
    megabytes = len(data) / 1e6
    register_stanza_plugin(Iq, DiscoInfo)  # iq["disco_info"], as slixmpp's xep_0030 does
    loop = new_loop()

    print(
        f"{args.stanzas} stanzas, {megabytes:.2f} MB, {len(pieces)} chunks of {args.chunk} B,"
        f" 11 handlers, best of {args.rounds}"
    )
    sides: dict[str, Callable[[], float]] = {
        f"(a) slixmpp {slixmpp.__version__}": lambda: slixmpp_round(loop, pieces, args.stanzas),
        "(b) txxmppnode": lambda: txxmppnode_round(pieces, args.stanzas),
    }
    results = {}
    for name, one_round in sides.items():
        seconds = best_of(args.rounds, one_round)
        results[name] = seconds
        print(
            f"{name:22} {args.stanzas / seconds:>10,.0f} stanzas/s"
            f" {megabytes / seconds:>8.1f} MB/s  ({seconds * 1000:.1f} ms)"
        )
    loop.close()
    slow, fast = results.values()
    print(f"ratio txxmppnode/slixmpp {slow / fast:.2f}")


if __name__ == "__main__":
    main()
