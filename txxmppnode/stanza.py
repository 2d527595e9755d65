"""Stanzas: ``<message/>``, ``<presence/>`` and ``<iq/>`` as lxml element classes.

The parser builds these classes directly through an lxml namespace class lookup
(:data:`CLASS_LOOKUP`), so a received stanza *is* an lxml element with typed accessors; there is
no second object model to convert to and from.  Payloads are plain lxml elements.  Applications
may register their own element classes for payload namespaces with
:func:`register_element_class`.

Because lxml may create a new Python proxy for the same XML node at any time, the classes keep
all state in the XML itself: every accessor reads or writes attributes and children.
"""

from __future__ import annotations

import base64
import enum
import os
from collections.abc import Iterator
from typing import Any, Final, TypeVar

from lxml import etree

from . import namespaces
from .errors import ErrorCondition, XMPPError
from .jid import JID, _fromstr_cached

_XML_LANG: Final = f"{{{namespaces.XML}}}lang"
_ERROR_TAG: Final = f"{{{namespaces.CLIENT}}}error"
_CLIENT_NSMAP: Final = {None: namespaces.CLIENT}
_BODY: Final = f"{{{namespaces.CLIENT}}}body"
_SHOW: Final = f"{{{namespaces.CLIENT}}}show"
_STATUS: Final = f"{{{namespaces.CLIENT}}}status"
_PRIORITY: Final = f"{{{namespaces.CLIENT}}}priority"


class MessageType(enum.Enum):
    """The ``type`` of a message (RFC 6121 §5.2.2); absent means ``normal``."""

    CHAT = "chat"
    ERROR = "error"
    GROUPCHAT = "groupchat"
    HEADLINE = "headline"
    NORMAL = "normal"

    __hash__ = object.__hash__  # singletons: by identity, in C (Enum hashes the name in Python)


class PresenceType(enum.Enum):
    """The ``type`` of a presence (RFC 6121 §4.7.1); absent (``AVAILABLE``, value ``None``)."""

    AVAILABLE = None
    ERROR = "error"
    PROBE = "probe"
    SUBSCRIBE = "subscribe"
    SUBSCRIBED = "subscribed"
    UNAVAILABLE = "unavailable"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"

    __hash__ = object.__hash__  # singletons: by identity, in C (Enum hashes the name in Python)


class PresenceShow(enum.Enum):
    """The ``<show/>`` of an available presence (RFC 6121 §4.7.2.1); ``NONE`` means online."""

    NONE = None
    AWAY = "away"
    CHAT = "chat"
    DND = "dnd"
    XA = "xa"

    __hash__ = object.__hash__  # singletons: by identity, in C (Enum hashes the name in Python)


class IQType(enum.Enum):
    """The ``type`` of an IQ (RFC 6120 §8.2.3)."""

    GET = "get"
    SET = "set"
    RESULT = "result"
    ERROR = "error"

    __hash__ = object.__hash__  # singletons: by identity, in C (Enum hashes the name in Python)

    @property
    def is_request(self) -> bool:
        """True for ``get`` and ``set``."""
        return self in (IQType.GET, IQType.SET)


_E = TypeVar("_E", bound=enum.Enum)

#: The members of the stanza types by the attribute's text, for the getters' common case.
_MESSAGE_TYPES: Final[dict[str | None, MessageType]] = {m.value: m for m in MessageType}
_PRESENCE_TYPES: Final[dict[str | None, PresenceType]] = {m.value: m for m in PresenceType}
_IQ_TYPES: Final[dict[str | None, IQType]] = {m.value: m for m in IQType}


#: Each enum's members by value, for the common case of :func:`_enum`: a string read from XML.
_MEMBERS: dict[type[enum.Enum], dict[object, Any]] = {}


