"""Receive and send paths side by side: lxml floor, twisted.words, slixmpp and txxmppnode.

Run ``make bench-compare`` (or ``.venv/bin/python benchmarks/compare.py``).  One run prints one
table.  Each library runs in processes of its own (this script started again with
``--child``), so no library's imports, caches or garbage weigh on another's figures.  A child
process runs one warm-up round and one measured round of each path; the libraries take turns,
one child each per turn, for five turns, and the table shows the median of the five.  Taking
turns spreads whatever else the machine is doing over all the columns alike, where measuring
one library after the other would charge it to whichever ran at the time.

receive
    The 20,000 stanzas of ``benchmarks/parse.py`` in 4 KiB chunks through the whole receive
    path, with the eleven handlers of ``benchmarks/dispatch.py`` (three that match, eight
    decoys) and one disco#info result written per IQ request.  The floor is the bare lxml
    pull parse of ``parse.py``, which detaches the stanzas and does nothing else.
    twisted.words is ``benchmarks/_xish.py``; slixmpp and txxmppnode are the rounds of
    ``dispatch.py``.
send
    The 20,000 stanzas of ``benchmarks/send.py``, built through each library's API and written
    to an in-memory transport, one reactor turn per stanza.  twisted.words is ``_xish.py``;
    slixmpp and txxmppnode are the rounds of ``send.py``.  There is no floor.

Every round checks its output (handler calls, replies, the bytes written) outside the
measured time.  The last columns give txxmppnode's receive rate as a share of the floor and
both of its rates as multiples of twisted.words'.

``--json FILE`` also writes the versions and the median rates (stanzas/s, per library and
path) to FILE, for ``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from parse import bare_lxml, chunks, make_stream

LIBRARIES = ("lxml", "twisted.words", "slixmpp", "txxmppnode")
MEASURED = 5


def _rounds(one_round: Callable[[], float], rounds: int) -> list[float]:
    one_round()  # warm-up: imports, caches, the JID and class lookups of the first stanzas
    return [one_round() for _ in range(rounds)]


def _child(library: str, stanzas: int, chunk: int, rounds: int) -> dict[str, list[float]]:
    """Measure *library* in this process; the seconds of each round, per path."""
    pieces = chunks(make_stream(stanzas), chunk)
    results: dict[str, list[float]] = {}
    if library == "lxml":

        def floor() -> float:
            from _stream import timed

            return timed(lambda: bare_lxml(pieces))

        results["receive"] = _rounds(floor, rounds)
    elif library == "twisted.words":
        from _xish import xish_receive_round, xish_send_round

        results["receive"] = _rounds(lambda: xish_receive_round(pieces, stanzas), rounds)
        results["send"] = _rounds(lambda: xish_send_round(stanzas)[0], rounds)
    elif library == "slixmpp":
        import dispatch
        import send
        from _stream import new_loop
        from slixmpp.plugins.xep_0030.stanza import DiscoInfo
        from slixmpp.plugins.xep_0085.stanza import Active
        from slixmpp.plugins.xep_0115.stanza import Capabilities
        from slixmpp.stanza import Iq, Message, Presence
        from slixmpp.xmlstream import register_stanza_plugin

        register_stanza_plugin(Iq, DiscoInfo)
        register_stanza_plugin(Message, Active)
        register_stanza_plugin(Presence, Capabilities)
        loop = new_loop()
        results["receive"] = _rounds(lambda: dispatch.slixmpp_round(loop, pieces, stanzas), rounds)
        results["send"] = _rounds(lambda: send.slixmpp_round(loop, stanzas, 1)[0], rounds)
        loop.close()
    elif library == "txxmppnode":
        import dispatch
        import send

        results["receive"] = _rounds(lambda: dispatch.txxmppnode_round(pieces, stanzas), rounds)
        results["send"] = _rounds(lambda: send.txxmppnode_round(stanzas, 1)[0], rounds)
    else:
        raise ValueError(f"unknown library {library!r}")
    return results


def _version(library: str) -> str:
    if library == "lxml":
        from lxml import etree

        return ".".join(map(str, etree.LXML_VERSION[:3]))
    if library == "twisted.words":
        import twisted

        return twisted.__version__
    if library == "slixmpp":
        import slixmpp

        return str(slixmpp.__version__)
    return "this tree"


def _run_child(library: str, args: argparse.Namespace) -> dict[str, list[float]]:
    command = [sys.executable, __file__, "--child", library]
    command += ["--stanzas", str(args.stanzas), "--chunk", str(args.chunk), "--rounds", "1"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, list[float]] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--stanzas", type=int, default=20_000)
    options.add_argument("--chunk", type=int, default=4096, help="bytes per feed")
    options.add_argument("--rounds", type=int, default=MEASURED, help="measured rounds")
    options.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    options.add_argument(
        "--only", choices=LIBRARIES, action="append", help="run only these libraries"
    )
    options.add_argument(
        "--json", metavar="FILE", help="also write the rates (stanzas/s) to FILE, for table.py"
    )
    args = options.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.stanzas, args.chunk, args.rounds)))
        return

    libraries = args.only or LIBRARIES
    print(
        f"{args.stanzas} stanzas, 11 handlers, median of {args.rounds} rounds, each round of"
        " each library in a process of its own (after a warm-up round); stanzas/s"
    )
    seconds: dict[str, dict[str, list[float]]] = {library: {} for library in libraries}
    for _ in range(args.rounds):
        for library in libraries:
            for path, measured in _run_child(library, args).items():
                seconds[library].setdefault(path, []).extend(measured)
    rates = {
        library: {path: args.stanzas / statistics.median(s) for path, s in paths.items()}
        for library, paths in seconds.items()
    }
    header = f"{'path':8}" + "".join(f"{f'{lib} {_version(lib)}':>26}" for lib in libraries)
    print(header)
    for path in ("receive", "send"):
        cells = "".join(
            f"{rates[lib][path]:>26,.0f}" if path in rates[lib] else f"{'-':>26}"
            for lib in libraries
        )
        print(f"{path:8}{cells}")
    if args.json:
        versions = {library: _version(library) for library in libraries}
        Path(args.json).write_text(json.dumps({"versions": versions, "rates": rates}))
    ours = rates.get("txxmppnode", {})
    if "lxml" in rates and "receive" in ours:
        print(f"txxmppnode receive: {ours['receive'] / rates['lxml']['receive']:.1%} of the floor")
    for path in ("receive", "send"):
        theirs = rates.get("twisted.words", {}).get(path)
        if theirs and path in ours:
            print(f"txxmppnode {path}: {ours[path] / theirs:.2f}x twisted.words")
        theirs = rates.get("slixmpp", {}).get(path)
        if theirs and path in ours:
            print(f"txxmppnode {path}: {ours[path] / theirs:.2f}x slixmpp")


if __name__ == "__main__":
    main()
