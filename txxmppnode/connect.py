"""connect_xmlstream: try every way to reach the server until one gives an authenticated stream.

The order is ``override_peer`` first, then what DNS discovery finds
(:func:`~txxmppnode.discovery.discover_connectors`), looked up only if every override failed.
How each failure steers the search:

* :class:`~txxmppnode.errors.AuthenticationFailure` (``None`` from the password provider
  included): stop at once, since another server of the same domain would refuse the same
  credentials;
* a ``see-other-host`` stream error: follow it, up to :data:`MAX_REDIRECTS` hops, with the same
  connector, before the next option;
* anything else (network errors, timeouts, TLS failures, SASL unavailable, ...): remembered,
  and the next option is tried.

When nothing worked: the :class:`~txxmppnode.errors.TLSFailure` if one occurred (a certificate
problem must not hide behind a generic error), else the first other
:class:`~txxmppnode.errors.FatalError` (no acceptable SASL mechanism, a server that broke the
SASL exchange, a fatal stream error: what retrying cannot fix, so that a
:class:`~txxmppnode.Client` stops instead of retrying for ever), otherwise
:class:`~txxmppnode.errors.MultiOSError` with every error in the order tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from twisted.internet import defer, interfaces
from twisted.logger import Logger

from .connector import BaseConnector, ConnectResult
from .discovery import discover_connectors
from .errors import (
    AuthenticationFailure,
    FatalError,
    MultiOSError,
    StreamError,
    StreamErrorCondition,
    TLSFailure,
)
from .jid import JID

if TYPE_CHECKING:
    from .security_layer import SecurityLayer

#: How many ``see-other-host`` redirects are followed from one option.
MAX_REDIRECTS: Final = 5
_log = Logger()

PeerOption = tuple[str, int, BaseConnector]


def connect_xmlstream(
    jid: JID | str,
    security_layer: SecurityLayer,
    negotiation_timeout: float = 60.0,
    override_peer: Sequence[PeerOption] = (),
    reactor: Any = None,
    logger: Logger | None = None,
    *,
    resolver: interfaces.IResolver | None = None,
) -> defer.Deferred[ConnectResult]:
    """Connect and authenticate a stream for *jid*; fire with ``(transport, xmlstream, features)``.

    :param negotiation_timeout: seconds allowed for the TCP connection and for each step of
        the negotiation.
    :param override_peer: ``(host, port, connector)`` options tried before discovery.
    :param resolver: the DNS resolver for discovery (an ``IResolver``); the system's when None.
    :raises ValueError: if the domain announces that it offers no XMPP service, or there is no
        option at all.
    :raises TLSFailure: if every option failed and one of them on TLS.
    :raises FatalError: if every option failed, none on TLS, and one with a fatal error.
    :raises MultiOSError: if every option failed, with each error in order.
    :raises AuthenticationFailure: at once, when the credentials are refused.

    Cancelling the Deferred closes any half-open connection.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    jid = JID.fromstr(jid) if isinstance(jid, str) else jid
    log = logger or _log
    attempt = _Attempt(jid, security_layer, negotiation_timeout, reactor, log)
    return defer.Deferred.fromCoroutine(attempt.run(list(override_peer), resolver))


@dataclass(frozen=True)
class _Attempt:
    """What every option of one connect_xmlstream() call is tried with."""

    jid: JID
    security_layer: SecurityLayer
    timeout: float
    reactor: Any
    log: Logger

    async def run(
        self, override_peer: list[PeerOption], resolver: interfaces.IResolver | None
    ) -> ConnectResult:
        errors: list[BaseException] = []
        result = await self.try_options(override_peer, errors)
        if result is None:
            discovered = await discover_connectors(
                self.jid.domain, resolver, reactor=self.reactor, logger=self.log
            )
            result = await self.try_options(discovered, errors)
        if result is not None:
            return result
        if not errors:
            raise ValueError(f"no connection options for {self.jid.domain}")
        tls_failure = next((e for e in errors if isinstance(e, TLSFailure)), None)
        if tls_failure is not None:
            raise tls_failure
        fatal = next((e for e in errors if isinstance(e, FatalError)), None)
        if fatal is not None:
            raise fatal
        raise MultiOSError(f"could not connect to {self.jid.domain}", errors)

    async def try_options(
        self, options: Sequence[PeerOption], errors: list[BaseException]
    ) -> ConnectResult | None:
        for host, port, connector in options:
            for _hop in range(MAX_REDIRECTS + 1):
                self.log.info("connecting to {host}:{port} ({connector!r})", host=host, port=port,
                              connector=connector)  # fmt: skip
                try:
                    return await connector.connect(
                        self.jid, self.security_layer, host, port,
                        negotiation_timeout=self.timeout, reactor=self.reactor, logger=self.log,
                    )  # fmt: skip
                except AuthenticationFailure:
                    raise
                except StreamError as error:
                    errors.append(error)
                    if (
                        error.condition is not StreamErrorCondition.SEE_OTHER_HOST
                        or not error.see_other_host
                    ):
                        break
                    host, port = split_host_port(error.see_other_host, port)
                    self.log.info("redirected to {host}:{port}", host=host, port=port)
                except (OSError, defer.TimeoutError) as error:
                    self.log.info("{host}:{port} failed: {error}", host=host, port=port,
                                  error=error)  # fmt: skip
                    errors.append(error)
                    break
        return None


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (RFC 6120 §4.9.3.19)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    return host, int(port) if port.isdigit() else default_port
