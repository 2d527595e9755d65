"""Messages end to end: the client's CPU time per 1,000 messages A -> B through a local Prosody.

Run ``make bench-messages`` (or ``.venv/bin/python benchmarks/messages.py``).  About a minute.

The benchmark starts its own Prosody through ``_server.py`` (loopback only, Nagle off, the
modules roster, saslauth, tls, disco, ping and smacks; no MAM, no rate limits), with two
accounts per library, and measures three libraries against it, each in processes of its own
(this script started again with ``--child LIBRARY``):

txxmppnode
    Two ``Client`` objects, A and B, over STARTTLS with SCRAM-SHA-1 and XEP-0198 stream
    management.  A sends with ``Client.enqueue`` (the stream writes what one reactor turn
    queued in one transport write, with one ``<r/>``); B counts with a message callback.
twisted.words
    Two ``XMPPClientFactory`` streams (``_words.py``: STARTTLS, SASL PLAIN, bind, no stream
    management, which twisted.words does not have).  A builds each message as a ``domish``
    element and calls ``XmlStream.send`` (one transport write each); B counts with an
    observer of ``/message``.
slixmpp
    Two ``ClientXMPP`` objects with the ``xep_0198`` plugin (its default: an ``<r/>`` after
    every 5 stanzas; the round asks once more at its end if stanzas are left unacknowledged).
    A calls ``send_message``; B counts in its ``message`` event handler.

**Both clients, sender and receiver, run in the one process of their library**, so the CPU
figure is the sum of both sides: building, checking, serialising, encrypting and writing on
A; reading, decrypting, parsing, dispatching and counting on B; the acknowledgements both
ways where the library has stream management.  Prosody runs in its own process and is not
counted.

Each child connects A and B, sends one unmeasured warm-up round, then one measured round:
``--messages`` (1,000) chat messages to B's full JID, all the same size (a ``<body>`` of
``--body`` (100) characters), sent in one go. The round ends when B has counted all of them
and, with stream management, A's server has acknowledged all of them (txxmppnode: the last
token ``ACKED``; slixmpp: its unacknowledged queue empty); twisted.words ends when B has
counted them. Over the round the child takes the wall time and its own CPU time (user plus
system, ``getrusage``), after a ``gc.collect()`` just before it: a full collection of what the
connections and the warm-up left (about 20 ms here) would otherwise fall into the round of one
library and not another's, depending only on when the heap's counters come due. The collector
stays on: what the round itself allocates is collected as usual. The libraries take turns, one
child each per turn, for ``--rounds`` (5) turns, so that the machine's other load falls on
every column alike; the table has the median per library and, for txxmppnode, its ratio to the
others. ``--profile FILE`` writes the cProfile statistics of one more txxmppnode child's
measured round to FILE (``pstats``) and prints its top entries; ``benchmarks/PROFILE.md`` keeps
them.

No timing is asserted: the figures are printed.  A message that does not arrive, or a client
that cannot connect, stops the benchmark.  ``--json FILE`` also writes each library's
medians (client CPU ms per 1,000 messages, messages/s) to FILE, for ``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _server import LOOPBACK, ProsodyServer, cpu_seconds, start_prosody

#: Seconds one connection or one round may take before the benchmark gives up.
TIMEOUT = 60.0
LIBRARIES = ("txxmppnode", "twisted.words", "slixmpp")
#: The two accounts of each library (its sender and its receiver).
ACCOUNTS = {
    "txxmppnode": ("ours-a", "ours-b"),
    "twisted.words": ("words-a", "words-b"),
    "slixmpp": ("slix-a", "slix-b"),
}


def body(n: int, size: int) -> str:
    """The body of message *n*: *size* characters, the same for every library."""
    head = f"message {n:07d} "
    return (head + "x" * size)[:size]


class Window:
    """The wall and CPU time of one measured round."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._began = (0.0, 0.0)

    def begin(self) -> None:
        gc.collect()  # what the connections and the warm-up left is not the round's to collect
        self._began = (time.monotonic(), cpu_seconds())

    def end(self) -> None:
        self.wall = time.monotonic() - self._began[0]
        self.cpu = cpu_seconds() - self._began[1]


