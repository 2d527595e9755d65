"""Connection set-up: time from start to an established stream, and the turns it takes.

Run ``make bench-connect`` (or ``.venv/bin/python benchmarks/connect.py``); add
``AIOXMPP_PYTHON=/path/to/python`` to include aioxmpp (see below).  About ten seconds.

The benchmark starts its own Prosody (the test suite's :class:`ProsodyServer`, through
``_server.py``): loopback only, ``network_settings = { nagle = false }``, the modules roster,
saslauth, tls, disco, ping and smacks (no MAM), one account per library.  Against it each
library makes ``--warmup`` (3) unmeasured and then ``--connections`` (50) measured connections,
one at a time, each with a new client object and a new resource, each closed before the next
(txxmppnode ``stop()``, twisted.words its footer and ``loseConnection()``, slixmpp
``disconnect()``, aioxmpp ``stop()``).  Every connection is the whole way to a usable session
over STARTTLS:

* TLS 1.3, a full handshake every time: txxmppnode's context has its session cache off,
  slixmpp makes an ``ssl.SSLContext`` per client and Python offers no session unless given
  one, aioxmpp makes a context per connection;
* SCRAM-SHA-1 with Prosody's 10,000 iterations (Prosody 0.12 offers no ``-PLUS`` variant
  over TLS 1.3: it knows only ``tls-unique``);
* resource binding, then XEP-0198 ``<enable resume='true'/>`` answered by ``<enabled/>``.

twisted.words (``twisted.words.protocols.jabber.client.XMPPClientFactory``, see ``_words.py``)
does less, as it can: SASL ``PLAIN`` (it has no SCRAM; one round trip instead of two) and no
stream management (it has none), so it is ready after binding, two turns earlier.  The table
compares "txxmppnode with SM enabled" against "twisted.words without"; its ``steps`` row says
what each library did.

Measured, per connection: from ``Client.start()`` (txxmppnode, aioxmpp),
``reactor.connectTCP()`` (twisted.words) or ``ClientXMPP.connect()`` (slixmpp) to
``on_stream_established`` (txxmppnode, aioxmpp), ``STREAM_AUTHD_EVENT`` (twisted.words) or to
the later of slixmpp's ``session_start`` and ``sm_enabled`` events, on ``time.monotonic()``;
and the CPU time the client's process used over the same interval (``time.process_time()``:
Prosody's share runs on the other core).  The table has one column per library and one row
per figure: the median and 90th percentile of the wall times, the median CPU time, the turns
(below), and the median as a multiple of twisted.words'.

Turns
-----
A *turn* is a write by the client that must be answered before the client can continue.
``_turn_proxy.py``, in a process of its own, sits between the client and Prosody for
``--turn-runs`` (3) more connections per library: it forwards the client's bytes at once and
the server's ``--delay`` (20) ms after it read them.  A *client burst* begins when bytes from
the client arrive while the last thing that happened on the connection was a delivery to the
client (or nothing yet); the turns of a connection are its bursts that began before the
client reported the stream established.  The delay keeps what a client writes without
waiting in one burst even when server bytes that it does not wait for (TLS 1.3 session
tickets) happen to be on the wire at the same moment.

A strict RFC 6120 client needs 9 turns here: the stream header, ``<starttls/>``, the TLS
ClientHello, the client's TLS Finished together with the new stream header, SASL ``<auth/>``
(client-first message), SASL ``<response/>`` (client-final message), the stream header after
SASL, the bind IQ and ``<enable/>``.  (TLS 1.2 would add one: its client waits for the
server's Finished before writing.)  "proxied ms" is the median wall time through the proxy;
"extra/delay" is (proxied - median) / delay, which should be close to the turns: a few
tenths above them, because a client works more slowly after every pause than back to back,
and a whole turn above them if a client waited for something without writing first.

Where the libraries run
-----------------------
* slixmpp, first, in this process on an asyncio loop (``asyncio.run``);
* aioxmpp, next, in a child process run by ``--aioxmpp-python`` (default
  ``$AIOXMPP_PYTHON``; without one it is left out, with a note), through
  ``_aioxmpp_connect.py``.  aioxmpp 0.13.3, the latest, runs on Python 3.11 but cannot be
  installed next to txxmppnode: it requires ``lxml~=4.0`` where txxmppnode requires
  ``lxml>=5.0.0`` (``pip install aioxmpp`` in ``.venv`` downgrades lxml to 4.9.4, and as part
  of the ``bench`` extra the requirements cannot be resolved), it imports ``pytz`` without
  requiring it, and its certificate host-name check calls ``X509.get_extension()``, which
  pyOpenSSL 26.2.0 removed (``.venv`` has a later one).  A virtualenv of its own works::

      python3.11 -m venv /tmp/aioxmpp-venv
      /tmp/aioxmpp-venv/bin/pip install aioxmpp pytz 'pyOpenSSL<26.2'
      make bench-connect AIOXMPP_PYTHON=/tmp/aioxmpp-venv/bin/python

  Its security layer is aioxmpp's default (PKIX) with the test CA added to the context.
* twisted.words, then txxmppnode, last, in this process on Twisted's default reactor under
  ``task.react``, which ends the process when it is done; txxmppnode's clients share one
  security layer, twisted.words makes ``optionsForClientTLS`` (and so a TLS context) per
  connection, as a twisted.words program usually does.

No timing is asserted: the figures are printed.  A client that fails to connect, or a
txxmppnode or aioxmpp session established without stream management, stops the benchmark.
``--json FILE`` also writes each library's steps and median ms to FILE, for
``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import slixmpp
from _server import LOOPBACK, ProsodyServer, start_prosody
from _words import words_connect
from twisted.internet import defer, task

from txxmppnode import JID, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector

HERE = Path(__file__).resolve().parent
AIOXMPP_WORKER = HERE / "_aioxmpp_connect.py"
TURN_PROXY = HERE / "_turn_proxy.py"
#: Seconds any one connection, or the aioxmpp process, may take before the benchmark gives up.
TIMEOUT = 30.0
#: Client turns of a strict RFC 6120 client over STARTTLS and TLS 1.3 (see the module docs).
STRICT_TURNS = 9
#: One account per library, so that no session of one library can meet another's.
ACCOUNTS = ("txxmppnode", "words", "slixmpp", "aioxmpp")

#: What each library does to be ready (the table's "steps" row).
OURS_STEPS = "SCRAM, bind, SM"
WORDS_STEPS = "PLAIN, bind"
SLIXMPP_STEPS = "SCRAM, bind, SM"
AIOXMPP_STEPS = "SCRAM, bind, SM"

#: ``(port, resource)``: where one connection goes and the resource it asks for.
Connection = tuple[int, str]


class Run(NamedTuple):
    """One connection: when it began and when it was established (``time.monotonic()``),
    and the CPU time the process used in between (``time.process_time()``)."""

    began: float
    established: float
    cpu: float


def instant() -> tuple[float, float]:
    """Now, on the monotonic clock, and the CPU time this process has used, in seconds."""
    return time.monotonic(), time.process_time()


def run_between(began: tuple[float, float], established: tuple[float, float]) -> Run:
    return Run(began[0], established[0], established[1] - began[1])


# -- the turn-counting proxy ----------------------------------------------------------------


class TurnProxy:
    """``_turn_proxy.py`` in a process of its own, between the clients and Prosody."""

    def __init__(self, target_port: int, delay: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(TURN_PROXY), str(target_port), repr(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests, self._answers = self._process.stdin, self._process.stdout
        self.port = int(self._answers.readline())

    def connections(self) -> list[list[float]]:
        """For each connection so far, the instants at which the client's bursts began."""
        self._requests.write("report\n")
        self._requests.flush()
        bursts: list[list[float]] = json.loads(self._answers.readline())
        return bursts

    def stop(self) -> None:
        self._requests.close()
        try:
            self._process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._answers.close()


