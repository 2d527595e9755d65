"""A cancelled connection attempt ends there: no next option, no DNS discovery, no connection.

Cancelling ``HostnameEndpoint.connect`` while the host name is being resolved fails it with a
``DNSLookupError`` (an ``OSError``); ``connect_xmlstream`` used to take that for an
unreachable host and go on with the next option and DNS discovery, so a client stopped during
the host-name lookup of an attempt went on connecting after ``stop()``, and its ``on_stopped``
waited for all of it.  Here the host-name lookup never answers (a resolver that drops our
queries), time is a ``MemoryReactorClock``, and TCP connections are only recorded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver
from twisted.internet.testing import MemoryReactorClock
from twisted.names import error as dns_error
from twisted.python.failure import Failure
from zope.interface import implementer

from txxmppnode import JID
from txxmppnode.client import Client, ClientState
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import STARTTLSConnector, cancelled_as_such
from txxmppnode.security_layer import make

PEER = ("xmpp.example.com", 5222, STARTTLSConnector())


@implementer(IHostnameResolver)
class SilentResolver:
    """Host-name lookups that never answer; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolveHostName(self, receiver: Any, hostName: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        return receiver


@implementer(IReactorPluggableNameResolver)
class Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.nameResolver = SilentResolver()

    def installNameResolver(self, resolver: Any) -> Any:
        old, self.nameResolver = self.nameResolver, resolver
        return old


class SRVResolver:
    """The DNS resolver of discovery: records the SRV lookups, answers NXDOMAIN."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def lookupService(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        self.lookups.append(name)
        return defer.fail(dns_error.DNSNameError(name))


def outcome(d: defer.Deferred[Any]) -> list[Any]:
    results: list[Any] = []
    d.addBoth(results.append)
    return results


def test_connect_xmlstream_cancelled_while_resolving_tries_nothing_more() -> None:
    reactor, dns = Reactor(), SRVResolver()
    attempt = connect_xmlstream(
        JID.fromstr("juliet@example.com"),
        make("pw"),
        override_peer=[PEER, ("other.example.com", 5222, STARTTLSConnector())],
        reactor=reactor,
        resolver=dns,  # type: ignore[arg-type]
    )
    assert reactor.nameResolver.asked == ["xmpp.example.com"]
    results = outcome(attempt)
    attempt.cancel()
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert isinstance(results[0].value, defer.CancelledError)
    reactor.advance(3600)
    assert reactor.nameResolver.asked == ["xmpp.example.com"]  # not the next option
    assert dns.lookups == []  # no discovery
    assert reactor.tcpClients == []


def test_a_client_stopped_while_resolving_stops_at_once_and_connects_nowhere() -> None:
    reactor, dns = Reactor(), SRVResolver()
    client = Client(
        JID.fromstr("juliet@example.com/node"),
        make("pw"),
        override_peer=[PEER],
        reactor=reactor,
        resolver=dns,  # type: ignore[arg-type]
        negotiation_timeout=timedelta(seconds=30),
    )
    events: list[str] = []
    client.on_stopped.connect(lambda: events.append("on_stopped"))
    client.on_failure.connect(lambda error: events.append(f"on_failure {error!r}"))
    client.on_connecting.connect(lambda: events.append("on_connecting"))
    client.start()
    assert events == ["on_connecting"] and reactor.nameResolver.asked == ["xmpp.example.com"]
    stopping = client.stop()
    reactor.advance(0)
    assert stopping.called, "the stop waited for the cancelled attempt to go on"
    assert events == ["on_connecting", "on_stopped"]
    assert client.state is ClientState.STOPPED
    reactor.advance(3600)
    assert dns.lookups == [] and reactor.tcpClients == []
    assert reactor.nameResolver.asked == ["xmpp.example.com"]
    assert events == ["on_connecting", "on_stopped"]


def test_cancelled_as_such_keeps_results_and_other_failures() -> None:
    succeeded: defer.Deferred[int] = defer.Deferred()
    wrapped = cancelled_as_such(succeeded)
    succeeded.callback(1)
    assert outcome(wrapped) == [1]

    failed: defer.Deferred[int] = defer.Deferred()
    wrapped = cancelled_as_such(failed)
    failed.errback(ConnectionRefusedError("no"))
    (failure,) = outcome(wrapped)
    assert isinstance(failure.value, ConnectionRefusedError)

    # a canceller that reports the cancellation as another error (as HostnameEndpoint does)
    masked: defer.Deferred[int] = defer.Deferred(lambda d: d.errback(OSError("lookup failed")))
    wrapped = cancelled_as_such(masked)
    results = outcome(wrapped)
    wrapped.cancel()
    assert len(results) == 1 and isinstance(results[0].value, defer.CancelledError)
    assert "lookup failed" in str(results[0].value)