# -- txxmppnode -----------------------------------------------------------------------------


async def txxmppnode_child(reactor: Any, options: dict[str, Any], profile: str | None) -> Window:
    from twisted.internet import defer

    from txxmppnode import JID, Message, MessageType, StanzaState, make_security_layer
    from txxmppnode.client import Client
    from txxmppnode.connector import STARTTLSConnector

    def client(account: dict[str, str]) -> Client:
        security = make_security_layer(account["password"], trust_root=options["ca"])
        return Client(
            JID.fromstr(f"{account['jid']}/bench"),
            security,
            override_peer=[(LOOPBACK, options["port"], STARTTLSConnector())],
            max_initial_attempts=1,
            reactor=reactor,
        )

    async def establish(c: Client) -> None:
        outcome = defer.race([c.on_stream_established.next(), c.on_failure.next()])
        outcome.addTimeout(TIMEOUT, reactor)
        c.start()
        which, value = await outcome
        if which != 0:
            raise RuntimeError(f"{c.local_jid} could not connect: {value!r}")
        if not c.stream.sm_enabled:
            raise RuntimeError(f"{c.local_jid}: established without stream management")

    sender, receiver = client(options["a"]), client(options["b"])
    await establish(receiver)
    await establish(sender)
    counted = 0
    wanted = 0
    all_in: defer.Deferred[None] = defer.Deferred()

    def count(_: Message) -> None:
        nonlocal counted
        counted += 1
        if counted == wanted:
            all_in.callback(None)

    receiver.stream.register_message_callback(MessageType.CHAT, sender.local_jid, count)
    to = receiver.local_jid
    window = Window()
    for measured in (False, True):
        counted, wanted, all_in = 0, options["messages"], defer.Deferred()
        texts = [body(n, options["body"]) for n in range(wanted)]
        window.begin()
        profiler = _profiler(profile) if measured else None
        tokens = [sender.enqueue(Message(to=to, type_=MessageType.CHAT, body=t)) for t in texts]
        done = defer.gatherResults([all_in, tokens[-1].deferred()])
        done.addTimeout(TIMEOUT, reactor)
        await done
        window.end()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        if {token.state for token in tokens} != {StanzaState.ACKED} or counted != wanted:
            raise RuntimeError(f"txxmppnode: {counted} of {wanted} received, not all acked")
    await sender.stop()
    await receiver.stop()
    return window


def _profiler(path: str | None) -> Any:
    if path is None:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


# -- twisted.words --------------------------------------------------------------------------


async def words_child(reactor: Any, options: dict[str, Any]) -> Window:
    from _words import words_connect
    from twisted.internet import defer
    from twisted.words.xish import domish

    ca_pem = Path(options["ca"]).read_bytes()

    def connect(account: dict[str, str]) -> Any:
        ready = words_connect(
            reactor, f"{account['jid']}/bench", account["password"], ca_pem, LOOPBACK,
            options["port"],
        )  # fmt: skip
        ready.addTimeout(TIMEOUT, reactor)
        return ready

    receiver = await connect(options["b"])
    sender = await connect(options["a"])
    counted = 0
    wanted = 0
    all_in: defer.Deferred[None] = defer.Deferred()

    def count(_: Any) -> None:
        nonlocal counted
        counted += 1
        if counted == wanted:
            all_in.callback(None)

    receiver.stream.addObserver("/message", count)
    to = f"{options['b']['jid']}/bench"
    window = Window()
    for _ in range(2):
        counted, wanted, all_in = 0, options["messages"], defer.Deferred()
        texts = [body(n, options["body"]) for n in range(wanted)]
        window.begin()
        for text in texts:
            message = domish.Element((None, "message"))
            message["to"] = to
            message["type"] = "chat"
            message.addElement("body", content=text)
            sender.stream.send(message)
        all_in.addTimeout(TIMEOUT, reactor)
        await all_in
        window.end()
        if counted != wanted:
            raise RuntimeError(f"twisted.words: {counted} of {wanted} received")
    await sender.close()
    await receiver.close()
    return window


# -- slixmpp --------------------------------------------------------------------------------


