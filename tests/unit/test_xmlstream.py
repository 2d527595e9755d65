"""XMLStream driven byte-exact over an in-memory transport, with an injected clock."""

from __future__ import annotations

import pytest
from lxml import etree
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from txxmppnode.errors import (
    FatalError,
    FatalStreamError,
    StreamError,
    StreamErrorCondition,
    TLSFailure,
)
from txxmppnode.stanza import Message
from txxmppnode.xmlstream import XMLStream

OUR_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'"
    b" xml:lang='en'>"
)
PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
FOOTER = b"</stream:stream>"


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.stream = XMLStream("example.com", reactor=self.clock, close_timeout=5)
        self.closing: list[BaseException | None] = []
        self.stream.on_closing.connect(self.closing.append)
        self.stream.makeConnection(self.transport)

    def written(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def lose(self, reason: BaseException | None = None) -> None:
        self.stream.connectionLost(Failure(reason or ConnectionDone()))

    def final(self) -> BaseException | None:
        results: list[BaseException | None] = []
        self.stream.when_lost().addCallback(results.append)
        assert results, "the stream has not lost its connection"
        return results[0]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_sends_header_on_connection(h: Harness) -> None:
    assert h.written() == OUR_HEADER


def test_restart_sends_header_with_from_and_expects_a_new_peer_header(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER + b"<stream:features/>")
    h.written()
    h.stream.from_ = "juliet@example.com"
    h.stream.restart()
    assert h.written() == OUR_HEADER.replace(
        b" version='1.0' xml:lang", b" from='juliet@example.com' version='1.0' xml:lang"
    )
    assert h.stream.peer_header is None
    h.stream.dataReceived(PEER_HEADER.replace(b"abc", b"def"))
    assert h.stream.peer_header is not None
    assert h.stream.peer_header.attributes["id"] == "def"


def test_elements_go_to_waiters_then_queue_then_handler(h: Harness) -> None:
    waiter = h.stream.next_element()
    h.stream.dataReceived(PEER_HEADER + b"<stream:features/><message><body>1</body></message>")
    assert waiter.result.tag == "{http://etherx.jabber.org/streams}features"
    received: list[etree._Element] = []
    h.stream.dataReceived(b"<message><body>2</body></message>")
    h.stream.set_element_handler(received.append)
    h.stream.dataReceived(b"<presence/>")
    assert [getattr(e, "body", None) for e in received] == ["1", "2", None]
    assert isinstance(received[0], Message)


def test_next_element_times_out_with_the_injected_clock(h: Harness) -> None:
    waiter = h.stream.next_element(timeout=10)
    h.clock.advance(9.9)
    assert not waiter.called
    h.clock.advance(0.2)
    failure = waiter.result
    waiter.addErrback(lambda f: None)
    assert isinstance(failure.value, TimeoutError)
    assert "10s" in str(failure.value)


def test_send_writes_stanza_without_redundant_namespace(h: Harness) -> None:
    h.written()
    h.stream.send(Message(to="romeo@example.net", type_="chat", body="hi"))
    assert h.written() == b'<message to="romeo@example.net" type="chat"><body>hi</body></message>'


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (PEER_HEADER.replace(b"http://etherx.jabber.org/streams", b"urn:wrong"),
         StreamErrorCondition.INVALID_NAMESPACE),
        (PEER_HEADER.replace(b"xmlns='jabber:client'", b"xmlns='jabber:server'"),
         StreamErrorCondition.INVALID_NAMESPACE),
        (PEER_HEADER.replace(b" version='1.0'>", b" version='2.0'>"),
         StreamErrorCondition.UNSUPPORTED_VERSION),
        (PEER_HEADER.replace(b" version='1.0'>", b">"), StreamErrorCondition.UNSUPPORTED_VERSION),
        (PEER_HEADER.replace(b" id='abc'", b""), StreamErrorCondition.BAD_FORMAT),
        (PEER_HEADER.replace(b" from='example.com'", b""), StreamErrorCondition.BAD_FORMAT),
    ],
)  # fmt: skip
def test_bad_peer_header_is_refused_with_a_stream_error(
    h: Harness, header: bytes, condition: StreamErrorCondition
) -> None:
    h.written()
    waiter = h.stream.next_element()
    h.stream.dataReceived(header)
    sent = h.written()
    assert sent.startswith(
        b'<stream:error xmlns:stream="http://etherx.jabber.org/streams"><'
        + condition.value.encode()
        + b' xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
    )
    assert sent.endswith(b"</stream:error>" + FOOTER)
    assert h.transport.disconnecting
    error = h.closing[0]
    assert isinstance(error, StreamError)
    assert error.condition is condition and error.sent_by_us
    assert isinstance(waiter.result.value, StreamError)
    waiter.addErrback(lambda f: None)


