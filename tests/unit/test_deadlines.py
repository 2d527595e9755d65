"""Every negotiation step ends at one deadline, whatever unrelated traffic the server sends.

Each test starts a step over an in-memory transport with a ``task.Clock``, has the server say
something unrelated (whitespace, or stanzas that do not answer) every 0.4 s of clock time, and
checks that the step is still waiting just before its deadline and has failed with
:class:`TimeoutError` just after it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from txxmppnode import JID, Message
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.negotiation import authenticate, bind_resource, negotiate
from txxmppnode.security_layer import make
from txxmppnode.sm import ResendPolicy
from txxmppnode.stanzastream import StanzaStream
from txxmppnode.token import StanzaState
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser
from txxmppnode.xmlstream import XMLStream

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
JULIET = JID.fromstr("juliet@example.com")
TIMEOUT = 5.0
STEP = 0.4
WHITESPACE = " \n"
CHATTER = "<presence from='romeo@example.net/orchard'/><message from='romeo@example.net'/> "


class TLSCapableTransport(StringTransport):
    """An in-memory transport that accepts ``startTLS`` and then never completes a handshake."""

    tls_started = False

    def startTLS(self, creator: Any) -> None:
        self.tls_started = True


def connected(
    transport: StringTransport | None = None, clock: Clock | None = None
) -> tuple[XMLStream, StringTransport, Clock]:
    clock = clock or Clock()
    transport = transport or StringTransport()
    stream = XMLStream("example.com", reactor=clock)
    stream.makeConnection(transport)
    stream.dataReceived(PEER_HEADER)
    transport.clear()
    return stream, transport, clock


def sent(transport: StringTransport) -> list[Any]:
    parser = XMLStreamParser()
    parser.feed(PEER_HEADER)
    data = transport.value()
    transport.clear()
    return [e.element for e in parser.feed(data) if isinstance(e, ElementReceived)]


def expect_timeout_at_deadline(
    clock: Clock, result: defer.Deferred[Any], say: Callable[[], None], step: str
) -> TimeoutError:
    """Have the server *say* something every 0.4 s; the step must end at TIMEOUT, not before."""
    elapsed = 0.0
    while elapsed + STEP < TIMEOUT:
        clock.advance(STEP)
        elapsed += STEP
        if not result.called:
            say()
        assert not result.called, f"the step ended after {elapsed:.1f}s, before its deadline"
    clock.advance(STEP)
    assert result.called, f"the step was still waiting {elapsed + STEP:.1f}s after it started"
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError), failure.value
    assert step in str(failure.value) and f"{TIMEOUT:g}s" in str(failure.value)
    return failure.value


def saying(stream: XMLStream, xml: str) -> Callable[[], None]:
    return lambda: stream.dataReceived(xml.encode())


# -- TCP --------------------------------------------------------------------------------------


@implementer(IHostnameResolver)
class SilentResolver:
    """A name resolver that never answers (a DNS server that drops our queries)."""

    def resolveHostName(self, receiver: Any, hostName: str, *args: Any, **kwargs: Any) -> Any:
        receiver.resolutionBegan(None)
        return receiver


@implementer(IReactorPluggableNameResolver)
class SilentDNSReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.nameResolver = SilentResolver()

    def installNameResolver(self, resolver: Any) -> Any:
        old, self.nameResolver = self.nameResolver, resolver
        return old


def test_tcp_connection_including_name_resolution_ends_at_the_deadline() -> None:
    reactor = SilentDNSReactor()
    result = STARTTLSConnector().connect(
        JULIET,
        make("secret", trust_root=None),
        "xmpp.example.com",
        5222,
        negotiation_timeout=TIMEOUT,
        reactor=reactor,
    )
    expect_timeout_at_deadline(reactor, result, lambda: None, "TCP connection")


# -- STARTTLS, TLS, features, SASL ------------------------------------------------------------


def negotiating(stream: XMLStream, *, direct_tls: bool = False) -> defer.Deferred[Any]:
    layer = make("secret", trust_root=None)
    verifier = layer.tls_verifier("example.com")
    return defer.Deferred.fromCoroutine(
        negotiate(stream, JULIET, layer, verifier, direct_tls=direct_tls, timeout=TIMEOUT)
    )


def test_features_wait_ends_at_the_deadline() -> None:
    stream, _, clock = connected()
    result = negotiating(stream)
    expect_timeout_at_deadline(clock, result, saying(stream, WHITESPACE), "")


def test_starttls_answer_wait_ends_at_the_deadline() -> None:
    stream, transport, clock = connected()
    result = negotiating(stream)
    stream.dataReceived(b"<stream:features/>")
    (starttls,) = sent(transport)
    assert starttls.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"
    expect_timeout_at_deadline(clock, result, saying(stream, WHITESPACE), "")


def test_starttls_handshake_ends_at_the_deadline() -> None:
    stream, transport, clock = connected(TLSCapableTransport())
    result = negotiating(stream)
    stream.dataReceived(b"<stream:features/>")
    # after our <starttls/> (a <proceed/> sent along with the features would be refused)
    stream.dataReceived(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert isinstance(transport, TLSCapableTransport) and transport.tls_started
    expect_timeout_at_deadline(clock, result, lambda: None, "")


def test_direct_tls_handshake_ends_at_the_deadline() -> None:
    clock = Clock()
    stream = XMLStream("example.com", reactor=clock)
    stream.makeConnection(StringTransport())
    result = negotiating(stream, direct_tls=True)
    expect_timeout_at_deadline(clock, result, lambda: None, "")


def test_sasl_round_ends_at_the_deadline() -> None:
    stream, transport, clock = connected()
    offered = XMLStreamParser().feed(
        PEER_HEADER
        + f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>PLAIN"
        "</mechanism></mechanisms></stream:features>".encode()
    )[-1]
    assert isinstance(offered, ElementReceived)
    layer = make("secret", allow_plain_without_tls=True)
    result = defer.Deferred.fromCoroutine(
        authenticate(stream, offered.element, JULIET, layer, TIMEOUT)
    )
    (auth,) = sent(transport)
    assert base64.b64decode(auth.text) == b"\x00juliet\x00secret"
    expect_timeout_at_deadline(clock, result, saying(stream, WHITESPACE), "")


# -- binding and the legacy session -----------------------------------------------------------


def features(xml: str) -> Any:
    wrapped = f"<stream:features>{xml}</stream:features>"
    events = XMLStreamParser().feed(PEER_HEADER + wrapped.encode())
    return events[-1].element  # type: ignore[union-attr]


@pytest.mark.parametrize("chatter", [WHITESPACE, CHATTER])
def test_bind_ends_at_one_deadline_despite_unrelated_stanzas(chatter: str) -> None:
    stream, transport, clock = connected()
    result = defer.Deferred.fromCoroutine(
        bind_resource(stream, features(f"<bind xmlns='{BIND}'/>"), "balcony", TIMEOUT)
    )
    (bind,) = sent(transport)
    assert bind[0].tag == f"{{{BIND}}}bind"
    expect_timeout_at_deadline(clock, result, saying(stream, chatter), "resource binding")


def test_legacy_session_ends_at_one_deadline_despite_unrelated_stanzas() -> None:
    stream, transport, clock = connected()
    result = defer.Deferred.fromCoroutine(
        bind_resource(
            stream, features(f"<bind xmlns='{BIND}'/><session xmlns='{SESSION}'/>"), None, TIMEOUT
        )
    )
    (bind,) = sent(transport)
    clock.advance(3)  # the session's deadline starts with its own request, not with the bind
    stream.dataReceived(
        f"<iq type='result' id='{bind.get('id')}'><bind xmlns='{BIND}'>"
        f"<jid>juliet@example.com/x</jid></bind></iq>".encode()
    )
    (session,) = sent(transport)
    assert session[0].tag == f"{{{SESSION}}}session"
    expect_timeout_at_deadline(clock, result, saying(stream, CHATTER), "session establishment")


def test_bind_answer_among_unrelated_stanzas_is_found() -> None:
    stream, transport, clock = connected()
    result = defer.Deferred.fromCoroutine(
        bind_resource(stream, features(f"<bind xmlns='{BIND}'/>"), "balcony", TIMEOUT)
    )
    (bind,) = sent(transport)
    for _ in range(5):
        clock.advance(STEP)
        stream.dataReceived(CHATTER.encode())
    stream.dataReceived(
        f"<iq type='result' id='{bind.get('id')}'><bind xmlns='{BIND}'>"
        f"<jid>juliet@example.com/balcony</jid></bind></iq>".encode()
    )
    assert str(result.result) == "juliet@example.com/balcony"
    assert clock.getDelayedCalls() == []  # no deadline timer left behind


# -- XEP-0198 <enable/> and <resume/> ---------------------------------------------------------

SM = "urn:xmpp:sm:3"
ME = JID.fromstr("juliet@example.com/balcony")


def test_enable_ends_at_one_deadline_and_aborts_the_connection() -> None:
    stream, transport, clock = connected()
    stanzas = StanzaStream(ME.bare(), reactor=clock)
    lost: list[BaseException | None] = []
    stanzas.on_connection_lost.connect(lost.append)
    result = stanzas.start(stream, ME, sm=True, timeout=TIMEOUT)
    (enable,) = sent(transport)
    assert enable.tag == f"{{{SM}}}enable"
    queued = stanzas.enqueue(Message(to="romeo@example.net", body="waits for <enabled/>"))
    error = expect_timeout_at_deadline(clock, result, saying(stream, CHATTER), "<enable/>")
    # a failed negotiation step: the connection is given up, to be tried again
    assert transport.disconnecting
    assert lost == [error]
    assert not stanzas.running and not stanzas.sm_enabled
    # what was queued waits for the next session
    assert queued.state is StanzaState.ACTIVE and stanzas.queue_length == 1


@pytest.mark.parametrize(
    ("policy", "state"),
    [
        (ResendPolicy.DISCONNECT, StanzaState.DISCONNECTED),
        (ResendPolicy.RESEND, StanzaState.ACTIVE),
    ],
)
def test_resume_ends_at_one_deadline_and_falls_back_to_a_new_session(
    policy: ResendPolicy, state: StanzaState
) -> None:
    first, _, clock = connected()
    stanzas = StanzaStream(ME.bare(), reactor=clock, resend_policy=policy)
    stanzas.start(first, ME, sm=True)
    first.dataReceived(f"<enabled xmlns='{SM}' id='sm-1' resume='true'/>".encode())
    token = stanzas.enqueue(Message(to="romeo@example.net", body="unacknowledged"))
    clock.advance(0)
    assert token.state is StanzaState.SENT
    first.connectionLost(Failure(ConnectionDone()))
    destroyed: list[BaseException | None] = []
    stanzas.on_stream_destroyed.connect(destroyed.append)

    second, transport, _ = connected(clock=clock)
    result = defer.Deferred.fromCoroutine(stanzas.resume(second, timeout=TIMEOUT))
    (resume,) = sent(transport)
    assert resume.tag == f"{{{SM}}}resume"
    expect_timeout_at_deadline(clock, result, saying(second, CHATTER), "<resume/>")
    assert transport.disconnecting
    assert len(destroyed) == 1 and not stanzas.sm_enabled and not stanzas.running
    assert token.state is state
    assert stanzas.queue_length == (1 if policy is ResendPolicy.RESEND else 0)
