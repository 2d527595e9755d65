"""Find how to connect to an XMPP domain: DNS SRV records (RFC 6120 §3.2, XEP-0368).

:func:`discover_connectors` looks up ``_xmpp-client._tcp.DOMAIN`` (STARTTLS, RFC 6120) and
``_xmpps-client._tcp.DOMAIN`` (TLS from the first byte, XEP-0368) at the same time, merges the
records of both services and orders them as RFC 2782 says: by priority, then by weighted random
selection within a priority.  It returns ``(host, port, connector)`` options to try in turn::

    options = await discover_connectors("example.com")
    for host, port, connector in options:
        ...

How the answers of the two lookups combine:

* **Records** of either service are used, merged into one list (a failure or a ``.`` record of
  the other service then only removes that service).
* A record whose target is ``.`` means the service is decidedly not available on the domain
  (RFC 2782): it disables that service, and any other record of the same service is ignored.
* **Both services disabled**: :class:`ValueError` ("XMPP is not available on DOMAIN (SRV
  target '.')").  The same when ``_xmpp-client`` is disabled and ``_xmpps-client`` has no
  records, since the only fallback (STARTTLS on port 5222) is the service the domain disabled.
* **No records at all** (NXDOMAIN or empty answers, for both services): the fallback of RFC 6120
  §3.2.2, ``[(domain, 5222, STARTTLSConnector())]``.
* **A lookup failure** (timeout, SERVFAIL, REFUSED, no reachable name server, ...) counts as "no
  records" for that service and is logged at warning level.  So one failing service is tolerated
  when the other has records, and when both fail the result is the fallback too, with a warning
  (RFC 6120 §3.2.2: fall back when the SRV lookup fails).  The one exception: when
  ``_xmpp-client`` is disabled, the fallback is not allowed, so a failure of the
  ``_xmpps-client`` lookup is raised as it is (e.g.
  :class:`twisted.internet.defer.TimeoutError`): retrying later may succeed.
* Cancelling the returned Deferred cancels both lookups and fails with
  :class:`~twisted.internet.defer.CancelledError`; it never falls back.

Time: each lookup is bounded by *timeout* seconds.  The resolver gets a retransmission schedule
that adds up to *timeout* (a first try after a quarter of it, one retry for the rest), and each
lookup also gets :meth:`~twisted.internet.defer.Deferred.addTimeout` as a backstop for resolvers
that take longer (several name servers, a fallback to TCP).  The lookups run concurrently, so the
whole discovery takes at most about *timeout* seconds.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, TypeVar, cast

import idna
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, FirstError
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger, LogLevel
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.python.failure import Failure

from txxmppnode.connector import BaseConnector, DirectTLSConnector, STARTTLSConnector

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "ConnectionOption",
    "Service",
    "ServiceRecord",
    "discover_connectors",
    "order_srv_records",
]

#: The port of the fallback when a domain publishes no SRV records (RFC 6120 §3.2.2).
DEFAULT_PORT: Final = 5222
#: Seconds each SRV lookup may take by default.
DEFAULT_TIMEOUT: Final = 10.0

#: ``(host, port, connector)``: one way to reach the server, as returned by discovery.
ConnectionOption: TypeAlias = tuple[str, int, BaseConnector]

# the answer, authority and additional sections of a DNS response
_Sections: TypeAlias = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]
# DNS errors that mean "this lookup failed" (the name server did not give a usable answer);
# anything else a resolver fails with is treated the same way but logged with its traceback
_DNS_FAILURES: Final = (
    dns_error.DomainError,
    dns_error.ResolverError,
    defer.TimeoutError,
    OSError,
)
# the share of the timeout given to the first query; the retransmission gets the rest
_FIRST_TRY_SHARE: Final = 0.25

_log = Logger()
_default_rng = random.Random()


class Service(enum.Enum):
    """The two SRV services of an XMPP client connection, with their DNS prefixes."""

    #: STARTTLS on a plain TCP connection (RFC 6120 §3.2.1).
    XMPP_CLIENT = "_xmpp-client._tcp"
    #: TLS from the first byte (XEP-0368).
    XMPPS_CLIENT = "_xmpps-client._tcp"

    @property
    def prefix(self) -> str:
        """The service and protocol labels that precede the domain."""
        return self.value

    def connector(self) -> BaseConnector:
        """Return a new connector for this service."""
        if self is Service.XMPPS_CLIENT:
            return DirectTLSConnector()
        return STARTTLSConnector()


class _Weighted(Protocol):
    """Anything with the RFC 2782 ``priority`` and ``weight`` fields."""

    @property
    def priority(self) -> int:
        """Lower values are tried first."""

    @property
    def weight(self) -> int:
        """Relative chance of being picked first among the records of one priority."""


_R = TypeVar("_R", bound=_Weighted)


@dataclass(frozen=True)
class ServiceRecord:
    """One usable SRV record of a service, with the target's trailing dot removed."""

    service: Service
    priority: int
    weight: int
    port: int
    host: str

    def option(self) -> ConnectionOption:
        """Return the ``(host, port, connector)`` option for this record."""
        return (self.host, self.port, self.service.connector())


