"""A minimal reconnecting session for the stanza-stream tests: connect, bind or resume, repeat.

It does what a client does on a connection loss (reconnect at once, resume when the server
allows it, else bind anew), without the client's back-off and signals, so the stanza layer can
be tested against the real Prosody on its own.  Everything runs in the reactor thread.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import Logger

from txxmppnode import namespaces
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.jid import JID
from txxmppnode.negotiation import bind_resource
from txxmppnode.security_layer import SecurityLayer
from txxmppnode.stanzastream import StanzaStream

_log = Logger()


class Session:
    """One account's stanza stream, kept connected to *host*:*port*.

    :ivar connections: how many streams were negotiated.
    :ivar resumptions: how many of them resumed the session.
    """

    def __init__(
        self,
        jid: JID,
        security_layer: SecurityLayer,
        host: str,
        port: int,
        *,
        resource: str = "test",
        **stream_options: Any,
    ) -> None:
        self.jid = jid
        self.security_layer = security_layer
        self.host, self.port = host, port
        self.resource = resource
        self.stream = StanzaStream(jid, reactor=reactor, **stream_options)
        self.stream.on_connection_lost.connect(self._lost)
        self.connections = 0
        self.resumptions = 0
        self.reconnecting = True
        self._established: list[defer.Deferred[None]] = []
        self.up = False

    async def connect(self) -> None:
        """Negotiate a stream and resume or start the session on it."""
        _, xmlstream, features = await connect_xmlstream(
            self.jid,
            self.security_layer,
            negotiation_timeout=10,
            override_peer=[(self.host, self.port, STARTTLSConnector())],
        )
        self.connections += 1
        if self.stream.sm_resumable and await self.stream.resume(xmlstream):
            self.resumptions += 1
        else:
            bound = await bind_resource(xmlstream, features, self.resource, 10)
            sm = features.find(f"{{{namespaces.STREAM_MANAGEMENT}}}sm") is not None
            await self.stream.start(xmlstream, bound, sm=sm, resumption_timeout=60)
        self.up = True
        waiters, self._established = self._established, []
        for waiter in waiters:
            waiter.callback(None)

    def when_up(self) -> defer.Deferred[None]:
        """Fires once the session is (again) established."""
        if self.up:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._established.append(waiter)
        return waiter

    def _lost(self, reason: BaseException | None) -> None:
        self.up = False
        if not self.reconnecting:
            return
        _log.info("session {jid} lost ({reason}); reconnecting", jid=str(self.jid), reason=reason)
        defer.Deferred.fromCoroutine(self._reconnect())

    async def _reconnect(self) -> None:
        for _attempt in range(50):
            try:
                await self.connect()
                return
            except Exception as exc:  # a real client backs off; here the proxy decides
                _log.info("reconnect failed: {error}", error=exc)
                await _later(0.05)
        self.stream.destroy(ConnectionError("gave up reconnecting"))

    def close(self) -> defer.Deferred[Any]:
        """Stop reconnecting and close the current stream."""
        self.reconnecting = False
        xmlstream = self.stream.xmlstream
        if xmlstream is None:
            return defer.succeed(None)
        return xmlstream.close()


def _later(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]
