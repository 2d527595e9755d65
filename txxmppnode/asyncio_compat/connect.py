"""Connecting streams low-level, and the security layer, for asyncio code.

:func:`connect_xmlstream` and :func:`discover_connectors` are coroutines over the core's
functions of the same names; cancelling them cancels the attempt (closing any half-open
connection) or the DNS lookups.  :func:`make_security_layer` is the core's
:func:`~txxmppnode.make_security_layer` that also accepts coroutine functions as password
provider and ``post_handshake_deferred_failure``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree
from twisted.internet import interfaces, ssl

from .. import connect as _core_connect
from .. import discovery as _core_discovery
from ..connect import PeerOption
from ..discovery import DEFAULT_TIMEOUT, ConnectionOption
from ..jid import JID
from ..pinning import AbstractPinStore
from ..security_layer import PinType, SecurityLayer
from ..security_layer import make as _core_make
from ._bridge import as_future, awaited_by_twisted
from ._reactor import install_reactor, stdlib_twisted_logger
from .stream import XMLStream

__all__ = ["connect_xmlstream", "discover_connectors", "make_security_layer"]


async def connect_xmlstream(
    jid: JID | str,
    metadata: SecurityLayer,
    negotiation_timeout: float = 60.0,
    override_peer: Sequence[PeerOption] = (),
    loop: asyncio.AbstractEventLoop | None = None,
    logger: logging.Logger | None = None,
    *,
    resolver: interfaces.IResolver | None = None,
) -> tuple[Any, XMLStream, etree._Element]:
    """Connect and authenticate a stream for *jid*; return ``(transport, xmlstream, features)``.

    As :func:`txxmppnode.connect_xmlstream`: *override_peer* first, then DNS discovery;
    :class:`ValueError` if the domain offers no XMPP, the
    :class:`~txxmppnode.errors.TLSFailure` if every option failed and one of them on TLS,
    otherwise :class:`~txxmppnode.errors.MultiOSError`;
    :class:`~txxmppnode.errors.AuthenticationFailure` at once.  The transport is Twisted's;
    the XML stream is an asyncio :class:`~txxmppnode.asyncio_compat.stream.XMLStream`.

    :param metadata: the security layer (from :func:`make_security_layer`).
    :param logger: a :class:`logging.Logger` (``txxmppnode.connect`` by default).
    """
    loop = loop or asyncio.get_running_loop()
    reactor = install_reactor(loop)
    connecting = _core_connect.connect_xmlstream(
        jid,
        metadata,
        negotiation_timeout,
        override_peer,
        reactor,
        stdlib_twisted_logger(logger, "txxmppnode.connect"),
        resolver=resolver,
    )
    transport, xmlstream, features = await as_future(connecting, loop)
    return transport, XMLStream(xmlstream, loop=loop), features


async def discover_connectors(
    domain: str,
    loop: asyncio.AbstractEventLoop | None = None,
    logger: logging.Logger | None = None,
    *,
    resolver: interfaces.IResolver | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    rng: random.Random | None = None,
) -> list[ConnectionOption]:
    """The ways to connect to the XMPP service of *domain*, best first.

    As :func:`txxmppnode.discover_connectors` (SRV records of RFC 6120 and XEP-0368, the
    fallback to port 5222, :class:`ValueError` when the domain says XMPP is not available).

    :param loop: the event loop (the running loop when ``None``).
    :param logger: the :class:`logging.Logger` that gets the lines of this discovery: the
        lookups, the records found and the options chosen at ``DEBUG``, failed lookups and
        fallbacks after failures at ``WARNING``.  When ``None`` they go to the logger
        ``txxmppnode.discovery``.
    :param resolver: the DNS resolver (an ``IResolver``); the system's when ``None``.
    :param timeout: seconds each of the two concurrent SRV lookups may take.
    :param rng: the random source for the weighted order within a priority.
    """
    loop = loop or asyncio.get_running_loop()
    reactor = install_reactor(loop)
    discovering = _core_discovery.discover_connectors(
        domain,
        resolver,
        reactor=reactor,
        timeout=timeout,
        rng=rng,
        logger=None if logger is None else stdlib_twisted_logger(logger, logger.name),
    )
    return await as_future(discovering, loop)


def make_security_layer(
    password_provider: Any,
    *,
    trust_root: str | os.PathLike[str] | Any | ssl.Certificate | None = None,
    pin_store: AbstractPinStore | Mapping[str, Any] | None = None,
    pin_type: PinType = PinType.PUBLIC_KEY,
    post_handshake_deferred_failure: Any = None,
    anonymous: bool = False,
    no_verify: bool = False,
    client_certificate: ssl.PrivateCertificate | str | os.PathLike[str] | None = None,
    allow_plain_without_tls: bool = False,
    tls_max_version: str | None = None,
) -> SecurityLayer:
    """Build a :class:`~txxmppnode.SecurityLayer`; the arguments are the core's.

    *password_provider* may be a password, ``None``, or a callable ``(jid, attempt)``
    returning the password or an awaitable of it (a coroutine function, typically);
    *post_handshake_deferred_failure* may likewise be a coroutine function.
    """
    if callable(password_provider):
        password_provider = awaited_by_twisted(password_provider)
    if callable(post_handshake_deferred_failure):
        post_handshake_deferred_failure = awaited_by_twisted(post_handshake_deferred_failure)
    return _core_make(
        password_provider,
        trust_root=trust_root,
        pin_store=pin_store,
        pin_type=pin_type,
        post_handshake_deferred_failure=post_handshake_deferred_failure,
        anonymous=anonymous,
        no_verify=no_verify,
        client_certificate=client_certificate,
        allow_plain_without_tls=allow_plain_without_tls,
        tls_max_version=tls_max_version,
    )
