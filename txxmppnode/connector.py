"""How to reach an XMPP server: STARTTLS on a plain TCP port, or TLS from the first byte.

A connector is one of the ``(host, port, connector)`` options that
:func:`~txxmppnode.discovery.discover_connectors` returns and ``override_peer`` takes.
:meth:`BaseConnector.connect` opens TCP with Twisted's ``HostnameEndpoint`` (every address of
the host, happy eyeballs, a connect timeout), runs the stream negotiation and returns the
authenticated stream.  The TCP step -- resolving the host name and connecting to any of its
addresses -- is bounded as a whole by ``negotiation_timeout``: the endpoint's own timeout
covers each address, not the name resolution nor the attempts together.  Certificates are
always checked against the JID's domain, never against the host connected to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from lxml import etree
from twisted.internet import defer, endpoints, error, interfaces, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .deadline import Deadline
from .negotiation import negotiate
from .xmlstream import XMLStream

if TYPE_CHECKING:
    from .jid import JID
    from .security_layer import SecurityLayer

ConnectResult = tuple[interfaces.ITransport, XMLStream, etree._Element]
T = TypeVar("T")


class BaseConnector:
    """A way to open an XML stream to a host and port.  Connectors are stateless values."""

    #: True when TLS starts right after the TCP connection (XEP-0368).
    direct_tls: ClassVar[bool] = False
    #: ALPN protocols offered in the TLS handshake.
    alpn: ClassVar[tuple[bytes, ...]] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def connect(
        self,
        jid: JID,
        security_layer: SecurityLayer,
        host: str,
        port: int,
        *,
        negotiation_timeout: float,
        reactor: interfaces.IReactorTCP,
        logger: Logger | None = None,
    ) -> defer.Deferred[ConnectResult]:
        """Connect to *host*:*port* and negotiate a stream for *jid*.

        The Deferred fires with ``(transport, xmlstream, features)``, the features being those
        after authentication.  When the negotiation fails, the stream is closed gracefully
        (stream error or ``<abort/>`` and our footer reach the server first, the transport is
        dropped after ``close_timeout`` at the latest) while the failure is reported at once.
        Cancelling it closes the half-open connection and fails it with
        :class:`~twisted.internet.defer.CancelledError`, in every step (also while the host
        name is being resolved).

        :raises TimeoutError: the host name was not resolved and connected to within
            *negotiation_timeout* seconds, or a negotiation step took longer.
        """
        verifier = security_layer.tls_verifier(jid.domain, alpn=self.alpn)
        endpoint: interfaces.IStreamClientEndpoint = endpoints.HostnameEndpoint(
            reactor, host, port, timeout=negotiation_timeout
        )
        if self.direct_tls:
            endpoint = endpoints.wrapClientTLS(verifier, endpoint)
        xmlstream = XMLStream(jid.domain, reactor=reactor, logger=logger)  # type: ignore[arg-type]

        async def connect_and_negotiate() -> ConnectResult:
            connecting = Deadline(
                reactor,  # type: ignore[arg-type]
                negotiation_timeout,
                f"TCP connection to {host}:{port}",
            )
            try:
                try:
                    await connecting.wait(endpoint.connect(_OneStream(xmlstream)))
                except error.ConnectError as failure:
                    raise _builtin_error(failure) from failure
                _no_delay(xmlstream.transport)
                features = await negotiate(
                    xmlstream,
                    jid,
                    security_layer,
                    verifier,
                    direct_tls=self.direct_tls,
                    timeout=negotiation_timeout,
                )
            except BaseException as failure:
                # a failed or cancelled negotiation leaves nothing open behind it
                if xmlstream.transport is not None:
                    _end_failed_negotiation(xmlstream, failure)
                raise
            assert xmlstream.transport is not None
            return (xmlstream.transport, xmlstream, features)

        return cancelled_as_such(defer.Deferred.fromCoroutine(connect_and_negotiate()))


def cancelled_as_such(attempt: defer.Deferred[T]) -> defer.Deferred[T]:
    """*attempt*, except that once cancelled it fails with
    :class:`~twisted.internet.defer.CancelledError`, whatever its own cancellation produced.

    Cancelling ``HostnameEndpoint.connect`` while the host name is being resolved fails it with
    :class:`~twisted.internet.error.DNSLookupError` -- an :class:`OSError`, the error of an
    unreachable host.  :func:`~txxmppnode.connect.connect_xmlstream` then took the cancelled
    option for a failed one and went on to the next option and to DNS discovery, connecting
    after the caller (a stopping :class:`~txxmppnode.client.Client`) had given up.  Through
    this wrapper a cancellation is never mistaken for a failure.
    """
    cancelled = False

    def cancel(outer: defer.Deferred[T]) -> None:
        nonlocal cancelled
        cancelled = True
        attempt.cancel()

    outer: defer.Deferred[T] = defer.Deferred(cancel)

    def settle(result: T | Failure) -> None:
        if outer.called:
            return  # cancelled, and the attempt ended later: nothing left to report
        if (
            cancelled
            and isinstance(result, Failure)
            and not isinstance(result.value, defer.CancelledError)
        ):
            error = defer.CancelledError(f"cancelled ({result.getErrorMessage()})")
            result = Failure(error)  # type: ignore[no-untyped-call]
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)

    attempt.addBoth(settle)
    return outer


class _OneStream(protocol.Factory):
    """The factory of one connection: it builds *xmlstream*.

    Twisted's ``endpoints.connectProtocol`` does the same with a class made per call, which
    the connection keeps for its whole life (about 2 KiB per idle stream).
    """

    def __init__(self, xmlstream: XMLStream) -> None:
        self._xmlstream = xmlstream

    def buildProtocol(self, addr: interfaces.IAddress | None) -> XMLStream:
        return self._xmlstream


def _end_failed_negotiation(xmlstream: XMLStream, failure: BaseException) -> None:
    """Close the stream of a negotiation that failed, so that the peer hears what we decided.

    A stream error we sent (a refusal of the server's input) is already on its way, and the
    connection closes once it is written; otherwise our footer follows whatever we sent last
    (``<abort/>`` after a broken SASL exchange) and the server's is awaited.  Either way the
    transport is dropped after the stream's ``close_timeout`` at the latest.  A cancellation
    drops the connection at once, except for a stream error still being written.
    """
    if isinstance(failure, Exception) and not isinstance(failure, defer.CancelledError):
        xmlstream.close(failure)
    else:
        xmlstream.abort()


def _no_delay(transport: object) -> None:
    """Switch Nagle's algorithm off on the TCP connection under *transport*.

    Stream negotiation is a series of small writes each waiting for an answer; with Nagle on,
    a peer's delayed ACK holds some of them back by tens of milliseconds.
    """
    for _ in range(3):  # the TCP transport, or the one under a TLS wrapper
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
            return
        transport = getattr(transport, "transport", None)


def _builtin_error(failure: error.ConnectError) -> OSError:
    """Twisted's connection errors as the built-in exceptions callers catch.

    Twisted's are not :class:`OSError` subclasses; the rest of the library reports network
    failures as :class:`ConnectionError` and :class:`TimeoutError`.
    """
    if isinstance(failure, error.ConnectionRefusedError):
        return ConnectionRefusedError(str(failure))
    if isinstance(failure, error.TimeoutError):
        return TimeoutError(str(failure))
    return ConnectionError(str(failure))


class STARTTLSConnector(BaseConnector):
    """Plain TCP, then ``<starttls/>`` before anything else (RFC 6120 §5)."""

    direct_tls = False


class DirectTLSConnector(BaseConnector):
    """TLS from the first byte, with ALPN ``xmpp-client`` (XEP-0368)."""

    direct_tls = True
    alpn = (b"xmpp-client",)


#: The name the reference API uses for :class:`DirectTLSConnector`.
XMPPOverTLSConnector = DirectTLSConnector
