"""A small XMPP server that authenticates one account with SCRAM and an iteration count we choose.

Prosody stores its SCRAM credentials with a fixed iteration count (10,000), so what a client
does with a count a real server never uses -- far above its bound, or merely very high -- needs
a server of its own.  This one listens on 127.0.0.1 with direct TLS (XEP-0368, a certificate
from the test's ``trustme`` CA) and speaks just enough of RFC 6120:

1. our stream header and features offering one SCRAM mechanism (no ``-PLUS``);
2. on ``<auth/>`` the server-first message with *iterations* and *salt*;
3. on ``<response/>`` the client proof is checked (RFC 5802 §3, from keys derived once, in
   :meth:`HostileScramServer.prepare` or on first use) and answered with ``<success/>``
   carrying the server signature, or ``<failure><not-authorized/></failure>``;
4. on ``<abort/>``, ``<failure><aborted/></failure>``;
5. after the restart, an empty feature list; the client's footer is answered with ours.

Every top-level element each connection received is recorded (``connections[n].received``,
local names), and ``connections[n].lost`` fires when the connection closed, so a test can
check what reached the wire -- the client's ``<abort/>`` in particular.

Use it from the reactor thread: :meth:`HostileScramServer.listen` and
:meth:`HostileScramServer.stop`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any, Final

import trustme
from lxml import etree
from twisted.internet import defer, protocol, ssl
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from txxmppnode.xmlparser import ElementReceived, StreamFooter, StreamHeader, XMLStreamParser

__all__ = ["HostileScramServer"]

SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
_HASHES: Final = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


class HostileScramServer:
    """Offers SCRAM-*family* for *username*/*password* with *iterations* PBKDF2 iterations.

    :param ca: the CA that issues the server certificate for *domain* (the client trusts it).
    :ivar connections: one :class:`_Connection` per accepted connection, in order.
    :ivar port: the TCP port, once :meth:`listen` ran.
    """

    def __init__(
        self,
        ca: trustme.CA,
        *,
        iterations: int,
        family: str = "SHA-1",
        domain: str = "hostile.test",
        username: str = "juliet",
        password: str = "secret",
        salt: bytes = b"hostile-scram-salt",
    ) -> None:
        self.iterations = iterations
        self.family = family
        self.hash = _HASHES[family]
        self.domain = domain
        self.username = username
        self.password = password
        self.salt = salt
        self.connections: list[_Connection] = []
        self.port = 0
        certificate = ca.issue_cert(domain)
        private = ssl.PrivateCertificate.loadPEM(  # type: ignore[no-untyped-call]
            certificate.private_key_and_cert_chain_pem.bytes().decode()
        )
        # the client offers ALPN xmpp-client; a context without protocols answers that with an
        # internal-error alert
        self._tls = ssl.CertificateOptions(
            privateKey=private.privateKey.original.to_cryptography_key(),
            certificate=private.original.to_cryptography(),
            acceptableProtocols=[b"xmpp-client"],
        )
        self._keys: tuple[bytes, bytes] | None = None
        self._listening: IListeningPort | None = None

    @property
    def jid(self) -> str:
        """The account's bare JID."""
        return f"{self.username}@{self.domain}"

    def prepare(self) -> None:
        """Derive the stored key and server key now (slow for large counts), not on first use."""
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), self.salt, self.iterations)
        client_key = self.hmac(salted, b"Client Key")
        self._keys = (hashlib.new(self.hash, client_key).digest(), self.hmac(salted, b"Server Key"))

    @property
    def keys(self) -> tuple[bytes, bytes]:
        """``(StoredKey, ServerKey)`` as a server stores them (RFC 5802 §3)."""
        if self._keys is None:
            self.prepare()
        assert self._keys is not None
        return self._keys

    def hmac(self, key: bytes, message: bytes) -> bytes:
        """HMAC with the mechanism's hash."""
        return hmac.new(key, message, self.hash).digest()

    def listen(self, reactor: Any) -> IListeningPort:
        """Listen on 127.0.0.1 (an ephemeral port) with direct TLS; call in the reactor thread."""
        factory = protocol.Factory.forProtocol(lambda: _Connection(self))
        self._listening = reactor.listenSSL(0, factory, self._tls, interface="127.0.0.1")
        assert self._listening is not None
        self.port = self._listening.getHost().port
        return self._listening

    def stop(self) -> defer.Deferred[None] | None:
        """Stop listening (open connections are left to the client)."""
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None  # type: ignore[no-any-return]


class _Connection(protocol.Protocol):
    """One client connection: the stream, then the SCRAM exchange as described above."""

    def __init__(self, server: HostileScramServer) -> None:
        self.server = server
        self.received: list[str] = []
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._parser = XMLStreamParser()
        self._authenticated = False
        self._client_first_bare = b""
        self._server_first = b""
        self._nonce = b""

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if isinstance(event, StreamHeader):
                self._header()
            elif isinstance(event, ElementReceived):
                self.received.append(etree.QName(event.element).localname)
                self._element(event.element)
            elif isinstance(event, StreamFooter):
                self._write(b"</stream:stream>")
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost.callback(None)

    def _write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def _header(self) -> None:
        self._write(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
            b" xmlns:stream='http://etherx.jabber.org/streams' from='"
            + self.server.domain.encode()
            + b"' id='"
            + secrets.token_hex(8).encode()
            + b"' version='1.0'>"
        )
        if self._authenticated:
            self._write(b"<stream:features/>")
        else:
            self._write(
                f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-"
                f"{self.server.family}</mechanism></mechanisms></stream:features>".encode()
            )

    def _element(self, element: etree._Element) -> None:
        name = etree.QName(element).localname
        payload = base64.b64decode((element.text or "").strip() or "")
        if name == "auth":
            self._server_first_message(payload)
        elif name == "response":
            self._server_final_message(payload)
        elif name == "abort":
            self._write(f"<failure xmlns='{SASL}'><aborted/></failure>".encode())

    def _server_first_message(self, client_first: bytes) -> None:
        # skip the GS2 header (two commas); the bare message is n=user,r=nonce[,...]
        self._client_first_bare = client_first.split(b",", 2)[2]
        attributes = dict(part.split(b"=", 1) for part in self._client_first_bare.split(b","))
        self._nonce = attributes[b"r"] + secrets.token_urlsafe(18).encode()
        self._server_first = b"r=%s,s=%s,i=%d" % (
            self._nonce,
            base64.b64encode(self.server.salt),
            self.server.iterations,
        )
        self._send("challenge", self._server_first)

    def _server_final_message(self, client_final: bytes) -> None:
        without_proof, _, proof_b64 = client_final.rpartition(b",p=")
        auth_message = b",".join((self._client_first_bare, self._server_first, without_proof))
        stored_key, server_key = self.server.keys
        signature = self.server.hmac(stored_key, auth_message)
        client_key = bytes(
            a ^ b for a, b in zip(base64.b64decode(proof_b64), signature, strict=False)
        )
        if hashlib.new(self.server.hash, client_key).digest() != stored_key:
            self._write(f"<failure xmlns='{SASL}'><not-authorized/></failure>".encode())
            return
        self._authenticated = True
        # the client restarts the stream right after <success/>: a new document follows
        self._parser.reset()
        self._send("success", b"v=" + base64.b64encode(self.server.hmac(server_key, auth_message)))

    def _send(self, name: str, payload: bytes) -> None:
        text = base64.b64encode(payload).decode("ascii")
        self._write(f"<{name} xmlns='{SASL}'>{text}</{name}>".encode())
