"""The exceptions of txxmppnode, in one hierarchy.

Two questions decide what code does with an error, and each is answered by type:

*Is it about the stream or about one stanza?*
    Stream-level failures are :class:`ConnectionError` subclasses (the stream is gone or never
    came up). Stanza-level failures are :class:`XMPPError` (the peer answered a request with an
    error) or :class:`ErroneousStanza` (the answer could not be understood); the stream lives on.

*Can retrying help?*
    Errors that also derive from :class:`FatalError` mean that trying again with the same
    configuration cannot succeed (wrong password, certificate not trusted, the domain does not
    serve XMPP, another session took over the resource). A reconnecting client stops on them and
    reports the error. Every other connection failure (network errors, timeouts, the peer closing
    the stream, ``system-shutdown`` and other stream errors) is worth another attempt after a
    back-off.

::

    Exception
    ├── FatalError                      marker: retrying cannot help
    ├── XMPPError                       an error reply to a stanza (RFC 6120 §8.3)
    │   ├── XMPPAuthError, XMPPCancelError, XMPPContinueError,
    │   │   XMPPModifyError, XMPPWaitError            by error type
    ├── ErroneousStanza                 a stanza that could not be interpreted
    └── OSError
        ├── MultiOSError                every connection option failed; one error per option
        └── ConnectionError
            ├── StreamError             a stream error (RFC 6120 §4.9), received or sent
            │   └── FatalStreamError    conflict, host-unknown, ... (also FatalError)
            ├── DestructionRequested    the stream was closed on request
            ├── QueueFull               too many stanzas the server has not acknowledged
            └── StreamNegotiationFailure
                ├── TLSFailure          (FatalError) certificate, handshake, downgrade
                │   └── TLSUnavailable  the server refused or lacks STARTTLS
                ├── STARTTLSInjection   plaintext followed <proceed/> (retried)
                ├── SASLFailure
                │   ├── SASLUnavailable         (FatalError) no mechanism both sides accept
                │   └── AuthenticationFailure   (FatalError) credentials refused
                └── ResourceBindingFailure      (FatalError)

Parser refusals of the input (malformed XML, restricted XML, limits) are
:class:`txxmppnode.xmlparser.XMLStreamParseError`; the stream layer turns them into the stream
error they carry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import ClassVar

from lxml import etree

from . import namespaces


class FatalError(Exception):
    """Marker base: the failure will repeat on every attempt with the same configuration.

    ``isinstance(exc, FatalError)`` is how reconnection logic tells a configuration problem from a
    transient one.
    """


# -- stream errors ---------------------------------------------------------------------------


class StreamErrorCondition(enum.Enum):
    """The defined stream error conditions of RFC 6120 §4.9.3; the value is the element name."""

    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONFLICT = "conflict"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    INVALID_XML = "invalid-xml"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESET = "reset"
    RESOURCE_CONSTRAINT = "resource-constraint"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"

    @property
    def tag(self) -> str:
        """The condition element's qualified name in Clark notation."""
        return f"{{{namespaces.STREAM_ERRORS}}}{self.value}"


#: Stream errors after which reconnecting with the same settings cannot succeed: another
#: session replaced ours, the domain is not (or no longer) served, or the server rejects our
#: addressing.  A client must stop rather than loop on them.
FATAL_STREAM_CONDITIONS: frozenset[StreamErrorCondition] = frozenset(
    {
        StreamErrorCondition.CONFLICT,
        StreamErrorCondition.HOST_GONE,
        StreamErrorCondition.HOST_UNKNOWN,
        StreamErrorCondition.IMPROPER_ADDRESSING,
        StreamErrorCondition.INVALID_FROM,
        StreamErrorCondition.NOT_AUTHORIZED,
    }
)


