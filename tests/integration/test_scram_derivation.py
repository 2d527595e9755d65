"""SCRAM's key derivation over real connections: the cache across connections to Prosody, and
the negotiation timeout and the iteration bound against ``tests/support/hostile_scram.py``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from twisted.internet import defer, reactor

from tests.support.hostile_scram import HostileScramServer
from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread
from txxmppnode import JID
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector
from txxmppnode.errors import FatalError, MultiOSError
from txxmppnode.key_derivation import KeyDeriver
from txxmppnode.sasl import KeyDerivation, SASLProtocolError
from txxmppnode.security_layer import SecurityLayer, make

#: How long a test waits for something the code under test must do anyway.
WAIT = 10.0


class Recording:
    """The real derivation, recording the thread of each call; optionally held until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.threads: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, derivation: KeyDerivation) -> bytes:
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(WAIT), "the test never released the derivation"
        return derivation.compute()


def with_deriver(layer: SecurityLayer, compute: Recording) -> SecurityLayer:
    return replace(layer, key_deriver=KeyDeriver(compute=compute))


def refusing_resolver() -> Any:
    """A resolver that knows no name: discovery's fallback fails at once."""
    from twisted.names import error as dns_error
    from twisted.names.common import ResolverBase

    class Refusing(ResolverBase):
        def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Any:
            return defer.fail(dns_error.DNSNameError(name))

    return Refusing()


def test_a_second_connection_with_the_same_layer_does_not_derive_again(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    recording = Recording()
    layer = with_deriver(
        make(prosody.accounts["juliet"], trust_root=str(prosody.ca_pem_path)), recording
    )
    peer = [("127.0.0.1", prosody.starttls_port, STARTTLSConnector())]
    for _ in range(2):
        _, xmlstream, _ = reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(prosody.jid("juliet")),
            layer,
            negotiation_timeout=10,
            override_peer=peer,
            timeout=30,
        )
        assert xmlstream.sasl_mechanism.startswith("SCRAM-SHA-1")
        reactor_thread.run(xmlstream.close)
    assert len(recording.threads) == 1
    assert (layer.key_deriver.computed, layer.key_deriver.hits) == (1, 1)
    # and the one derivation ran in a thread of the reactor's pool, not in the reactor's
    assert recording.threads[0] != reactor_thread.run(threading.get_ident)


@pytest.fixture
def ca_path(tmp_path: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture
def hostile(
    reactor_thread: ReactorThread, ca_path: tuple[trustme.CA, str]
) -> Iterator[Callable[..., HostileScramServer]]:
    servers: list[HostileScramServer] = []

    def start(**options: Any) -> HostileScramServer:
        server = HostileScramServer(ca_path[0], **options)
        reactor_thread.run(server.listen, reactor)
        servers.append(server)
        return server

    yield start
    for server in servers:
        reactor_thread.run(server.stop)


def connect_to(
    reactor_thread: ReactorThread, server: HostileScramServer, layer: SecurityLayer, timeout: float
) -> BaseException:
    """Connect to *server* only; return the error of the (failing) attempt."""
    with pytest.raises((MultiOSError, FatalError)) as raised:
        reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(server.jid),
            layer,
            negotiation_timeout=timeout,
            override_peer=[("127.0.0.1", server.port, DirectTLSConnector())],
            resolver=refusing_resolver(),
            timeout=30,
        )
    # a fatal error (SASLProtocolError) is raised as it is; others come in a MultiOSError
    error = raised.value
    return error.exceptions[0] if isinstance(error, MultiOSError) else error


def test_a_derivation_longer_than_the_timeout_ends_the_attempt_and_closes_the_connection(
    reactor_thread: ReactorThread,
    hostile: Callable[..., HostileScramServer],
    ca_path: tuple[trustme.CA, str],
) -> None:
    server = hostile(iterations=4096)
    held = Recording(hold=True)
    layer = with_deriver(make(server.password, trust_root=ca_path[1]), held)
    try:
        error = connect_to(reactor_thread, server, layer, timeout=0.5)
        assert held.started.is_set() and not held.release.is_set()  # still computing
    finally:
        held.release.set()
    assert type(error) is TimeoutError
    assert "SCRAM key derivation" in str(error) and "0.5s" in str(error)
    (connection,) = server.connections
    reactor_thread.run(lambda: connection.lost, timeout=WAIT)  # the client closed it
    assert connection.received == ["auth"]  # no response was ever sent
    assert len(layer.key_deriver.cache) == 0


def test_a_server_asking_for_more_iterations_than_the_bound_gets_abort(
    reactor_thread: ReactorThread,
    hostile: Callable[..., HostileScramServer],
    ca_path: tuple[trustme.CA, str],
) -> None:
    server = hostile(iterations=1_000_001)  # one more than the documented default bound
    recording = Recording()
    layer = with_deriver(make(server.password, trust_root=ca_path[1]), recording)
    error = connect_to(reactor_thread, server, layer, timeout=10)
    assert type(error) is SASLProtocolError
    assert "asks for 1000001 PBKDF2 iterations; more than 1000000" in str(error)
    assert recording.threads == []  # refused before any derivation
    # the <abort/> reaches the peer before the connection closes (a failed negotiation closes
    # the stream gracefully)
    (connection,) = server.connections
    reactor_thread.run(lambda: connection.lost, timeout=WAIT)
    assert connection.received == ["auth", "abort"]
