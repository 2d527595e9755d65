"""SRV discovery without a network: the RFC 2782 order, and how the two lookups combine.

The lookups go to an in-memory resolver and the timeouts run on a
:class:`twisted.internet.task.Clock`, so everything here is synchronous and deterministic.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.python.failure import Failure

from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector
from txxmppnode.discovery import (
    DEFAULT_PORT,
    ConnectionOption,
    Service,
    ServiceRecord,
    discover_connectors,
    order_srv_records,
)

DOMAIN = "example.com"
XMPP = f"_xmpp-client._tcp.{DOMAIN}"
XMPPS = f"_xmpps-client._tcp.{DOMAIN}"
FALLBACK: list[ConnectionOption] = [(DOMAIN, DEFAULT_PORT, STARTTLSConnector())]
TIMEOUT = 3.0
DRAWS = 2000
TOLERANCE = 0.04

# -- the RFC 2782 order ------------------------------------------------------------------------


def record(priority: int, weight: int, host: str = "h", port: int = 5222) -> ServiceRecord:
    return ServiceRecord(Service.XMPP_CLIENT, priority, weight, port, host)


def first_pick_shares(records: Sequence[ServiceRecord], seed: int) -> dict[str, float]:
    """Order *records* DRAWS times with one seeded RNG; return how often each host came first."""
    rng = random.Random(seed)
    firsts = Counter(order_srv_records(records, rng)[0].host for _ in range(DRAWS))
    return {r.host: firsts[r.host] / DRAWS for r in records}


def test_priorities_come_in_strictly_ascending_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        records = [record(rng.randrange(5), rng.randrange(4), f"h{index}") for index in range(12)]
        ordered = order_srv_records(records, rng)
        assert sorted(ordered, key=lambda r: r.host) == sorted(records, key=lambda r: r.host)
        priorities = [r.priority for r in ordered]
        assert priorities == sorted(priorities)


def test_a_lower_priority_wins_whatever_the_weights() -> None:
    records = [record(20, 65535, "heavy"), record(10, 0, "light")]
    for seed in range(50):
        assert [r.host for r in order_srv_records(records, random.Random(seed))] == [
            "light",
            "heavy",
        ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_first_picks_follow_the_weights(seed: int) -> None:
    records = [record(0, 60, "a"), record(0, 30, "b"), record(0, 10, "c")]
    shares = first_pick_shares(records, seed)
    assert shares["a"] == pytest.approx(0.6, abs=TOLERANCE)
    assert shares["b"] == pytest.approx(0.3, abs=TOLERANCE)
    assert shares["c"] == pytest.approx(0.1, abs=TOLERANCE)


def test_first_picks_are_proportional_for_small_weights() -> None:
    # an inclusive [0, sum] draw would give the first-arranged record an extra 1/(sum+1)
    shares = first_pick_shares([record(0, 3, "a"), record(0, 1, "b")], seed=11)
    assert shares["a"] == pytest.approx(0.75, abs=TOLERANCE)


def test_later_picks_are_weighted_among_the_remaining_records() -> None:
    records = [record(0, 60, "a"), record(0, 30, "b"), record(0, 10, "c")]
    rng = random.Random(5)
    orders = Counter(tuple(r.host for r in order_srv_records(records, rng)) for _ in range(DRAWS))
    # P(a, b, c) = 0.6 * 30/40; P(b, a, c) = 0.3 * 60/70
    assert orders["a", "b", "c"] / DRAWS == pytest.approx(0.45, abs=TOLERANCE)
    assert orders["b", "a", "c"] / DRAWS == pytest.approx(0.3 * 60 / 70, abs=TOLERANCE)


def test_zero_weights_get_only_a_small_chance_beside_positive_weights() -> None:
    records = [record(0, 0, "zero1"), record(0, 50, "heavy"), record(0, 0, "zero2")]
    rng = random.Random(3)
    orders = [[r.host for r in order_srv_records(records, rng)] for _ in range(DRAWS)]
    zero_first = sum(order[0] != "heavy" for order in orders)
    # a draw of 0 out of [0, 50] takes the zero-weight record in front: about 1/51 each time
    assert 0 < zero_first < 0.05 * DRAWS
    heavy_last = sum(order[-1] == "heavy" for order in orders)
    assert heavy_last < 0.01 * DRAWS


def test_zero_weights_alone_come_in_a_uniformly_random_order() -> None:
    records = [record(0, 0, "a"), record(0, 0, "b"), record(0, 0, "c")]
    shares = first_pick_shares(records, seed=9)
    for host in "abc":
        assert shares[host] == pytest.approx(1 / 3, abs=TOLERANCE)


def test_the_order_is_reproducible_with_a_seed() -> None:
    records = [record(p, w, f"h{p}{w}") for p in (1, 2) for w in (0, 5, 10, 20)]
    first = [order_srv_records(records, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    others = {tuple(order_srv_records(records, random.Random(seed))) for seed in range(20)}
    assert len(others) > 1


def test_ordering_nothing_gives_nothing() -> None:
    assert order_srv_records([], random.Random(0)) == []


def test_the_order_does_not_change_the_input() -> None:
    records = [record(1, 5, "a"), record(0, 5, "b")]
    copy = list(records)
    order_srv_records(records, random.Random(0))
    assert records == copy


# -- combining the two lookups -----------------------------------------------------------------

HANG = object()  # a lookup that never answers
Behaviour = list[tuple[int, int, int, str]] | Exception | object


def srv(priority: int, weight: int, port: int, target: str) -> dns.RRHeader:
    """Return an SRV answer; the target ``"."`` gives the root name, as on the wire."""
    name = b"" if target == "." else target.encode()
    payload = dns.Record_SRV(priority, weight, port, name)  # type: ignore[no-untyped-call]
    return dns.RRHeader(b"x", dns.SRV, dns.IN, 60, payload)


class FakeResolver:
    """Answers lookupService from a table: SRV tuples, an exception, or HANG."""

    def __init__(self, answers: dict[str, Behaviour]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[float, ...]]] = []
        self.pending: list[Deferred[Any]] = []
        self.cancelled: list[str] = []

    def lookupService(self, name: str, timeout: Sequence[float]) -> Deferred[Any]:
        self.calls.append((name, tuple(timeout)))
        behaviour = self.answers.get(name, dns_error.DNSNameError())
        if behaviour is HANG:
            d: Deferred[Any] = Deferred(lambda _: self.cancelled.append(name))
            self.pending.append(d)
            return d
        if isinstance(behaviour, Exception):
            return defer.fail(behaviour)
        assert isinstance(behaviour, list)
        return defer.succeed(([srv(*entry) for entry in behaviour], [], []))


class Outcome:
    """The result (or failure) of a Deferred, once it has fired."""

    def __init__(self, d: Deferred[Any]) -> None:
        self.fired = False
        self.result: Any = None
        self.failure: Failure | None = None
        d.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, result: Any) -> None:
        self.fired, self.result = True, result

    def _failed(self, failure: Failure) -> None:
        self.fired, self.failure = True, failure

    def value(self) -> Any:
        assert self.fired, "the Deferred has not fired"
        if self.failure is not None:
            self.failure.raiseException()
        return self.result


def discover(
    answers: dict[str, Behaviour], *, clock: Clock | None = None, seed: int = 0
) -> tuple[Outcome, FakeResolver]:
    resolver = FakeResolver(answers)
    d = discover_connectors(
        DOMAIN,
        cast(IResolver, resolver),
        reactor=clock or Clock(),
        timeout=TIMEOUT,
        rng=random.Random(seed),
    )
    return Outcome(d), resolver


@pytest.fixture
def logs() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def warnings(events: list[LogEvent]) -> list[LogEvent]:
    mine = [e for e in events if e.get("log_namespace") == "txxmppnode.discovery"]
    return [e for e in mine if e["log_level"] >= LogLevel.warn]


def test_both_services_are_merged_by_priority_with_their_connectors() -> None:
    outcome, resolver = discover(
        {
            XMPP: [(10, 0, 5222, "c1.example.com"), (30, 0, 5223, "c2.example.com")],
            XMPPS: [(5, 0, 5270, "s1.example.com"), (20, 0, 443, "s2.example.com")],
        }
    )
    assert outcome.value() == [
        ("s1.example.com", 5270, DirectTLSConnector()),
        ("c1.example.com", 5222, STARTTLSConnector()),
        ("s2.example.com", 443, DirectTLSConnector()),
        ("c2.example.com", 5223, STARTTLSConnector()),
    ]
    assert {name for name, _ in resolver.calls} == {XMPP, XMPPS}


def test_connectors_have_the_right_types() -> None:
    outcome, _ = discover({XMPP: [(1, 0, 5222, "c")], XMPPS: [(0, 0, 5223, "s")]})
    (_, _, direct), (_, _, starttls) = outcome.value()
    assert type(direct) is DirectTLSConnector and direct.direct_tls
    assert type(starttls) is STARTTLSConnector and not starttls.direct_tls


def test_the_trailing_dot_of_targets_is_removed() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 5222, "xmpp.example.com.")]})
    assert outcome.value() == [("xmpp.example.com", 5222, STARTTLSConnector())]


def test_only_direct_tls_records() -> None:
    outcome, _ = discover({XMPPS: [(0, 1, 5223, "tls.example.com")]})
    assert outcome.value() == [("tls.example.com", 5223, DirectTLSConnector())]


def test_only_starttls_records() -> None:
    outcome, _ = discover({XMPP: [(0, 1, 5222, "c.example.com")]})
    assert outcome.value() == [("c.example.com", 5222, STARTTLSConnector())]


def test_a_dot_record_disables_its_service_only() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 0, ".")], XMPPS: [(0, 1, 5223, "tls.example.com")]})
    assert outcome.value() == [("tls.example.com", 5223, DirectTLSConnector())]


def test_a_dot_record_disables_the_other_records_of_its_service() -> None:
    outcome, _ = discover(
        {
            XMPP: [(0, 0, 5222, "c.example.com"), (0, 0, 0, ".")],
            XMPPS: [(5, 1, 5223, "tls.example.com")],
        }
    )
    assert outcome.value() == [("tls.example.com", 5223, DirectTLSConnector())]


def test_a_dot_for_direct_tls_leaves_starttls_records() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 5222, "c.example.com")], XMPPS: [(0, 0, 0, ".")]})
    assert outcome.value() == [("c.example.com", 5222, STARTTLSConnector())]


def test_dots_for_both_services_mean_xmpp_is_not_available() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 0, ".")], XMPPS: [(0, 0, 0, ".")]})
    with pytest.raises(ValueError, match=r"XMPP is not available on example\.com \(SRV target"):
        outcome.value()


def test_a_dot_for_starttls_and_no_direct_tls_records_allow_no_fallback() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 0, ".")]})
    with pytest.raises(ValueError, match=r"not available on example\.com"):
        outcome.value()


def test_a_dot_for_starttls_and_a_failed_direct_tls_lookup_raise_that_failure() -> None:
    outcome, _ = discover({XMPP: [(0, 0, 0, ".")], XMPPS: dns_error.DNSServerError("SERVFAIL")})
    with pytest.raises(dns_error.DNSServerError):
        outcome.value()


def test_a_dot_for_direct_tls_and_no_starttls_records_fall_back() -> None:
    outcome, _ = discover({XMPPS: [(0, 0, 0, ".")]})
    assert outcome.value() == FALLBACK


def test_nxdomain_for_both_falls_back(logs: list[LogEvent]) -> None:
    outcome, _ = discover({})
    assert outcome.value() == FALLBACK
    assert warnings(logs) == []


def test_empty_answers_for_both_fall_back() -> None:
    outcome, _ = discover({XMPP: [], XMPPS: []})
    assert outcome.value() == FALLBACK


def test_answers_without_srv_records_count_as_none() -> None:
    resolver = FakeResolver({})
    alias = dns.Record_CNAME(b"x.test")  # type: ignore[no-untyped-call]
    cname = dns.RRHeader(XMPP.encode(), dns.CNAME, dns.IN, 60, alias)

    def lookup_service(name: str, timeout: Sequence[float]) -> Deferred[Any]:
        return defer.succeed(([cname], [], []))

    resolver.lookupService = lookup_service  # type: ignore[method-assign]
    d = discover_connectors(DOMAIN, cast(IResolver, resolver), reactor=Clock())
    assert Outcome(d).value() == FALLBACK


def test_a_timed_out_lookup_is_tolerated_when_the_other_answers(
    logs: list[LogEvent],
) -> None:
    clock = Clock()
    outcome, resolver = discover(
        {XMPP: HANG, XMPPS: [(0, 1, 5223, "tls.example.com")]}, clock=clock
    )
    clock.advance(TIMEOUT - 0.01)
    assert not outcome.fired
    clock.advance(0.01)
    assert outcome.value() == [("tls.example.com", 5223, DirectTLSConnector())]
    assert resolver.cancelled == [XMPP]  # by the timeout
    (warning,) = warnings(logs)
    assert warning["name"] == XMPP


def test_a_servfail_is_tolerated_when_the_other_answers() -> None:
    outcome, _ = discover(
        {XMPP: [(0, 1, 5222, "c.example.com")], XMPPS: dns_error.DNSServerError("SERVFAIL")}
    )
    assert outcome.value() == [("c.example.com", 5222, STARTTLSConnector())]


def test_errors_on_both_fall_back_with_a_warning(logs: list[LogEvent]) -> None:
    outcome, _ = discover(
        {
            XMPP: dns_error.DNSServerError("SERVFAIL"),
            XMPPS: dns_error.DNSQueryRefusedError("REFUSED"),
        }
    )
    assert outcome.value() == FALLBACK
    texts = [str(e["log_format"]) for e in warnings(logs)]
    assert len(texts) == 3  # one per failed lookup, and the fallback
    assert any("Falling back" in text for text in texts)


def test_timeouts_on_both_fall_back_after_the_timeout() -> None:
    clock = Clock()
    outcome, resolver = discover({XMPP: HANG, XMPPS: HANG}, clock=clock)
    clock.advance(TIMEOUT - 0.01)
    assert not outcome.fired
    clock.advance(0.01)
    assert outcome.value() == FALLBACK
    assert sorted(resolver.cancelled) == [XMPP, XMPPS]


def test_an_error_and_an_nxdomain_fall_back() -> None:
    timed_out = dns_error.DNSQueryTimeoutError(1)  # type: ignore[no-untyped-call]
    outcome, _ = discover({XMPP: timed_out})
    assert outcome.value() == FALLBACK


def test_an_unexpected_resolver_error_counts_as_a_failed_lookup(logs: list[LogEvent]) -> None:
    outcome, _ = discover({XMPP: RuntimeError("resolver bug"), XMPPS: [(0, 0, 5223, "s")]})
    assert outcome.value() == [("s", 5223, DirectTLSConnector())]
    (warning,) = warnings(logs)
    assert isinstance(warning["log_failure"].value, RuntimeError)


def test_a_resolver_raising_at_once_counts_as_a_failed_lookup() -> None:
    def lookup_service(name: str, timeout: Sequence[float]) -> Deferred[Any]:
        raise NotImplementedError("no SRV here")

    resolver = FakeResolver({})
    resolver.lookupService = lookup_service  # type: ignore[method-assign]
    d = discover_connectors(DOMAIN, cast(IResolver, resolver), reactor=Clock())
    assert Outcome(d).value() == FALLBACK


def test_both_lookups_start_at_once_with_a_schedule_within_the_timeout() -> None:
    outcome, resolver = discover({XMPP: HANG, XMPPS: HANG})
    assert not outcome.fired
    assert sorted(name for name, _ in resolver.calls) == [XMPP, XMPPS]
    for _, schedule in resolver.calls:
        assert len(schedule) >= 1 and all(t > 0 for t in schedule)
        assert sum(schedule) == pytest.approx(TIMEOUT)


def test_cancelling_cancels_both_lookups_and_does_not_fall_back() -> None:
    clock = Clock()
    resolver = FakeResolver({XMPP: HANG, XMPPS: HANG})
    d = discover_connectors(DOMAIN, cast(IResolver, resolver), reactor=clock, timeout=TIMEOUT)
    outcome = Outcome(d)
    d.cancel()
    with pytest.raises(CancelledError):
        outcome.value()
    assert sorted(resolver.cancelled) == [XMPP, XMPPS]
    assert clock.getDelayedCalls() == []  # the timeouts are gone too


def test_the_order_within_a_priority_depends_on_the_rng() -> None:
    answers: dict[str, Behaviour] = {
        XMPP: [(0, 10, 5222, "c1"), (0, 10, 5222, "c2")],
        XMPPS: [(0, 10, 5223, "s1"), (0, 10, 5223, "s2")],
    }
    first = discover(answers, seed=4)[0].value()
    assert discover(answers, seed=4)[0].value() == first
    orders = {tuple(h for h, _, _ in discover(answers, seed=s)[0].value()) for s in range(30)}
    assert len(orders) > 1


def test_an_idn_domain_is_queried_as_its_a_label() -> None:
    resolver = FakeResolver({})
    d = discover_connectors("bücher.example", cast(IResolver, resolver), reactor=Clock())
    assert Outcome(d).value() == [("bücher.example", DEFAULT_PORT, STARTTLSConnector())]
    assert sorted(name for name, _ in resolver.calls) == [
        "_xmpp-client._tcp.xn--bcher-kva.example",
        "_xmpps-client._tcp.xn--bcher-kva.example",
    ]


@pytest.mark.parametrize(("domain", "timeout"), [("", 1.0), (".", 1.0), (DOMAIN, 0.0)])
def test_bad_arguments_fail_the_deferred(domain: str, timeout: float) -> None:
    resolver = FakeResolver({})
    d = discover_connectors(domain, cast(IResolver, resolver), reactor=Clock(), timeout=timeout)
    with pytest.raises(ValueError):
        Outcome(d).value()
    assert resolver.calls == []


def test_the_default_resolver_is_twisted_names_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.names import client

    resolver = FakeResolver({XMPPS: [(0, 0, 5223, "s.example.com")]})
    monkeypatch.setattr(client, "getResolver", lambda: resolver)
    d = discover_connectors(DOMAIN, reactor=Clock())
    assert Outcome(d).value() == [("s.example.com", 5223, DirectTLSConnector())]


def test_a_given_logger_gets_every_line_of_the_discovery(logs: list[LogEvent]) -> None:
    mine: list[LogEvent] = []
    logger = Logger(namespace="my.app", observer=cast(ILogObserver, mine.append))
    d = discover_connectors(
        DOMAIN,
        cast(IResolver, FakeResolver({XMPP: [(0, 0, 5222, "a.example")]})),
        reactor=Clock(),
        timeout=TIMEOUT,
        logger=logger,
    )
    assert Outcome(d).value() == [("a.example", 5222, STARTTLSConnector())]
    lines = [formatEvent(event) for event in mine]
    assert f"Looking up the SRV records of _xmpp-client._tcp.{DOMAIN}" in lines
    assert f"Looking up the SRV records of _xmpps-client._tcp.{DOMAIN}" in lines
    assert any(line.startswith("Connection options for") for line in lines)
    assert [e for e in logs if e.get("log_namespace") == "txxmppnode.discovery"] == []
