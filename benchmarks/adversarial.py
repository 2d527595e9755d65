"""Adversarial input: the parser's cost per KiB and its memory, for each shape of input.

Run ``make bench-adversarial`` (or ``PYTHONPATH=. .venv/bin/python benchmarks/adversarial.py``).

Each shape is one top-level element (or one stream header) of 64 KiB to 4 MiB, built the way an
attacker would to make :class:`txxmppnode.xmlparser.XMLStreamParser` work hard: thousands of
children inheriting the stream's default namespace, thousands of attributes, attributes in a
namespace declared on the stream header, namespace declarations, nesting down to the depth
limit, a stream header with thousands of attributes -- next to plain text, the cheapest input.
It is fed in 64 KiB pieces, as TLS reads deliver it.  A cost that grows with the size (the µs
per KiB of 4 MiB well above that of 64 KiB) is super-linear.

Every measurement runs in a fresh interpreter, so each peak RSS is that of one element alone.
Two tables are printed:

1. with the parser's count limits lifted (only ``max_element_bytes``, 8 MiB, is kept), so every
   shape is parsed to the end: µs per KiB at each size, then the peak memory at the largest
   size -- growth of the peak RSS (libxml2's tree included) and tracemalloc's peak (Python
   allocations only), each also as a multiple of the input size;
2. with the default limits: what the parser does with each shape (accepts it, or refuses it
   with which error after how many KiB and how long).

A run that takes longer than ``--timeout`` seconds is reported as such.  The script works with
any version of the parser: options it does not know are not passed (that is how the figures
before a change are taken).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

KIB = 1024
SIZES = (64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB)
PIECE = 64 * KIB
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='adv'"
    b" version='1.0' xml:lang='en'>"
)
#: The count limits, lifted for the first table (the size limit stays).
LIFTED = {
    "max_attributes": 10**9,
    "max_children": 10**9,
    "max_elements": 10**9,
    "max_total_attributes": 10**9,
    "max_header_bytes": 10**9,
    "max_header_attributes": 10**9,
}


def repeat(
    unit: bytes, size: int, opening: bytes = b"<message>", closing: bytes = b"</message>"
) -> bytes:
    """*unit* repeated inside *opening* and *closing*, about *size* bytes in all."""
    count = max(1, (size - len(opening) - len(closing)) // len(unit))
    return opening + unit * count + closing


def attributes(count: int, template: bytes = b" a%d=''") -> bytes:
    return b"".join(template % number for number in range(count))


def many_attributes(size: int, template: bytes = b" a%d=''") -> bytes:
    """One start tag with as many attributes as fit in *size* bytes."""
    count = size // len(template % 99999)
    return b"<message" + attributes(count, template) + b"/>"


#: name -> (function of the size giving (stream header, element), what it stresses)
SHAPES: dict[str, Callable[[int], tuple[bytes, bytes]]] = {
    "plain text": lambda n: (HEADER, b"<message><body>" + b"x" * n + b"</body></message>"),
    "children, default ns": lambda n: (HEADER, repeat(b"<a/>", n)),
    "nested, default ns": lambda n: (HEADER, repeat(b"<b>" + b"<a/>" * 100 + b"</b>", n)),
    "attributes, one tag": lambda n: (HEADER, many_attributes(n)),
    "attributes, 100 a tag": lambda n: (HEADER, repeat(b"<a" + attributes(100) + b"/>", n)),
    "stream: attributes": lambda n: (
        HEADER,
        repeat(b"<a" + attributes(100, b" stream:a%d=''") + b"/>", n),
    ),
    "ns declarations": lambda n: (
        HEADER,
        repeat(b"<a" + attributes(50, b" xmlns:p%d='urn:p'") + b"/>", n),
    ),
    "deep nesting (63)": lambda n: (HEADER, repeat(b"<a>" * 63 + b"</a>" * 63, n)),
    "header attributes": lambda n: (HEADER[:-1] + attributes(n // 8) + b">", b""),
}


# -- one measurement, in a fresh interpreter ----------------------------------------------------


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def parse(parser_class: Any, options: dict[str, int], header: bytes, body: bytes) -> dict[str, Any]:
    """Feed *header* and *body*; what happened, after how many bytes."""
    parser = parser_class(**options)
    data = header + body
    fed = 0
    outcome = "accepted"
    try:
        for offset in range(0, len(data), PIECE):
            parser.feed(data[offset : offset + PIECE])
            fed = min(offset + PIECE, len(data))
    except ValueError as error:  # XMLStreamParseError
        fed = min(fed + PIECE, len(data))
        condition = getattr(error, "condition", None)
        outcome = f"{type(error).__name__} ({getattr(condition, 'value', '?')})"
    return {"outcome": outcome, "fed": fed}


def measure_one(shape: str, size: int, lifted: bool, memory: bool) -> dict[str, Any]:
    from txxmppnode.xmlparser import XMLStreamParser

    known = inspect.signature(XMLStreamParser).parameters
    options = {name: value for name, value in LIFTED.items() if lifted and name in known}
    header, body = SHAPES[shape](size)
    base_rss = peak_rss_kib()
    start = time.perf_counter()
    result = parse(XMLStreamParser, options, header, body)
    result["seconds"] = time.perf_counter() - start
    result["rss_kib"] = peak_rss_kib() - base_rss
    result["size"] = len(header) + len(body) if shape == "header attributes" else len(body)
    if memory:
        tracemalloc.start()
        parse(XMLStreamParser, options, header, body)
        result["traced_kib"] = tracemalloc.get_traced_memory()[1] // KIB
        tracemalloc.stop()
    return result


def run_one(shape: str, size: int, lifted: bool, memory: bool, timeout: float) -> dict[str, Any]:
    """:func:`measure_one` in a fresh interpreter; ``{"timeout": ...}`` if it takes too long."""
    command = [
        sys.executable,
        __file__,
        "--one",
        shape,
        str(size),
        str(int(lifted)),
        str(int(memory)),
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except subprocess.CalledProcessError as failed:
        raise SystemExit(f"{shape} at {size} failed:\n{failed.stderr}") from None
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


# -- the report --------------------------------------------------------------------------------


def label(size: int) -> str:
    return f"{size // KIB} KiB" if size < 1024 * KIB else f"{size // (1024 * KIB)} MiB"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    options.add_argument("--shape", action="append", choices=list(SHAPES), help="only these")
    options.add_argument(
        "--lifted-only", action="store_true", help="only the first table (a parser without limits)"
    )
    options.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.one:
        shape, size, lifted, memory = args.one
        print(json.dumps(measure_one(shape, int(size), lifted == "1", memory == "1")))
        return

    shapes = args.shape or list(SHAPES)
    import txxmppnode.xmlparser

    print(f"parser: {txxmppnode.xmlparser.__file__}, fed in {PIECE // KIB} KiB pieces\n")
    print("1. count limits lifted: µs per KiB (to the end of the element)")
    print(f"{'shape':24}" + "".join(f"{label(size):>11}" for size in SIZES)
          + "   peak RSS growth      tracemalloc peak")  # fmt: skip
    for shape in shapes:
        cells = []
        largest: dict[str, Any] | None = None
        for size in SIZES:
            result = run_one(shape, size, True, size == SIZES[-1], args.timeout)
            if "timeout" in result:
                cells.append(f"> {args.timeout:.0f} s")
                continue
            per_kib = result["seconds"] * 1e6 / (result["fed"] / KIB)
            mark = "" if result["outcome"] == "accepted" else "*"
            cells.append(f"{per_kib:,.1f}{mark}")
            largest = result
        memory = ""
        if largest is not None and "traced_kib" in largest:
            size_kib = largest["size"] / KIB
            rss, traced = largest["rss_kib"], largest["traced_kib"]
            memory = (
                f"   {rss / KIB:7.1f} MiB ({rss / size_kib:4.1f}x)"
                f"  {traced / KIB:7.1f} MiB ({traced / size_kib:4.1f}x)"
            )
        print(f"{shape:24}" + "".join(f"{cell:>11}" for cell in cells) + memory, flush=True)
    print("   (* refused before the end)\n")
    if args.lifted_only:
        return

    print("2. default limits: outcome at each size")
    for shape in shapes:
        print(f"{shape}:")
        for size in SIZES:
            result = run_one(shape, size, False, False, args.timeout)
            if "timeout" in result:
                print(f"  {label(size):>8}: still parsing after {args.timeout:.0f} s")
                continue
            print(
                f"  {label(size):>8}: {result['outcome']} after {result['fed'] / KIB:,.0f} KiB,"
                f" {result['seconds'] * 1000:,.1f} ms, peak RSS +{result['rss_kib'] / KIB:.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