async def slixmpp_child(options: dict[str, Any]) -> Window:
    import ssl

    import slixmpp
    from _slixmpp_ready import ready_future

    context = ssl.create_default_context(cafile=options["ca"])

    async def connect(account: dict[str, str]) -> slixmpp.ClientXMPP:
        xmpp = slixmpp.ClientXMPP(
            f"{account['jid']}/bench", account["password"], ssl_context=context
        )
        xmpp.enable_direct_tls = False
        xmpp.register_plugin("xep_0198")
        ready = ready_future(xmpp, "slixmpp", ("connection_failed", "failed_all_auth"))
        xmpp.connect(LOOPBACK, options["port"])
        await asyncio.wait_for(ready, TIMEOUT)
        return xmpp

    receiver = await connect(options["b"])
    sender = await connect(options["a"])
    sm = sender.plugin["xep_0198"]
    loop = asyncio.get_running_loop()
    counted = 0
    wanted = 0
    all_in: asyncio.Future[None] = loop.create_future()
    all_acked: asyncio.Future[None] = loop.create_future()

    def count(_: Any) -> None:
        nonlocal counted
        counted += 1
        if counted == wanted and not all_in.done():
            all_in.set_result(None)

    def acked(_: Any) -> None:
        if counted == wanted and not sm.unacked_queue and not all_acked.done():
            all_acked.set_result(None)

    receiver.add_event_handler("message", count)
    sender.add_event_handler("stanza_acked", acked)
    to = f"{options['b']['jid']}/bench"
    window = Window()
    for _ in range(2):
        counted, wanted = 0, options["messages"]
        all_in, all_acked = loop.create_future(), loop.create_future()
        texts = [body(n, options["body"]) for n in range(wanted)]
        window.begin()
        for text in texts:
            sender.send_message(mto=to, mbody=text, mtype="chat")
        await asyncio.wait_for(all_in, TIMEOUT)
        if sm.unacked_queue:
            # its <r/> goes after every 5th stanza counted since enabling, which need not be
            # the last of the round: ask once more for what is left
            sm.request_ack()
            await asyncio.wait_for(all_acked, TIMEOUT)
        window.end()
        if counted != wanted:
            raise RuntimeError(f"slixmpp: {counted} of {wanted} received")
    for xmpp in (sender, receiver):
        xmpp.disconnect()
    await asyncio.sleep(0.2)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for other in others:  # the send loops of the disconnected clients
        other.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    return window


# -- the parent -----------------------------------------------------------------------------


def child(library: str, options: dict[str, Any], profile: str | None) -> Window:
    """Run *library*'s round in this process."""
    if library == "slixmpp":
        return asyncio.run(slixmpp_child(options))
    from twisted.internet import defer, task

    result: list[Window] = []

    async def run(reactor: Any) -> None:
        if library == "txxmppnode":
            result.append(await txxmppnode_child(reactor, options, profile))
        else:
            result.append(await words_child(reactor, options))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exit_:
        if exit_.code:
            raise
    return result[0]


def run_child(
    library: str, server: ProsodyServer, args: argparse.Namespace, profile: str | None = None
) -> Window:
    a, b = ACCOUNTS[library]
    options = {
        "a": {"jid": server.jid(a), "password": server.accounts[a]},
        "b": {"jid": server.jid(b), "password": server.accounts[b]},
        "ca": str(server.ca_pem_path),
        "port": server.starttls_port,
        "messages": args.messages,
        "body": args.body,
    }
    command = [sys.executable, __file__, "--child", library, json.dumps(options)]
    if profile is not None:
        command += ["--profile", profile]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT * 3, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {library} child exited {done.returncode}:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    window = Window()
    window.wall, window.cpu = figures["wall"], figures["cpu"]
    return window


def versions() -> dict[str, str]:
    return {
        "txxmppnode": f"txxmppnode {version('txxmppnode')}",
        "twisted.words": f"twisted.words {version('twisted')}",
        "slixmpp": f"slixmpp {version('slixmpp')}",
    }


