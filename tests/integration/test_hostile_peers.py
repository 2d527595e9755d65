"""Hostile and broken servers: what the client uses, what it sends back, and whether it retries.

Each test runs a small real server from :mod:`tests.support.hostile_wire` (or
:mod:`tests.support.hostile_starttls`) on 127.0.0.1 that misbehaves in one exact way and
records every byte the client sends until the TCP connection closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor

from tests.support.hostile_starttls import BehavingStartTLS, InjectingAfterProceed
from tests.support.hostile_wire import (
    DOMAIN,
    SCENARIOS,
    GarbledProceed,
    HostileServer,
    ImpossibleResumeCount,
    Record,
    ScriptedStream,
    elements_after_last_header,
)
from tests.support.reactor import ReactorThread
from txxmppnode import JID, Client, Message
from txxmppnode import namespaces as ns
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.errors import (
    AuthenticationFailure,
    FatalError,
    MultiOSError,
    STARTTLSInjection,
    StreamError,
)
from txxmppnode.sasl import SASLProtocolError
from txxmppnode.security_layer import SecurityLayer, make
from txxmppnode.sm import ResendPolicy

JULIET = f"juliet@{DOMAIN}"
STREAM_ERROR = f"{{{ns.STREAMS}}}error"


@pytest.fixture
def hostile(
    reactor_thread: ReactorThread, tmp_path: Path
) -> Iterator[Callable[[type[ScriptedStream]], HostileServer]]:
    """Return ``make(scenario) -> HostileServer``, listening; stopped after the test."""
    servers: list[HostileServer] = []

    def make_server(scenario: type[ScriptedStream]) -> HostileServer:
        directory = tmp_path / f"server-{len(servers)}"
        directory.mkdir()
        server = HostileServer(scenario, directory)
        reactor_thread.run(server.start)
        servers.append(server)
        return server

    yield make_server
    for server in servers:
        reactor_thread.run(server.stop)


def security(server: HostileServer) -> SecurityLayer:
    return make("secret", trust_root=str(server.ca_pem_path))


def peer(server: HostileServer) -> list[tuple[str, int, Any]]:
    return [("127.0.0.1", server.port, STARTTLSConnector())]


def refusing_resolver() -> Any:
    """A resolver that finds nothing, so that discovery ends the attempt quickly."""
    from twisted.names import error as dns_error
    from twisted.names.common import ResolverBase

    class Refusing(ResolverBase):
        def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Any:
            return defer.fail(dns_error.DNSNameError(name))

    return Refusing()


def connect_error(reactor_thread: ReactorThread, server: HostileServer) -> BaseException:
    with pytest.raises(BaseException) as excinfo:
        reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(JULIET),
            security(server),
            negotiation_timeout=5.0,
            override_peer=peer(server),
            resolver=refusing_resolver(),
            timeout=20,
        )
    return excinfo.value


def first_error(error: BaseException) -> BaseException:
    """The error of the hostile server's option (discovery's fallback comes after it)."""
    if isinstance(error, MultiOSError):
        return error.exceptions[0]
    return error


def closed(reactor_thread: ReactorThread, server: HostileServer, number: int = 1) -> Record:
    return reactor_thread.run(server.closed, number, timeout=15)


# -- STARTTLS injection -------------------------------------------------------------------------


def test_features_injected_after_proceed_are_never_used(
    hostile: Callable[[type[ScriptedStream]], HostileServer], reactor_thread: ReactorThread
) -> None:
    server = hostile(InjectingAfterProceed)
    error = first_error(connect_error(reactor_thread, server))
    assert type(error) is STARTTLSInjection
    assert not isinstance(error, FatalError)
    assert "plaintext after <proceed/>" in str(error)
    record = closed(reactor_thread, server)
    assert record.mechanisms == []  # neither PLAIN nor anything else: no authentication at all
    elements, footer = elements_after_last_header(record.received)
    # nothing after <starttls/>: no TLS handshake, no plaintext, not even a footer
    assert [e.tag for e in elements] == [f"{{{ns.TLS}}}starttls"]
    assert not footer


def test_a_server_that_sends_nothing_after_proceed_has_its_tls_features_used(
    hostile: Callable[[type[ScriptedStream]], HostileServer], reactor_thread: ReactorThread
) -> None:
    server = hostile(BehavingStartTLS)
    error = connect_error(reactor_thread, server)
    assert isinstance(error, AuthenticationFailure)  # the fake server refuses every password
    record = closed(reactor_thread, server)
    assert record.mechanisms == ["SCRAM-SHA-1"]


# -- stream errors and <abort/> reach the server ------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=lambda s: s.__name__)
def test_what_the_client_decided_to_send_arrives_before_the_close(
    scenario: type[ScriptedStream],
    hostile: Callable[[type[ScriptedStream]], HostileServer],
    reactor_thread: ReactorThread,
) -> None:
    server = hostile(scenario)
    error = first_error(connect_error(reactor_thread, server))
    record = closed(reactor_thread, server)
    elements, footer = elements_after_last_header(record.received)
    condition = SCENARIOS[scenario]
    last = elements[-1]
    if condition is None:
        assert isinstance(error, SASLProtocolError)
        assert last.tag == f"{{{ns.SASL}}}abort"
    else:
        assert isinstance(error, StreamError) and error.sent_by_us
        assert error.condition.value == condition
        assert last.tag == STREAM_ERROR
        assert last[0].tag == f"{{{ns.STREAM_ERRORS}}}{condition}"
    assert footer  # and our footer after it, all before the TCP connection closed


def test_a_garbled_answer_to_starttls_is_retried_not_fatal(
    hostile: Callable[[type[ScriptedStream]], HostileServer], reactor_thread: ReactorThread
) -> None:
    server = hostile(GarbledProceed)
    client = Client(
        JID.fromstr(JULIET),
        security(server),
        override_peer=peer(server),
        reactor=reactor,
        resolver=refusing_resolver(),
        max_initial_attempts=None,
        negotiation_timeout=timedelta(seconds=5),
    )
    client.backoff_start = timedelta(seconds=0.05)
    failures: list[BaseException] = []
    client.on_failure.connect(failures.append)
    reactor_thread.run(client.start)
    try:
        closed(reactor_thread, server, 2)  # a second attempt was made
        assert failures == []
        assert reactor_thread.run(lambda: client.running)
    finally:
        reactor_thread.run(client.stop, timeout=15)


# -- <resumed h> with a count the client never reached -------------------------------------------


def test_resumed_with_an_impossible_count_ends_in_a_fresh_session(
    hostile: Callable[[type[ScriptedStream]], HostileServer], reactor_thread: ReactorThread
) -> None:
    server = hostile(ImpossibleResumeCount)
    client = Client(
        JID.fromstr(f"{JULIET}/balcony"),
        security(server),
        override_peer=peer(server),
        reactor=reactor,
        resolver=refusing_resolver(),
        negotiation_timeout=timedelta(seconds=5),
    )
    client.backoff_start = timedelta(seconds=0.05)
    client.stream.resend_policy = ResendPolicy.RESEND
    seen: list[str] = []
    for name in ("on_stream_established", "on_stream_suspended", "on_stream_resumed",
                 "on_stream_destroyed", "on_failure"):  # fmt: skip
        getattr(client, name).connect(lambda *args, name=name: seen.append(name))

    async def scenario() -> str:
        first = client.on_stream_established.next()
        client.start()
        await first
        client.enqueue(Message(to=f"romeo@{DOMAIN}", type_="chat", body="once more"))
        # connection 1 drops it unacknowledged; connection 2 answers <resumed h='99'/>
        third = await server.connection(3)
        body = await third.first_body
        signals.extend(seen)
        return body

    signals: list[str] = []
    try:
        body = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(scenario()), timeout=30)
        second = closed(reactor_thread, server, 2)
    finally:
        reactor_thread.run(client.stop, timeout=15)
    assert body == "once more"  # sent again on the fresh session, as RESEND says
    elements, footer = elements_after_last_header(second.received)
    error = elements[-1]
    assert error.tag == STREAM_ERROR
    assert error[0].tag == f"{{{ns.STREAM_ERRORS}}}undefined-condition"
    detail = error.find(f"{{{ns.STREAM_MANAGEMENT}}}handled-count-too-high")
    assert detail is not None
    assert (detail.get("h"), detail.get("send-count")) == ("99", "1")
    assert footer
    assert signals == [
        "on_stream_established",
        "on_stream_suspended",
        "on_stream_destroyed",
        "on_stream_established",
    ]