def test_parser_refusal_sends_its_condition_and_delivers_what_came_before(h: Harness) -> None:
    received: list[etree._Element] = []
    h.stream.set_element_handler(received.append)
    h.stream.dataReceived(PEER_HEADER)
    h.written()
    h.stream.dataReceived(b"<message><body>ok</body></message><message><!-- x --></message>")
    assert [m.body for m in received] == ["ok"]  # type: ignore[attr-defined]
    assert b"<restricted-xml " in h.written()
    error = h.closing[0]
    assert isinstance(error, StreamError)
    assert error.condition is StreamErrorCondition.RESTRICTED_XML
    # nothing after the refusal is processed
    h.stream.dataReceived(b"<message><body>late</body></message>")
    assert len(received) == 1


def test_received_stream_error_becomes_stream_error(h: Harness) -> None:
    waiter = h.stream.next_element()
    h.stream.dataReceived(
        PEER_HEADER + b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced</text></stream:error>"
    )
    assert isinstance(waiter.result.value, FatalStreamError)
    waiter.addErrback(lambda f: None)
    assert h.written().endswith(FOOTER)
    h.lose()
    final = h.final()
    assert isinstance(final, FatalStreamError)
    assert final.condition is StreamErrorCondition.CONFLICT and final.text == "Replaced"
    assert len(h.closing) == 1


def test_peer_footer_while_open_is_a_connection_error(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER)
    h.written()
    h.stream.dataReceived(FOOTER)
    assert h.written() == FOOTER
    h.lose()
    final = h.final()
    assert type(final) is ConnectionError
    assert "server closed the XML stream" in str(final)


@pytest.mark.parametrize("reason", [ConnectionDone(), ConnectionResetError("reset by peer")])
def test_transport_closing_without_footer_is_a_connection_error(
    h: Harness, reason: BaseException
) -> None:
    h.stream.dataReceived(PEER_HEADER)
    waiter = h.stream.next_element()
    h.lose(reason)
    final = h.final()
    assert type(final) is ConnectionError
    assert "without the server's stream footer" in str(final)
    assert type(reason).__name__ in str(final)
    assert h.closing == [final]
    assert waiter.result.value is final
    waiter.addErrback(lambda f: None)


def test_close_waits_for_the_peer_footer(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER)
    h.written()
    done = h.stream.close()
    assert h.written() == FOOTER
    assert not h.transport.disconnecting
    assert h.closing == [None]
    h.stream.dataReceived(FOOTER)
    assert h.transport.disconnecting
    h.lose()
    assert done.called and done.result is None


def test_close_drops_the_transport_after_the_timeout(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER)
    done = h.stream.close()
    h.clock.advance(4.9)
    assert not h.transport.disconnecting
    h.clock.advance(0.2)
    assert h.transport.disconnecting  # StringTransport.abortConnection sets it too
    h.lose()
    assert done.result is None
    assert h.clock.getDelayedCalls() == []


def test_abort_drops_at_once_and_on_closing_fires_once(h: Harness) -> None:
    h.written()
    reason = ConnectionError("user gave up")
    h.stream.abort(reason)
    h.stream.abort()
    h.stream.close()
    assert h.written() == b""
    assert h.transport.disconnecting
    h.lose()
    assert h.closing == [reason]
    assert h.final() is reason