def _enum(cls: type[_E], value: object, what: str) -> _E:
    if type(value) is cls:
        return value
    if value is None or type(value) is str:
        members = _MEMBERS.get(cls)
        if members is None:
            members = _MEMBERS[cls] = {member.value: member for member in cls}
        member: _E | None = members.get(value)
        if member is not None:
            return member
    try:
        return cls(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"invalid {what} {value!r}; expected one of {allowed}") from None


def _address(value: JID | str) -> str:
    """The text of an address to write: a :class:`JID` as it is (it was checked when it was
    made), anything else parsed as one first.

    :raises ValueError: if a string is not a valid JID.
    """
    if isinstance(value, JID):
        return str(value)
    return str(JID.fromstr(str(value)))


def _attributes(
    to: JID | str | None, from_: JID | str | None, id_: str | None, lang: str | None
) -> dict[str, str]:
    """The addressing attributes of a new stanza, checked, in the order they are written."""
    attrib: dict[str, str] = {}
    if to is not None:
        attrib["to"] = _address(to)
    if from_ is not None:
        attrib["from"] = _address(from_)
    if id_ is not None:
        attrib["id"] = str(id_)
    if lang is not None:
        attrib[_XML_LANG] = str(lang)
    return attrib


#: Stanza ids not handed out yet (see :func:`_new_id`).
_ID_POOL: list[str] = []
#: Random bytes per id: 96 bits, which URL-safe base64 writes as 16 characters.
_ID_BYTES: Final = 12
#: Ids drawn from the system's random source at once.
_ID_BATCH: Final = 256


def _new_id() -> str:
    """An unpredictable stanza id: 96 random bits from the system's CSPRNG (``os.urandom``),
    URL-safe base64, 16 characters -- what ``secrets.token_urlsafe(12)`` gives.

    The bytes are drawn for :data:`_ID_BATCH` ids at a time and each id is handed out once;
    a forked child forgets the ids its parent had drawn (``os.register_at_fork``).
    """
    if not _ID_POOL:
        text = base64.urlsafe_b64encode(os.urandom(_ID_BYTES * _ID_BATCH)).decode("ascii")
        width = _ID_BYTES // 3 * 4  # whole base64 groups: the ids are independent
        _ID_POOL.extend(text[start : start + width] for start in range(0, len(text), width))
    return _ID_POOL.pop()


os.register_at_fork(after_in_child=_ID_POOL.clear)


