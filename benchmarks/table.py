"""The issue's table in one run: every figure beside twisted.words and slixmpp, with its goal.

Run ``make bench-table`` (or ``.venv/bin/python benchmarks/table.py``).  About two minutes
with the defaults, which are smaller than those of the scripts it runs; the options scale
them up (``--rounds 5 --connections 50 --clients 10000`` is the scripts' own full run, the
last one alone some five minutes).

Nothing is measured here: this script runs the four benchmarks below one after the other,
each as a child process with ``--json FILE``, reads the figures they write and prints one
table, rows the figures, columns txxmppnode, twisted.words, slixmpp, the goal and whether it
is met.  Each benchmark's own docstring says how it measures; the text they print is shown
with ``--verbose``.

``compare.py`` (``--rounds``)
    Receive and send paths, stanzas/s, median of the rounds; the receive goal is a share of
    the bare lxml floor of the same run, the send goal a multiple of twisted.words'.
``connect.py`` (``--connections``)
    Start to established against a local Prosody, median ms: txxmppnode with STARTTLS,
    SCRAM, bind and stream management; twisted.words with STARTTLS, PLAIN, bind and no
    stream management (it has none); slixmpp as txxmppnode.
``messages.py`` (``--rounds``)
    Client CPU per 1,000 chat messages A -> B through Prosody, both clients in one process.
``memory.py`` (``--clients``, ``--words-clients``, ``--slixmpp-clients``, ``--idle``)
    RSS per idle established client, each library with its own count (twisted.words and
    slixmpp in child processes of their own), and the CPU of the txxmppnode clients over the
    idle window.  "~ 0 beyond the liveness schedule" is read as: the idle CPU, less
    :data:`LIVENESS_ALLOWANCE_MS` per client that received its liveness answer in the window,
    under :data:`IDLE_BUDGET` of one core.  The 10,000 streams of the goal are shown only when
    ``--clients`` is at least 10,000.

A benchmark that fails leaves its cells ``-`` and a note under the table; the others still
run.  No figure is asserted: the ``met`` column is the comparison, printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LIBRARIES = ("txxmppnode", "twisted.words", "slixmpp")
#: CPU allowed for one liveness check and its answer in the idle window, ms (measured
#: ~0.4 ms in the 10,000-stream run of PROFILE.md).
LIVENESS_ALLOWANCE_MS = 0.5
#: The share of one core under which the rest of the idle CPU counts as ~0.
IDLE_BUDGET = 0.001
#: The memory goal: KiB per idle established stream, and streams in one process.
MEMORY_GOAL_KIB = 64
MEMORY_GOAL_STREAMS = 10_000

Figures = dict[str, Any]
Row = tuple[str, dict[str, str], str, str]


def run(script: str, arguments: list[str], verbose: bool) -> tuple[Figures | None, str]:
    """Run ``benchmarks/SCRIPT`` with *arguments* and ``--json``; its figures, or a note."""
    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-table-") as directory:
        output = Path(directory, "figures.json")
        command = [sys.executable, str(HERE / script), *arguments, "--json", str(output)]
        print(f"running {' '.join([script, *arguments])} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        print(f"  {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        if verbose:
            print(done.stdout, file=sys.stderr)
        if done.returncode != 0 or not output.exists():
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            return None, f"{script} exited {done.returncode}: {tail[0]}"
        figures: Figures = json.loads(output.read_text())
        return figures, ""


def cells(figures: Figures | None, show: Callable[[Figures], str]) -> dict[str, str]:
    """One cell per library of *figures* (a dict keyed by library), ``-`` where absent."""
    found = figures or {}
    return {library: show(found[library]) if library in found else "-" for library in LIBRARIES}


def yes(condition: bool) -> str:
    return "yes" if condition else "no"


def path_rows(compare: Figures | None) -> list[Row]:
    rates: Figures = (compare or {}).get("rates", {})
    receive = {lib: paths["receive"] for lib, paths in rates.items() if "receive" in paths}
    send = {lib: paths["send"] for lib, paths in rates.items() if "send" in paths}
    rows: list[Row] = []
    floor, ours, words = (
        receive.get("lxml"),
        receive.get("txxmppnode"),
        receive.get("twisted.words"),
    )
    receive_cells = cells(receive, lambda rate: f"{rate:,.0f}")
    met = "?"
    if floor and ours:
        receive_cells["txxmppnode"] += f" ({ours / floor:.1%} of floor)"
        met = yes(ours >= 0.3 * floor)
        if words:
            met += f" ({ours / words:.2f}x t.w.)"
    rows.append(("receive path, stanzas/s", receive_cells, ">= 30 % of lxml floor", met))
    ours, words = send.get("txxmppnode"), send.get("twisted.words")
    met = f"{yes(ours >= 2 * words)} ({ours / words:.2f}x)" if ours and words else "?"
    rows.append(
        ("send path, stanzas/s", cells(send, lambda rate: f"{rate:,.0f}"), ">= 2x t.w.", met)
    )
    return rows


def messages_row(messages: Figures | None) -> Row:
    def show(one: Figures) -> str:
        return f"{one['cpu_ms_per_1000']:.1f} ms" + ("" if one["stream_management"] else " (no SM)")

    ours = (messages or {}).get("txxmppnode")
    met = yes(ours["cpu_ms_per_1000"] <= 15) if ours else "?"
    return ("client CPU per 1,000 messages", cells(messages, show), "<= 15 ms", met)


def connect_row(connect: Figures | None) -> Row:
    def show(one: Figures) -> str:
        return f"{one['median_ms']:.1f} ms"

    found = connect or {}
    met = "?"
    if "txxmppnode" in found and "twisted.words" in found:
        met = yes(found["txxmppnode"]["median_ms"] <= found["twisted.words"]["median_ms"])
    return ("connect -> ready, median", cells(connect, show), "<= t.w. (no SM)", met)


def memory_rows(memory: Figures | None) -> list[Row]:
    def show(one: Figures) -> str:
        return f"{one['kib_per_client']:.1f} KiB at {one['clients']:,}"

    ours = (memory or {}).get("txxmppnode")
    met = "?"
    if ours:
        met = f"size {yes(ours['kib_per_client'] <= MEMORY_GOAL_KIB)}; "
        if ours["clients"] >= MEMORY_GOAL_STREAMS:
            held = ours["still_established"] == ours["clients"]
            met += f"{MEMORY_GOAL_STREAMS:,} {yes(held)}"
        else:
            met += f"{MEMORY_GOAL_STREAMS:,} not run"
    goal = f"<= {MEMORY_GOAL_KIB} KiB, {MEMORY_GOAL_STREAMS:,} streams"
    rows: list[Row] = [("memory per idle stream", cells(memory, show), goal, met)]

    def idle(one: Figures) -> str:
        woken = one.get("woken")
        checks = "" if woken is None else f", {woken} checks"
        return f"{one['idle_cpu_seconds'] * 1000:.0f} ms/{one['idle_seconds']:g} s{checks}"

    met = "?"
    if ours:
        spent_ms = ours["idle_cpu_seconds"] * 1000 - LIVENESS_ALLOWANCE_MS * (ours["woken"] or 0)
        met = yes(spent_ms <= IDLE_BUDGET * ours["idle_seconds"] * 1000)
    idle_cells = cells(memory, idle)
    label = "idle CPU of the streams above"
    rows.append((label, idle_cells, "~ 0 beyond liveness", met))
    return rows


def print_table(rows: list[Row], names: dict[str, str]) -> None:
    header = ("figure", *(names.get(lib, lib) for lib in LIBRARIES), "goal", "met")
    lines = [
        header,
        *((name, *(c[lib] for lib in LIBRARIES), goal, met) for name, c, goal, met in rows),
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for number, line in enumerate(lines):
        print(
            "| "
            + " | ".join(f"{cell:{width}}" for cell, width in zip(line, widths, strict=True))
            + " |"
        )
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--rounds", type=int, default=3, help="compare.py and messages.py")
    options.add_argument("--connections", type=int, default=20, help="connect.py, per library")
    options.add_argument("--clients", type=int, default=1000, help="memory.py, txxmppnode")
    options.add_argument(
        "--words-clients", type=int, default=200, help="memory.py, twisted.words (0: none)"
    )
    options.add_argument(
        "--slixmpp-clients", type=int, default=200, help="memory.py, slixmpp (0: none)"
    )
    options.add_argument("--idle", type=float, default=10.0, help="memory.py's idle window, s")
    options.add_argument("--verbose", action="store_true", help="show the scripts' own output")
    args = options.parse_args()
    if args.rounds < 1 or args.connections < 2 or args.clients < 1 or args.idle <= 0:
        options.error("needs --rounds >= 1, --connections >= 2, --clients >= 1, --idle > 0")

    notes = []
    runs = {
        "compare": ("compare.py", ["--rounds", str(args.rounds)]),
        "connect": ("connect.py", ["--connections", str(args.connections)]),
        "messages": ("messages.py", ["--rounds", str(args.rounds)]),
        "memory": (
            "memory.py",
            [
                *("--clients", str(args.clients), "--idle", f"{args.idle:g}"),
                *("--words-clients", str(args.words_clients)),
                *("--slixmpp-clients", str(args.slixmpp_clients)),
                *("--tracemalloc", "0", "--tls-probe-count", "20"),
            ],
        ),
    }
    began = time.monotonic()
    found: dict[str, Figures | None] = {}
    for key, (script, arguments) in runs.items():
        found[key], note = run(script, arguments, args.verbose)
        if note:
            notes.append(note)

    versions = (found["compare"] or {}).get("versions", {})
    names = {lib: f"{lib} {versions[lib]}" if lib in versions else lib for lib in LIBRARIES}
    rows = [
        *path_rows(found["compare"]),
        messages_row(found["messages"]),
        connect_row(found["connect"]),
        *memory_rows(found["memory"]),
    ]
    print(
        f"issue 13's figures, one run ({time.monotonic() - began:.0f} s); compare.py and"
        f" messages.py median of {args.rounds} rounds, connect.py {args.connections}"
        " connections per library; t.w. = twisted.words, SM = stream management"
    )
    print_table(rows, names)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
