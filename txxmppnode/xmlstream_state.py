"""The life cycle of one :class:`~txxmppnode.xmlstream.XMLStream`, as one table.

An XML stream is connected, open, perhaps reading the answer to ``<starttls/>``, then ends in
one of three ways -- a clean close, an error of ours, or a drop -- and finally loses its
transport.  Spelled as booleans (connected, closing, failing, delivering, done, reading the
TLS answer, a plaintext tail held) those facts can combine into states that mean nothing, and
every method has to know which combinations matter.  Here they are one
:class:`XMLStreamState`, changed only through :data:`TRANSITIONS`; the protocol in
:mod:`~txxmppnode.xmlstream` asks the state what to do and feeds the table what happened.
Flow control (the transport pausing us) is not part of the life cycle and stays outside.

::

    CONNECTING ─made─▶ OPEN ─tls answer awaited─▶ READING_TLS_ANSWER ─answer─▶ TLS_ANSWER_READ
                        ▲                                                       │      │
                        ├────────── tls started / plaintext released ──────────┘      │
                        │                                          plaintext after it │
                        └──── plaintext released ──── TAIL_HELD ◀─────────────────────┘
                                                         │ tls started: injected ─▶ DROPPING

    OPEN, READING_TLS_ANSWER, TLS_ANSWER_READ, TAIL_HELD
        ─close─▶ CLOSING    our footer sent, the peer's awaited
        ─fail──▶ FAILING    our stream error and/or footer on their way, then the close
        ─drop──▶ DROPPING   nothing more written; the transport goes
    CLOSING ─drop─▶ DROPPING;  FAILING stays FAILING on a drop (the error is not cut off)
    any ─lost─▶ CLOSED

Every pair of :data:`TRANSITIONS` is listed; a pair that maps a state to itself is ignored
(a close while closing, input while the stream is failing, ...).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class XMLStreamState(enum.Enum):
    """Where an XML stream is in its life."""

    #: the protocol exists; the transport is not connected yet
    CONNECTING = "connecting"
    #: connected; elements flow both ways
    OPEN = "open"
    #: ``<starttls/>`` sent: input is parsed up to the end of its answer only
    READING_TLS_ANSWER = "reading-tls-answer"
    #: the answer to ``<starttls/>`` was read and nothing after it (yet)
    TLS_ANSWER_READ = "tls-answer-read"
    #: bytes followed the answer; held unparsed: TLS must not start, plaintext may go on
    TAIL_HELD = "tail-held"
    #: we sent our footer; the peer's is awaited (``close_timeout`` at most)
    CLOSING = "closing"
    #: we ended the stream because of an error; what we owe the peer (stream error, footer)
    #: is being written and the transport closes after it; the peer's input is ignored
    FAILING = "failing"
    #: we ended the stream with nothing more to write; the peer's input is ignored
    DROPPING = "dropping"
    #: the transport is gone
    CLOSED = "closed"


class XMLStreamInput(enum.Enum):
    """What changes an :class:`XMLStreamState`."""

    #: ``connectionMade``
    CONNECTION_MADE = "connection-made"
    #: ``next_element(last_in_plaintext=True)``
    TLS_ANSWER_AWAITED = "tls-answer-awaited"
    #: the element that answers ``<starttls/>`` was parsed
    TLS_ANSWER_RECEIVED = "tls-answer-received"
    #: bytes arrived after that answer
    PLAINTEXT_AFTER_ANSWER = "plaintext-after-answer"
    #: the stream goes on without TLS: the held bytes are parsed
    PLAINTEXT_RELEASED = "plaintext-released"
    #: ``start_tls``: the handshake starts, or the plaintext that came first refuses it
    TLS_STARTED = "tls-started"
    #: ``close``: our footer is written
    CLOSE = "close"
    #: we end the stream with something to write (a stream error, our footer)
    FAIL = "fail"
    #: we end the stream with nothing to write (``abort``, an injected STARTTLS)
    DROP = "drop"
    #: ``connectionLost``
    CONNECTION_LOST = "connection-lost"


_S, _I = XMLStreamState, XMLStreamInput

#: The states in which the stream is open: elements may be sent.
OPEN_STATES: Final = frozenset({_S.OPEN, _S.READING_TLS_ANSWER, _S.TLS_ANSWER_READ, _S.TAIL_HELD})
#: The states of a stream that is ending or ended.
ENDING_STATES: Final = frozenset({_S.CLOSING, _S.FAILING, _S.DROPPING, _S.CLOSED})
#: The states in which the peer's input is ignored: we ended the stream because of it.
DEAF_STATES: Final = frozenset({_S.FAILING, _S.DROPPING})


def _table() -> dict[tuple[XMLStreamState, XMLStreamInput], XMLStreamState]:
    table = {(state, event): state for state in _S for event in _I}  # default: ignored
    table[_S.CONNECTING, _I.CONNECTION_MADE] = _S.OPEN
    table[_S.CONNECTING, _I.DROP] = _S.DROPPING
    for state in OPEN_STATES:
        table[state, _I.CLOSE] = _S.CLOSING
        table[state, _I.FAIL] = _S.FAILING
        table[state, _I.DROP] = _S.DROPPING
    table[_S.OPEN, _I.TLS_ANSWER_AWAITED] = _S.READING_TLS_ANSWER
    table[_S.READING_TLS_ANSWER, _I.TLS_ANSWER_RECEIVED] = _S.TLS_ANSWER_READ
    # the answer was taken from what had arrived before <starttls/> was sent
    table[_S.READING_TLS_ANSWER, _I.TLS_STARTED] = _S.DROPPING
    table[_S.TLS_ANSWER_READ, _I.PLAINTEXT_AFTER_ANSWER] = _S.TAIL_HELD
    table[_S.TLS_ANSWER_READ, _I.TLS_ANSWER_RECEIVED] = _S.TAIL_HELD  # bytes after it
    table[_S.TLS_ANSWER_READ, _I.TLS_STARTED] = _S.OPEN
    table[_S.TAIL_HELD, _I.TLS_STARTED] = _S.DROPPING
    for state in (_S.TLS_ANSWER_READ, _S.TAIL_HELD):
        table[state, _I.PLAINTEXT_RELEASED] = _S.OPEN
        # the held bytes are parsed first, then the next answer is awaited
        table[state, _I.TLS_ANSWER_AWAITED] = _S.READING_TLS_ANSWER
    table[_S.CLOSING, _I.DROP] = _S.DROPPING
    for state in _S:
        if state is not _S.CLOSED:
            table[state, _I.CONNECTION_LOST] = _S.CLOSED
    return table


#: The one table: (state, input) → next state, for every pair.  A pair that maps a state to
#: itself is ignored.
TRANSITIONS: Final[Mapping[tuple[XMLStreamState, XMLStreamInput], XMLStreamState]] = _table()


__all__ = [
    "DEAF_STATES",
    "ENDING_STATES",
    "OPEN_STATES",
    "TRANSITIONS",
    "XMLStreamInput",
    "XMLStreamState",
]
