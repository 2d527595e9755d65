"""Floods from a server that does not cooperate: how much memory the client keeps.

Run ``make bench-floods`` (or ``.venv/bin/python benchmarks/floods.py``).  About a minute.

Each scenario runs in a child process of its own (a clean heap), with the hostile server of
the test suite (``tests/support/hostile_bounds.py``) in a further process on 127.0.0.1, so the
server's buffers never count.  The child connects a ``Client`` (STARTTLS, SASL PLAIN, bind,
XEP-0198 where the server offers it), runs ``gc.collect()`` and reads its resident set size
(``VmRSS``), sends the trigger that starts the flood, waits for its end, collects again and
reads ``VmRSS`` once more.  The difference is what the flood left in the client's memory.

``r-flood``
    ``--r-bytes`` (10 MB) of ``<r/>``; the server never reads.  Also printed: the bytes the
    client's TCP transport still holds to write.
``no-ack``
    the client enqueues ``--messages`` (20,000) messages in one turn; the server sends
    keep-alives and acknowledges nothing.  Also printed: how many ``enqueue()`` refused with
    ``QueueFull``.
``iq-flood``
    ``--iq-requests`` (100,000) IQ requests nobody serves, each answered with an error; the
    server reads but acknowledges nothing.  The flood ends with the server's last stanza or
    with the client giving the connection up; printed: which, and the replies held.
``iq-flood-uncapped``
    the same with ``max_unacked=None``: every reply is held, and the figure per reply is
    what holding one costs.

The library is the one on ``sys.path`` first (this repository's, unless ``PYTHONPATH`` says
otherwise), so the same script measures an older version for a before/after comparison.  No
figure is asserted: they are printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from _server import LOOPBACK, rss_kib
from twisted.internet import defer, task

from tests.support.hostile_bounds import DOMAIN, END, TRIGGER, unsent_bytes
from txxmppnode import JID, Message, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("r-flood", "no-ack", "iq-flood", "iq-flood-uncapped")
BEHAVIOUR = {
    "r-flood": "r-flood",
    "no-ack": "no-ack",
    "iq-flood": "sm-iq-flood",
    "iq-flood-uncapped": "sm-iq-flood",
}
IQ_BYTES = len(
    f"<iq type='get' id='f99999' from='romeo@{DOMAIN}/flood'>"
    "<query xmlns='urn:example:unknown'/></iq>"
)


def start_server(behaviour: str, flood_bytes: int) -> tuple[subprocess.Popen[str], int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hostile_bounds", behaviour, str(flood_bytes)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[1])
    ca = server.stdout.readline().split(maxsplit=1)[1].strip()
    return server, port, ca


async def scenario(reactor: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    flood_bytes = {"r-flood": args.r_bytes}.get(name, args.iq_requests * IQ_BYTES)
    server, port, ca = start_server(BEHAVIOUR[name], flood_bytes)
    try:
        client = Client(
            JID.fromstr(f"juliet@{DOMAIN}/bench"),
            make_security_layer("any password", trust_root=ca),
            override_peer=[(LOOPBACK, port, STARTTLSConnector())],
            negotiation_timeout=timedelta(seconds=10),
            reactor=reactor,
        )
        if name == "iq-flood-uncapped":
            client.stream.max_unacked = None
        established = client.on_stream_established.next()
        client.start()
        await established
        stream = client.stream
        xmlstream = stream.xmlstream
        assert xmlstream is not None
        gc.collect()
        before = rss_kib()
        result: dict[str, Any] = {"scenario": name}
        ended: defer.Deferred[str] = defer.Deferred()

        def end(how: str) -> None:
            if not ended.called:
                ended.callback(how)

        stream.register_message_callback(None, None, lambda m: m.body == END and end("end"))
        client.on_stream_suspended.connect(lambda reason: end(f"gave up: {reason}"))
        started = time.perf_counter()
        if name == "no-ack":
            refused = 0
            for n in range(args.messages):
                try:
                    client.enqueue(Message(to=f"romeo@{DOMAIN}", type_="chat", body=f"m{n}"))
                except ConnectionError:
                    refused += 1
            await task.deferLater(reactor, 1.0, lambda: None)
            result["refused"] = refused
            result["held"] = _held(stream)
            how = "1 s after the messages"
        else:
            client.enqueue(Message(to=DOMAIN, body=TRIGGER))
            how = await ended
            if name == "r-flood":
                result["unsent_bytes"] = unsent_bytes(xmlstream.transport)
            else:
                result["held"] = _held(stream)
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["ended_by"] = how
        gc.collect()
        result["rss_growth_kib"] = rss_kib() - before
        result["input_bytes"] = flood_bytes if name != "no-ack" else 0
        client.stop()
        return result
    finally:
        server.terminate()
        server.wait()


def _held(stream: Any) -> int:
    count = getattr(stream, "unacked_count", None)  # absent before the cap existed
    return int(count) if count is not None else stream.queue_length + len(stream.sm_unacked_list)


def worker(args: argparse.Namespace) -> None:
    def run(reactor: Any) -> defer.Deferred[None]:
        async def go() -> None:
            print(json.dumps(await scenario(reactor, args.worker, args)), flush=True)

        return defer.Deferred.fromCoroutine(go())

    task.react(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--r-bytes", type=int, default=10 * 10**6)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--iq-requests", type=int, default=100_000)
    parser.add_argument("--worker", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import txxmppnode

    print(f"txxmppnode from {Path(txxmppnode.__file__).parent}")
    print(f"{'scenario':<19} {'input':>10} {'RSS growth':>12} {'seconds':>8}  details")
    for name in args.scenarios:
        command = [sys.executable, __file__, "--worker", name]
        command += ["--r-bytes", str(args.r_bytes), "--messages", str(args.messages)]
        command += ["--iq-requests", str(args.iq_requests)]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"{name:<19} failed:\n{output.stderr[-2000:]}")
            continue
        r = json.loads(lines[-1])
        details = {
            k: v for k, v in r.items() if k not in ("scenario", "rss_growth_kib", "input_bytes")
        }
        details.pop("seconds")
        held = r.get("held")
        if held:
            details["KiB per held stanza"] = round(r["rss_growth_kib"] / held, 2)
        source = f"{r['input_bytes'] / 1e6:.1f} MB" if r["input_bytes"] else "-"
        print(
            f"{name:<19} {source:>10} {r['rss_growth_kib'] / 1024:>9.1f} MB {r['seconds']:>8}  "
            + ", ".join(f"{k}: {v}" for k, v in details.items())
        )


if __name__ == "__main__":
    main()
