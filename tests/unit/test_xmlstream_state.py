"""XMLStream's life cycle: every (state, input) pair of the table, driven through the protocol.

Each state is reached with real calls over an in-memory transport and a ``task.Clock``; each
input is then applied the way the protocol receives it (a method call, bytes from the peer,
the transport's loss), and the state, ``is_open``, ``on_closing`` and ``when_lost`` must be
what the table says.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from txxmppnode.errors import StreamError, StreamErrorCondition
from txxmppnode.xmlstream import XMLStream
from txxmppnode.xmlstream_state import (
    ENDING_STATES,
    OPEN_STATES,
    TRANSITIONS,
    XMLStreamInput,
    XMLStreamState,
)

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
PROCEED = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
S, In = XMLStreamState, XMLStreamInput


class TLSTransport(StringTransport):
    """Takes startTLS() and tells an abort from a close."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started = False
        self.aborted = False

    def startTLS(self, creator: object) -> None:
        self.tls_started = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Stream:
    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = TLSTransport()
        self.stream = XMLStream("example.com", reactor=self.clock)
        self.closing: list[BaseException | None] = []
        self.stream.on_closing.connect(self.closing.append)
        self.lost: list[BaseException | None] = []
        self.errors: list[BaseException] = []

    def connect(self) -> None:
        self.stream.makeConnection(self.transport)
        self.stream.dataReceived(PEER_HEADER)

    def call(self, action: Callable[[], object]) -> None:
        """Run *action*; a refusal (exception or failed Deferred) is recorded, not raised."""
        try:
            result = action()
        except Exception as exc:
            self.errors.append(exc)
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda failure: self.errors.append(failure.value))

    def lose(self) -> None:
        self.stream.connectionLost(Failure(ConnectionDone()))


def _reading(s: Stream) -> None:
    s.connect()
    s.call(lambda: s.stream.next_element(last_in_plaintext=True))


REACH: dict[XMLStreamState, Callable[[Stream], object]] = {
    S.CONNECTING: lambda s: None,
    S.OPEN: lambda s: s.connect(),
    S.READING_TLS_ANSWER: _reading,
    S.TLS_ANSWER_READ: lambda s: (_reading(s), s.stream.dataReceived(PROCEED)),
    S.TAIL_HELD: lambda s: (_reading(s), s.stream.dataReceived(PROCEED + b"<features/>")),
    S.CLOSING: lambda s: (s.connect(), s.stream.close()),
    S.FAILING: lambda s: (
        s.connect(),
        s.stream.fail(StreamError(StreamErrorCondition.RESET, sent_by_us=True)),
    ),
    S.DROPPING: lambda s: (s.connect(), s.stream.abort()),
    S.CLOSED: lambda s: (s.connect(), s.lose()),
}

APPLY: dict[XMLStreamInput, Callable[[Stream], object]] = {
    In.CONNECTION_MADE: lambda s: s.call(lambda: s.stream.makeConnection(TLSTransport())),
    In.TLS_ANSWER_AWAITED: lambda s: s.call(lambda: s.stream.next_element(last_in_plaintext=True)),
    In.TLS_ANSWER_RECEIVED: lambda s: s.call(lambda: s.stream.dataReceived(PROCEED)),
    In.PLAINTEXT_AFTER_ANSWER: lambda s: s.call(lambda: s.stream.dataReceived(b" ")),
    In.PLAINTEXT_RELEASED: lambda s: s.call(lambda: s.stream.next_element()),
    In.TLS_STARTED: lambda s: s.call(lambda: s.stream.start_tls(object())),  # type: ignore[arg-type]
    In.CLOSE: lambda s: s.call(s.stream.close),
    In.FAIL: lambda s: s.call(
        lambda: s.stream.fail(StreamError(StreamErrorCondition.POLICY_VIOLATION, sent_by_us=True))
    ),
    In.DROP: lambda s: s.call(s.stream.abort),
    In.CONNECTION_LOST: lambda s: s.call(s.lose),
}


def test_the_table_is_total() -> None:
    assert set(TRANSITIONS) == {(state, event) for state in S for event in In}


def test_every_state_is_reachable_as_declared() -> None:
    for state, reach in REACH.items():
        s = Stream()
        reach(s)
        assert s.stream.state is state


@pytest.mark.parametrize(("state", "event"), [(state, event) for state in S for event in In])
def test_every_state_and_input(state: XMLStreamState, event: XMLStreamInput) -> None:
    s = Stream()
    REACH[state](s)
    assert s.stream.state is state
    APPLY[event](s)
    after = TRANSITIONS[state, event]
    assert s.stream.state is after
    assert s.stream.is_open is (after in OPEN_STATES)
    # a stream starts to end exactly once, whatever ends it
    assert len(s.closing) == (1 if after in ENDING_STATES else 0)
    s.stream.when_lost().addCallback(s.lost.append)
    assert bool(s.lost) is (after is S.CLOSED)


def test_the_tls_states_decide_start_tls() -> None:
    s = Stream()
    REACH[S.TLS_ANSWER_READ](s)
    s.call(lambda: s.stream.start_tls(object()))  # type: ignore[arg-type]
    assert s.transport.tls_started and s.errors == []
    for injected in (S.READING_TLS_ANSWER, S.TAIL_HELD):
        s = Stream()
        REACH[injected](s)
        s.call(lambda: s.stream.start_tls(object()))  # type: ignore[arg-type]  # noqa: B023
        assert not s.transport.tls_started
        assert type(s.errors[0]).__name__ == "STARTTLSInjection"
    s = Stream()
    REACH[S.OPEN](s)
    s.call(lambda: s.stream.start_tls(object()))  # type: ignore[arg-type]
    assert isinstance(s.errors[0], RuntimeError)


def test_a_held_tail_is_parsed_when_the_stream_goes_on_or_closes() -> None:
    for go_on in (lambda s: s.stream.next_element(), lambda s: s.stream.close()):
        s = Stream()
        REACH[S.TLS_ANSWER_READ](s)
        s.stream.dataReceived(b"</stream:stream>")
        assert s.stream.state is S.TAIL_HELD
        go_on(s)
        # the peer's footer was held, and is read now: the stream closes
        assert s.stream.state in (S.FAILING, S.CLOSING)
        assert s.transport.disconnecting


def test_a_drop_does_not_cut_off_our_stream_error() -> None:
    s = Stream()
    REACH[S.FAILING](s)
    s.stream.abort()
    assert s.stream.state is S.FAILING and not s.transport.aborted
    s.clock.advance(s.stream.close_timeout)
    assert s.transport.aborted
