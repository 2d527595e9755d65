"""Where txxmppnode's receive and send paths spend their time: cProfile of one round each.

Run ``.venv/bin/python benchmarks/profile_paths.py [receive|send] [--top N]``.  It runs one
warm-up round and one profiled round of the txxmppnode side of ``benchmarks/dispatch.py`` (the
receive path) or ``benchmarks/send.py`` (the send path) and prints the functions with the most
time of their own (``tottime``), then those with the most time including callees
(``cumtime``).  Profiling slows the round several times over, the calls in Python more than
those in C; use it to find where the time goes, and ``compare.py`` to measure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import site
import sys
from collections.abc import Callable
from pathlib import Path

import dispatch
import send
from parse import chunks, make_stream

#: Path prefixes left out of the listing: the checkout, site-packages, the standard library.
PREFIXES = sorted(
    {f"{Path(__file__).resolve().parent.parent}/", *(f"{p}/" for p in site.getsitepackages())}
    | {f"{Path(sys.executable).resolve().parent.parent}/lib/python3.11/"},
    key=len,
    reverse=True,
)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("path", choices=("receive", "send"))
    options.add_argument("--stanzas", type=int, default=20_000)
    options.add_argument("--top", type=int, default=25)
    args = options.parse_args()

    if args.path == "receive":
        pieces = chunks(make_stream(args.stanzas), 4096)

        def one_round() -> object:
            return dispatch.txxmppnode_round(pieces, args.stanzas)

    else:

        def one_round() -> object:
            return send.txxmppnode_round(args.stanzas, 1)

    one_round()
    profiler = cProfile.Profile()

    def profiled(fn: Callable[[], object]) -> float:
        """What the rounds time, and only that, is profiled (not the checks that follow)."""
        profiler.runcall(fn)
        return 0.0

    dispatch.timed = send.timed = profiled
    one_round()
    for order in ("tottime", "cumtime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        text = out.getvalue()
        text = text[text.index("   ncalls") :].rstrip()
        for prefix in PREFIXES:
            text = text.replace(prefix, "")
        print(f"== {args.path}, by {order}")
        print(text)


if __name__ == "__main__":
    main()