class StreamError(ConnectionError):
    """A stream-level error: the stream is over.

    ``StreamError(condition, text)`` returns a :class:`FatalStreamError` for the conditions in
    :data:`FATAL_STREAM_CONDITIONS`, so the type alone says whether to retry.

    :ivar condition: the :class:`StreamErrorCondition`.
    :ivar text: the human-readable text the peer sent, or ``None``.
    :ivar see_other_host: for ``see-other-host``, the ``host[:port]`` to reconnect to.
    :ivar sent_by_us: true when we detected the problem and sent the error to the peer.
    """

    condition: StreamErrorCondition
    text: str | None
    see_other_host: str | None
    sent_by_us: bool

    def __new__(
        cls,
        condition: StreamErrorCondition,
        text: str | None = None,
        *,
        see_other_host: str | None = None,
        sent_by_us: bool = False,
    ) -> StreamError:
        if cls is StreamError and condition in FATAL_STREAM_CONDITIONS:
            cls = FatalStreamError
        return super().__new__(cls)

    def __init__(
        self,
        condition: StreamErrorCondition,
        text: str | None = None,
        *,
        see_other_host: str | None = None,
        sent_by_us: bool = False,
    ) -> None:
        condition = StreamErrorCondition(condition)
        message = f"stream error {condition.value}"
        if see_other_host:
            message += f" (reconnect to {see_other_host})"
        if text:
            message += f": {text}"
        if sent_by_us:
            message += " [sent to the peer]"
        super().__init__(message)
        # OSError takes its args from __new__, which saw none: set them for str() and repr().
        self.args = (message,)
        self.condition = condition
        self.text = text
        self.see_other_host = see_other_host
        self.sent_by_us = sent_by_us

    @classmethod
    def from_element(cls, element: etree._Element) -> StreamError:
        """Build the exception from a received ``<stream:error/>`` element.

        An unknown or missing condition becomes ``undefined-condition``.
        """
        condition = StreamErrorCondition.UNDEFINED_CONDITION
        text = None
        see_other_host = None
        for child in element:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace != namespaces.STREAM_ERRORS:
                continue
            if qname.localname == "text":
                text = child.text
                continue
            try:
                condition = StreamErrorCondition(qname.localname)
            except ValueError:
                continue
            if condition is StreamErrorCondition.SEE_OTHER_HOST:
                see_other_host = (child.text or "").strip() or None
        return cls(condition, text, see_other_host=see_other_host)

    def to_element(self) -> etree._Element:
        """The ``<stream:error/>`` element that reports this error to the peer."""
        error = etree.Element(
            f"{{{namespaces.STREAMS}}}error", nsmap={"stream": namespaces.STREAMS}
        )
        condition = etree.SubElement(
            error, self.condition.tag, nsmap={None: namespaces.STREAM_ERRORS}
        )
        if self.see_other_host:
            condition.text = self.see_other_host
        if self.text:
            text = etree.SubElement(
                error, f"{{{namespaces.STREAM_ERRORS}}}text", nsmap={None: namespaces.STREAM_ERRORS}
            )
            text.text = self.text
        return error


class FatalStreamError(StreamError, FatalError):
    """A :class:`StreamError` whose condition means retrying cannot help."""


class DestructionRequested(ConnectionError):
    """The stream was closed on request (by the application stopping the client)."""


class QueueFull(ConnectionError):
    """The stream holds as many unacknowledged stanzas as it may (``max_unacked``).

    Raised by ``enqueue`` (nothing is queued) until the server acknowledges some; also the
    reason a stream is aborted when the server makes us hold more (see the stanza stream).
    """


class MultiOSError(OSError):
    """Every connection option failed.

    :ivar exceptions: one exception per option, in the order the options were tried.
    """

    exceptions: tuple[BaseException, ...]

    def __init__(self, message: str, exceptions: Iterable[BaseException]) -> None:
        self.exceptions = tuple(exceptions)
        details = "; ".join(f"{type(e).__name__}: {e}" for e in self.exceptions)
        super().__init__(f"{message}: {details}" if details else message)

    def __str__(self) -> str:
        return str(self.args[0])


# -- negotiation -----------------------------------------------------------------------------


class StreamNegotiationFailure(ConnectionError):
    """The stream could not be brought up to the established state."""


class TLSFailure(StreamNegotiationFailure, FatalError):
    """TLS could not be established securely: an untrusted or mismatching certificate, a failed
    handshake, or a pin mismatch. The message carries the reason."""


class TLSUnavailable(TLSFailure):
    """TLS is required but the server refused ``<starttls/>`` or cannot offer TLS."""


class STARTTLSInjection(StreamNegotiationFailure):
    """The server's ``<proceed/>`` was not the last thing received in plaintext.

    Only the TLS handshake may follow the closing ``>`` of ``<proceed/>`` (RFC 6120 §5.4.2.3).
    Data there is how a man in the middle makes a client use, once TLS is on, stream features
    it chose (``<stream:features/>`` offering only PLAIN, say): the CVE-2011-0411 class of
    attacks.  None of it is used: TLS is not started, nothing more is written, and the TCP
    connection is closed.  It is not a :class:`FatalError`: the culprit may be one network
    path, and the next attempt may take another.
    """


class SASLFailure(StreamNegotiationFailure):
    """Authentication did not complete."""


class SASLUnavailable(SASLFailure, FatalError):
    """No SASL mechanism acceptable to us is offered by the server."""


class AuthenticationFailure(SASLFailure, FatalError):
    """The server refused our credentials.

    :ivar condition: the SASL failure condition (RFC 6120 §6.5), e.g. ``"not-authorized"``.
    :ivar text: the server's explanation, or ``None``.
    """

    def __init__(self, condition: str, text: str | None = None) -> None:
        message = f"authentication failed: {condition}"
        if text:
            message += f" ({text})"
        super().__init__(message)
        self.condition = condition
        self.text = text


