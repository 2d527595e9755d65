"""How long the reactor stalls while one connection derives its SCRAM key.

Run ``make bench-scram`` (or ``.venv/bin/python benchmarks/scram_stall.py``).  About ten seconds
with the defaults.

SCRAM's salted password is PBKDF2 with the iteration count the server sends.  The benchmark
starts the test suite's :class:`~tests.support.hostile_scram.HostileScramServer` in this process
(direct TLS on 127.0.0.1, a ``trustme`` CA) offering SCRAM-``--hash`` (SHA-512) with
``--iterations`` (1,000,000) PBKDF2 iterations; the server derives its own keys before anything
is measured.  On Twisted's default reactor a :class:`~twisted.internet.task.LoopingCall` ticks
every 10 ms -- the stand-in for every other timer and connection of the process -- and records
the time between consecutive ticks.

``--runs`` (3) times a new security layer connects with ``connect_xmlstream`` (TLS handshake,
SCRAM, stream restart); the longest gap between two ticks while it connects, minus the 10 ms
period, is the stall.  Then the last layer connects once more, as a reconnect does: whatever it
remembered from the first connection may spare it the derivation.  Printed per connection: the
time to the authenticated stream and the stall, in ms.

No timing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the root, for tests.support

from tests.support.hostile_scram import HostileScramServer
from txxmppnode import JID, DirectTLSConnector, connect_xmlstream, make_security_layer

#: The LoopingCall's period, in seconds.
PERIOD = 0.010
#: Seconds a connection may take before the benchmark gives up.
TIMEOUT = 120.0


class GapMeter:
    """Ticks every :data:`PERIOD` and keeps the longest time between two ticks since reset."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.longest = 0.0
        self._last = time.perf_counter()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(PERIOD, now=True)

    def stop(self) -> None:
        self._loop.stop()

    def reset(self) -> None:
        self.longest = 0.0
        self._last = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now


async def connect_once(
    reactor: Any, server: HostileScramServer, layer: Any, meter: GapMeter
) -> tuple[float, float]:
    """Connect and close; return (ms to the authenticated stream, stall in ms)."""
    await task.deferLater(reactor, 0.05, lambda: None)  # a quiet moment first
    meter.reset()
    started = time.perf_counter()
    _, xmlstream, _ = await connect_xmlstream(
        JID.fromstr(server.jid),
        layer,
        negotiation_timeout=TIMEOUT,
        override_peer=[("127.0.0.1", server.port, DirectTLSConnector())],
        reactor=reactor,
    )
    elapsed = time.perf_counter() - started
    stall = max(0.0, meter.longest - PERIOD)
    await xmlstream.close()
    return elapsed * 1000, stall * 1000


async def main(reactor: Any, options: argparse.Namespace) -> None:
    ca = trustme.CA()
    server = HostileScramServer(ca, iterations=options.iterations, family=options.hash)
    server.prepare()
    with tempfile.TemporaryDirectory() as directory:
        ca_path = Path(directory) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        server.listen(reactor)
        meter = GapMeter(reactor)
        meter.start()
        print(
            f"SCRAM-{options.hash}, {options.iterations:,} iterations; "
            f"reactor tick every {PERIOD * 1000:g} ms"
        )
        print(f"{'connection':<28}{'connect ms':>12}{'stall ms':>12}")
        try:
            layer = None
            for run in range(options.runs):
                layer = make_security_layer(server.password, trust_root=str(ca_path))
                elapsed, stall = await connect_once(reactor, server, layer, meter)
                print(f"{f'new layer #{run + 1}':<28}{elapsed:>12.1f}{stall:>12.1f}")
            elapsed, stall = await connect_once(reactor, server, layer, meter)
            print(f"{'same layer, reconnect':<28}{elapsed:>12.1f}{stall:>12.1f}")
        finally:
            meter.stop()
            await server.stop()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--hash", choices=["SHA-1", "SHA-256", "SHA-512"], default="SHA-512")
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_arguments()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, arguments)))
