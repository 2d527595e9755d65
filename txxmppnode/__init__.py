"""txxmppnode: an XMPP client node for Twisted.

The names below are the public API; their modules are an implementation detail.
"""

from . import errors
from .client import Client
from .connect import connect_xmlstream
from .connector import BaseConnector, DirectTLSConnector, STARTTLSConnector, XMPPOverTLSConnector
from .discovery import discover_connectors
from .jid import JID
from .presence import PresenceManagedClient, PresenceServer
from .presence_state import PresenceState
from .security_layer import PinType, SecurityLayer
from .security_layer import make as make_security_layer
from .service import Service
from .stanza import (
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
from .stanzastream import StanzaStream
from .token import StanzaState, StanzaToken
from .use_connected import UseConnected

__all__ = [
    "IQ",
    "JID",
    "BaseConnector",
    "Client",
    "DirectTLSConnector",
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
    "STARTTLSConnector",
    "SecurityLayer",
    "Service",
    "Stanza",
    "StanzaState",
    "StanzaStream",
    "StanzaToken",
    "UseConnected",
    "XMPPOverTLSConnector",
    "connect_xmlstream",
    "discover_connectors",
    "errors",
    "make_security_layer",
    "register_element_class",
]