def test_send_after_close_raises(h: Harness) -> None:
    h.stream.close()
    with pytest.raises(ConnectionError, match="not open"):
        h.stream.send(Message(body="late"))


def test_tls_errors_at_the_transport_become_tls_failure(h: Harness) -> None:
    from OpenSSL import SSL

    handshake = h.stream.when_handshake_done()
    h.lose(SSL.Error([("SSL routines", "", "certificate verify failed")]))
    final = h.final()
    assert isinstance(final, TLSFailure)
    assert "certificate verify failed" in str(final)
    assert isinstance(handshake.result.value, TLSFailure)
    handshake.addErrback(lambda f: None)


def test_handshake_completion_fires_the_handshake_deferred(h: Harness) -> None:
    handshake = h.stream.when_handshake_done(timeout=3)
    h.stream.handshakeCompleted()
    assert handshake.called and handshake.result is None
    assert h.clock.getDelayedCalls() == []
    # asked after completion: fires at once
    assert h.stream.when_handshake_done().called


def test_handshake_wait_times_out(h: Harness) -> None:
    handshake = h.stream.when_handshake_done(timeout=3)
    h.clock.advance(3)
    assert isinstance(handshake.result.value, TimeoutError)
    handshake.addErrback(lambda f: None)


def test_waiters_cancelled_do_not_receive_elements(h: Harness) -> None:
    first = h.stream.next_element()
    first.cancel()
    first.addErrback(lambda f: f.trap(defer.CancelledError))
    second = h.stream.next_element()
    h.stream.dataReceived(PEER_HEADER + b"<presence/>")
    assert second.result.tag == "{jabber:client}presence"


def _refused_with(h: Harness, condition: StreamErrorCondition) -> StreamError:
    sent = h.written()
    assert (
        b"<" + condition.value.encode() + b' xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>' in sent
    )
    assert sent.endswith(b"</stream:error>" + FOOTER)
    assert h.transport.disconnecting
    error = h.closing[0]
    assert isinstance(error, StreamError)
    assert error.condition is condition and error.sent_by_us
    return error


def test_header_with_thousands_of_attributes_is_a_policy_violation(h: Harness) -> None:
    # Refused from the first kilobytes, before TLS: no timer has to stop it.
    h.written()
    waiter = h.stream.next_element()
    header = PEER_HEADER[:-1] + b"".join(b" a%d=''" % n for n in range(30_000)) + b">"
    h.stream.dataReceived(header[:8192])
    error = _refused_with(h, StreamErrorCondition.POLICY_VIOLATION)
    assert "stream header" in str(error)
    assert h.stream.peer_header is None
    assert waiter.result.value is error
    waiter.addErrback(lambda f: None)


def test_doctype_inside_the_stream_is_restricted_xml(h: Harness) -> None:
    received: list[etree._Element] = []
    h.stream.set_element_handler(received.append)
    h.stream.dataReceived(PEER_HEADER + b"<message><body>ok</body></message><!DOCTYPE x [")
    h.written()
    h.stream.dataReceived(b"<!ENTITY a 'b'>]><message><body>&a;</body></message>")
    assert [m.body for m in received] == ["ok"]  # type: ignore[attr-defined]
    _refused_with(h, StreamErrorCondition.RESTRICTED_XML)


def test_element_over_a_parser_limit_is_a_policy_violation_after_the_ones_before(
    h: Harness,
) -> None:
    received: list[etree._Element] = []
    h.stream.set_element_handler(received.append)
    h.stream.dataReceived(PEER_HEADER)
    h.written()
    wide = b"<message>" + b"<a/>" * 70_000 + b"</message>"  # over 65,536 children
    h.stream.dataReceived(b"<message><body>before</body></message>" + wide)
    assert [m.body for m in received] == ["before"]  # type: ignore[attr-defined]
    error = _refused_with(h, StreamErrorCondition.POLICY_VIOLATION)
    assert "children" in str(error)
    h.stream.dataReceived(b"<message><body>late</body></message>")
    assert len(received) == 1


