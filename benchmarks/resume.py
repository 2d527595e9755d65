"""Stream resumption after a cut, and the client's CPU time per 1,000 messages: txxmppnode only.

Run ``make bench-resume`` (or ``.venv/bin/python benchmarks/resume.py``).  A few seconds.

The benchmark starts its own Prosody through ``_server.py`` (loopback only, Nagle off, the
modules roster, saslauth, tls, disco, ping and smacks), with three accounts, and runs on
Twisted's default reactor under ``task.react``.  Every client connects over STARTTLS (TLS 1.3,
SCRAM-SHA-1) and enables XEP-0198 stream management with resumption.

Resume after a cut
------------------
One client connects through the test suite's :class:`FaultProxy` (``tests/support/proxy.py``,
in this process, on the same reactor), which forwards to Prosody's STARTTLS port.  Then, ``--cuts``
(30) times: ``proxy.cut()`` resets both TCP connections (client and server side) at once, and
the time is taken from just before the cut to ``on_stream_resumed`` (``time.monotonic()``).
The client reconnects at once after a drop (no back-off for the first attempt), through the
proxy again: a new TCP connection, STARTTLS, SASL, then ``<resume/>`` answered by
``<resumed/>``.  Outside the timing each cut is checked to be a resumption: ``on_stream_resumed``
fired, ``on_stream_destroyed`` did not, and the proxy accepted one more connection.  The client
then idles ``--pause`` (50) ms before the next cut.  Printed: the median and 90th percentile.

CPU per 1,000 messages
----------------------
Two more clients, A and B, connect straight to Prosody.  Each round A enqueues ``--messages``
(1,000) chat messages to B's full JID in one go (``Client.enqueue``); B's message callback counts
them.  The round ends when B has received all of them and A's last token is ``ACKED`` (acks are
cumulative; every token is checked to be ``ACKED`` afterwards, outside the measurement).  Over
that window the benchmark takes the wall time and the CPU time of the process (user plus
system, ``getrusage(RUSAGE_SELF)``).  Both clients run in this one process, so the CPU figure
is the sum of the sending and the receiving side: building, serialising and writing the
messages and handling the acks on A, reading, parsing, dispatching and counting them on B (and
answering Prosody's ack requests).  Prosody runs in its own process and is not counted.  After
one unmeasured warm-up round, ``--rounds`` (5) rounds are measured; printed are the CPU ms per
1,000 messages sent and received (best round), and the wall time and messages/s of that round.

No timing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _server import LOOPBACK, ProsodyServer, cpu_seconds, start_prosody
from twisted.internet import defer, task

from tests.support.proxy import FaultProxy
from txxmppnode import JID, Message, MessageType, StanzaState, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector

#: Seconds any connection, resumption or round may take before the benchmark gives up.
TIMEOUT = 30.0
ACCOUNTS = ("resumer", "sender", "receiver")


def new_client(reactor: Any, server: ProsodyServer, account: str, port: int) -> Client:
    security = make_security_layer(server.accounts[account], trust_root=str(server.ca_pem_path))
    return Client(
        JID.fromstr(f"{server.jid(account)}/bench"),
        security,
        override_peer=[(LOOPBACK, port, STARTTLSConnector())],
        max_initial_attempts=1,
        reactor=reactor,
    )


async def establish(reactor: Any, client: Client) -> None:
    outcome = defer.race([client.on_stream_established.next(), client.on_failure.next()])
    outcome.addTimeout(TIMEOUT, reactor)
    client.start()
    which, value = await outcome
    if which != 0:
        raise RuntimeError(f"{client.local_jid} could not connect: {value!r}")
    if not client.stream.sm_resumable:
        raise RuntimeError(f"{client.local_jid}: established without resumable stream management")


# -- resume after a cut -----------------------------------------------------------------------


async def resume_times(reactor: Any, server: ProsodyServer, cuts: int, pause: float) -> list[float]:
    """Seconds from each cut to ``on_stream_resumed``."""
    proxy = FaultProxy(LOOPBACK, server.starttls_port, reactor)
    port = await proxy.start()
    client = new_client(reactor, server, "resumer", port)
    destroyed: list[Any] = []
    client.on_stream_destroyed.connect(destroyed.append)
    try:
        await establish(reactor, client)
        times: list[float] = []
        for n in range(cuts):
            accepted = proxy.connections_accepted
            resumed = client.on_stream_resumed.next()
            resumed.addCallback(lambda _: time.monotonic())
            resumed.addTimeout(TIMEOUT, reactor)
            began = time.monotonic()
            if proxy.cut() != 1:
                raise RuntimeError(f"cut {n}: not exactly one connection to cut")
            at = await resumed
            times.append(at - began)
            if destroyed:
                raise RuntimeError(f"cut {n}: the session was destroyed: {destroyed[0]!r}")
            if proxy.connections_accepted != accepted + 1:
                raise RuntimeError(f"cut {n}: the client did not come back through the proxy")
            await task.deferLater(reactor, pause, lambda: None)
        return times
    finally:
        await client.stop()
        await proxy.stop()


# -- CPU per 1,000 messages -------------------------------------------------------------------


class Round:
    """One measured round: wall and CPU seconds for its messages."""

    def __init__(self, messages: int, wall: float, cpu: float) -> None:
        self.messages = messages
        self.wall = wall
        self.cpu = cpu


async def message_rounds(
    reactor: Any, server: ProsodyServer, messages: int, rounds: int
) -> list[Round]:
    """One warm-up round, then *rounds* measured ones, A → B, *messages* each."""
    sender = new_client(reactor, server, "sender", server.starttls_port)
    receiver = new_client(reactor, server, "receiver", server.starttls_port)
    received = 0
    all_in: defer.Deferred[None] | None = None
    wanted = 0

    def count(_: Message) -> None:
        nonlocal received, all_in
        received += 1
        if received == wanted and all_in is not None:
            done, all_in = all_in, None
            done.callback(None)

    try:
        await establish(reactor, receiver)
        await establish(reactor, sender)
        receiver.stream.register_message_callback(MessageType.CHAT, sender.local_jid, count)
        to = receiver.local_jid
        results: list[Round] = []
        for number in range(rounds + 1):
            received = 0
            wanted = messages
            all_in = defer.Deferred()
            arrived = all_in
            began, began_cpu = time.monotonic(), cpu_seconds()
            tokens = [
                sender.enqueue(
                    Message(to=to, type_=MessageType.CHAT, body=f"Message {n} of round {number}.")
                )
                for n in range(messages)
            ]
            both = defer.gatherResults([arrived, tokens[-1].deferred()])
            both.addTimeout(TIMEOUT, reactor)
            await both
            wall, cpu = time.monotonic() - began, cpu_seconds() - began_cpu
            states = {token.state for token in tokens}
            if states != {StanzaState.ACKED} or received != messages:
                raise RuntimeError(f"round {number}: states {states}, {received} received")
            if number:
                results.append(Round(messages, wall, cpu))
        return results
    finally:
        await sender.stop()
        await receiver.stop()


# -- report -----------------------------------------------------------------------------------


def report(resumes: list[float], rounds: list[Round]) -> None:
    ms = [seconds * 1000 for seconds in resumes]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1]
    best = min(rounds, key=lambda r: r.cpu / r.messages)
    per_1000 = best.cpu / best.messages * 1000 * 1000
    print(f"txxmppnode {version('txxmppnode')} against a local Prosody over STARTTLS, with SM")
    print()
    print(f"{'resume after a cut':40} {'median ms':>10} {'p90 ms':>8}")
    print(f"{f'{len(ms)} cuts, each resumed':40} {statistics.median(ms):>10.1f} {p90:>8.1f}")
    print()
    print(f"{'messages A -> B (best of ' + str(len(rounds)) + ')':40} {'CPU ms/1000':>11}", end="")
    print(f" {'wall ms':>8} {'msg/s':>8}")
    print(
        f"{f'{best.messages} sent, received and acked':40} {per_1000:>11.1f}"
        f" {best.wall * 1000:>8.1f} {best.messages / best.wall:>8.0f}"
    )
    print("(CPU: both clients, one process: the send side plus the receive side)")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--cuts", type=int, default=30, help="cuts to resume from")
    options.add_argument("--pause", type=float, default=50.0, help="ms between cuts")
    options.add_argument("--messages", type=int, default=1000, help="messages per round")
    options.add_argument("--rounds", type=int, default=5, help="measured rounds")
    args = options.parse_args()
    if args.cuts < 2 or args.pause < 0 or args.messages < 1 or args.rounds < 1:
        options.error("needs --cuts >= 2, --pause >= 0, --messages >= 1, --rounds >= 1")

    with tempfile.TemporaryDirectory(prefix="txxmppnode-bench-resume-") as directory:
        server = start_prosody(Path(directory), ACCOUNTS)
        try:

            async def run(reactor: Any) -> None:
                resumes = await resume_times(reactor, server, args.cuts, args.pause / 1000)
                rounds = await message_rounds(reactor, server, args.messages, args.rounds)
                report(resumes, rounds)

            task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