# -- the libraries --------------------------------------------------------------------------


async def txxmppnode_once(reactor: Any, security: Any, jid: str, connection: Connection) -> Run:
    port, resource = connection
    client = Client(
        JID.fromstr(f"{jid}/{resource}"),
        security,
        override_peer=[(LOOPBACK, port, STARTTLSConnector())],
        max_initial_attempts=1,
        reactor=reactor,
    )
    established = client.on_stream_established.next()
    established.addCallback(lambda _: instant())
    outcome = defer.race([established, client.on_failure.next()])
    outcome.addTimeout(TIMEOUT, reactor)
    began = instant()
    client.start()
    which, value = await outcome
    if which != 0:
        raise RuntimeError(f"txxmppnode could not connect: {value!r}")
    if not client.stream.sm_enabled:
        raise RuntimeError("txxmppnode: established without stream management")
    await client.stop()
    return run_between(began, value)


async def txxmppnode_runs(reactor: Any, server: ProsodyServer, plan: list[Connection]) -> list[Run]:
    security = make_security_layer(
        server.accounts["txxmppnode"], trust_root=str(server.ca_pem_path)
    )
    jid = server.jid("txxmppnode")
    return [await txxmppnode_once(reactor, security, jid, connection) for connection in plan]


async def words_once(
    reactor: Any, account: str, password: str, ca_pem: bytes, connection: Connection
) -> Run:
    port, resource = connection
    ready = words_connect(reactor, f"{account}/{resource}", password, ca_pem, LOOPBACK, port)
    ready.addCallback(lambda session: (session, instant()))
    ready.addTimeout(TIMEOUT, reactor)
    began = instant()
    session, at = await ready
    await session.close()
    return run_between(began, at)


