"""txxmppnode for asyncio programs: the same API, with coroutines and asyncio futures.

::

    import asyncio
    from txxmppnode.asyncio_compat import (
        JID, Message, PresenceManagedClient, make_security_layer)

    async def main():
        client = PresenceManagedClient(JID.fromstr("bot@example.org"),
                                       make_security_layer("secret"))
        async with client.connected() as stream:
            await client.send(Message(to=JID.fromstr("me@example.org"), type_="chat",
                                      body="hello"))

    asyncio.run(main())

This package is a face over the one Twisted implementation, not a second client.  The first
object created here installs Twisted's ``AsyncioSelectorReactor`` on the running loop (see
:mod:`txxmppnode.asyncio_compat._reactor` for how it runs without ``reactor.run()``); the
core's clients, streams and signals then work on that loop, and the classes here convert at the
border: Deferreds become asyncio futures (cancelling one cancels the operation), coroutine
functions are accepted wherever the core calls back, and logging goes to :mod:`logging`.

Every public name of :mod:`txxmppnode` is here: the framework-neutral ones (stanzas, JIDs,
errors, connectors, the security layer, presence states) are the same objects; the others are
the asyncio counterparts, each with a ``core`` attribute for the Twisted-side object.
"""

from .. import errors
from ..connector import BaseConnector, DirectTLSConnector, STARTTLSConnector, XMPPOverTLSConnector
from ..jid import JID
from ..presence_state import PresenceState
from ..security_layer import PinType, SecurityLayer
from ..stanza import (
    IQ,
    IQType,
    Message,
    MessageType,
    Presence,
    PresenceShow,
    PresenceType,
    Stanza,
    register_element_class,
)
from ..token import StanzaState
from ._reactor import ReactorConflict, install_reactor
from .client import Client, PresenceManagedClient, PresenceServer, Service, UseConnected
from .connect import connect_xmlstream, discover_connectors, make_security_layer
from .signal import CoroutineSignal, Event, Signal
from .stream import StanzaStream, StanzaToken, XMLStream

__all__ = [
    "IQ",
    "JID",
    "BaseConnector",
    "Client",
    "CoroutineSignal",
    "DirectTLSConnector",
    "Event",
    "IQType",
    "Message",
    "MessageType",
    "PinType",
    "Presence",
    "PresenceManagedClient",
    "PresenceServer",
    "PresenceShow",
    "PresenceState",
    "PresenceType",
    "ReactorConflict",
    "STARTTLSConnector",
    "SecurityLayer",
    "Service",
    "Signal",
    "Stanza",
    "StanzaState",
    "StanzaStream",
    "StanzaToken",
    "UseConnected",
    "XMLStream",
    "XMPPOverTLSConnector",
    "connect_xmlstream",
    "discover_connectors",
    "errors",
    "install_reactor",
    "make_security_layer",
    "register_element_class",
]
