"""SRV discovery against a real DNS server (the session's dnsmasq) over real UDP.

Each scenario has its own domain in :mod:`tests.support.dnsmasq`; the resolver asks that dnsmasq
only and reads no system file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IResolver
from twisted.names.client import Resolver

from tests.integration.asyncio_discovery import DNS_ENV
from tests.support.dnsmasq import (
    BOTH_SERVICES_DOMAIN,
    DIRECT_TLS_ONLY_DOMAIN,
    DISABLED_DOMAIN,
    LOOPBACK,
    NO_RECORDS_DOMAIN,
    REFUSED_DOMAIN,
    DnsmasqServer,
    free_udp_port,
)
from tests.support.reactor import ReactorThread
from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector
from txxmppnode.discovery import DEFAULT_PORT, ConnectionOption, discover_connectors

ROOT = Path(__file__).resolve().parents[2]
# seconds a lookup may take in these tests (dnsmasq on loopback answers in about a millisecond)
TIMEOUT = 5.0
DEAD_TIMEOUT = 0.5
# how much longer than its timeout a discovery may take (a loose bound on a loaded machine)
SLACK = 2.0


def discover(
    reactor_thread: ReactorThread,
    make_resolver: Callable[[], IResolver],
    domain: str,
    *,
    timeout: float = TIMEOUT,
    seed: int = 0,
) -> list[ConnectionOption]:
    """Run discovery for *domain* with a resolver made in the reactor thread."""

    def run() -> Deferred[list[ConnectionOption]]:
        resolver = make_resolver()
        return discover_connectors(domain, resolver, timeout=timeout, rng=random.Random(seed))

    return reactor_thread.run(run, timeout=timeout + SLACK)


def test_both_services_merge_in_priority_order(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread
) -> None:
    options = discover(reactor_thread, dnsmasq.resolver, BOTH_SERVICES_DOMAIN)
    d = BOTH_SERVICES_DOMAIN
    # priorities: s1 5, c1 and c3 10, s2 20, c2 30
    assert options[0] == (f"s1.{d}", 5270, DirectTLSConnector())
    assert set(options[1:3]) == {
        (f"c1.{d}", 5222, STARTTLSConnector()),
        (f"c3.{d}", 5224, STARTTLSConnector()),
    }
    assert options[3:] == [
        (f"s2.{d}", 443, DirectTLSConnector()),
        (f"c2.{d}", 5223, STARTTLSConnector()),
    ]
    assert [type(connector) for _, _, connector in options] == [
        DirectTLSConnector,
        STARTTLSConnector,
        STARTTLSConnector,
        DirectTLSConnector,
        STARTTLSConnector,
    ]


def test_weights_order_records_of_one_priority(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread
) -> None:
    # c1 (weight 60) comes before c3 (weight 0) unless the draw is 0: 1 chance in 61
    seconds = [
        discover(reactor_thread, dnsmasq.resolver, BOTH_SERVICES_DOMAIN, seed=seed)[1][0]
        for seed in range(20)
    ]
    assert Counter(seconds)[f"c1.{BOTH_SERVICES_DOMAIN}"] >= 17
    again = discover(reactor_thread, dnsmasq.resolver, BOTH_SERVICES_DOMAIN, seed=3)
    assert again == discover(reactor_thread, dnsmasq.resolver, BOTH_SERVICES_DOMAIN, seed=3)


def test_a_dot_for_starttls_leaves_direct_tls_only(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread
) -> None:
    options = discover(reactor_thread, dnsmasq.resolver, DIRECT_TLS_ONLY_DOMAIN)
    assert options == [(f"tls.{DIRECT_TLS_ONLY_DOMAIN}", 5223, DirectTLSConnector())]


def test_dots_for_both_services_raise(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread
) -> None:
    with pytest.raises(ValueError, match=rf"XMPP is not available on {DISABLED_DOMAIN}"):
        discover(reactor_thread, dnsmasq.resolver, DISABLED_DOMAIN)


def test_nxdomain_falls_back_to_starttls_on_5222(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="twisted"):
        options = discover(reactor_thread, dnsmasq.resolver, NO_RECORDS_DOMAIN)
    assert options == [(NO_RECORDS_DOMAIN, DEFAULT_PORT, STARTTLSConnector())]
    assert "Falling back" not in caplog.text


def test_refused_lookups_fall_back_with_a_warning(
    dnsmasq: DnsmasqServer, reactor_thread: ReactorThread, caplog: pytest.LogCaptureFixture
) -> None:
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="twisted"):
        options = discover(reactor_thread, dnsmasq.resolver, REFUSED_DOMAIN)
    elapsed = time.monotonic() - began
    assert options == [(REFUSED_DOMAIN, DEFAULT_PORT, STARTTLSConnector())]
    assert elapsed < TIMEOUT / 2  # answered, not timed out
    assert "DNSQueryRefusedError" in caplog.text
    assert "Falling back" in caplog.text


def test_an_unreachable_name_server_falls_back_within_the_timeout(
    reactor_thread: ReactorThread, caplog: pytest.LogCaptureFixture
) -> None:
    dead = (LOOPBACK, free_udp_port())  # nothing listens there

    def make_resolver() -> IResolver:
        return Resolver(servers=[dead])  # type: ignore[no-untyped-call]

    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="twisted"):
        options = discover(reactor_thread, make_resolver, NO_RECORDS_DOMAIN, timeout=DEAD_TIMEOUT)
    elapsed = time.monotonic() - began
    assert options == [(NO_RECORDS_DOMAIN, DEFAULT_PORT, STARTTLSConnector())]
    assert DEAD_TIMEOUT * 0.8 <= elapsed < DEAD_TIMEOUT + SLACK
    assert "Falling back" in caplog.text


def test_the_asyncio_face_logs_the_discovery_to_the_given_logger(dnsmasq: DnsmasqServer) -> None:
    """``asyncio_compat.discover_connectors(domain, loop, logger)``: the spec's signature, and
    the lines of that discovery reach *logger* (the asyncio face runs in a process of its own,
    see :mod:`tests.integration.asyncio_discovery`)."""
    host, port = dnsmasq.address
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.asyncio_discovery"],
        cwd=ROOT,
        env={**os.environ, DNS_ENV: f"{host}:{port}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    d = BOTH_SERVICES_DOMAIN
    both = outcome["both"]
    assert both["options"][0] == [f"s1.{d}", 5270, "DirectTLSConnector"]
    assert len(both["options"]) == 5
    assert both["default"] == []  # all of it went to the logger given
    assert both["mine"][:2] == [
        f"DEBUG Looking up the SRV records of _xmpp-client._tcp.{d}",
        f"DEBUG Looking up the SRV records of _xmpps-client._tcp.{d}",
    ]
    records = [line for line in both["mine"] if line.startswith("DEBUG SRV records of ")]
    assert len(records) == 2 and f"s1.{d}:5270 (priority 5" in " ".join(records)
    assert both["mine"][-1].startswith(f"DEBUG Connection options for {d}: ")

    none = outcome["none"]
    n = NO_RECORDS_DOMAIN
    assert none["options"] == [[n, 5222, "STARTTLSConnector"]]
    assert none["default"] == []
    assert none["mine"][-1] == f"DEBUG No SRV records for {n}: falling back to {n}:5222 (STARTTLS)"
    assert f"DEBUG No SRV records for _xmpp-client._tcp.{n} (NXDOMAIN)" in none["mine"]

    unlogged = outcome["no_logger"]
    assert unlogged["mine"] == []
    assert unlogged["default"] == none["mine"]  # the same lines, under txxmppnode.discovery