# -- helpers: a transport that takes startTLS() and tells an abort from a close -------------------

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
PROCEED = f"<proceed xmlns='{TLS_NS}'/>".encode()
PLAIN_ONLY = (
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
)
FEATURES = "{http://etherx.jabber.org/streams}features"


class TLSTransport(StringTransport):
    """A StringTransport that records startTLS() and tells abortConnection from a close."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_creator: object = None
        self.aborted = False

    def startTLS(self, creator: object) -> None:
        self.tls_creator = creator

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class TLSHarness(Harness):
    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = TLSTransport()
        self.stream = XMLStream("example.com", reactor=self.clock, close_timeout=5)
        self.closing = []
        self.stream.on_closing.connect(self.closing.append)
        self.stream.makeConnection(self.transport)
        self.stream.dataReceived(PEER_HEADER + b"<stream:features/>")
        assert self.stream.next_element().called
        self.written()

    def await_proceed(self) -> defer.Deferred[etree._Element]:
        return self.stream.next_element(last_in_plaintext=True)


# -- stream errors reach the wire ---------------------------------------------------------------


def test_abort_does_not_drop_a_stream_error_on_its_way() -> None:
    h = TLSHarness()
    h.stream.dataReceived(b"<message><!-- no --></message>")
    sent = h.written()
    assert b"<restricted-xml " in sent and sent.endswith(FOOTER)
    assert h.transport.disconnecting and not h.transport.aborted
    h.stream.abort(ConnectionError("negotiation failed"))  # what a failed negotiation did
    assert not h.transport.aborted  # loseConnection writes the error first
    h.clock.advance(4.9)
    assert not h.transport.aborted
    h.clock.advance(0.1)
    assert h.transport.aborted  # a peer that does not read is dropped after close_timeout
    h.lose()
    error = h.final()
    assert isinstance(error, StreamError) and error.sent_by_us
    assert error.condition is StreamErrorCondition.RESTRICTED_XML


def test_fail_writes_error_and_footer_in_one_write_and_is_bounded() -> None:
    h = TLSHarness()
    h.stream.fail(StreamError(StreamErrorCondition.UNDEFINED_CONDITION, "h", sent_by_us=True))
    sent = h.written()
    assert sent.startswith(b"<stream:error") and sent.endswith(b"</stream:error>" + FOOTER)
    assert h.transport.disconnecting and not h.transport.aborted
    h.clock.advance(5)
    assert h.transport.aborted
    h.lose()
    assert h.clock.getDelayedCalls() == []


def test_close_with_a_reason_reports_it_and_still_waits_for_the_footer() -> None:
    h = TLSHarness()
    reason = ConnectionError("SASL broken")
    done = h.stream.close(reason)
    assert h.written() == FOOTER
    assert h.closing == [reason]
    h.stream.dataReceived(FOOTER)
    assert h.transport.disconnecting and not h.transport.aborted
    h.lose()
    assert done.result is reason


# -- input discarded at restart() and start_tls() ---------------------------------------------


def test_restart_discards_queued_elements_and_buffered_bytes(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER + b"<stream:features/>" + PLAIN_ONLY + b"<message><bo")
    h.stream.restart()
    h.stream.dataReceived(PEER_HEADER.replace(b"abc", b"def") + b"<stream:features/>")
    features = h.stream.next_element()
    assert features.result.tag == FEATURES and len(features.result) == 0
    assert not h.stream.next_element().called  # nothing else survived


def test_restart_during_delivery_drops_the_rest_of_the_chunk(h: Harness) -> None:
    h.stream.dataReceived(PEER_HEADER)
    success = h.stream.next_element()
    success.addCallback(lambda element: h.stream.restart())
    h.stream.dataReceived(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" + PLAIN_ONLY)
    assert success.called
    waiting = h.stream.next_element()
    assert not waiting.called  # the features after <success/> belonged to the old stream
    h.stream.dataReceived(PEER_HEADER + b"<stream:features><bind xmlns='b'/></stream:features>")
    assert waiting.result[0].tag == "{b}bind"


def test_start_tls_after_a_lone_proceed_discards_the_plaintext_stream() -> None:
    h = TLSHarness()
    proceed = h.await_proceed()
    h.stream.dataReceived(PROCEED)
    assert proceed.result.tag == f"{{{TLS_NS}}}proceed"
    handshake = h.stream.start_tls(creator := object())  # later than the delivery: allowed
    assert h.transport.tls_creator is creator
    assert h.stream.peer_header is None
    # over TLS, the server's new stream: its features are the ones delivered
    h.stream.handshakeCompleted()
    assert handshake.called
    h.stream.restart()
    h.stream.dataReceived(PEER_HEADER + b"<stream:features><bind xmlns='b'/></stream:features>")
    assert h.stream.next_element().result[0].tag == "{b}bind"


@pytest.mark.parametrize(
    "chunks",
    [
        [PROCEED + PLAIN_ONLY],  # one segment, as a man in the middle appends it
        [PROCEED[:-2], PROCEED[-2:] + PLAIN_ONLY],  # <proceed/> split, injection with its end
        [PROCEED + b"<stream:feat"],  # less than a tag
        [PROCEED + b" "],  # even whitespace: only TLS may follow
    ],
)
def test_plaintext_after_proceed_stops_tls_and_is_never_used(chunks: list[bytes]) -> None:
    from txxmppnode.errors import STARTTLSInjection

    h = TLSHarness()
    proceed = h.await_proceed()
    starts: list[defer.Deferred[None]] = []
    proceed.addCallback(lambda element: starts.append(h.stream.start_tls(object())))
    for chunk in chunks:
        h.stream.dataReceived(chunk)
    (started,) = starts
    failure = started.result
    started.addErrback(lambda f: None)
    assert isinstance(failure.value, STARTTLSInjection)
    assert not isinstance(failure.value, FatalError)
    assert h.transport.tls_creator is None
    assert h.written() == b""  # the peer expects TLS: not a byte more in plaintext
    assert h.transport.disconnecting and not h.transport.aborted
    assert h.closing == [failure.value]
    after = h.stream.next_element()
    assert isinstance(after.result.value, STARTTLSInjection)  # the injected features: never
    after.addErrback(lambda f: None)


def test_proceed_in_the_same_data_as_the_features_is_refused() -> None:
    from txxmppnode.errors import STARTTLSInjection

    h = Harness()
    starts: list[defer.Deferred[None]] = []

    def on_features(element: etree._Element) -> None:
        # as negotiation does: <starttls/> goes out only once the features are in
        h.stream.next_element(last_in_plaintext=True).addCallback(
            lambda proceed: starts.append(h.stream.start_tls(object()))
        )

    h.stream.next_element().addCallback(on_features)
    h.stream.dataReceived(PEER_HEADER + b"<stream:features/>" + PROCEED)
    (started,) = starts
    assert isinstance(started.result.value, STARTTLSInjection)
    assert "before <starttls/> was sent" in str(started.result.value)
    started.addErrback(lambda f: None)


def test_what_follows_a_tls_failure_is_parsed_when_the_stream_closes() -> None:
    h = TLSHarness()
    answer = h.await_proceed()
    h.stream.dataReceived(f"<failure xmlns='{TLS_NS}'/>".encode() + FOOTER)
    assert answer.result.tag == f"{{{TLS_NS}}}failure"
    assert not h.transport.disconnecting  # the footer is held until we know there is no TLS
    h.stream.close(ConnectionError("no TLS"))
    assert h.written() == FOOTER
    assert h.transport.disconnecting and not h.transport.aborted  # the peer's footer was seen
    assert h.clock.getDelayedCalls() != []  # still bounded until the transport is gone
    h.lose()
    assert str(h.final()) == "no TLS"


def test_start_tls_needs_the_answer_read_as_the_last_plaintext() -> None:
    h = TLSHarness()
    h.stream.dataReceived(PROCEED)
    h.stream.next_element()
    with pytest.raises(RuntimeError, match="last_in_plaintext"):
        h.stream.start_tls(object())
