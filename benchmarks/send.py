"""Send-path throughput: txxmppnode's StanzaStream and XMLStream against slixmpp.

Run ``make bench-send`` (or ``.venv/bin/python benchmarks/send.py``).  Each client builds the
three stanza kinds of ``benchmarks/parse.py`` through its public API and sends them to an
in-memory transport, 20,000 stanzas in turn:

====================================================  ===========================================
txxmppnode                                            slixmpp (ClientXMPP)
====================================================  ===========================================
``Message(to=..., type_="chat", body=...)`` and an    ``make_message(mto, mbody, mtype="chat")``,
``<active/>`` chat state child                        ``msg["chat_state"] = "active"``
``Presence(show="away", status=..., priority=5)``     ``make_presence(pshow, pstatus, ppriority)``
and a ``<c/>`` caps child                             and ``pres["caps"][...]``
``IQ("get", to=..., payload=<query/>)``, disco#info   ``make_iq_get(ito=...)``,
with a node                                           ``iq["disco_info"]["node"]``
``StanzaStream.enqueue(stanza)`` (without SM)         ``stanza.send()``; ``xmpp.send(iq)``
====================================================  ===========================================

Building the stanzas is part of the measured work.  Both libraries give every stanza an id
(txxmppnode a random token, slixmpp a uuid4).  The IQs are only written, not tracked:
``enqueue`` and ``xmpp.send(iq)`` do not wait for the response, where ``StanzaStream.send``
and ``iq.send()`` would each register it with a timeout.  slixmpp's chat state, caps and
disco#info stanza classes are registered as its xep_0085, xep_0115 and xep_0030 plugins do.

After every ``--batch`` stanzas (default 1: each stanza in its own turn, as an application
reacting to events sends them) the client gets a turn to write: txxmppnode's ``Clock`` is
advanced, and the stanzas queued in that turn go out in one transport write; slixmpp's
asyncio loop runs until its ``run_filters`` task has written each queued stanza.  A real
asyncio loop polls for I/O (a zero-timeout ``epoll_wait``) on every iteration, the test
``Clock`` does not, so small batches weigh slixmpp's turns more; larger batches show the cost
of the stanzas alone.  Every round checks, outside the measured time, that what was written
parses back to the stanzas sent.

It prints stanzas/s and the bytes written for each (best of several rounds) and the ratio of
the throughputs, txxmppnode/slixmpp.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import slixmpp
from _stream import (
    CAPS,
    CAPS_NODE,
    CAPS_VER,
    CHATSTATES,
    CLIENT,
    DISCO_INFO,
    PEER_JID,
    SERVER_HEADER,
    AsyncioPeer,
    TwistedPeer,
    count_range,
    new_loop,
    stanzas_in,
    timed,
)
from lxml import etree
from slixmpp.plugins.xep_0030.stanza import DiscoInfo
from slixmpp.plugins.xep_0085.stanza import Active
from slixmpp.plugins.xep_0115.stanza import Capabilities
from slixmpp.stanza import Iq
from slixmpp.stanza import Message as SlixMessage
from slixmpp.stanza import Presence as SlixPresence
from slixmpp.xmlstream import register_stanza_plugin

from txxmppnode import IQ, Message, Presence, Stanza

BODY = "Art thou not Romeo, and a Montague? Message number {n}."
STATUS = "Tending to the lady, back soon ({n})"
DISCO_NODE = f"{CAPS_NODE}#{CAPS_VER}"
CAPS_ATTRIBUTES = {"hash": "sha-1", "node": CAPS_NODE, "ver": CAPS_VER}


def check_written(data: bytes, count: int) -> None:
    """What was written parses back to the *count* stanzas sent, in order."""
    stanzas = stanzas_in(data)
    kinds = ("message", "presence", "iq")
    assert [s.tag for s in stanzas] == [f"{{{CLIENT}}}{kinds[n % 3]}" for n in range(count)]
    assert all(s.get("id") for s in stanzas)
    for n in count_range(count, 0):
        message = stanzas[n]
        assert message.get("to") == PEER_JID and message.get("type") == "chat"
        assert message.findtext(f"{{{CLIENT}}}body") == BODY.format(n=n)
        assert message.find(f"{{{CHATSTATES}}}active") is not None
    for n in count_range(count, 1):
        presence = stanzas[n]
        assert presence.findtext(f"{{{CLIENT}}}show") == "away"
        assert presence.findtext(f"{{{CLIENT}}}status") == STATUS.format(n=n)
        assert presence.findtext(f"{{{CLIENT}}}priority") == "5"
        caps = presence.find(f"{{{CAPS}}}c")
        assert caps is not None and dict(caps.attrib) == CAPS_ATTRIBUTES
    for n in count_range(count, 2):
        iq = stanzas[n]
        assert iq.get("to") == PEER_JID and iq.get("type") == "get"
        (query,) = iq
        assert query.tag == f"{{{DISCO_INFO}}}query" and query.get("node") == DISCO_NODE


# -- txxmppnode -----------------------------------------------------------------------------


def txxmppnode_message(n: int) -> Stanza:
    message = Message(to=PEER_JID, type_="chat", body=BODY.format(n=n))
    etree.SubElement(message, f"{{{CHATSTATES}}}active", nsmap={None: CHATSTATES})
    return message


def txxmppnode_presence(n: int) -> Stanza:
    presence = Presence(show="away", status=STATUS.format(n=n), priority=5)
    etree.SubElement(presence, f"{{{CAPS}}}c", CAPS_ATTRIBUTES, nsmap={None: CAPS})
    return presence


def txxmppnode_iq(n: int) -> Stanza:
    query = etree.Element(f"{{{DISCO_INFO}}}query", node=DISCO_NODE, nsmap={None: DISCO_INFO})
    return IQ("get", to=PEER_JID, payload=query)


def txxmppnode_round(count: int, batch: int) -> tuple[float, int]:
    peer = TwistedPeer()
    peer.xmlstream.dataReceived(SERVER_HEADER)
    peer.start()
    enqueue = peer.stream.enqueue
    build = (txxmppnode_message, txxmppnode_presence, txxmppnode_iq)

    def send() -> None:
        for n in range(count):
            enqueue(build[n % 3](n))
            if n % batch == batch - 1:
                peer.turn()
        peer.turn()

    seconds = timed(send)
    data = peer.written()
    check_written(data, count)
    return seconds, len(data)


# -- slixmpp --------------------------------------------------------------------------------


def slixmpp_message(xmpp: Any, n: int) -> None:
    message = xmpp.make_message(mto=PEER_JID, mbody=BODY.format(n=n), mtype="chat")
    message["chat_state"] = "active"
    message.send()


def slixmpp_presence(xmpp: Any, n: int) -> None:
    presence = xmpp.make_presence(pshow="away", pstatus=STATUS.format(n=n), ppriority=5)
    caps = presence["caps"]
    for name, value in CAPS_ATTRIBUTES.items():
        caps[name] = value
    presence.send()


def slixmpp_iq(xmpp: Any, n: int) -> None:
    iq = xmpp.make_iq_get(ito=PEER_JID)
    iq["disco_info"]["node"] = DISCO_NODE
    xmpp.send(iq)


def slixmpp_round(loop: asyncio.AbstractEventLoop, count: int, batch: int) -> tuple[float, int]:
    peer = AsyncioPeer(loop)
    xmpp = peer.xmpp
    peer.start()
    build = (slixmpp_message, slixmpp_presence, slixmpp_iq)

    async def send() -> None:
        for n in range(count):
            build[n % 3](xmpp, n)
            if n % batch == batch - 1:
                await peer.turn()
        await peer.turn()

    seconds = timed(lambda: loop.run_until_complete(send()))
    peer.close()
    data = peer.written()
    check_written(data, count)
    return seconds, len(data)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--stanzas", type=int, default=20_000)
    options.add_argument("--batch", type=int, default=1, help="stanzas sent per turn")
    options.add_argument("--rounds", type=int, default=7, help="best of this many rounds")
    args = options.parse_args()
    if args.batch < 1:
        options.error("--batch must be at least 1")

    register_stanza_plugin(SlixMessage, Active)
    register_stanza_plugin(SlixPresence, Capabilities)
    register_stanza_plugin(Iq, DiscoInfo)
    loop = new_loop()

    print(f"{args.stanzas} stanzas, {args.batch} per turn, best of {args.rounds}")
    sides: dict[str, Callable[[], tuple[float, int]]] = {
        f"(a) slixmpp {slixmpp.__version__}": lambda: slixmpp_round(loop, args.stanzas, args.batch),
        "(b) txxmppnode": lambda: txxmppnode_round(args.stanzas, args.batch),
    }
    results = {}
    for name, one_round in sides.items():
        rounds = [one_round() for _ in range(args.rounds)]
        seconds = min(s for s, _ in rounds)
        written = rounds[0][1]
        results[name] = seconds
        print(
            f"{name:22} {args.stanzas / seconds:>10,.0f} stanzas/s"
            f" {written / 1e6:>8.2f} MB written  ({seconds * 1000:.1f} ms)"
        )
    loop.close()
    slow, fast = results.values()
    print(f"ratio txxmppnode/slixmpp {slow / fast:.2f}")


if __name__ == "__main__":
    main()