class ResourceBindingFailure(StreamNegotiationFailure, FatalError):
    """The server refused to bind a resource for the stream."""


# -- stanza errors ---------------------------------------------------------------------------


class ErrorType(enum.Enum):
    """The ``type`` of a stanza error (RFC 6120 §8.3.2)."""

    AUTH = "auth"
    CANCEL = "cancel"
    CONTINUE = "continue"
    MODIFY = "modify"
    WAIT = "wait"


class ErrorCondition(enum.Enum):
    """The defined stanza error conditions of RFC 6120 §8.3.3; the value is the element name."""

    BAD_REQUEST = "bad-request"
    CONFLICT = "conflict"
    FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
    FORBIDDEN = "forbidden"
    GONE = "gone"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    JID_MALFORMED = "jid-malformed"
    NOT_ACCEPTABLE = "not-acceptable"
    NOT_ALLOWED = "not-allowed"
    NOT_AUTHORIZED = "not-authorized"
    POLICY_VIOLATION = "policy-violation"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    REDIRECT = "redirect"
    REGISTRATION_REQUIRED = "registration-required"
    REMOTE_SERVER_NOT_FOUND = "remote-server-not-found"
    REMOTE_SERVER_TIMEOUT = "remote-server-timeout"
    RESOURCE_CONSTRAINT = "resource-constraint"
    SERVICE_UNAVAILABLE = "service-unavailable"
    SUBSCRIPTION_REQUIRED = "subscription-required"
    UNDEFINED_CONDITION = "undefined-condition"
    UNEXPECTED_REQUEST = "unexpected-request"

    @property
    def tag(self) -> str:
        """The condition element's qualified name in Clark notation."""
        return f"{{{namespaces.STANZA_ERRORS}}}{self.value}"

    @property
    def default_type(self) -> ErrorType:
        """The error type RFC 6120 §8.3.3 recommends with this condition."""
        return _DEFAULT_ERROR_TYPES.get(self, ErrorType.CANCEL)


_DEFAULT_ERROR_TYPES = {
    ErrorCondition.BAD_REQUEST: ErrorType.MODIFY,
    ErrorCondition.FORBIDDEN: ErrorType.AUTH,
    ErrorCondition.JID_MALFORMED: ErrorType.MODIFY,
    ErrorCondition.NOT_ACCEPTABLE: ErrorType.MODIFY,
    ErrorCondition.NOT_AUTHORIZED: ErrorType.AUTH,
    ErrorCondition.POLICY_VIOLATION: ErrorType.MODIFY,
    ErrorCondition.RECIPIENT_UNAVAILABLE: ErrorType.WAIT,
    ErrorCondition.REDIRECT: ErrorType.MODIFY,
    ErrorCondition.REGISTRATION_REQUIRED: ErrorType.AUTH,
    ErrorCondition.REMOTE_SERVER_TIMEOUT: ErrorType.WAIT,
    ErrorCondition.RESOURCE_CONSTRAINT: ErrorType.WAIT,
    ErrorCondition.SUBSCRIPTION_REQUIRED: ErrorType.AUTH,
    ErrorCondition.UNEXPECTED_REQUEST: ErrorType.WAIT,
}

#: Conditions whose element carries an XMPP URI as character data (RFC 6120 §8.3.3.5, §8.3.3.14).
_CONDITIONS_WITH_ADDRESS = frozenset({ErrorCondition.GONE, ErrorCondition.REDIRECT})