async def words_runs(reactor: Any, server: ProsodyServer, plan: list[Connection]) -> list[Run]:
    assert server.ca_pem_path is not None
    ca_pem = server.ca_pem_path.read_bytes()
    jid, password = server.jid("words"), server.accounts["words"]
    return [await words_once(reactor, jid, password, ca_pem, connection) for connection in plan]


async def slixmpp_once(jid: str, password: str, ca: Path, connection: Connection) -> Run:
    port, resource = connection
    loop = asyncio.get_running_loop()
    xmpp = slixmpp.ClientXMPP(f"{jid}/{resource}", password)
    xmpp.ca_certs = ca
    xmpp.enable_direct_tls = False  # the port speaks STARTTLS: no direct-TLS attempt first
    xmpp.register_plugin("xep_0198")  # stream management: enabled after binding
    established: asyncio.Future[tuple[float, float]] = loop.create_future()
    disconnected: asyncio.Future[None] = loop.create_future()
    awaited = {"session_start", "sm_enabled"}

    def reached(event: str) -> Any:
        def handler(_: Any = None) -> None:
            awaited.discard(event)
            if not awaited and not established.done():
                established.set_result(instant())

        return handler

    def failed(event: str) -> Any:
        def handler(data: Any = None) -> None:
            if not established.done():
                established.set_exception(RuntimeError(f"slixmpp: {event} {data!r}"))

        return handler

    def closed(_: Any = None) -> None:
        if not disconnected.done():
            disconnected.set_result(None)

    for event in tuple(awaited):
        xmpp.add_event_handler(event, reached(event))
    for event in ("connection_failed", "failed_all_auth", "disconnected"):
        xmpp.add_event_handler(event, failed(event))
    xmpp.add_event_handler("disconnected", closed)
    began = instant()
    xmpp.connect(LOOPBACK, port)
    at = await asyncio.wait_for(established, TIMEOUT)
    xmpp.disconnect()
    await asyncio.wait_for(disconnected, TIMEOUT)
    await end_tasks_left_behind()
    return run_between(began, at)


