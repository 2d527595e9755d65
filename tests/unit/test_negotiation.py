"""Negotiation rules that a well-behaved server never exercises, over an in-memory transport."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from txxmppnode import JID
from txxmppnode.errors import (
    AuthenticationFailure,
    FatalError,
    SASLUnavailable,
    STARTTLSInjection,
    StreamError,
    StreamErrorCondition,
    TLSUnavailable,
)
from txxmppnode.negotiation import authenticate, negotiate
from txxmppnode.sasl import SASLProtocolError
from txxmppnode.security_layer import make
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser
from txxmppnode.xmlstream import XMLStream

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
JULIET = JID.fromstr("juliet@example.com")


def connected() -> tuple[XMLStream, StringTransport]:
    transport = StringTransport()
    stream = XMLStream("example.com", reactor=Clock())
    stream.makeConnection(transport)
    stream.dataReceived(PEER_HEADER)
    transport.clear()
    return stream, transport


def sent_elements(transport: StringTransport) -> list[Any]:
    parser = XMLStreamParser()
    parser.feed(PEER_HEADER)
    data = transport.value()
    transport.clear()
    return [e.element for e in parser.feed(data) if isinstance(e, ElementReceived)]


def start_negotiation(stream: XMLStream) -> defer.Deferred[Any]:
    layer = make("secret", trust_root=None)
    verifier = layer.tls_verifier("example.com")
    return defer.Deferred.fromCoroutine(
        negotiate(stream, JULIET, layer, verifier, direct_tls=False, timeout=5)
    )


def test_starttls_is_sent_even_when_not_advertised() -> None:
    stream, transport = connected()
    result = start_negotiation(stream)
    # features without <starttls/>, as a downgrading attacker would show them
    stream.dataReceived(
        b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    )
    (starttls,) = sent_elements(transport)
    assert starttls.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"
    stream.dataReceived(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    failure = result.result
    result.addErrback(lambda f: None)
    assert type(failure.value) is TLSUnavailable
    # nothing was sent in plaintext after the refusal, no credentials in particular
    assert b"auth" not in transport.value()


def test_a_server_that_does_not_know_starttls_is_tls_unavailable() -> None:
    stream, _ = connected()
    result = start_negotiation(stream)
    stream.dataReceived(b"<stream:features/>")
    stream.dataReceived(
        b"<stream:error><unsupported-stanza-type xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error>"
    )
    failure = result.result
    result.addErrback(lambda f: None)
    assert type(failure.value) is TLSUnavailable
    assert "unsupported-stanza-type" in str(failure.value)


def features(*mechanisms: str) -> Any:
    stream_parser = XMLStreamParser()
    xml = "".join(f"<mechanism>{m}</mechanism>" for m in mechanisms)
    wanted = f"<stream:features><mechanisms xmlns='{SASL}'>{xml}</mechanisms></stream:features>"
    events = stream_parser.feed(PEER_HEADER + wanted.encode())
    return events[-1].element


def run_sasl(stream: XMLStream, offered: Any, provider: Any = "secret", **options: Any) -> Any:
    layer = make(provider, allow_plain_without_tls=True, **options)
    return defer.Deferred.fromCoroutine(authenticate(stream, offered, JULIET, layer, 5))


def test_plain_is_refused_without_tls_unless_opted_in() -> None:
    stream, transport = connected()
    layer = make("secret")
    result = defer.Deferred.fromCoroutine(authenticate(stream, features("PLAIN"), JULIET, layer, 5))
    failure = result.result
    result.addErrback(lambda f: None)
    assert type(failure.value) is SASLUnavailable
    assert "PLAIN refused without TLS" in str(failure.value)
    assert transport.value() == b""


def test_sasl_protocol_violation_sends_abort() -> None:
    stream, transport = connected()
    result = run_sasl(stream, features("SCRAM-SHA-1"))
    (auth,) = sent_elements(transport)
    assert auth.get("mechanism") == "SCRAM-SHA-1"
    # a server-first whose nonce does not extend ours
    challenge = base64.b64encode(b"r=someone-elses-nonce,s=QSXCR+Q6sek8bf92,i=4096").decode()
    stream.dataReceived(f"<challenge xmlns='{SASL}'>{challenge}</challenge>".encode())
    (abort,) = sent_elements(transport)
    assert abort.tag == f"{{{SASL}}}abort"
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, SASLProtocolError)


def test_provider_is_asked_again_and_none_gives_up() -> None:
    stream, transport = connected()
    asked: list[int] = []

    def provider(jid: JID, attempt: int) -> str | None:
        asked.append(attempt)
        return "first" if attempt == 0 else None

    result = run_sasl(stream, features("PLAIN"), provider)
    (auth,) = sent_elements(transport)
    assert base64.b64decode(auth.text) == b"\x00juliet\x00first"
    stream.dataReceived(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
    failure = result.result
    result.addErrback(lambda f: None)
    assert asked == [0, 1]
    assert isinstance(failure.value, AuthenticationFailure)
    assert failure.value.condition == "aborted"


def test_fixed_password_refused_is_not_authorized_and_not_retried() -> None:
    stream, transport = connected()
    result = run_sasl(stream, features("PLAIN"))
    sent_elements(transport)
    stream.dataReceived(
        f"<failure xmlns='{SASL}'><not-authorized/><text>Invalid password</text></failure>".encode()
    )
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, AuthenticationFailure)
    assert failure.value.condition == "not-authorized"
    assert failure.value.text == "Invalid password"
    assert sent_elements(transport) == []


@pytest.mark.parametrize("condition", ["mechanism-too-weak", "invalid-mechanism"])
def test_mechanism_refusal_moves_to_the_next_mechanism(condition: str) -> None:
    stream, transport = connected()
    result = run_sasl(stream, features("SCRAM-SHA-1", "PLAIN"))
    (first,) = sent_elements(transport)
    assert first.get("mechanism") == "SCRAM-SHA-1"
    stream.dataReceived(f"<failure xmlns='{SASL}'><{condition}/></failure>".encode())
    (second,) = sent_elements(transport)
    assert second.get("mechanism") == "PLAIN"
    stream.dataReceived(f"<success xmlns='{SASL}'/>".encode())
    assert result.called and result.result is None
    assert stream.sasl_mechanism == "PLAIN"


def plus_features() -> Any:
    stream_parser = XMLStreamParser()
    wanted = (
        f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-SHA-1-PLUS</mechanism>"
        "<mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>"
    )
    return stream_parser.feed(PEER_HEADER + wanted.encode())[-1].element


@pytest.fixture
def tls13(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the in-memory stream look like TLS 1.3 with both candidate bindings."""
    import txxmppnode.negotiation as negotiation

    monkeypatch.setattr(XMLStream, "tls_connection", property(lambda self: object()))
    bindings = {"tls-exporter": b"e" * 32, "tls-unique": b"f" * 32}
    monkeypatch.setattr(negotiation, "_channel_bindings", lambda stream: bindings)