def report(args: argparse.Namespace, windows: dict[str, list[Window]]) -> None:
    names = versions()
    per_1000 = {
        library: statistics.median(w.cpu / args.messages * 1000 * 1000 for w in runs)
        for library, runs in windows.items()
    }
    rate = {
        library: statistics.median(args.messages / w.wall for w in runs)
        for library, runs in windows.items()
    }
    width = max(len(name) for name in names.values())
    label = 34
    print(
        f"{args.messages} chat messages A -> B through Prosody on {LOOPBACK} (STARTTLS),"
        f" {args.body}-character bodies; median of {args.rounds} rounds, the libraries taking"
        " turns, each round in a process of its own after a warm-up round"
    )
    print("CPU: the one process holding both clients (sender and receiver); Prosody not counted")
    print()
    print(f"{'':{label}}" + "".join(f"  {names[lib]:>{width}}" for lib in windows))
    rows = [
        ("stream management", {lib: "no" if lib == "twisted.words" else "yes" for lib in windows}),
        ("client CPU ms per 1,000 messages", {lib: f"{per_1000[lib]:.1f}" for lib in windows}),
        ("messages/s (wall)", {lib: f"{rate[lib]:,.0f}" for lib in windows}),
        (
            "CPU / txxmppnode's",
            {lib: f"{per_1000[lib] / per_1000['txxmppnode']:.2f}x" for lib in windows},
        ),
    ]
    for name, cells in rows:
        print(f"{name:{label}}" + "".join(f"  {cells[lib]:>{width}}" for lib in windows))


def write_json(args: argparse.Namespace, windows: dict[str, list[Window]]) -> None:
    """Write the medians of :func:`report` to ``args.json``, one entry per library."""
    names = versions()
    figures = {
        library: {
            "name": names[library],
            "cpu_ms_per_1000": statistics.median(w.cpu / args.messages * 1e6 for w in runs),
            "messages_per_second": statistics.median(args.messages / w.wall for w in runs),
            "stream_management": library != "twisted.words",
        }
        for library, runs in windows.items()
    }
    Path(args.json).write_text(json.dumps(figures))


def print_profile(path: str, top: int) -> None:
    import pstats

    for order in ("tottime", "cumulative"):
        print()
        print(f"txxmppnode, measured round, by {order}, top {top}:")
        stats = pstats.Stats(path)
        stats.strip_dirs().sort_stats(order).print_stats(top)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--messages", type=int, default=1000, help="messages per round")
    options.add_argument("--body", type=int, default=100, help="characters per <body>")
    options.add_argument("--rounds", type=int, default=5, help="measured rounds per library")
    options.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help="comma-separated, of " + ", ".join(LIBRARIES),
    )
    options.add_argument("--profile", metavar="FILE", help="cProfile one more txxmppnode round")
    options.add_argument("--top", type=int, default=25, help="profile entries printed")
    options.add_argument(
        "--json", metavar="FILE", help="also write each library's figures to FILE, for table.py"
    )
    options.add_argument("--child", metavar="LIBRARY", help=argparse.SUPPRESS)
    options.add_argument("options", nargs="?", help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.child:
        window = child(args.child, json.loads(args.options), args.profile)
        print(json.dumps({"wall": window.wall, "cpu": window.cpu}))
        return
    libraries = [name for name in args.libraries.split(",") if name]
    if args.messages < 1 or args.body < 20 or args.rounds < 1 or not libraries:
        options.error("needs --messages >= 1, --body >= 20, --rounds >= 1, a library")
    unknown = set(libraries) - set(LIBRARIES)
    if unknown:
        options.error(f"unknown libraries: {', '.join(sorted(unknown))}")

    accounts = [account for library in libraries for account in ACCOUNTS[library]]
    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-messages-") as directory:
        server = start_prosody(Path(directory), accounts)
        try:
            windows: dict[str, list[Window]] = {library: [] for library in libraries}
            for _ in range(args.rounds):
                for library in libraries:
                    windows[library].append(run_child(library, server, args))
            if "txxmppnode" in libraries:
                report(args, windows)
            else:
                for library, runs in windows.items():
                    cpu = statistics.median(w.cpu for w in runs) / args.messages * 1e6
                    print(f"{library}: {cpu:.1f} CPU ms per 1,000 messages")
            if args.json:
                write_json(args, windows)
            if args.profile:
                run_child("txxmppnode", server, args, args.profile)
                print_profile(args.profile, args.top)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
