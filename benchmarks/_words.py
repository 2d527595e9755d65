"""A twisted.words XMPP client against the benchmarks' Prosody: connect, send, receive, close.

``connect.py`` and ``messages.py`` import this module.  twisted.words is the XMPP support
shipped in Twisted (``twisted.words.protocols.jabber``); it is the client a Twisted program
gets without txxmppnode, so the end-to-end figures put it beside txxmppnode.

A session is ``client.XMPPClientFactory(jid, password, configurationForTLS=...)`` connected
with ``reactor.connectTCP`` to Prosody's STARTTLS port: the factory's authenticator runs its
initializers in order -- STARTTLS (required, verified against the test CA through
``ssl.optionsForClientTLS``), SASL (twisted.words knows ``DIGEST-MD5``, ``PLAIN`` and
``ANONYMOUS``: against Prosody's ``internal_hashed`` store it is ``PLAIN``, one round trip
where SCRAM takes two), and resource binding.  The factory would then open the legacy RFC 3921
session (an IQ round trip) because Prosody lists ``<session/>``; Prosody marks it optional and
RFC 6121 dropped it, and txxmppnode and slixmpp skip it, so it is taken out of the list here.
twisted.words has no stream management: nothing is enabled after binding.

The session is ready on ``STREAM_AUTHD_EVENT`` (every initializer done) and ends with our
footer and the transport's close.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, ssl
from twisted.words.protocols.jabber import client, jid, xmlstream

__all__ = ["WordsSession", "words_connect"]


class WordsSession:
    """One authenticated, bound twisted.words stream."""

    def __init__(self, stream: xmlstream.XmlStream) -> None:
        self.stream = stream
        self._ended: defer.Deferred[None] = defer.Deferred()
        stream.addObserver(xmlstream.STREAM_END_EVENT, lambda _: self._end())

    def _end(self) -> None:
        if not self._ended.called:
            self._ended.callback(None)

    def close(self) -> defer.Deferred[None]:
        """Send our footer, close the transport; fire once the connection is gone."""
        if not self._ended.called:
            self.stream.sendFooter()
            self.stream.transport.loseConnection()
        return self._ended


def words_connect(
    reactor: Any,
    account: str,
    password: str,
    ca_pem: bytes,
    host: str,
    port: int,
    tls: Any = None,
) -> defer.Deferred[WordsSession]:
    """Connect *account* (a full JID) over STARTTLS to *host*:*port*; fire when bound.

    *tls*, if given, is the ``IOpenSSLClientConnectionCreator`` to use (one shared by many
    sessions shares its ``SSL.Context``); otherwise each session makes its own from *ca_pem*.
    Fails with the stream's failure (``INIT_FAILED_EVENT``) or a connection error.
    """
    address = jid.JID(account)
    if tls is None:
        tls = ssl.optionsForClientTLS(address.host, trustRoot=ssl.Certificate.loadPEM(ca_pem))
    factory = client.XMPPClientFactory(address, password, configurationForTLS=tls)
    ready: defer.Deferred[WordsSession] = defer.Deferred()

    def connected(stream: xmlstream.XmlStream) -> None:
        factory.continueTrying = False  # buildProtocol's resetDelay() set it: never reconnect
        stream.initializers = [
            init for init in stream.initializers if not isinstance(init, client.SessionInitializer)
        ]

    def authenticated(stream: xmlstream.XmlStream) -> None:
        if not ready.called:
            ready.callback(WordsSession(stream))

    def failed(failure: Any) -> None:
        if not ready.called:
            ready.errback(failure)

    factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, connected)
    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, authenticated)
    factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, failed)
    factory.clientConnectionFailed = lambda _connector, reason: failed(reason)
    factory.continueTrying = False
    reactor.connectTCP(host, port, factory)
    return ready
