"""Idle clients: memory and CPU per established client in one process, beside the others.

Run ``make bench-memory`` (or ``.venv/bin/python benchmarks/memory.py``).  About 45 seconds
with the defaults; ``make bench-memory-10k`` (``--clients 10000``) takes about five minutes.

The benchmark starts its own Prosody (the test suite's :class:`ProsodyServer`, through
``_server.py``): loopback only, ``network_settings = { nagle = false }``, roster, saslauth,
tls, disco, ping and smacks (no MAM), ``network_backend = "epoll"`` (0.12's default, named so
that no ``select()`` backend with its 1,024-descriptor ceiling is ever used), its default
limits otherwise (a 256 KiB stanza size limit, a listen backlog of 128, nothing per account
or per address: ``mod_limits`` is not loaded).

Many streams: before Prosody starts, the benchmark raises ``RLIMIT_NOFILE`` of its own
process to the clients plus 1,024 (the hard limit too, which root may), and Prosody, its
child, inherits it.  It then checks ``MemAvailable``: a count that would not fit in 80 % of
it at 400 KiB per stream (client and Prosody together, generously) is lowered to what fits,
and the output says so.  The clients of a library are all one account
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
    sees no traffic at all -- unless connecting took longer than that (10,000 clients take
    about two minutes), when the first clients' checks fall into the window: the output
    counts the clients that received something in it, and the CPU per such check.  Then how
    many clients are still established, and how long stopping them all took (same
    concurrency).

twisted.words (``--words-clients``, 200; 0 to skip)
    The same method in a child process (``memory.py --words-worker``): sessions of
    ``benchmarks/_words.py`` (STARTTLS, ``PLAIN``, bind; twisted.words has no stream
    management), all with one TLS connection creator (``optionsForClientTLS`` on the test
    CA, hence one ``SSL.Context``), a warm-up session, ``gc.collect()``, ``VmRSS`` and
    ``mallinfo2`` before and after, ``getrusage`` over the idle window, then each closes
    with its footer.

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

OpenSSL per connection
    In the same child process: client TLS connections, each with its server end in-process
    over memory BIOs, as Twisted's TLS layer uses them (handshake, a few hundred bytes both
    ways, the TLS 1.3 tickets read), kept, their server ends dropped; glibc's bytes in use
    (``mallinfo2``) per connection, with txxmppnode's context settings, for OpenSSL's default
    key exchange (which is the hybrid post-quantum ``X25519MLKEM768`` with OpenSSL 3.5 and
    later), for ``X25519`` alone and for TLS 1.2.

tracemalloc (``--tracemalloc``, 200 clients; 0 to skip)
    In a child process of its own, that many clients are connected as in the main run with
    ``tracemalloc`` started after the warm-up client; printed are the Python heap per idle
    client and its largest parts by file and by line (``--top``).  With the main run's
    ``malloc`` figure (``mallinfo2``: OpenSSL, libxml2 and Python objects over 512 bytes) it
    splits what one idle stream holds.

No figure is asserted: they are printed.  A client that fails to connect stops the benchmark.
``--json FILE`` also writes each library's figures (those of :class:`Figures`, with the KiB
per client) to FILE, for ``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import resource
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
from _slixmpp_ready import ready_future
from twisted.internet import defer, task

from txxmppnode import JID, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector

#: Seconds one connection, or stopping one client, may take before the benchmark gives up.
TIMEOUT = 60.0
#: The domain the TLS probe asks verifiers for (the certificate is never checked there).
PROBE_DOMAIN = "xmppnode.test"
ACCOUNTS = ("txxmppnode", "words", "slixmpp")


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
    #: glibc's bytes in use (``mallinfo2``) before and after, where known: what OpenSSL,
    #: libxml2 and Python's larger objects took from ``malloc``.
    malloc_before: int | None = None
    malloc_after: int | None = None
    prosody_rss_kib: int | None = None
    #: Clients that received something during the idle window: the answers to their
    #: liveness checks (an ``<r/>`` after 60 s of silence), where known.
    woken: int | None = None

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
            f" {self.kib_per_client:.1f} KiB per client"
            + (
                ""
                if self.malloc_before is None or self.malloc_after is None
                else " (malloc in use:"
                f" {(self.malloc_after - self.malloc_before) / 1024 / self.clients:.1f}"
                " KiB per client)"
            )
            + (
                ""
                if self.prosody_rss_kib is None
                else f"; Prosody's RSS {self.prosody_rss_kib / 1024:.0f} MiB"
            ),
            f"  idle {self.idle_seconds:g} s: {cpu_ms:.0f} ms CPU"
            f" ({cpu_ms / self.idle_seconds / 10:.2f}% of a core,"
            f" {per_client_us:.2f} us/s per client)"
            + (
                ""
                if self.prosody_idle_cpu_seconds is None
                else f", Prosody {self.prosody_idle_cpu_seconds * 1000:.0f} ms"
            ),
            *(
                []
                if self.woken is None
                else [
                    f"  {self.woken} clients received something in the window: the answers to"
                    " their liveness checks (one <r/> after 60 s of silence)"
                    + (f", {cpu_ms / self.woken:.2f} ms CPU each" if self.woken else "")
                ]
            ),
            f"  {self.still_established} of {self.clients} still established after it;"
            f" all stopped in {self.stop_seconds:.1f} s",
        ]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* so far (``/proc/PID/stat``), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_in_use() -> int | None:
    """Bytes glibc's ``malloc`` has handed out and not got back (``mallinfo2``), or ``None``.

    Python's small objects live in arenas of their own and are not counted; OpenSSL's and
    libxml2's allocations, and Python objects over 512 bytes, are.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's ``RLIMIT_NOFILE`` to *wanted* (the hard limit too, as root);
    return the soft limit now in force.  Child processes (Prosody) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def available_kib() -> int:
    """``MemAvailable`` from ``/proc/meminfo``, in KiB."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


#: What one established stream costs, generously, in KiB: the client's (~100) and Prosody's
#: (measured ~60-80) with a margin; used only to refuse a count the machine cannot hold.
PLANNED_KIB_PER_STREAM = 400
#: File descriptors besides the connections (the interpreter, the listening sockets, logs).
SPARE_FDS = 1024
#: Prosody's configuration for many connections: the epoll backend (0.12's default, named
#: so that no select() backend and its 1,024-descriptor limit is used).
MANY_STREAMS_LUA = 'network_backend = "epoll"'


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
    rss_before, malloc_before = rss_kib(), malloc_in_use()

    began = time.monotonic()
    jobs = [lambda n=n: pool.connect(f"c{n}") for n in range(args.clients)]
    clients: list[Client] = await bounded(args.concurrency, jobs)
    connect_seconds = time.monotonic() - began
    gc.collect()
    rss_after, malloc_after = rss_kib(), malloc_in_use()
    prosody_rss = rss_kib(server.pid)

    def last_received() -> list[float | None]:
        return [None if c.stream.xmlstream is None else c.stream.xmlstream.last_received
                for c in clients]  # fmt: skip

    heard = last_received()
    cpu, prosody_cpu = cpu_seconds(), process_cpu_seconds(server.pid)
    await task.deferLater(reactor, args.idle, lambda: None)
    idle_cpu = cpu_seconds() - cpu
    prosody_idle_cpu = process_cpu_seconds(server.pid) - prosody_cpu
    woken = sum(1 for a, b in zip(heard, last_received(), strict=True) if a != b)
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
        malloc_before=malloc_before,
        malloc_after=malloc_after,
        prosody_rss_kib=prosody_rss,
        woken=woken,
    )


async def tracemalloc_worker(reactor: Any, options: dict[str, Any]) -> list[str]:
    """What the Python heap holds per idle txxmppnode client, by source line (tracemalloc).

    Run in a process of its own (tracemalloc slows everything and takes memory of its own);
    the clients connect as in the main run.  The lines are the allocations still alive once
    all clients are established, minus those alive before, divided by the clients.
    """
    import tracemalloc

    class Server:  # what TxxmppnodeClients reads of a ProsodyServer
        def __init__(self) -> None:
            self.starttls_port = options["port"]
            self.accounts = {"txxmppnode": options["password"]}
            self.ca_pem_path = options["ca"]

        @staticmethod
        def jid(account: str) -> str:
            return str(options["jid"])

    count, top = options["clients"], options["top"]
    pool = TxxmppnodeClients(reactor, Server(), "txxmppnode")  # type: ignore[arg-type]
    warm = await pool.connect("warm-up")
    await warm.stop()
    del warm
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    jobs = [lambda n=n: pool.connect(f"t{n}") for n in range(count)]
    clients: list[Client] = await bounded(options["concurrency"], jobs)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    here = str(Path(__file__).resolve().parent.parent) + os.sep
    lines = []
    for key in ("filename", "lineno"):
        diff = after.compare_to(before, key)
        total = sum(stat.size_diff for stat in diff)
        if key == "filename":
            lines.append(
                f"  Python heap per idle client: {total / count / 1024:.1f} KiB"
                f" ({count} clients); by file:"
            )
        else:
            lines.append(f"  by line, top {top}:")
        for stat in diff[:top]:
            frame = stat.traceback[0]
            where = frame.filename.replace(here, "").split("site-packages/")[-1]
            if key == "lineno":
                where += f":{frame.lineno}"
            size, objects = stat.size_diff / count, stat.count_diff / count
            lines.append(f"    {size:7.0f} B {objects:5.1f} objects  {where}")
    await bounded(options["concurrency"], [client.stop for client in clients])
    return lines


def measure_tracemalloc(server: ProsodyServer, args: argparse.Namespace) -> list[str]:
    """Run :func:`tracemalloc_worker` in a child process."""
    options = {
        "jid": server.jid("txxmppnode"),
        "password": server.accounts["txxmppnode"],
        "ca": str(server.ca_pem_path),
        "port": server.starttls_port,
        "clients": args.tracemalloc,
        "concurrency": args.concurrency,
        "top": args.top,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--tracemalloc-worker", json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + args.tracemalloc * 0.5,
        check=False,
    )
    if done.returncode != 0:
        return [f"  the tracemalloc worker exited {done.returncode}: {done.stderr[-1000:]}"]
    lines: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return lines


# -- twisted.words (in a child process) -----------------------------------------------------


async def words_worker(reactor: Any, options: dict[str, Any]) -> Figures:
    """N twisted.words sessions of one account (STARTTLS, PLAIN, bind; no stream management).

    The sessions share one TLS connection creator, hence one ``SSL.Context``, as the
    txxmppnode clients share their security layer.
    """
    from _words import WordsSession, words_connect
    from twisted.internet import ssl

    ca_pem = Path(options["ca"]).read_bytes()
    domain = options["jid"].split("@", 1)[1]
    tls = ssl.optionsForClientTLS(domain, trustRoot=ssl.Certificate.loadPEM(ca_pem))

    def connect(resource: str) -> defer.Deferred[WordsSession]:
        account = f"{options['jid']}/{resource}"
        ready = words_connect(
            reactor, account, options["password"], ca_pem, LOOPBACK, options["port"], tls
        )
        return ready.addTimeout(TIMEOUT, reactor)

    await (await connect("warm-up")).close()
    gc.collect()
    rss_before, malloc_before = rss_kib(), malloc_in_use()
    began = time.monotonic()
    jobs = [lambda n=n: connect(f"c{n}") for n in range(options["clients"])]
    sessions: list[WordsSession] = await bounded(options["concurrency"], jobs)
    connect_seconds = time.monotonic() - began
    gc.collect()
    rss_after, malloc_after = rss_kib(), malloc_in_use()
    cpu, prosody_cpu = cpu_seconds(), process_cpu_seconds(options["prosody_pid"])
    await task.deferLater(reactor, options["idle"], lambda: None)
    idle_cpu = cpu_seconds() - cpu
    prosody_idle_cpu = process_cpu_seconds(options["prosody_pid"]) - prosody_cpu
    still = sum(1 for session in sessions if session.stream.transport.connected)
    began = time.monotonic()
    await bounded(options["concurrency"], [session.close for session in sessions])
    return Figures(
        name=f"twisted.words {version('twisted')} (one SSL.Context, no SM)",
        clients=options["clients"],
        connect_seconds=connect_seconds,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        idle_seconds=options["idle"],
        idle_cpu_seconds=idle_cpu,
        still_established=still,
        stop_seconds=time.monotonic() - began,
        prosody_idle_cpu_seconds=prosody_idle_cpu,
        malloc_before=malloc_before,
        malloc_after=malloc_after,
    )


def measure_words(server: ProsodyServer, args: argparse.Namespace) -> Figures:
    """Run :func:`words_worker` in a child process, which starts with a clean heap."""
    options = {
        "jid": server.jid("words"),
        "password": server.accounts["words"],
        "ca": str(server.ca_pem_path),
        "port": server.starttls_port,
        "clients": args.words_clients,
        "concurrency": args.concurrency,
        "idle": args.idle,
        "prosody_pid": server.pid,
    }
    return run_worker("--words-worker", "twisted.words", options)


# -- slixmpp (in a child process) -----------------------------------------------------------


async def slixmpp_worker(options: dict[str, Any]) -> Figures:
    """N slixmpp clients of one account with stream management, as in the txxmppnode run."""
    import ssl

    shared = None
    if options["context"] == "shared":
        shared = ssl.create_default_context(cafile=options["ca"])

    async def connect(resource: str) -> slixmpp.ClientXMPP:
        kwargs = {} if shared is None else {"ssl_context": shared}
        xmpp = slixmpp.ClientXMPP(f"{options['jid']}/{resource}", options["password"], **kwargs)
        if shared is None:
            xmpp.ca_certs = Path(options["ca"])  # loaded into the client's own context
        xmpp.enable_direct_tls = False
        xmpp.register_plugin("xep_0198")
        failures = ("connection_failed", "failed_all_auth", "disconnected")
        ready = ready_future(xmpp, resource, failures)
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
    return run_worker("--slixmpp-worker", "slixmpp", options)


def run_worker(flag: str, library: str, options: dict[str, Any]) -> Figures:
    """Run this script with *flag* and *options* in a child process (a clean heap); return the
    figures it prints last."""
    done = subprocess.run(
        [sys.executable, __file__, flag, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + options["idle"] + options["clients"] * 0.5,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {library} worker exited {done.returncode}:\n{done.stderr[-2000:]}")
    return Figures(**json.loads(done.stdout.strip().splitlines()[-1]))


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


def tls_connection_probe(count: int) -> list[str]:
    """What OpenSSL keeps per established TLS connection, client side, by key exchange.

    *count* client connections, each with its server end in this process over memory BIOs
    (as Twisted's TLS layer uses them), complete the handshake, read a few hundred bytes of
    application data both ways (and the TLS 1.3 session tickets), and are kept; the server
    ends are dropped.  Measured: glibc's bytes in use per client connection (``mallinfo2``),
    with the context txxmppnode makes (``SSL_MODE_RELEASE_BUFFERS``, no session cache),
    with OpenSSL's default key exchange groups and with X25519 alone, and with TLS 1.2.
    """
    import tempfile

    import trustme
    from OpenSSL import SSL
    from OpenSSL._util import ffi
    from OpenSSL._util import lib as openssl

    ca = trustme.CA()
    issued = ca.issue_cert(PROBE_DOMAIN)
    server_context = SSL.Context(SSL.TLS_SERVER_METHOD)
    with tempfile.TemporaryDirectory() as directory:
        key, chain = Path(directory, "key.pem"), Path(directory, "chain.pem")
        issued.private_key_pem.write_to_path(str(key))
        chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        server_context.use_privatekey_file(str(key))
        server_context.use_certificate_chain_file(str(chain))

    def client_context(groups: bytes | None, max_version: int | None) -> Any:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_verify(SSL.VERIFY_NONE)  # the verification's cost is not measured here
        if max_version is not None:
            context.set_max_proto_version(max_version)
        if groups is not None and openssl.SSL_CTX_set1_curves_list(context._context, groups) != 1:
            raise RuntimeError(f"OpenSSL refused the groups {groups!r}")
        return context

    def pump(one: Any, other: Any) -> None:
        moved = True
        while moved:
            moved = False
            for end in (one, other):
                with contextlib.suppress(SSL.WantReadError):
                    end.do_handshake()
            for source, target in ((one, other), (other, one)):
                try:
                    data = source.bio_read(65536)
                except SSL.WantReadError:
                    continue
                if data:
                    target.bio_write(data)
                    moved = True

    def read_all(end: Any) -> None:
        with contextlib.suppress(SSL.WantReadError):
            end.recv(65536)

    def connection(context: Any) -> tuple[Any, str]:
        client = SSL.Connection(context, None)
        client.set_connect_state()
        client.set_tlsext_host_name(PROBE_DOMAIN.encode())
        server = SSL.Connection(server_context, None)
        server.set_accept_state()
        pump(client, server)
        server.send(b"<stream:features/>" * 20)
        pump(client, server)
        read_all(client)
        client.send(b"<iq type='get' id='1'/>" * 20)
        pump(client, server)
        read_all(server)
        group = openssl.SSL_get0_group_name(client._ssl)
        name = ffi.string(group).decode() if group != ffi.NULL else "?"
        return client, f"{client.get_protocol_version_name()} {name}"

    lines = []
    cases = [
        ("OpenSSL's default groups", client_context(None, None)),
        ("X25519 only", client_context(b"X25519", None)),
        ("TLS 1.2", client_context(None, SSL.TLS1_2_VERSION)),
    ]
    for label, context in cases:
        connection(context)  # what is loaded once
        gc.collect()
        before = malloc_in_use()
        if before is None:
            return ["  OpenSSL per connection: mallinfo2 is not available here"]
        kept = [connection(context) for _ in range(count)]
        gc.collect()
        used = (malloc_in_use() or 0) - before
        lines.append(
            f"  OpenSSL per client connection, {label} ({kept[0][1]}):"
            f" {used / count / 1024:.1f} KiB in use"
        )
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
        "--words-clients",
        type=int,
        default=200,
        help="twisted.words clients (0: no twisted.words run)",
    )
    options.add_argument(
        "--slixmpp-context",
        choices=("shared", "own"),
        default="shared",
        help="one ssl.SSLContext for all slixmpp clients, or each its own (slixmpp's default)",
    )
    options.add_argument("--tls-probe-count", type=int, default=300, help="objects per TLS case")
    options.add_argument(
        "--tracemalloc",
        type=int,
        default=200,
        help="clients of the tracemalloc breakdown, in a process of its own (0: none)",
    )
    options.add_argument("--top", type=int, default=15, help="tracemalloc lines shown")
    options.add_argument(
        "--json", metavar="FILE", help="also write each library's figures to FILE, for table.py"
    )
    options.add_argument("--slixmpp-worker", metavar="JSON", help=argparse.SUPPRESS)
    options.add_argument("--words-worker", metavar="JSON", help=argparse.SUPPRESS)
    options.add_argument("--tracemalloc-worker", metavar="JSON", help=argparse.SUPPRESS)
    options.add_argument("--tls-probe", nargs=2, metavar=("CA", "COUNT"), help=argparse.SUPPRESS)
    args = options.parse_args()
    if (
        args.clients < 1
        or args.concurrency < 1
        or args.idle <= 0
        or args.slixmpp_clients < 0
        or args.words_clients < 0
    ):
        options.error(
            "needs --clients >= 1, --concurrency >= 1, --idle > 0,"
            " --slixmpp-clients >= 0, --words-clients >= 0"
        )

    if args.slixmpp_worker:
        figures = asyncio.run(slixmpp_worker(json.loads(args.slixmpp_worker)))
        print(json.dumps(asdict(figures)))
        return
    if args.tls_probe:
        count = int(args.tls_probe[1])
        print(json.dumps(tls_probe(args.tls_probe[0], count) + tls_connection_probe(count)))
        return
    if args.words_worker:
        words_found: list[Figures] = []

        async def words(reactor: Any) -> None:
            words_found.append(await words_worker(reactor, json.loads(args.words_worker)))

        try:
            task.react(lambda reactor: defer.Deferred.fromCoroutine(words(reactor)))
        except SystemExit as exit_:
            if exit_.code:
                raise
        print(json.dumps(asdict(words_found[0])))
        return
    if args.tracemalloc_worker:
        found: list[list[str]] = []

        async def traced(reactor: Any) -> None:
            found.append(await tracemalloc_worker(reactor, json.loads(args.tracemalloc_worker)))

        try:
            task.react(lambda reactor: defer.Deferred.fromCoroutine(traced(reactor)))
        except SystemExit as exit_:
            if exit_.code:
                raise
        print(json.dumps(found[0]))
        return

    streams = max(args.clients, args.words_clients, args.slixmpp_clients, args.tracemalloc)
    notes = []
    limit = raise_fd_limit(streams + SPARE_FDS)
    if limit < streams + SPARE_FDS:
        fitting = max(1, limit - SPARE_FDS)
        notes.append(f"file descriptors: the limit is {limit}; {fitting} clients at most")
        args.clients = min(args.clients, fitting)
    room = available_kib() * 8 // 10 // PLANNED_KIB_PER_STREAM
    if args.clients > room:
        notes.append(
            f"memory: {available_kib() // 1024} MiB available holds about {room} streams"
            f" (planning {PLANNED_KIB_PER_STREAM} KiB each, client and Prosody);"
            f" {room} clients instead of {args.clients}"
        )
        args.clients = room
    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-memory-") as directory:
        server = start_prosody(Path(directory), ACCOUNTS, global_config_lua=MANY_STREAMS_LUA)
        try:
            tls = measure_tls(server, args.tls_probe_count)
            traced = measure_tracemalloc(server, args) if args.tracemalloc else []
            slixmpp_figures = measure_slixmpp(server, args) if args.slixmpp_clients else None
            words_figures = measure_words(server, args) if args.words_clients else None

            async def txxmppnode_part(reactor: Any) -> None:
                figures = await measure_txxmppnode(reactor, server, args)
                print(f"Prosody on {LOOPBACK}, one account per library, one resource per client;")
                print(f"connected {args.concurrency} at a time, then idle for {args.idle:g} s")
                print(f"RLIMIT_NOFILE {limit} (this process and Prosody)")
                for note in notes:
                    print(note)
                print()
                for line in figures.lines():
                    print(line)
                if words_figures is not None:
                    for line in words_figures.lines():
                        print(line)
                    ratio = words_figures.kib_per_client / figures.kib_per_client
                    print(
                        f"memory per client, twisted.words/txxmppnode: {ratio:.2f}"
                        f" (at {words_figures.clients} and {figures.clients} clients)"
                    )
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
                if traced:
                    print()
                    print("tracemalloc (txxmppnode, in a separate process):")
                    for line in traced:
                        print(line)
                if args.json:
                    ran = [
                        ("txxmppnode", figures),
                        ("twisted.words", words_figures),
                        ("slixmpp", slixmpp_figures),
                    ]
                    found = {
                        library: {**asdict(one), "kib_per_client": one.kib_per_client}
                        for library, one in ran
                        if one is not None
                    }
                    Path(args.json).write_text(json.dumps(found))

            task.react(lambda reactor: defer.Deferred.fromCoroutine(txxmppnode_part(reactor)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
