"""What the stanza-stream benchmarks share: in-memory connections for both peers.

``dispatch.py`` and ``send.py`` import this module, and ``parse`` for the constants and the byte
stream of ``benchmarks/parse.py``, by name: Python puts a script's own directory first on
``sys.path``, so run the benchmarks as scripts (``make bench-dispatch``, ``make bench-send``).

txxmppnode runs over ``twisted.internet.testing.StringTransport`` with a ``Clock``: one
``clock.advance(0)`` is one reactor turn, which writes everything the stanza stream queued
in that turn.  slixmpp runs over :class:`MemoryTransport` on a real asyncio event loop: its
stanzas are written by its ``run_filters`` task, so where txxmppnode's clock is advanced the
loop runs until slixmpp's send queue is empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lxml import etree
from parse import HEADER
from slixmpp import ClientXMPP
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from txxmppnode import JID
from txxmppnode.stanzastream import StanzaStream
from txxmppnode.xmlstream import XMLStream

#: Our account: the messages and IQs of benchmarks/parse.py are addressed to it.
OUR_JID = "juliet@example.com/balcony"
DOMAIN = "example.com"
#: The peer the stanzas of benchmarks/parse.py come from.
PEER_JID = "romeo@example.net/orchard"

CLIENT = "jabber:client"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
CHATSTATES = "http://jabber.org/protocol/chatstates"
CAPS = "http://jabber.org/protocol/caps"
CAPS_NODE = "https://example.org/client"
CAPS_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="

#: The server's stream header that opens the stream of benchmarks/parse.py.
SERVER_HEADER = HEADER


def best_of(rounds: int, one_round: Callable[[], float]) -> float:
    """The shortest of *rounds* calls of *one_round*, which returns the seconds it measured."""
    return min(one_round() for _ in range(rounds))


def count_range(count: int, kind: int) -> range:
    """The stanza numbers of *kind* (0 message, 1 presence, 2 IQ) among *count* stanzas."""
    return range(kind, count, 3)


def stanzas_in(data: bytes) -> list[Any]:
    """The top-level elements of *data*, what a client wrote after its stream header."""
    wrapped = b"<stream xmlns='" + CLIENT.encode() + b"'>" + data + b"</stream>"
    root = etree.fromstring(wrapped, etree.XMLParser(huge_tree=True))
    return list(root)


class TwistedPeer:
    """A txxmppnode StanzaStream on an XMLStream over an in-memory transport and a Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.xmlstream = XMLStream(DOMAIN, reactor=self.clock)
        self.xmlstream.makeConnection(self.transport)
        self.stream = StanzaStream(JID.fromstr(OUR_JID).bare(), reactor=self.clock)

    def start(self) -> None:
        """Attach the stanza stream without stream management; forget our stream header."""
        self.stream.start(self.xmlstream, JID.fromstr(OUR_JID), sm=False)
        self.turn()
        self.transport.clear()

    def turn(self) -> None:
        """One reactor turn: the stanza stream writes what was queued."""
        self.clock.advance(0)

    def written(self) -> bytes:
        return self.transport.value()


class MemoryTransport(asyncio.Transport):
    """An asyncio transport that keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class AsyncioPeer:
    """A slixmpp ClientXMPP connected to a :class:`MemoryTransport` and past session start.

    ``connect()`` is replaced by what it leads to: ``connection_made`` with the transport,
    the ``run_filters`` task that writes queued stanzas, and the ``session_start`` event
    (before which slixmpp holds stanzas back).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.xmpp = ClientXMPP(OUR_JID, "secret", loop=loop)
        self.transport = MemoryTransport()
        self._sender: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.xmpp.connection_made(self.transport)
        self._sender = self.loop.create_task(self.xmpp.run_filters())
        self.xmpp.event("session_start")
        self.loop.run_until_complete(self.turn())
        self.transport.writes.clear()

    async def turn(self) -> None:
        """Let the loop run until everything queued is written."""
        await self.xmpp.waiting_queue.join()

    def close(self) -> None:
        for name in list(self.xmpp.scheduled_events):
            self.xmpp.cancel_schedule(name)
        if self._sender is not None:
            self._sender.cancel()
            self.loop.run_until_complete(asyncio.gather(self._sender, return_exceptions=True))

    def written(self) -> bytes:
        return b"".join(self.transport.writes)


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