async def end_tasks_left_behind() -> None:
    """Cancel and wait for the tasks a disconnected client left (slixmpp's send loop), which
    would otherwise be cancelled from its ``__del__`` and destroyed while pending."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for other in others:
        other.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def slixmpp_runs(server: ProsodyServer, plan: list[Connection]) -> list[Run]:
    assert server.ca_pem_path is not None
    jid, password = server.jid("slixmpp"), server.accounts["slixmpp"]
    return [await slixmpp_once(jid, password, server.ca_pem_path, c) for c in plan]


def aioxmpp_runs(
    python: str, server: ProsodyServer, plan: list[Connection]
) -> tuple[str, list[Run]]:
    """Run ``_aioxmpp_connect.py`` with *python*; return aioxmpp's version and the runs."""
    request = {
        "jid": server.jid("aioxmpp"),
        "password": server.accounts["aioxmpp"],
        "ca": str(server.ca_pem_path),
        "host": LOOPBACK,
        "connections": plan,
    }
    done = subprocess.run(
        [python, str(AIOXMPP_WORKER), json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + len(plan) * 2,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{python} {AIOXMPP_WORKER.name} exited {done.returncode}: {tail}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["version"], [Run(*run) for run in answer["runs"]]


# -- figures --------------------------------------------------------------------------------


@dataclass
class Result:
    """The figures of one library, in seconds: its measured connections and its proxied ones."""

    name: str
    #: What the library did to be ready, as one short line (the table's second row).
    steps: str
    direct: list[Run]
    proxied: list[Run]
    turns: list[int]

    def median_ms(self) -> float:
        return statistics.median((run.established - run.began) * 1000 for run in self.direct)

    def cells(self, delay: float) -> dict[str, str]:
        """The column of this library: one cell per row of :data:`ROWS`."""
        ms = [(run.established - run.began) * 1000 for run in self.direct]
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1]
        cpu = statistics.median(run.cpu * 1000 for run in self.direct)
        turns = sorted(set(self.turns))
        shown = str(turns[0]) if len(turns) == 1 else f"{turns[0]}-{turns[-1]}"
        proxied = statistics.median((run.established - run.began) * 1000 for run in self.proxied)
        extra = (proxied - statistics.median(ms)) / (delay * 1000)
        return {
            "steps": self.steps,
            "median ms": f"{statistics.median(ms):.1f}",
            "p90 ms": f"{p90:.1f}",
            "CPU ms (median)": f"{cpu:.1f}",
            "turns": shown,
            "proxied ms": f"{proxied:.1f}",
            "extra/delay": f"{extra:.1f}",
        }


#: The rows of the table, in order (one column per library).
ROWS = (
    "steps",
    "median ms",
    "p90 ms",
    "CPU ms (median)",
    "turns",
    "proxied ms",
    "extra/delay",
    "median / twisted.words",
)


def table(results: Sequence[Result], delay: float) -> list[str]:
    """One row per figure, one column per library."""
    columns = [result.cells(delay) for result in results]
    words = next((r for r in results if r.name.startswith("twisted.words")), None)
    for result, column in zip(results, columns, strict=True):
        ratio = "-" if words is None else f"{result.median_ms() / words.median_ms():.2f}x"
        column["median / twisted.words"] = ratio
    width = max(
        max(len(result.name) for result in results),
        max(len(cell) for column in columns for cell in column.values()),
    )
    label = max(len(row) for row in ROWS)
    lines = [f"{'':{label}}" + "".join(f"  {result.name:>{width}}" for result in results)]
    for row in ROWS:
        lines.append(f"{row:{label}}" + "".join(f"  {column[row]:>{width}}" for column in columns))
    return lines


class Bench:
    """The connections each library makes, and its figures from its runs.

    Each library makes :attr:`warmup` unmeasured and :attr:`connections` measured connections
    straight to Prosody, then :attr:`turn_runs` through the proxy, one after the other.
    """

    def __init__(self, args: argparse.Namespace, server: ProsodyServer, proxy: TurnProxy) -> None:
        self.warmup: int = args.warmup
        self.connections: int = args.connections
        self.turn_runs: int = args.turn_runs
        self.proxy = proxy
        direct = [
            (server.starttls_port, f"direct-{n}") for n in range(self.warmup + self.connections)
        ]
        proxied = [(proxy.port, f"proxied-{n}") for n in range(self.turn_runs)]
        self.plan: list[Connection] = direct + proxied
        self._first_proxied = 0

    def before(self) -> None:
        """Call before a library makes the connections of :attr:`plan`."""
        self._first_proxied = len(self.proxy.connections())

    def result(self, name: str, steps: str, runs: Sequence[Run]) -> Result:
        """The figures of a library from the *runs* of :attr:`plan` it has just made."""
        if len(runs) != len(self.plan):
            raise RuntimeError(f"{name}: {len(runs)} runs for {len(self.plan)} connections")
        measured = runs[self.warmup : self.warmup + self.connections]
        proxied = runs[self.warmup + self.connections :]
        bursts = self.proxy.connections()[self._first_proxied :]
        if len(bursts) != len(proxied):
            raise RuntimeError(f"{name}: {len(bursts)} proxy connections for {len(proxied)} runs")
        turns = [
            sum(1 for instant in instants if instant < run.established)
            for instants, run in zip(bursts, proxied, strict=True)
        ]
        return Result(name, steps, list(measured), list(proxied), turns)


def prosody_version(server: ProsodyServer) -> str:
    found = re.search(r"Prosody version (\S+)", server.log_text())
    return found.group(1) if found else "?"


def report(
    args: argparse.Namespace, server: ProsodyServer, results: list[Result], notes: list[str]
) -> None:
    delay = args.delay / 1000
    print(
        f"Prosody {prosody_version(server)} on {LOOPBACK}: STARTTLS, then each library's steps;"
        f" {args.connections} connections per library after {args.warmup} warm-ups,"
        " one at a time"
    )
    print(
        f"turns: client bursts through a proxy that delays the server's bytes by {args.delay:g} ms"
        f" ({args.turn_runs} connections); a strict RFC 6120 client takes {STRICT_TURNS}"
    )
    print()
    for line in table(results, delay):
        print(line)
    for note in notes:
        print(note)
    if args.json:
        figures = {
            result.name.split()[0]: {
                "name": result.name,
                "steps": result.steps,
                "median_ms": result.median_ms(),
            }
            for result in results
        }
        Path(args.json).write_text(json.dumps(figures))


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--connections", type=int, default=50, help="measured per library")
    options.add_argument("--warmup", type=int, default=3, help="unmeasured first connections")
    options.add_argument("--turn-runs", type=int, default=3, help="connections through the proxy")
    options.add_argument("--delay", type=float, default=20.0, help="the proxy's delay, ms")
    options.add_argument(
        "--aioxmpp-python",
        default=os.environ.get("AIOXMPP_PYTHON"),
        help="an interpreter that has aioxmpp (default: $AIOXMPP_PYTHON; unset: no aioxmpp)",
    )
    options.add_argument(
        "--json", metavar="FILE", help="also write each library's figures to FILE, for table.py"
    )
    args = options.parse_args()
    if args.connections < 2 or args.turn_runs < 1 or args.warmup < 0 or args.delay <= 0:
        options.error("needs --connections >= 2, --turn-runs >= 1, --warmup >= 0, --delay > 0")

    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-connect-") as directory:
        server = start_prosody(Path(directory), ACCOUNTS)
        proxy = TurnProxy(server.starttls_port, args.delay / 1000)
        try:
            bench = Bench(args, server, proxy)
            results: list[Result] = []
            notes: list[str] = []

            bench.before()
            runs = asyncio.run(slixmpp_runs(server, bench.plan))
            results.append(bench.result(f"slixmpp {slixmpp.__version__}", SLIXMPP_STEPS, runs))

            if args.aioxmpp_python:
                bench.before()
                try:
                    aioxmpp_version, runs = aioxmpp_runs(args.aioxmpp_python, server, bench.plan)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    notes.append(f"aioxmpp: failed, left out: {exc}")
                else:
                    results.append(bench.result(f"aioxmpp {aioxmpp_version}", AIOXMPP_STEPS, runs))
            else:
                notes.append("aioxmpp: left out (no --aioxmpp-python or $AIOXMPP_PYTHON)")

            async def twisted_part(reactor: Any) -> None:
                bench.before()
                runs = await words_runs(reactor, server, bench.plan)
                words = bench.result(f"twisted.words {version('twisted')}", WORDS_STEPS, runs)
                results.insert(0, words)
                bench.before()
                runs = await txxmppnode_runs(reactor, server, bench.plan)
                ours = bench.result(f"txxmppnode {version('txxmppnode')}", OURS_STEPS, runs)
                results.insert(0, ours)
                report(args, server, results, notes)

            task.react(lambda reactor: defer.Deferred.fromCoroutine(twisted_part(reactor)))
        finally:
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
