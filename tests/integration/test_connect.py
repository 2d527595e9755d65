"""connect_xmlstream() against the real Prosody (the basic ways in against ejabberd too): every way
in, and every way it can fail."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from twisted.internet import defer, protocol, reactor

from tests.conftest import XMPPServer
from tests.support.dnsmasq import SRV, DnsmasqServer, LocalDomain
from tests.support.prosody import ProsodyServer, write_self_signed_certificate
from tests.support.reactor import ReactorThread
from txxmppnode import JID, namespaces
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector
from txxmppnode.errors import (
    AuthenticationFailure,
    MultiOSError,
    SASLUnavailable,
    TLSFailure,
)
from txxmppnode.negotiation import bind_resource
from txxmppnode.security_layer import PinType, make
from txxmppnode.xmlstream import XMLStream

BIND = f"{{{namespaces.BIND}}}bind"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def layer(server: XMPPServer, password: str | None = None, **options: Any) -> Any:
    account = password if password is not None else server.accounts["juliet"]
    return make(account, trust_root=str(server.ca_pem_path), **options)


def starttls(server: XMPPServer) -> list[tuple[str, int, Any]]:
    return [("127.0.0.1", server.starttls_port, STARTTLSConnector())]


def direct(server: XMPPServer) -> list[tuple[str, int, Any]]:
    return [("127.0.0.1", server.direct_tls_port, DirectTLSConnector())]


class Connected:
    """What connect_xmlstream returned, closed cleanly at the end of the test."""

    def __init__(self, runner: ReactorThread, result: Any) -> None:
        self.runner = runner
        self.transport, self.stream, self.features = result

    @property
    def xmlstream(self) -> XMLStream:
        assert isinstance(self.stream, XMLStream)
        return self.stream

    def close(self) -> None:
        self.runner.run(self.xmlstream.close, timeout=10)


@pytest.fixture
def connect(reactor_thread: ReactorThread) -> Iterator[Callable[..., Connected]]:
    opened: list[Connected] = []

    def run(jid: str, security_layer: Any, **kwargs: Any) -> Connected:
        kwargs.setdefault("negotiation_timeout", 10.0)
        result = reactor_thread.run(
            connect_xmlstream, JID.fromstr(jid), security_layer, timeout=30, **kwargs
        )
        connected = Connected(reactor_thread, result)
        opened.append(connected)
        return connected

    yield run
    for connected in opened:
        connected.close()


def failure_of(reactor_thread: ReactorThread, *args: Any, **kwargs: Any) -> BaseException:
    kwargs.setdefault("negotiation_timeout", 10.0)
    with pytest.raises(BaseException) as excinfo:
        reactor_thread.run(connect_xmlstream, *args, timeout=30, **kwargs)
    return excinfo.value


def test_starttls_and_scram_give_an_authenticated_stream(
    xmpp_server: XMPPServer, connect: Callable[..., Connected], reactor_thread: ReactorThread
) -> None:
    conn = connect(
        xmpp_server.jid("juliet"), layer(xmpp_server), override_peer=starttls(xmpp_server)
    )
    assert conn.features.find(BIND) is not None
    assert conn.xmlstream.tls_connection is not None
    # the strongest each server offers on TLS 1.3 (see test_binding_interop.py)
    assert conn.xmlstream.sasl_mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS")
    bound = reactor_thread.run(
        lambda: defer.Deferred.fromCoroutine(
            bind_resource(conn.xmlstream, conn.features, "balcony", 10)
        )
    )
    assert bound == JID.fromstr(xmpp_server.jid("juliet") + "/balcony")


def test_server_assigns_a_resource_when_none_is_asked(
    xmpp_server: XMPPServer, connect: Callable[..., Connected], reactor_thread: ReactorThread
) -> None:
    conn = connect(
        xmpp_server.jid("romeo"),
        layer(xmpp_server, xmpp_server.accounts["romeo"]),
        override_peer=direct(xmpp_server),
    )
    bound = reactor_thread.run(
        lambda: defer.Deferred.fromCoroutine(bind_resource(conn.xmlstream, conn.features, None, 10))
    )
    assert bound.bare() == JID.fromstr(xmpp_server.jid("romeo"))
    assert bound.resource


def test_direct_tls_port_with_alpn(
    xmpp_server: XMPPServer, connect: Callable[..., Connected]
) -> None:
    conn = connect(xmpp_server.jid("juliet"), layer(xmpp_server), override_peer=direct(xmpp_server))
    tls = conn.xmlstream.tls_connection
    assert tls is not None
    assert conn.features.find(BIND) is not None
    # neither Prosody 0.12 nor ejabberd 23.01 negotiates ALPN; offering it must not break the
    # handshake
    assert tls.get_alpn_proto_negotiated() in (b"", b"xmpp-client")


def test_plain_over_tls_when_the_server_offers_only_plain(
    make_prosody: Callable[..., ProsodyServer], connect: Callable[..., Connected]
) -> None:
    server = make_prosody(global_config_lua='disable_sasl_mechanisms = { "SCRAM-SHA-1" }')
    conn = connect(server.jid("juliet"), layer(server), override_peer=starttls(server))
    assert conn.xmlstream.sasl_mechanism == "PLAIN"


def test_scram_sha_1_plus_with_tls_unique_on_tls_1_2(
    make_prosody: Callable[..., ProsodyServer], connect: Callable[..., Connected]
) -> None:
    server = make_prosody(tls_max_version="1.2")
    conn = connect(server.jid("juliet"), layer(server), override_peer=starttls(server))
    tls = conn.xmlstream.tls_connection
    assert tls is not None and tls.get_protocol_version_name() == "TLSv1.2"
    assert conn.xmlstream.sasl_mechanism == "SCRAM-SHA-1-PLUS"
    assert conn.xmlstream.sasl_channel_binding == "tls-unique"


def test_wrong_password_is_not_authorized(
    xmpp_server: XMPPServer, reactor_thread: ReactorThread
) -> None:
    wrong = layer(xmpp_server, "not the password")
    error = failure_of(
        reactor_thread,
        JID.fromstr(xmpp_server.jid("juliet")),
        wrong,
        override_peer=starttls(xmpp_server),
    )
    assert isinstance(error, AuthenticationFailure)
    assert error.condition == "not-authorized"


def test_password_provider_is_asked_again_after_a_refusal(
    prosody: ProsodyServer, connect: Callable[..., Connected]
) -> None:
    asked: list[int] = []

    def provider(jid: JID, attempt: int) -> str | None:
        asked.append(attempt)
        return "wrong" if attempt == 0 else prosody.accounts["juliet"]

    conn = connect(
        prosody.jid("juliet"),
        make(provider, trust_root=str(prosody.ca_pem_path)),
        override_peer=starttls(prosody),
    )
    assert asked == [0, 1]
    assert conn.features.find(BIND) is not None


def test_unknown_ca_is_a_tls_failure(
    prosody: ProsodyServer, reactor_thread: ReactorThread, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    security = make(prosody.accounts["juliet"], trust_root=str(other_ca))
    for options in (starttls(prosody), direct(prosody)):
        error = failure_of(
            reactor_thread, JID.fromstr(prosody.jid("juliet")), security, override_peer=options
        )
        assert type(error) is TLSFailure
        assert "could not be verified" in str(error)


def test_certificate_for_another_name_is_a_tls_failure(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    server = make_prosody(cert_identities=["other.test"])
    error = failure_of(
        reactor_thread,
        JID.fromstr(server.jid("juliet")),
        layer(server),
        override_peer=starttls(server),
    )
    assert type(error) is TLSFailure
    assert "host name" in str(error) and "other.test" in str(error)


def test_pinned_self_signed_certificate_is_accepted(
    make_prosody: Callable[..., ProsodyServer],
    connect: Callable[..., Connected],
    reactor_thread: ReactorThread,
    tmp_path: Path,
) -> None:
    from cryptography import x509

    cert_path, key_path = write_self_signed_certificate(tmp_path, "xmppnode.test")
    server = make_prosody(cert_path=cert_path, key_path=key_path)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    unpinned = make(server.accounts["juliet"])
    error = failure_of(
        reactor_thread, JID.fromstr(server.jid("juliet")), unpinned, override_peer=direct(server)
    )
    assert type(error) is TLSFailure
    from txxmppnode.pinning import make_pin_store

    store = make_pin_store(PinType.PUBLIC_KEY)
    store.pin("xmppnode.test", certificate)
    pinned = make(server.accounts["juliet"], pin_store=store)
    conn = connect(server.jid("juliet"), pinned, override_peer=starttls(server))
    assert conn.features.find(BIND) is not None


class Silent(protocol.Protocol):
    """Accepts the connection and never says a word."""


def test_server_that_never_answers_times_out(
    reactor_thread: ReactorThread, prosody: ProsodyServer
) -> None:
    def listen() -> Any:
        factory = protocol.Factory.forProtocol(Silent)
        return reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]

    port = reactor_thread.run(listen)
    try:
        started = time.monotonic()
        error = failure_of(
            reactor_thread,
            JID.fromstr(prosody.jid("juliet")),
            layer(prosody),
            override_peer=[("127.0.0.1", port.getHost().port, STARTTLSConnector())],
            negotiation_timeout=0.5,
        )
        elapsed = time.monotonic() - started
    finally:
        reactor_thread.run(port.stopListening)
    assert isinstance(error, MultiOSError)
    # the silent server timed out; discovery's fallback (the domain on 5222) does not resolve
    assert type(error.exceptions[0]) is TimeoutError
    assert "0.5s" in str(error.exceptions[0])
    assert 0.4 < elapsed < 5


def test_override_peer_with_a_dead_first_option(
    prosody: ProsodyServer, connect: Callable[..., Connected]
) -> None:
    dead = ("127.0.0.1", free_port(), STARTTLSConnector())
    conn = connect(prosody.jid("juliet"), layer(prosody), override_peer=[dead, *direct(prosody)])
    assert conn.features.find(BIND) is not None


def test_nothing_reachable_lists_every_error_in_order(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    ports = [free_port(), free_port()]
    error = failure_of(
        reactor_thread,
        JID.fromstr(prosody.jid("juliet")),
        layer(prosody),
        override_peer=[("127.0.0.1", p, STARTTLSConnector()) for p in ports],
        resolver=_refusing_resolver(),
    )
    assert isinstance(error, MultiOSError)
    # two refused overrides, then discovery's fallback (domain:5222, which does not resolve)
    assert len(error.exceptions) == 3
    assert [type(e) for e in error.exceptions[:2]] == [ConnectionRefusedError] * 2
    assert all(isinstance(e, OSError) for e in error.exceptions)


def _refusing_resolver() -> Any:
    from twisted.names import error as dns_error
    from twisted.names.common import ResolverBase

    class Refusing(ResolverBase):
        def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Any:
            return defer.fail(dns_error.DNSNameError(name))

    return Refusing()


@pytest.fixture
def srv_dns(prosody: ProsodyServer, tmp_path: Path) -> Iterator[DnsmasqServer]:
    domain = prosody.domain
    server = DnsmasqServer(
        tmp_path / "dns",
        [
            LocalDomain(domain),
            SRV(f"_xmpp-client._tcp.{domain}", "127.0.0.1", prosody.starttls_port, 10, 0),
            SRV(f"_xmpps-client._tcp.{domain}", "127.0.0.1", prosody.direct_tls_port, 5, 0),
            LocalDomain("off.test"),
            SRV("_xmpp-client._tcp.off.test"),
            SRV("_xmpps-client._tcp.off.test"),
        ],
    )
    server.start()
    yield server
    server.stop()


def test_srv_discovery_through_dnsmasq(
    prosody: ProsodyServer,
    srv_dns: DnsmasqServer,
    connect: Callable[..., Connected],
    reactor_thread: ReactorThread,
) -> None:
    resolver = reactor_thread.run(srv_dns.resolver)
    conn = connect(prosody.jid("juliet"), layer(prosody), resolver=resolver)
    # the direct-TLS record has the better priority
    peer = conn.transport.getPeer()
    assert peer.port == prosody.direct_tls_port
    assert conn.features.find(BIND) is not None


def test_srv_dot_on_both_services_is_a_value_error(
    srv_dns: DnsmasqServer, prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    resolver = reactor_thread.run(srv_dns.resolver)
    error = failure_of(
        reactor_thread, JID.fromstr("juliet@off.test"), layer(prosody), resolver=resolver
    )
    assert isinstance(error, ValueError)
    assert "off.test" in str(error)


def test_sasl_unavailable_when_the_server_offers_only_anonymous(
    make_prosody: Callable[..., ProsodyServer], reactor_thread: ReactorThread
) -> None:
    server = make_prosody(config_lua='authentication = "anonymous"', accounts=())
    error = failure_of(
        reactor_thread,
        JID.fromstr(server.jid("juliet")),
        layer(server, "any"),
        override_peer=starttls(server),
    )
    # fatal: raised as it is, not in a MultiOSError that a Client would retry
    assert isinstance(error, SASLUnavailable)
    assert "ANONYMOUS" in str(error)


def test_anonymous_login_when_asked_for(
    make_prosody: Callable[..., ProsodyServer], connect: Callable[..., Connected]
) -> None:
    server = make_prosody(config_lua='authentication = "anonymous"', accounts=())
    security = make(None, anonymous=True, trust_root=str(server.ca_pem_path))
    conn = connect(server.domain, security, override_peer=direct(server))
    assert conn.xmlstream.sasl_mechanism == "ANONYMOUS"
    assert conn.features.find(BIND) is not None


class Redirecting(protocol.Protocol):
    """Opens a stream and at once redirects the client elsewhere with see-other-host."""

    target = ""

    def dataReceived(self, data: bytes) -> None:
        if b"<stream:stream" in data:
            self.transport.write(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
                b" xmlns:stream='http://etherx.jabber.org/streams' from='xmppnode.test'"
                b" id='r1' version='1.0'><stream:error><see-other-host"
                b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
                + self.target.encode()
                + b"</see-other-host></stream:error></stream:stream>"
            )
            self.transport.loseConnection()


def test_see_other_host_is_followed(
    prosody: ProsodyServer, connect: Callable[..., Connected], reactor_thread: ReactorThread
) -> None:
    class ToProsody(Redirecting):
        target = f"127.0.0.1:{prosody.starttls_port}"

    def listen() -> Any:
        return reactor.listenTCP(  # type: ignore[attr-defined]
            0, protocol.Factory.forProtocol(ToProsody), interface="127.0.0.1"
        )

    port = reactor_thread.run(listen)
    try:
        redirector = [("127.0.0.1", port.getHost().port, STARTTLSConnector())]
        conn = connect(prosody.jid("juliet"), layer(prosody), override_peer=redirector)
    finally:
        reactor_thread.run(port.stopListening)
    assert conn.transport.getPeer().port == prosody.starttls_port
    assert conn.features.find(BIND) is not None


def test_redirect_loops_are_bounded(prosody: ProsodyServer, reactor_thread: ReactorThread) -> None:
    class ToItself(Redirecting):
        pass

    def listen() -> Any:
        return reactor.listenTCP(  # type: ignore[attr-defined]
            0, protocol.Factory.forProtocol(ToItself), interface="127.0.0.1"
        )

    port = reactor_thread.run(listen)
    ToItself.target = f"127.0.0.1:{port.getHost().port}"
    try:
        error = failure_of(
            reactor_thread,
            JID.fromstr(prosody.jid("juliet")),
            layer(prosody),
            override_peer=[("127.0.0.1", port.getHost().port, STARTTLSConnector())],
            resolver=_refusing_resolver(),
        )
    finally:
        reactor_thread.run(port.stopListening)
    assert isinstance(error, MultiOSError)
    redirects = [e for e in error.exceptions if "see-other-host" in str(e)]
    assert len(redirects) == 1 + 5  # the first answer and five followed hops


def test_cancelling_closes_the_half_open_connection(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    closed: defer.Deferred[None] = defer.Deferred()
    connected: defer.Deferred[None] = defer.Deferred()
    outcome: list[BaseException] = []

    class Watching(protocol.Protocol):
        def connectionMade(self) -> None:
            connected.callback(None)

        def connectionLost(self, reason: Any = None) -> None:
            closed.callback(None)

    def start() -> Any:
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, protocol.Factory.forProtocol(Watching), interface="127.0.0.1"
        )
        attempt = connect_xmlstream(
            JID.fromstr(prosody.jid("juliet")),
            layer(prosody),
            override_peer=[("127.0.0.1", port.getHost().port, STARTTLSConnector())],
        )
        attempt.addErrback(lambda f: outcome.append(f.value))
        return port, attempt

    port, attempt = reactor_thread.run(start)
    try:
        reactor_thread.run(lambda: connected, timeout=5)  # the stream is half open
        reactor_thread.run(attempt.cancel)
        reactor_thread.run(lambda: closed, timeout=5)  # and the server saw it closed
    finally:
        reactor_thread.run(port.stopListening)
    assert [type(e) for e in outcome] == [defer.CancelledError]


def test_nagle_is_off_on_the_client_socket(
    prosody: ProsodyServer, connect: Callable[..., Connected]
) -> None:
    for options in (starttls(prosody), direct(prosody)):
        conn = connect(prosody.jid("juliet"), layer(prosody), override_peer=options)
        transport = conn.transport
        tcp = transport if hasattr(transport, "getTcpNoDelay") else transport.transport
        assert tcp.getTcpNoDelay()