def order_srv_records(records: Iterable[_R], rng: random.Random) -> list[_R]:
    """Return *records* in the order RFC 2782 says to try them.

    Records are tried by ascending priority.  Within one priority, each next record is drawn at
    random with a chance proportional to its weight, among the records not drawn yet:

    1. the records are shuffled ("any order"), then those of weight 0 are moved to the front (a
       stable sort, so they stay shuffled among themselves);
    2. a number is drawn uniformly from ``[0, sum of weights]`` and the first record whose running
       sum of weights reaches it is taken.

    A zero-weight record can therefore only be taken by a draw of 0, which gives it a very small
    chance when records of positive weight remain, as the RFC asks; when every remaining weight
    is 0 the draw is always 0, so they come in the random order of the shuffle.  When no
    remaining record has weight 0, the draw is from ``[1, sum]`` instead: with the RFC's inclusive
    range the first record would get one extra chance out of ``sum + 1``, a slot meant for
    zero-weight records; without it, the chances are exactly proportional to the weights.

    The result depends only on *records* (and their order) and *rng*: a seeded
    :class:`random.Random` makes it reproducible.
    """
    by_priority: dict[int, list[_R]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[_R] = []
    for priority in sorted(by_priority):
        remaining = list(by_priority[priority])
        rng.shuffle(remaining)
        remaining.sort(key=lambda record: record.weight != 0)
        # taking records out keeps the rest in this arrangement, zero weights first
        while remaining:
            total = sum(record.weight for record in remaining)
            lowest = 0 if remaining[0].weight == 0 else 1
            draw = rng.randint(lowest, total) if total else 0
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= draw:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


@dataclass(frozen=True)
class _Answer:
    """What one service's lookup found."""

    service: Service
    name: str
    records: tuple[ServiceRecord, ...] = ()
    disabled: bool = False
    failure: Failure | None = None


def _answer_from_sections(
    service: Service, name: str, sections: _Sections, log: Logger = _log
) -> _Answer:
    """Turn a DNS response into an :class:`_Answer` (records, ``.``, or nothing)."""
    answers = sections[0]
    records: list[ServiceRecord] = []
    disabled = False
    for header in answers:
        payload = header.payload
        if header.type != dns.SRV or not isinstance(payload, dns.Record_SRV):
            continue
        # Record_SRV's constructor is unannotated; its fields are an int and a Name
        priority, weight, port = int(payload.priority), int(payload.weight), int(payload.port)
        target = cast(dns.Name, payload.target).name
        if target in (b"", b"."):
            disabled = True
            continue
        try:
            host = target.decode("ascii").rstrip(".")
        except UnicodeDecodeError:
            log.warn(
                "Ignoring SRV record of {name} with a non-ASCII target {target!r}",
                name=name,
                target=target,
            )
            continue
        records.append(ServiceRecord(service, priority, weight, port, host))
    if disabled:
        log.info(
            "{name} has the SRV target '.': the service is not available{ignored}",
            name=name,
            ignored=f" ({len(records)} other record(s) ignored)" if records else "",
        )
        return _Answer(service, name, disabled=True)
    log.debug(
        "SRV records of {name}: {records}",
        name=name,
        records=", ".join(
            f"{r.host}:{r.port} (priority {r.priority}, weight {r.weight})" for r in records
        )
        or "none",
    )
    return _Answer(service, name, records=tuple(records))


def _answer_from_failure(
    service: Service, name: str, failure: Failure, log: Logger = _log
) -> _Answer | Failure:
    """Turn a failed lookup into an :class:`_Answer`; a cancellation goes on as it is."""
    if isinstance(failure.value, CancelledError):
        # the caller cancelled the discovery (addTimeout turns its own expiry into TimeoutError)
        return failure
    if isinstance(failure.value, dns_error.DNSNameError):
        log.debug("No SRV records for {name} (NXDOMAIN)", name=name)
        return _Answer(service, name)
    if isinstance(failure.value, _DNS_FAILURES):
        log.warn(
            "SRV lookup of {name} failed: {error}",
            name=name,
            error=f"{type(failure.value).__name__}: {failure.value}",
        )
    else:
        log.failure("SRV lookup of {name} failed", failure, LogLevel.warn, name=name)
    return _Answer(service, name, failure=failure)


def _lookup(
    resolver: IResolver,
    service: Service,
    domain: str,
    timeout: float,
    reactor: IReactorTime,
    log: Logger = _log,
) -> Deferred[_Answer]:
    """Look up one service's SRV records, never for longer than *timeout* seconds."""
    name = f"{service.prefix}.{domain}"
    log.debug("Looking up the SRV records of {name}", name=name)
    first = timeout * _FIRST_TRY_SHARE
    # IResolver annotates the schedule as ints, but resolvers hand each value to callLater, which
    # takes fractions of a second; and it annotates the result as a tuple of three RRHeaders
    # where resolvers fire with three lists of them
    schedule = cast(Sequence[int], (first, timeout - first))
    lookup = cast(
        "Deferred[_Sections]", defer.maybeDeferred(resolver.lookupService, name, schedule)
    )
    lookup.addTimeout(timeout, reactor)
    result: Deferred[_Answer | Failure] = lookup.addCallbacks(
        lambda sections: _answer_from_sections(service, name, sections, log),
        lambda failure: _answer_from_failure(service, name, failure, log),
    )
    # a Failure returned by a callback fails the Deferred, so what it fires with is an _Answer
    return cast("Deferred[_Answer]", result)


def _decide(
    domain: str, answers: Sequence[_Answer], rng: random.Random, log: Logger = _log
) -> list[ConnectionOption]:
    """Combine the two services' answers into the ordered options (see the module's rules)."""
    usable = [record for answer in answers for record in answer.records]
    by_service = {answer.service: answer for answer in answers}
    starttls = by_service[Service.XMPP_CLIENT]
    direct = by_service[Service.XMPPS_CLIENT]
    if usable:
        options = [record.option() for record in order_srv_records(usable, rng)]
        log.debug("Connection options for {domain}: {options}", domain=domain, options=options)
        return options
    if starttls.disabled:
        if direct.disabled:
            raise ValueError(f"XMPP is not available on {domain} (SRV target '.')")
        if direct.failure is not None:
            log.warn(
                "{domain} disabled {starttls} and the lookup of {direct} failed",
                domain=domain,
                starttls=starttls.name,
                direct=direct.name,
            )
            direct.failure.raiseException()
        raise ValueError(
            f"XMPP is not available on {domain} (SRV target '.' for {starttls.name} and no "
            f"{direct.name} records)"
        )
    failed = [answer.name for answer in answers if answer.failure is not None]
    if failed:
        log.warn(
            "Falling back to {domain}:{port} (STARTTLS): the SRV lookup of {failed} failed",
            domain=domain,
            port=DEFAULT_PORT,
            failed=" and ".join(failed),
        )
    else:
        log.debug(
            "No SRV records for {domain}: falling back to {domain}:{port} (STARTTLS)",
            domain=domain,
            port=DEFAULT_PORT,
        )
    return [(domain, DEFAULT_PORT, STARTTLSConnector())]


def _query_domain(domain: str) -> str:
    """Return *domain* as the ASCII (A-label) name to query, without a trailing dot."""
    name = domain.rstrip(".")
    if not name:
        raise ValueError(f"not a domain name: {domain!r}")
    if name.isascii():
        return name
    return idna.encode(name, uts46=True).decode("ascii")


def _unwrap_first_error(failure: Failure) -> Failure:
    """Return the failure of the lookup that failed, rather than gatherResults' wrapper."""
    if isinstance(failure.value, FirstError):
        return failure.value.subFailure
    return failure


def discover_connectors(
    domain: str,
    resolver: IResolver | None = None,
    *,
    reactor: IReactorTime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    rng: random.Random | None = None,
    logger: Logger | None = None,
) -> Deferred[list[ConnectionOption]]:
    """Find the ways to connect to the XMPP service of *domain*, best first.

    :param domain: the XMPP domain (the domain part of the JID).  A non-ASCII domain is queried
        as its A-label (IDNA, UTS #46); the fallback option keeps *domain* as given.
    :param resolver: where to send the SRV queries; the process-wide
        :func:`twisted.names.client.getResolver` (from ``/etc/resolv.conf``) when ``None``.
    :param reactor: the clock for the timeouts; the global reactor when ``None``.
    :param timeout: seconds each of the two concurrent lookups may take before it counts as
        failed.
    :param rng: the random source for the weighted order within a priority (a seeded
        :class:`random.Random` for reproducible orders); a module-wide one when ``None``.
    :param logger: where the lines of the discovery go (the lookups, the records found, the
        options and why, at debug level; failures and fallbacks after failures, at warning
        level); this module's logger (namespace ``txxmppnode.discovery``) when ``None``.
    :return: a Deferred firing with ``(host, port, connector)`` options, where *host* has no
        trailing dot and *connector* is a :class:`~txxmppnode.connector.STARTTLSConnector`
        (``_xmpp-client``) or a :class:`~txxmppnode.connector.DirectTLSConnector`
        (``_xmpps-client``); the rules for ``.`` records, missing records and failures are in
        the module documentation.  It fails with :class:`ValueError` when the domain says XMPP
        is not available, or when *domain* or *timeout* is invalid.
    """
    try:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        query_domain = _query_domain(domain)
    except ValueError:
        return defer.fail()
    if resolver is None:
        from twisted.names import client

        # getResolver is unannotated; it returns the process-wide IResolver
        resolver = cast(IResolver, client.getResolver())  # type: ignore[no-untyped-call]
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = cast(IReactorTime, global_reactor)
    chosen_rng = rng if rng is not None else _default_rng
    log = logger if logger is not None else _log
    lookups = [
        _lookup(resolver, service, query_domain, timeout, reactor, log) for service in Service
    ]
    gathered = defer.gatherResults(lookups, consumeErrors=True)
    gathered.addErrback(_unwrap_first_error)
    return gathered.addCallback(lambda answers: _decide(domain, answers, chosen_rng, log))