class Stanza(etree.ElementBase):
    """What message, presence and IQ stanzas share: addressing, id, language and errors.

    The subclasses have keyword constructors.  lxml warns against ``__init__`` on element
    classes because it creates proxies for parsed nodes without calling it; that is harmless
    here since the constructors only write XML and no state lives on the Python object.
    """

    PARSER: Any = None  # set below, once the lookup exists

    def _jid(self, name: str) -> JID | None:
        value = self.get(name)
        # JID.fromstr's own cache, without its checks: an attribute is always a str
        return None if value is None else _fromstr_cached(value, True)

    def _set_attr(self, name: str, value: object | None) -> None:
        if value is None:
            if self.get(name) is not None:
                del self.attrib[name]
        else:
            self.set(name, str(value))

    @property
    def to(self) -> JID | None:
        """The recipient, or ``None``.

        Accepts a :class:`JID`, written as it is, or a string, which must parse as one (as for
        the constructors' *to* and *from_*).

        :raises ValueError: on reading a malformed address, or setting a string that is not
            a valid JID.
        """
        return self._jid("to")

    @to.setter
    def to(self, value: JID | str | None) -> None:
        self._set_attr("to", None if value is None else _address(value))

    @property
    def from_(self) -> JID | None:
        """The sender, or ``None`` (which means the user's own server or account)."""
        return self._jid("from")

    @from_.setter
    def from_(self, value: JID | str | None) -> None:
        self._set_attr("from", None if value is None else _address(value))

    @property
    def id_(self) -> str | None:
        """The stanza id, or ``None``."""
        return self.get("id")

    @id_.setter
    def id_(self, value: str | None) -> None:
        self._set_attr("id", value)

    @property
    def lang(self) -> str | None:
        """The ``xml:lang`` of the stanza, or ``None``."""
        return self.get(_XML_LANG)

    @lang.setter
    def lang(self, value: str | None) -> None:
        self._set_attr(_XML_LANG, value)

    def autoset_id(self) -> str:
        """Give the stanza an unpredictable id unless it has one; return the id."""
        value = self.get("id")
        if not value:
            value = _new_id()
            self.set("id", value)
        return value

    @property
    def error(self) -> XMPPError | None:
        """The stanza error carried by an error stanza, as an exception, or ``None``.

        :raises ValueError: if the ``<error/>`` element is malformed.
        """
        element = self.find(_ERROR_TAG)
        return None if element is None else XMPPError.from_element(element)

    @error.setter
    def error(self, value: XMPPError | None) -> None:
        node: etree._Element = self  # typed as a plain element: children are any element
        for old in node.findall(_ERROR_TAG):
            node.remove(old)
        if value is not None:
            node.append(value.to_element())

    def payloads(self) -> Iterator[etree._Element]:
        """The child elements other than ``<error/>``, in document order."""
        for child in self:
            if isinstance(child.tag, str) and child.tag != _ERROR_TAG:
                yield child

    def validate(self) -> None:
        """Check the rules RFC 6120 sets for this kind of stanza.

        :raises ValueError: naming the rule the stanza breaks.
        """
        if self.get("type") == "error" and self.find(_ERROR_TAG) is None:
            raise ValueError(f"an error {etree.QName(self).localname} needs an <error/> child")


class Message(Stanza):
    """A ``<message/>`` stanza.

    >>> Message(to="juliet@example.com", type_="chat", body="hi")
    """

    TAG = f"{{{namespaces.CLIENT}}}message"

    def __init__(  # type: ignore[misc]  # keyword constructor: see Stanza
        self,
        *,
        to: JID | str | None = None,
        from_: JID | str | None = None,
        type_: MessageType | str = MessageType.NORMAL,
        id_: str | None = None,
        lang: str | None = None,
        body: str | None = None,
    ) -> None:
        attrib = _attributes(to, from_, id_, lang)
        member = _enum(MessageType, type_, "message type")
        if member is not MessageType.NORMAL:
            attrib["type"] = member.value
        super().__init__(attrib=attrib, nsmap=_CLIENT_NSMAP)
        if body is not None:
            etree.SubElement(self, _BODY).text = body

    @property
    def type_(self) -> MessageType:
        """The message type; ``NORMAL`` when the attribute is absent."""
        value = self.get("type", "normal")
        member = _MESSAGE_TYPES.get(value)  # read for every message received, twice
        return _enum(MessageType, value, "message type") if member is None else member

    @type_.setter
    def type_(self, value: MessageType | str) -> None:
        member = _enum(MessageType, value, "message type")
        self._set_attr("type", None if member is MessageType.NORMAL else member.value)

    @property
    def body(self) -> str | None:
        """The text of the ``<body/>`` without its own ``xml:lang`` (else the first), or None.

        Setting replaces every ``<body/>`` with one; ``None`` removes them.
        """
        bodies = self.findall(f"{{{namespaces.CLIENT}}}body")
        for element in bodies:
            if element.get(_XML_LANG) is None:
                return element.text or ""
        return (bodies[0].text or "") if bodies else None

    @body.setter
    def body(self, value: str | None) -> None:
        _set_child_text(self, "body", value)