def gs2_header(auth: Any) -> bytes:
    return base64.b64decode(auth.text).split(b",n=")[0]


@pytest.mark.usefixtures("tls13")
def test_a_refused_binding_guess_is_followed_by_the_next_guess_never_by_plain_scram() -> None:
    stream, transport = connected()
    asked: list[int] = []

    def provider(jid: JID, attempt: int) -> str:
        asked.append(attempt)
        return "secret"

    result = run_sasl(stream, plus_features(), provider)
    (first,) = sent_elements(transport)
    assert first.get("mechanism") == "SCRAM-SHA-1-PLUS"
    assert gs2_header(first) == b"p=tls-unique,"
    stream.dataReceived(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
    (second,) = sent_elements(transport)
    assert second.get("mechanism") == "SCRAM-SHA-1-PLUS"
    assert gs2_header(second) == b"p=tls-exporter,"
    assert asked == [0]  # the same password: a guess is not a new attempt
    stream.dataReceived(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
    # every guess refused: the credentials are refused; the provider is asked again and the
    # guesses start over, still without a fall back to SCRAM-SHA-1
    (third,) = sent_elements(transport)
    assert asked == [0, 1]
    assert third.get("mechanism") == "SCRAM-SHA-1-PLUS"
    assert gs2_header(third) == b"p=tls-unique,"
    assert not result.called
    result.cancel()
    result.addErrback(lambda f: None)


# -- STARTTLS: the answer to <starttls/> is the last plaintext -------------------------------

TLS = "urn:ietf:params:xml:ns:xmpp-tls"
PLAIN_ONLY = (
    f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>PLAIN</mechanism></mechanisms>"
    "</stream:features>"
).encode()
SCRAM_ONLY = PLAIN_ONLY.replace(b"PLAIN", b"SCRAM-SHA-1")


class TLSTransport(StringTransport):
    """Records startTLS(); the test plays the handshake by calling handshakeCompleted()."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_creator: Any = None

    def startTLS(self, creator: Any) -> None:
        self.tls_creator = creator


def starttls_negotiation() -> tuple[XMLStream, TLSTransport, Any, defer.Deferred[Any]]:
    transport = TLSTransport()
    stream = XMLStream("example.com", reactor=Clock())
    stream.makeConnection(transport)
    stream.dataReceived(PEER_HEADER)
    transport.clear()
    layer = make("secret", trust_root=None)
    verifier = layer.tls_verifier("example.com")
    result = defer.Deferred.fromCoroutine(
        negotiate(stream, JULIET, layer, verifier, direct_tls=False, timeout=5)
    )
    stream.dataReceived(
        b"<stream:features><starttls xmlns='" + TLS.encode() + b"'/></stream:features>"
    )
    (starttls,) = sent_elements(transport)
    assert starttls.tag == f"{{{TLS}}}starttls"
    return stream, transport, verifier, result


def finish_handshake(stream: XMLStream, verifier: Any) -> None:
    verifier.handshake_done = True  # what the verifier records once the certificate is accepted
    stream.handshakeCompleted()


def test_features_injected_after_proceed_are_never_used() -> None:
    stream, transport, _, result = starttls_negotiation()
    stream.dataReceived(f"<proceed xmlns='{TLS}'/>".encode() + PLAIN_ONLY)
    failure = result.result
    result.addErrback(lambda f: None)
    assert type(failure.value) is STARTTLSInjection
    assert not isinstance(failure.value, FatalError)
    assert transport.tls_creator is None
    assert transport.value() == b""  # no TLS, no auth, not even a footer in plaintext


def test_genuine_features_inside_tls_are_used() -> None:
    stream, transport, verifier, result = starttls_negotiation()
    stream.dataReceived(f"<proceed xmlns='{TLS}'/>".encode())
    assert transport.tls_creator is verifier
    finish_handshake(stream, verifier)
    assert transport.value().startswith(b"<?xml")  # the new stream header, over TLS
    transport.clear()
    stream.dataReceived(PEER_HEADER + SCRAM_ONLY)
    (auth,) = sent_elements(transport)
    assert auth.get("mechanism") == "SCRAM-SHA-1"
    assert not result.called
    result.cancel()
    result.addErrback(lambda f: None)


@pytest.mark.usefixtures("tls13")
def test_every_guess_refused_with_a_fixed_password_is_not_authorized() -> None:
    stream, transport = connected()
    result = run_sasl(stream, plus_features())
    for _ in range(2):
        (auth,) = sent_elements(transport)
        assert auth.get("mechanism") == "SCRAM-SHA-1-PLUS"
        stream.dataReceived(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, AuthenticationFailure)
    assert sent_elements(transport) == []


@pytest.mark.usefixtures("tls13")
def test_a_confirmed_binding_is_tried_first_and_a_pinned_one_alone() -> None:
    stream, transport = connected()
    layer = make("secret")
    layer.confirmed_bindings["example.com"] = "tls-exporter"
    result = defer.Deferred.fromCoroutine(authenticate(stream, plus_features(), JULIET, layer, 5))
    (auth,) = sent_elements(transport)
    assert gs2_header(auth) == b"p=tls-exporter,"
    result.cancel()
    result.addErrback(lambda f: None)

    stream, transport = connected()
    result = run_sasl(stream, plus_features(), channel_binding="tls-unique")
    (auth,) = sent_elements(transport)
    assert gs2_header(auth) == b"p=tls-unique,"
    stream.dataReceived(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
    failure = result.result
    result.addErrback(lambda f: None)
    assert isinstance(failure.value, AuthenticationFailure)
    assert sent_elements(transport) == []


BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"


def bind_features(session: str) -> Any:
    stream_parser = XMLStreamParser()
    wanted = f"<stream:features><bind xmlns='{BIND_NS}'/>{session}</stream:features>"
    return stream_parser.feed(PEER_HEADER + wanted.encode())[-1].element


def answer_bind(stream: XMLStream, transport: StringTransport) -> Any:
    """Answer the <bind/> request; return what the client sent next."""
    (request,) = sent_elements(transport)
    assert request.find(f"{{{BIND_NS}}}bind") is not None
    stream.dataReceived(
        f"<iq type='result' id='{request.get('id')}'><bind xmlns='{BIND_NS}'>"
        f"<jid>juliet@example.com/balcony</jid></bind></iq>".encode()
    )
    return sent_elements(transport)


@pytest.mark.parametrize(
    "session",
    ["", f"<session xmlns='{SESSION_NS}'><optional/></session>"],
    ids=["absent", "optional"],
)
def test_no_legacy_session_when_absent_or_optional(session: str) -> None:
    from txxmppnode.negotiation import bind_resource

    stream, transport = connected()
    result = defer.Deferred.fromCoroutine(
        bind_resource(stream, bind_features(session), "balcony", 5)
    )
    assert answer_bind(stream, transport) == []
    assert str(result.result) == "juliet@example.com/balcony"


def test_legacy_session_when_required_and_its_refusal() -> None:
    from txxmppnode.errors import ResourceBindingFailure
    from txxmppnode.negotiation import bind_resource

    for outcome in ("result", "error"):
        stream, transport = connected()
        result = defer.Deferred.fromCoroutine(
            bind_resource(stream, bind_features(f"<session xmlns='{SESSION_NS}'/>"), "b", 5)
        )
        (request,) = answer_bind(stream, transport)
        assert request.find(f"{{{SESSION_NS}}}session") is not None
        assert request.get("type") == "set"
        error = (
            "<error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error>"
            if outcome == "error"
            else ""
        )
        stream.dataReceived(f"<iq type='{outcome}' id='{request.get('id')}'>{error}</iq>".encode())
        if outcome == "result":
            assert str(result.result) == "juliet@example.com/balcony"
        else:
            failure = result.result
            result.addErrback(lambda f: None)
            assert isinstance(failure.value, ResourceBindingFailure)
            assert "session establishment refused" in str(failure.value)


def test_garbled_answer_to_starttls_is_a_stream_error_we_send_and_retryable() -> None:
    stream, transport, _, result = starttls_negotiation()
    stream.dataReceived(b"<proceed xmlns='" + TLS.encode() + b"'\xff/>")
    failure = result.result
    result.addErrback(lambda f: None)
    error = failure.value
    assert type(error) is StreamError
    assert error.condition is StreamErrorCondition.NOT_WELL_FORMED and error.sent_by_us
    assert not isinstance(error, FatalError | TLSUnavailable)
    sent = transport.value()
    assert b"<not-well-formed " in sent and sent.endswith(b"</stream:stream>")
    assert transport.tls_creator is None
