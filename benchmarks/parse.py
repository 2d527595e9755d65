"""Parser throughput: txxmppnode's XMLStreamParser against a bare lxml pull parse.

Run ``make bench-parse`` (or ``.venv/bin/python benchmarks/parse.py``).  It builds a stream of
20,000 mixed stanzas -- a chat message with body and chat state, a presence with status and
entity capabilities, a disco#info IQ get -- and feeds it in 4 KiB chunks to

(a) a bare lxml ``XMLPullParser`` that does nothing but detach each top-level element (the
    floor: no parser in Python can do less work and still keep memory flat), and
(b) :class:`txxmppnode.xmlparser.XMLStreamParser`, producing typed ``Message``/``Presence``/``IQ``
    elements with its hardening checks and limits on.

It prints stanzas/s and MB/s for each (best of several rounds) and the ratio b/a.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from lxml import etree

from txxmppnode.stanza import IQ, Message, Presence
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com'"
    b" id='bench' version='1.0' xml:lang='en'>"
)
TEMPLATES = (
    "<message from='romeo@example.net/orchard' to='juliet@example.com/balcony' type='chat'"
    " id='m{n}'><body>Art thou not Romeo, and a Montague? Message number {n}.</body>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<presence from='nurse@example.com/kitchen{n}'><show>away</show>"
    "<status>Tending to the lady, back soon ({n})</status><priority>5</priority>"
    "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.org/client'"
    " ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
    "<iq from='romeo@example.net/orchard' to='juliet@example.com/balcony' type='get'"
    " id='d{n}'><query xmlns='http://jabber.org/protocol/disco#info'"
    " node='https://example.org/client#QgayPKawpkPSDYmwT/WM94uAlu0='/></iq>",
)


def make_stream(count: int) -> bytes:
    body = "".join(TEMPLATES[n % 3].format(n=n) for n in range(count))
    return HEADER + body.encode()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def bare_lxml(pieces: list[bytes]) -> int:
    """The floor: pull-parse and detach each top-level element, nothing else."""
    parser = etree.XMLPullParser(events=("start", "end"))
    depth = 0
    root = None
    count = 0
    for piece in pieces:
        parser.feed(piece)
        for action, element in parser.read_events():
            if action == "start":
                depth += 1
                if depth == 1:
                    root = element
            else:
                depth -= 1
                if depth == 1:
                    assert root is not None
                    root.remove(element)
                    count += 1
    return count


def txxmppnode_parser(pieces: list[bytes]) -> int:
    parser = XMLStreamParser()
    count = 0
    typed = (Message, Presence, IQ)
    for piece in pieces:
        for event in parser.feed(piece):
            if isinstance(event, ElementReceived):
                assert isinstance(event.element, typed)
                count += 1
    return count


def best_of(rounds: int, fn: Callable[[list[bytes]], int], pieces: list[bytes]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(pieces)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--stanzas", type=int, default=20_000)
    options.add_argument("--chunk", type=int, default=4096, help="bytes per feed")
    options.add_argument("--rounds", type=int, default=7, help="best of this many rounds")
    args = options.parse_args()

    data = make_stream(args.stanzas)
    pieces = chunks(data, args.chunk)
    megabytes = len(data) / 1e6
    assert bare_lxml(pieces) == txxmppnode_parser(pieces) == args.stanzas

    print(
        f"{args.stanzas} stanzas, {megabytes:.2f} MB, {len(pieces)} chunks of {args.chunk} B,"
        f" best of {args.rounds}"
    )
    results = {}
    for name, fn in (("(a) bare lxml", bare_lxml), ("(b) txxmppnode", txxmppnode_parser)):
        seconds = best_of(args.rounds, fn, pieces)
        results[name] = seconds
        print(
            f"{name:16} {args.stanzas / seconds:>10,.0f} stanzas/s"
            f" {megabytes / seconds:>8.1f} MB/s  ({seconds * 1000:.1f} ms)"
        )
    ratio = results["(a) bare lxml"] / results["(b) txxmppnode"]
    print(f"ratio b/a        {ratio:.2f}")


if __name__ == "__main__":
    main()
