"""XML namespace names used on the wire (RFC 6120, RFC 6121 and the XEPs the node speaks)."""

from typing import Final

CLIENT: Final = "jabber:client"
STREAMS: Final = "http://etherx.jabber.org/streams"
STREAM_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"
STREAM_MANAGEMENT: Final = "urn:xmpp:sm:3"
PING: Final = "urn:xmpp:ping"
XML: Final = "http://www.w3.org/XML/1998/namespace"