class Presence(Stanza):
    """A ``<presence/>`` stanza."""

    TAG = f"{{{namespaces.CLIENT}}}presence"

    def __init__(  # type: ignore[misc]  # keyword constructor: see Stanza
        self,
        *,
        to: JID | str | None = None,
        from_: JID | str | None = None,
        type_: PresenceType | str | None = PresenceType.AVAILABLE,
        id_: str | None = None,
        lang: str | None = None,
        show: PresenceShow | str | None = PresenceShow.NONE,
        status: str | None = None,
        priority: int = 0,
    ) -> None:
        attrib = _attributes(to, from_, id_, lang)
        member = _enum(PresenceType, type_, "presence type")
        if member is not PresenceType.AVAILABLE:
            attrib["type"] = member.value
        show_value = _enum(PresenceShow, show, "presence show").value
        priority = _check_priority(int(priority))
        super().__init__(attrib=attrib, nsmap=_CLIENT_NSMAP)
        if show_value is not None:
            etree.SubElement(self, _SHOW).text = show_value
        if status is not None:
            etree.SubElement(self, _STATUS).text = status
        if priority:
            etree.SubElement(self, _PRIORITY).text = str(priority)

    @property
    def type_(self) -> PresenceType:
        """The presence type; ``AVAILABLE`` when the attribute is absent."""
        value = self.get("type")
        member = _PRESENCE_TYPES.get(value)
        return _enum(PresenceType, value, "presence type") if member is None else member

    @type_.setter
    def type_(self, value: PresenceType | str | None) -> None:
        self._set_attr("type", _enum(PresenceType, value, "presence type").value)

    @property
    def show(self) -> PresenceShow:
        """The availability sub-state from ``<show/>``; ``NONE`` when absent."""
        element = self.find(f"{{{namespaces.CLIENT}}}show")
        text = None if element is None else (element.text or "").strip()
        return _enum(PresenceShow, text, "presence show")

    @show.setter
    def show(self, value: PresenceShow | str | None) -> None:
        _set_child_text(self, "show", _enum(PresenceShow, value, "presence show").value)

    @property
    def status(self) -> str | None:
        """The text of ``<status/>`` (the one without ``xml:lang``, else the first), or None."""
        statuses = self.findall(f"{{{namespaces.CLIENT}}}status")
        for element in statuses:
            if element.get(_XML_LANG) is None:
                return element.text or ""
        return (statuses[0].text or "") if statuses else None

    @status.setter
    def status(self, value: str | None) -> None:
        _set_child_text(self, "status", value)

    @property
    def priority(self) -> int:
        """The priority from ``<priority/>`` (-128 to 127); 0 when absent.

        :raises ValueError: on reading a priority that is not an integer in range.
        """
        element = self.find(f"{{{namespaces.CLIENT}}}priority")
        if element is None:
            return 0
        return _check_priority(int((element.text or "").strip()))

    @priority.setter
    def priority(self, value: int) -> None:
        value = _check_priority(int(value))
        _set_child_text(self, "priority", None if value == 0 else str(value))


def _check_priority(value: int) -> int:
    if not -128 <= value <= 127:
        raise ValueError(f"presence priority {value} is outside -128..127")
    return value


