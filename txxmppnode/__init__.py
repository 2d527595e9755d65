"""txxmppnode: an XMPP client node for Twisted.

The names below are the public API; their modules are an implementation detail.
"""

from . import errors
from .jid import JID
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

__all__ = [
    "IQ",
    "JID",
    "IQType",
    "Message",
    "MessageType",
    "Presence",
    "PresenceShow",
    "PresenceType",
    "Stanza",
    "errors",
    "register_element_class",
]
