"""Idle clients: memory and CPU per established txxmppnode client in one process.

Run ``make bench-memory`` (or ``.venv/bin/python benchmarks/memory.py``).  About 35 seconds
with the defaults.

The benchmark starts its own Prosody (the test suite's :class:`ProsodyServer`, through
``_server.py``): loopback only, ``network_settings = { nagle = false }``, roster, saslauth,
tls, disco, ping and smacks (no MAM), its default limits (a 256 KiB stanza size limit, a
listen backlog of 128, nothing per account).  The clients of a library are all one account
with a resource each (``c0``, ``c1``, ...): registering an account takes a ``prosodyctl``
run of about 26 ms, one resource per client takes nothing.

txxmppnode
    ``--clients`` (1,000) ``Client`` objects in this process, on Twisted's default reactor
    under ``task.react``, all with one ``SecurityLayer``, connect over STARTTLS (TLS 1.3,
    SCRAM-SHA-1, bind, XEP-0198 enabled), ``--concurrency`` (50) at a time.  A first client is
    connected and stopped before anything is measured (lazy imports, the TLS context, first-use
    caches), then ``gc.collect()``.  The resident set size (``VmRSS`` in
    ``/proc/self/status``) is read before the clients connect and once all are established
    (after ``gc.collect()``): the difference divided by the clients is the memory per client,
    everything the process holds for one: Python objects, the OpenSSL connection and its
    buffers, the lxml parser.  Then nothing is sent for ``--idle`` (10) seconds of wall time
    and the CPU time this process used meanwhile (``getrusage``, user plus system) is
    printed, with Prosody's (``/proc/PID/stat``) over the same window; the stream's liveness
    check first asks the server for a sign of life after 60 s of silence, so a shorter window
    sees no traffic at all.  Then how many clients are still established, and how long
    stopping them all took (same concurrency).

slixmpp (``--slixmpp-clients``, 200; 0 to skip)
    The same method in a child process (``memory.py --slixmpp-worker``), which starts with a
    clean heap: ``ClientXMPP`` objects with the ``xep_0198`` plugin, STARTTLS only, a warm-up
    client, ``gc.collect()``, ``VmRSS`` before and after, ``getrusage`` over the idle window,
    then ``disconnect()``.  By default the clients share one ``ssl.SSLContext`` holding the
    test CA, as the txxmppnode clients share their security layer;
    ``--slixmpp-context own`` leaves each client the context it makes for itself, slixmpp's
    default, into which OpenSSL's default verify paths load the system's CA store.

TLS configuration
    In another child process, on the test CA: whether two verifiers of one ``SecurityLayer``
    share one ``SSL.Context``, and the time and the memory kept per object (``VmRSS``, over
    ``--tls-probe-count`` (300) of them) of ``tls_verifier()`` on one security layer, of a new
    security layer plus ``tls_verifier()`` with the CA file as trust root, and of the same
    with the platform's trust (a tenth as many).  The last two are also what every connection
    cost when each verifier built a context of its own, and what a program pays that makes
    one security layer per client (a password provider callable ``(jid, attempt)`` lets one
    security layer serve many accounts).

No figure is asserted: they are printed.  A client that fails to connect stops the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import slixmpp
from _server import LOOPBACK, ProsodyServer, cpu_seconds, rss_kib, start_prosody
from twisted.internet import defer, task

from txxmppnode import JID, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector

#: Seconds one connection, or stopping one client, may take before the benchmark gives up.
TIMEOUT = 60.0
#: The domain the TLS probe asks verifiers for (the certificate is never checked there).
PROBE_DOMAIN = "xmppnode.test"
ACCOUNTS = ("txxmppnode", "slixmpp")


@dataclass
class Figures:
    """What one library's run measured."""

    name: str
    clients: int
    connect_seconds: float
    rss_before_kib: int
    rss_after_kib: int
    idle_seconds: float
    idle_cpu_seconds: float
    still_established: int
    stop_seconds: float
    prosody_idle_cpu_seconds: float | None = None

    @property
    def kib_per_client(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.clients

    def lines(self) -> list[str]:
        cpu_ms = self.idle_cpu_seconds * 1000
        per_client_us = self.idle_cpu_seconds / self.idle_seconds / self.clients * 1e6
        return [
            f"{self.name}: {self.clients} clients established in {self.connect_seconds:.1f} s"
            f" ({self.clients / self.connect_seconds:.0f}/s)",
            f"  RSS {self.rss_before_kib / 1024:.1f} -> {self.rss_after_kib / 1024:.1f} MiB:"
            f" {self.kib_per_client:.1f} KiB per client",
            f"  idle {self.idle_seconds:g} s: {cpu_ms:.0f} ms CPU"
            f" ({cpu_ms / self.idle_seconds / 10:.2f}% of a core,"
            f" {per_client_us:.2f} us/s per client)"
            + (
                ""
                if self.prosody_idle_cpu_seconds is None
                else f", Prosody {self.prosody_idle_cpu_seconds * 1000:.0f} ms"
            ),
            f"  {self.still_established} of {self.clients} still established after it;"
            f" all stopped in {self.stop_seconds:.1f} s",
        ]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* so far (``/proc/PID/stat``), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- txxmppnode -----------------------------------------------------------------------------


class TxxmppnodeClients:
    """N txxmppnode clients of one account (resources ``c0``, ``c1``, ...), one SecurityLayer."""

    def __init__(self, reactor: Any, server: ProsodyServer, account: str) -> None:
        self.reactor = reactor
        self.port = server.starttls_port
        self.jid = server.jid(account)
        self.security = make_security_layer(
            server.accounts[account], trust_root=str(server.ca_pem_path)
        )

    async def connect(self, resource: str) -> Client:
        client = Client(
            JID.fromstr(f"{self.jid}/{resource}"),
            self.security,
            override_peer=[(LOOPBACK, self.port, STARTTLSConnector())],
            max_initial_attempts=1,
            reactor=self.reactor,
        )
        outcome = defer.race([client.on_stream_established.next(), client.on_failure.next()])
        outcome.addTimeout(TIMEOUT, self.reactor)
        client.start()
        which, value = await outcome
        if which != 0:
            raise RuntimeError(f"{resource} could not connect: {value!r}")
        return client


async def bounded(limit: int, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Call *jobs* (each returns a coroutine or a Deferred), at most *limit* running at a time;
    return their results."""
    semaphore = defer.DeferredSemaphore(limit)
    running = [semaphore.run(lambda job=job: defer.ensureDeferred(job())) for job in jobs]
    return await defer.gatherResults(running, consumeErrors=True)


async def measure_txxmppnode(
    reactor: Any, server: ProsodyServer, args: argparse.Namespace
) -> Figures:
    assert server.pid is not None
    pool = TxxmppnodeClients(reactor, server, "txxmppnode")
    warm = await pool.connect("warm-up")  # lazy imports, the TLS context, first-use caches
    await warm.stop()
    del warm
    gc.collect()
    rss_before = rss_kib()

    began = time.monotonic()
    jobs = [lambda n=n: pool.connect(f"c{n}") for n in range(args.clients)]
    clients: list[Client] = await bounded(args.concurrency, jobs)
    connect_seconds = time.monotonic() - began
    gc.collect()
    rss_after = rss_kib()

    cpu, prosody_cpu = cpu_seconds(), process_cpu_seconds(server.pid)
    await task.deferLater(reactor, args.idle, lambda: None)
    idle_cpu = cpu_seconds() - cpu
    prosody_idle_cpu = process_cpu_seconds(server.pid) - prosody_cpu
    still = sum(1 for client in clients if client.established)

    began = time.monotonic()
    await bounded(args.concurrency, [client.stop for client in clients])
    return Figures(
        name=f"txxmppnode {version('txxmppnode')}",
        clients=args.clients,
        connect_seconds=connect_seconds,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        idle_seconds=args.idle,
        idle_cpu_seconds=idle_cpu,
        still_established=still,
        stop_seconds=time.monotonic() - began,
        prosody_idle_cpu_seconds=prosody_idle_cpu,
    )


# -- slixmpp (in a child process) -----------------------------------------------------------


async def slixmpp_worker(options: dict[str, Any]) -> Figures:
    """N slixmpp clients of one account with stream management, as in the txxmppnode run."""
    import ssl

    shared = None
    if options["context"] == "shared":
        shared = ssl.create_default_context(cafile=options["ca"])

    async def connect(resource: str) -> slixmpp.ClientXMPP:
        loop = asyncio.get_running_loop()
        kwargs = {} if shared is None else {"ssl_context": shared}
        xmpp = slixmpp.ClientXMPP(f"{options['jid']}/{resource}", options["password"], **kwargs)
        if shared is None:
            xmpp.ca_certs = Path(options["ca"])  # loaded into the client's own context
        xmpp.enable_direct_tls = False
        xmpp.register_plugin("xep_0198")
        ready: asyncio.Future[None] = loop.create_future()
        awaited = {"session_start", "sm_enabled"}

        def reached(event: str) -> Callable[[Any], None]:
            def handler(_: Any = None) -> None:
                awaited.discard(event)
                if not awaited and not ready.done():
                    ready.set_result(None)

            return handler

        def failed(data: Any = None) -> None:
            if not ready.done():
                ready.set_exception(RuntimeError(f"{resource} could not connect: {data!r}"))

        for event in tuple(awaited):
            xmpp.add_event_handler(event, reached(event))
        for event in ("connection_failed", "failed_all_auth", "disconnected"):
            xmpp.add_event_handler(event, failed)
        xmpp.connect(LOOPBACK, options["port"])
        await asyncio.wait_for(ready, TIMEOUT)
        return xmpp

    async def disconnect(xmpp: slixmpp.ClientXMPP) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        xmpp.add_event_handler("disconnected", lambda _=None: done.done() or done.set_result(None))
        xmpp.disconnect()
        await asyncio.wait_for(done, TIMEOUT)

    semaphore = asyncio.Semaphore(options["concurrency"])

    async def limited(job: Any) -> Any:
        async with semaphore:
            return await job

    await disconnect(await connect("warm-up"))
    gc.collect()
    rss_before = rss_kib()
    began = time.monotonic()
    clients = await asyncio.gather(*(limited(connect(f"c{n}")) for n in range(options["clients"])))
    connect_seconds = time.monotonic() - began
    gc.collect()
    rss_after = rss_kib()
    cpu, prosody_cpu = cpu_seconds(), process_cpu_seconds(options["prosody_pid"])
    await asyncio.sleep(options["idle"])
    idle_cpu = cpu_seconds() - cpu
    prosody_idle_cpu = process_cpu_seconds(options["prosody_pid"]) - prosody_cpu
    still = sum(1 for xmpp in clients if xmpp.transport is not None and xmpp.sessionstarted)
    began = time.monotonic()
    await asyncio.gather(*(limited(disconnect(xmpp)) for xmpp in clients))
    stop_seconds = time.monotonic() - began
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for other in others:  # the send loops of the disconnected clients
        other.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    return Figures(
        name=f"slixmpp {slixmpp.__version__} ({options['context']} SSLContext)",
        clients=options["clients"],
        connect_seconds=connect_seconds,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        idle_seconds=options["idle"],
        idle_cpu_seconds=idle_cpu,
        still_established=still,
        stop_seconds=stop_seconds,
        prosody_idle_cpu_seconds=prosody_idle_cpu,
    )


def measure_slixmpp(server: ProsodyServer, args: argparse.Namespace) -> Figures:
    """Run :func:`slixmpp_worker` in a child process, which starts with a clean heap."""
    options = {
        "jid": server.jid("slixmpp"),
        "password": server.accounts["slixmpp"],
        "ca": str(server.ca_pem_path),
        "port": server.starttls_port,
        "clients": args.slixmpp_clients,
        "concurrency": args.concurrency,
        "idle": args.idle,
        "context": args.slixmpp_context,
        "prosody_pid": server.pid,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--slixmpp-worker", json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + args.idle + args.slixmpp_clients * 0.5,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the slixmpp worker exited {done.returncode}:\n{done.stderr[-2000:]}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return Figures(**fields)


# -- the TLS configuration ------------------------------------------------------------------


def tls_probe(ca: str, count: int) -> list[str]:
    """What a TLS connection creator costs: shared per SecurityLayer, or one per client."""
    lines = []
    layer = make_security_layer("secret", trust_root=ca)
    contexts = [getattr(layer.tls_verifier(PROBE_DOMAIN), "_context", None) for _ in range(2)]
    if None in contexts:
        lines.append("  one SecurityLayer, two verifiers: their SSL.Context cannot be seen")
    else:
        shared = contexts[0] is contexts[1]
        lines.append(
            f"  one SecurityLayer, two verifiers: {'one' if shared else 'two'} SSL.Context"
        )
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        ("tls_verifier() on one SecurityLayer", count, lambda: layer.tls_verifier(PROBE_DOMAIN)),
        (
            "a new SecurityLayer (CA file) + tls_verifier()",
            count,
            lambda: make_security_layer("secret", trust_root=ca).tls_verifier(PROBE_DOMAIN),
        ),
        (
            "a new SecurityLayer (platform trust) + tls_verifier()",
            max(1, count // 10),
            lambda: make_security_layer("secret").tls_verifier(PROBE_DOMAIN),
        ),
    ]
    for label, times, make in cases:
        make()  # the first call loads what is loaded once
        gc.collect()
        rss, began = rss_kib(), time.perf_counter()
        kept = [make() for _ in range(times)]
        seconds = time.perf_counter() - began
        gc.collect()
        kib = (rss_kib() - rss) / times
        lines.append(f"  {label}: {seconds / times * 1e6:.0f} us, {kib:.1f} KiB kept each")
        del kept
    return lines


def measure_tls(server: ProsodyServer, count: int) -> list[str]:
    """Run :func:`tls_probe` in a child process, away from the clients' heap."""
    done = subprocess.run(
        [sys.executable, __file__, "--tls-probe", str(server.ca_pem_path), str(count)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    if done.returncode != 0:
        return [f"  the TLS probe exited {done.returncode}: {done.stderr[-500:]}"]
    lines: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return lines


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--clients", type=int, default=1000, help="txxmppnode clients")
    options.add_argument("--concurrency", type=int, default=50, help="connections at a time")
    options.add_argument("--idle", type=float, default=10.0, help="idle wall time, seconds")
    options.add_argument(
        "--slixmpp-clients", type=int, default=200, help="slixmpp clients (0: no slixmpp run)"
    )
    options.add_argument(
        "--slixmpp-context",
        choices=("shared", "own"),
        default="shared",
        help="one ssl.SSLContext for all slixmpp clients, or each its own (slixmpp's default)",
    )
    options.add_argument("--tls-probe-count", type=int, default=300, help="objects per TLS case")
    options.add_argument("--slixmpp-worker", metavar="JSON", help=argparse.SUPPRESS)
    options.add_argument("--tls-probe", nargs=2, metavar=("CA", "COUNT"), help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.clients < 1 or args.concurrency < 1 or args.idle <= 0 or args.slixmpp_clients < 0:
        options.error(
            "needs --clients >= 1, --concurrency >= 1, --idle > 0, --slixmpp-clients >= 0"
        )

    if args.slixmpp_worker:
        figures = asyncio.run(slixmpp_worker(json.loads(args.slixmpp_worker)))
        print(json.dumps(asdict(figures)))
        return
    if args.tls_probe:
        print(json.dumps(tls_probe(args.tls_probe[0], int(args.tls_probe[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-memory-") as directory:
        server = start_prosody(Path(directory), ACCOUNTS)
        try:
            tls = measure_tls(server, args.tls_probe_count)
            slixmpp_figures = measure_slixmpp(server, args) if args.slixmpp_clients else None

            async def txxmppnode_part(reactor: Any) -> None:
                figures = await measure_txxmppnode(reactor, server, args)
                print(f"Prosody on {LOOPBACK}, one account per library, one resource per client;")
                print(f"connected {args.concurrency} at a time, then idle for {args.idle:g} s")
                print()
                for line in figures.lines():
                    print(line)
                if slixmpp_figures is not None:
                    for line in slixmpp_figures.lines():
                        print(line)
                    ratio = slixmpp_figures.kib_per_client / figures.kib_per_client
                    print(
                        f"memory per client, slixmpp/txxmppnode: {ratio:.2f}"
                        f" (at {slixmpp_figures.clients} and {figures.clients} clients)"
                    )
                print()
                print("TLS configuration (txxmppnode, in a separate process):")
                for line in tls:
                    print(line)

            task.react(lambda reactor: defer.Deferred.fromCoroutine(txxmppnode_part(reactor)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