class IQ(Stanza):
    """An ``<iq/>`` stanza: a request (``get``/``set``) or its response."""

    TAG = f"{{{namespaces.CLIENT}}}iq"

    def __init__(  # type: ignore[misc]  # keyword constructor: see Stanza
        self,
        type_: IQType | str,
        *,
        to: JID | str | None = None,
        from_: JID | str | None = None,
        id_: str | None = None,
        lang: str | None = None,
        payload: etree._Element | None = None,
    ) -> None:
        attrib = _attributes(to, from_, id_, lang)
        attrib["type"] = _enum(IQType, type_, "IQ type").value
        super().__init__(attrib=attrib, nsmap=_CLIENT_NSMAP)
        if payload is not None:
            node: etree._Element = self  # typed as a plain element: children are any element
            node.append(payload)

    @property
    def type_(self) -> IQType:
        """The IQ type."""
        value = self.get("type")
        member = _IQ_TYPES.get(value)
        return _enum(IQType, value, "IQ type") if member is None else member

    @type_.setter
    def type_(self, value: IQType | str) -> None:
        self.set("type", _enum(IQType, value, "IQ type").value)

    @property
    def payload(self) -> etree._Element | None:
        """The first child element other than ``<error/>``, or ``None``.

        Setting replaces the payload (the ``<error/>`` child, if any, stays).
        """
        for child in self:
            tag = child.tag
            if isinstance(tag, str) and tag != _ERROR_TAG:
                return child
        return None

    @payload.setter
    def payload(self, value: etree._Element | None) -> None:
        node: etree._Element = self  # typed as a plain element: children are any element
        for old in list(self.payloads()):
            node.remove(old)
        if value is not None:
            node.insert(0, value)

    def validate(self) -> None:
        """Check the RFC 6120 §8.2.3 rules: ids, and the number of payloads per type."""
        super().validate()
        type_ = self.type_
        if not self.get("id"):
            raise ValueError("an IQ needs an id")
        count = sum(1 for _ in self.payloads())
        if type_.is_request and count != 1:
            raise ValueError(f"an IQ {type_.value} needs exactly one payload, not {count}")
        if type_ is IQType.RESULT and count > 1:
            raise ValueError(f"an IQ result carries at most one payload, not {count}")


def _set_child_text(parent: etree._Element, name: str, value: str | None) -> None:
    """Replace all ``jabber:client`` children called *name* with one holding *value*.

    A value XML cannot carry raises :class:`ValueError` and leaves *parent* unchanged.
    """
    tag = f"{{{namespaces.CLIENT}}}{name}"
    old = list(parent.iterchildren(tag)) if len(parent) else ()
    if value is not None:
        new = etree.SubElement(parent, tag)
        try:
            new.text = value
        except ValueError:
            parent.remove(new)
            raise
    for element in old:
        parent.remove(element)


#: The lxml lookup that builds stanza classes; the parser and the stanza constructors use it.
CLASS_LOOKUP: Final = etree.ElementNamespaceClassLookup()
_client = CLASS_LOOKUP.get_namespace(namespaces.CLIENT)
_client["message"] = Message
_client["presence"] = Presence
_client["iq"] = IQ

#: An lxml parser with :data:`CLASS_LOOKUP`; documents it creates keep building stanza classes.
PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
PARSER.set_element_class_lookup(CLASS_LOOKUP)
Stanza.PARSER = PARSER


def register_element_class(cls: type[etree.ElementBase], tag: str | None = None) -> None:
    """Make the parser build *cls* for elements called *tag* (Clark notation).

    *tag* defaults to ``cls.TAG``.  Use it to give payload elements typed accessors.

    :raises ValueError: if another class is already registered for the tag.
    """
    qname = etree.QName(tag or str(cls.TAG))
    registry = CLASS_LOOKUP.get_namespace(qname.namespace)
    try:
        existing = registry[qname.localname]
    except KeyError:
        existing = cls
    if existing is not cls:
        raise ValueError(f"{qname.text} is already registered to {existing.__name__}")
    registry[qname.localname] = cls


def make_error_reply(stanza: Stanza, error: XMPPError) -> Stanza:
    """Build the error response to *stanza* (RFC 6120 §8.3.1): addresses swapped, same id."""
    reply = stanza.makeelement(stanza.tag, nsmap={None: namespaces.CLIENT})
    reply.set("type", "error")
    for source, target in (("id", "id"), ("from", "to"), ("to", "from")):
        value = stanza.get(source)
        if value is not None:
            reply.set(target, value)
    node: etree._Element = reply
    node.append(error.to_element())
    return reply


__all__ = [
    "CLASS_LOOKUP",
    "IQ",
    "ErrorCondition",
    "IQType",
    "Message",
    "MessageType",
    "Presence",
    "PresenceShow",
    "PresenceType",
    "Stanza",
    "make_error_reply",
    "register_element_class",
]