class XMPPError(Exception):
    """A stanza error: the peer answered with ``type="error"``.

    ``XMPPError(condition)`` returns the subclass for the condition's default error type (for
    example ``XMPPError(ErrorCondition.ITEM_NOT_FOUND)`` is an :class:`XMPPCancelError`);
    instantiate a subclass to choose the type.

    :ivar condition: the :class:`ErrorCondition`.
    :ivar type_: the :class:`ErrorType`, fixed per subclass.
    :ivar text: the human-readable text, or ``None``.
    :ivar lang: the ``xml:lang`` of the text, or ``None``.
    :ivar application_condition: an application-specific condition element, or ``None``.
    :ivar address: for ``gone`` and ``redirect``, the new address, or ``None``.
    :ivar by: the ``by`` attribute (the entity that generated the error), or ``None``.
    """

    TYPE: ClassVar[ErrorType | None] = None

    def __new__(cls, condition: ErrorCondition, *args: object, **kwargs: object) -> XMPPError:
        if cls is XMPPError:
            cls = _CLASS_BY_TYPE[ErrorCondition(condition).default_type]
        return super().__new__(cls)

    def __init__(
        self,
        condition: ErrorCondition,
        text: str | None = None,
        *,
        lang: str | None = None,
        application_condition: etree._Element | None = None,
        address: str | None = None,
        by: str | None = None,
    ) -> None:
        condition = ErrorCondition(condition)
        message = f"{condition.value} ({self.type_.value})"
        if text:
            message += f": {text}"
        super().__init__(message)
        self.condition = condition
        self.text = text
        self.lang = lang
        self.application_condition = application_condition
        self.address = address
        self.by = by

    @property
    def type_(self) -> ErrorType:
        """The error type of this exception class."""
        assert self.TYPE is not None
        return self.TYPE

    @classmethod
    def from_element(cls, error: etree._Element) -> XMPPError:
        """Build the exception from an ``<error/>`` child of an error stanza.

        :raises ValueError: if the element has no valid type or no defined condition.
        """
        try:
            type_ = ErrorType(error.get("type"))
        except ValueError:
            raise ValueError(f"stanza error with invalid type {error.get('type')!r}") from None
        condition = None
        text = lang = address = None
        application_condition = None
        for child in error:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace != namespaces.STANZA_ERRORS:
                application_condition = child
            elif qname.localname == "text":
                text = child.text
                lang = child.get(f"{{{namespaces.XML}}}lang")
            elif condition is None:
                try:
                    condition = ErrorCondition(qname.localname)
                except ValueError:
                    raise ValueError(
                        f"unknown stanza error condition {qname.localname!r}"
                    ) from None
                if condition in _CONDITIONS_WITH_ADDRESS:
                    address = (child.text or "").strip() or None
        if condition is None:
            raise ValueError("stanza error without a defined condition")
        return _CLASS_BY_TYPE[type_](
            condition,
            text,
            lang=lang,
            application_condition=application_condition,
            address=address,
            by=error.get("by"),
        )

    def to_element(self) -> etree._Element:
        """The ``<error/>`` element (in ``jabber:client``) that reports this error."""
        error = etree.Element(f"{{{namespaces.CLIENT}}}error", nsmap={None: namespaces.CLIENT})
        error.set("type", self.type_.value)
        if self.by:
            error.set("by", self.by)
        condition = etree.SubElement(
            error, self.condition.tag, nsmap={None: namespaces.STANZA_ERRORS}
        )
        if self.address and self.condition in _CONDITIONS_WITH_ADDRESS:
            condition.text = self.address
        if self.text:
            text = etree.SubElement(
                error, f"{{{namespaces.STANZA_ERRORS}}}text", nsmap={None: namespaces.STANZA_ERRORS}
            )
            text.text = self.text
            if self.lang:
                text.set(f"{{{namespaces.XML}}}lang", self.lang)
        if self.application_condition is not None:
            error.append(deepcopy(self.application_condition))
        return error


class XMPPAuthError(XMPPError):
    """Stanza error of type ``auth``: retry after providing credentials."""

    TYPE = ErrorType.AUTH


class XMPPCancelError(XMPPError):
    """Stanza error of type ``cancel``: do not retry."""

    TYPE = ErrorType.CANCEL


class XMPPContinueError(XMPPError):
    """Stanza error of type ``continue``: proceed (the condition was only a warning)."""

    TYPE = ErrorType.CONTINUE


class XMPPModifyError(XMPPError):
    """Stanza error of type ``modify``: retry after changing the data sent."""

    TYPE = ErrorType.MODIFY


class XMPPWaitError(XMPPError):
    """Stanza error of type ``wait``: retry after waiting."""

    TYPE = ErrorType.WAIT


_CLASS_BY_TYPE: dict[ErrorType, type[XMPPError]] = {
    ErrorType.AUTH: XMPPAuthError,
    ErrorType.CANCEL: XMPPCancelError,
    ErrorType.CONTINUE: XMPPContinueError,
    ErrorType.MODIFY: XMPPModifyError,
    ErrorType.WAIT: XMPPWaitError,
}


class ErroneousStanza(Exception):
    """A received stanza could not be interpreted (for example an IQ reply with a broken payload).

    :ivar stanza: the element as received.
    """

    def __init__(self, message: str, stanza: etree._Element | None = None) -> None:
        super().__init__(message)
        self.stanza = stanza


__all__: Sequence[str] = [
    "FATAL_STREAM_CONDITIONS",
    "AuthenticationFailure",
    "DestructionRequested",
    "ErroneousStanza",
    "ErrorCondition",
    "ErrorType",
    "FatalError",
    "FatalStreamError",
    "MultiOSError",
    "QueueFull",
    "ResourceBindingFailure",
    "SASLFailure",
    "SASLUnavailable",
    "STARTTLSInjection",
    "StreamError",
    "StreamErrorCondition",
    "StreamNegotiationFailure",
    "TLSFailure",
    "TLSUnavailable",
    "XMPPAuthError",
    "XMPPCancelError",
    "XMPPContinueError",
    "XMPPError",
    "XMPPModifyError",
    "XMPPWaitError",
]
