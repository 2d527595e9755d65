"""Where received stanzas go: filter chains, IQ request handlers, message and presence callbacks.

The stanza stream owns one :class:`Dispatcher` and consults it for every stanza; the dispatcher
itself does no I/O and never touches the reactor.

Filters
    A :class:`Filter` is an ordered chain of functions that may inspect, replace or drop
    (return ``None``) a stanza.  Messages and presences pass through two chains in each
    direction, a *service* chain (for protocol extensions built into the client) and an
    *application* chain.  Inbound, the service chain runs first, so services see the traffic as
    received; outbound, the application chain runs first, so services see what is really sent.
    IQs are not filtered.

IQ request handlers
    At most one handler per (``get``/``set``, payload tag) pair, found with one dictionary
    lookup by :meth:`Dispatcher.lookup_iq_request_handler`.  Calling the handler and sending
    the response is the stream's business.

Message and presence callbacks
    At most one callback per (type, sender) key, where ``None`` is a wildcard for either part.
    A stanza is given to the single *most specific* matching callback; see
    :meth:`Dispatcher.dispatch_message` for the order.  Keys are normalised when they are
    registered (strings become enum members and :class:`~txxmppnode.jid.JID` objects), so
    dispatching is a handful of exact dictionary lookups however many callbacks exist.
"""

from __future__ import annotations

import contextlib
import enum
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, Literal, Protocol, TypeAlias, TypeVar, overload

from lxml import etree

from .errors import XMPPError
from .jid import JID
from .stanza import IQ, IQType, Message, MessageType, Presence, PresenceType, Stanza

__all__ = [
    "Dispatcher",
    "Filter",
    "FilterFunction",
    "FilterToken",
    "IQHandlerEntry",
    "IQRequestHandler",
    "IQRequestHandlerWithReply",
    "MessageCallback",
    "PresenceCallback",
    "ReplySender",
]

_S = TypeVar("_S", bound=Stanza)
_T = TypeVar("_T", bound=enum.Enum)

#: A filter function: return the stanza (the same or a replacement) to pass it on, or ``None``
#: to drop it.
FilterFunction: TypeAlias = Callable[[_S], _S | None]

#: A message callback; its return value is ignored.
MessageCallback: TypeAlias = Callable[[Message], object]

#: A presence callback; its return value is ignored.
PresenceCallback: TypeAlias = Callable[[Presence], object]


class ReplySender(Protocol):
    """What a handler registered ``with_send_reply=True`` is given to answer the request.

    Call it once with the result payload (``None`` for an empty result) or with an
    :class:`~txxmppnode.errors.XMPPError` to send an error response.  The stanza stream
    provides it.
    """

    def __call__(self, result: etree._Element | XMPPError | None, /) -> object: ...


#: An IQ request handler called with the request only.  The stanza stream interprets its return
#: value (the result payload, or something that produces it) and the exceptions it raises.
IQRequestHandler: TypeAlias = Callable[[IQ], object]

#: An IQ request handler that is also given a :class:`ReplySender` to answer with.
IQRequestHandlerWithReply: TypeAlias = Callable[[IQ, ReplySender], object]


# -- filters -------------------------------------------------------------------------------


class FilterToken:
    """Identifies one registration in a :class:`Filter`; pass it to :meth:`Filter.unregister`.

    Tokens compare by identity.
    """

    __slots__ = ("_description",)

    def __init__(self, description: str) -> None:
        self._description = description

    def __repr__(self) -> str:
        return f"<FilterToken {self._description}>"


def _describe(func: object) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else repr(func)


class Filter(Generic[_S]):
    """An ordered chain of functions ``stanza -> stanza | None``.

    Functions run by ascending *order*; functions with the same order run in the order they
    were registered.  The same function may be registered more than once, each registration
    with its own token.
    """

    # eight per stream, almost always empty: no __dict__ each
    __slots__ = ("_chain", "_entries", "_next_sequence")

    def __init__(self) -> None:
        # (order, sequence number, token, function), kept sorted by (order, sequence number)
        self._entries: list[tuple[int, int, FilterToken, FilterFunction[_S]]] = []
        self._chain: tuple[FilterFunction[_S], ...] = ()
        self._next_sequence = 0

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, func: FilterFunction[_S], order: int = 0) -> FilterToken:
        """Add *func* to the chain at position *order*; return the token to remove it with.

        :raises TypeError: if *func* is not callable or *order* is not an integer.
        """
        if not callable(func):
            raise TypeError(f"a filter function must be callable, not {type(func).__name__}")
        order = operator.index(order)
        token = FilterToken(f"{_describe(func)} order={order}")
        entry = (order, self._next_sequence, token, func)
        self._next_sequence += 1
        self._entries.append(entry)
        self._entries.sort(key=lambda e: (e[0], e[1]))
        self._rebuild()
        return token

    def unregister(self, token: FilterToken) -> None:
        """Remove the registration *token* stands for.

        :raises ValueError: if *token* is not registered with this filter (any more).
        """
        for index, entry in enumerate(self._entries):
            if entry[2] is token:
                del self._entries[index]
                self._rebuild()
                return
        raise ValueError(f"{token!r} is not registered with this filter")

    @contextlib.contextmanager
    def context_register(self, func: FilterFunction[_S], order: int = 0) -> Iterator[FilterToken]:
        """Register *func* for the duration of a ``with`` block; the block gets the token.

        Leaving the block unregisters the function, unless that was already done explicitly.
        """
        token = self.register(func, order)
        try:
            yield token
        finally:
            with contextlib.suppress(ValueError):
                self.unregister(token)

    def filter(self, stanza: _S) -> _S | None:
        """Run *stanza* through the chain; return the result, or ``None`` if it was dropped.

        Each function gets what the previous one returned, and the chain stops at the first
        ``None``.  Exceptions from a function propagate.  Registering or unregistering while
        the chain runs takes effect for the next stanza.
        """
        for func in self._chain:
            result = func(stanza)
            if result is None:
                return None
            stanza = result
        return stanza

    def _rebuild(self) -> None:
        self._chain = tuple(entry[3] for entry in self._entries)


# -- IQ request handlers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IQHandlerEntry:
    """A registered IQ request handler.

    :ivar handler: an :data:`IQRequestHandler` if *with_send_reply* is false, else an
        :data:`IQRequestHandlerWithReply`.
    :ivar with_send_reply: whether the handler takes a :class:`ReplySender` after the request.
    """

    handler: Callable[..., object]
    with_send_reply: bool


_CLARK: Final = re.compile(r"\{([^{}\s]+)\}([^{}]+)")


def _iq_request_type(type_: IQType | str) -> IQType:
    try:
        member = IQType(type_.value if isinstance(type_, enum.Enum) else type_)
    except ValueError:
        member = None
    if member is None or not member.is_request:
        raise ValueError(f"IQ request handlers are for types 'get' and 'set', not {type_!r}")
    return member


def _payload_tag(tag: str) -> str:
    if not isinstance(tag, str):
        raise TypeError(f"the payload tag must be a str, not {type(tag).__name__}")
    match = _CLARK.fullmatch(tag)
    if match is None:
        raise ValueError(f"payload tag {tag!r} is not of the form '{{namespace}}localname'")
    try:
        etree.QName(None, match.group(2))
    except ValueError:
        raise ValueError(f"payload tag {tag!r} has an invalid local name") from None
    return tag


# -- message and presence callbacks ---------------------------------------------------------


def _sender_key(from_: JID | str | None) -> JID | None:
    if from_ is None or isinstance(from_, JID):
        return from_
    if isinstance(from_, str):
        return JID.fromstr(from_)
    raise TypeError(f"from_ must be a JID, a str or None, not {type(from_).__name__}")


def _message_type_key(type_: MessageType | str | None) -> MessageType | None:
    if type_ is None:
        return None
    try:
        return MessageType(type_.value if isinstance(type_, enum.Enum) else type_)
    except ValueError:
        raise ValueError(f"invalid message type {type_!r}") from None


def _presence_type_key(type_: PresenceType | str | None) -> PresenceType | None:
    # None is the "any type" wildcard here; PresenceType(None) would be AVAILABLE.
    if type_ is None:
        return None
    if isinstance(type_, PresenceType):
        return type_
    hint = ""
    if type_ == "available":
        hint = " (use PresenceType.AVAILABLE for available presences)"
    try:
        member = PresenceType(type_.value if isinstance(type_, enum.Enum) else type_)
    except ValueError:
        member = None
    if member is None or member is PresenceType.AVAILABLE:
        raise ValueError(f"invalid presence type {type_!r}{hint}")
    return member


def _show_key(key: tuple[enum.Enum | None, JID | None]) -> str:
    type_, sender = key
    shown_type = "any type" if type_ is None else f"type {type_.name}"
    shown_sender = "anyone" if sender is None else str(sender)
    return f"{shown_type} from {shown_sender}"


class _CallbackTable(Generic[_S, _T]):
    """Callbacks keyed by (type or None, sender JID or None); one lookup per candidate key.

    Besides the table itself it keeps, rebuilt on every change, the set of senders that have
    callbacks (a stanza from anyone else skips the four sender keys), the callbacks for any
    sender by the type's value, and the one for anything from anyone: the common stanza then
    costs two set look-ups and one dictionary look-up.
    """

    # two per stream
    __slots__ = ("_any_sender", "_callbacks", "_fallback", "_kind", "_senders")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._callbacks: dict[tuple[_T | None, JID | None], Callable[[_S], object]] = {}
        self._senders: frozenset[JID] = frozenset()
        self._any_sender: dict[object, Callable[[_S], object]] = {}
        self._fallback: Callable[[_S], object] | None = None

    def _index(self) -> None:
        callbacks = self._callbacks
        self._senders = frozenset(sender for _, sender in callbacks if sender is not None)
        self._any_sender = {
            type_._value_: callback
            for (type_, sender), callback in callbacks.items()
            if sender is None and type_ is not None
        }
        self._fallback = callbacks.get((None, None))

    def register(
        self, type_: _T | None, sender: JID | None, callback: Callable[[_S], object]
    ) -> None:
        if not callable(callback):
            raise TypeError(
                f"a {self._kind} callback must be callable, not {type(callback).__name__}"
            )
        key = (type_, sender)
        existing = self._callbacks.get(key)
        if existing is not None:
            raise ValueError(
                f"a {self._kind} callback for {_show_key(key)} is already registered"
                f" ({_describe(existing)})"
            )
        self._callbacks[key] = callback
        self._index()

    def unregister(self, type_: _T | None, sender: JID | None) -> None:
        key = (type_, sender)
        try:
            del self._callbacks[key]
        except KeyError:
            raise KeyError(f"no {self._kind} callback for {_show_key(key)}") from None
        self._index()

    def lookup(self, type_: _T, sender: JID | None) -> Callable[[_S], object] | None:
        senders = self._senders
        if sender is not None and senders:
            bare = sender.bare()
            if sender in senders or bare in senders:
                get = self._callbacks.get
                if sender.is_bare:
                    keys: tuple[tuple[_T | None, JID | None], ...] = (
                        (type_, bare),
                        (None, bare),
                    )
                else:
                    keys = ((type_, sender), (type_, bare), (None, sender), (None, bare))
                for key in keys:
                    callback = get(key)
                    if callback is not None:
                        return callback
        callback = self._any_sender.get(type_._value_)
        if callback is not None:
            return callback
        return self._fallback


# -- the dispatcher ------------------------------------------------------------------------


class Dispatcher:
    """The receive-side dispatch tables of one stanza stream.

    :ivar app_inbound_message_filter: application filters for received messages.
    :ivar service_inbound_message_filter: service filters for received messages.
    :ivar app_inbound_presence_filter: application filters for received presences.
    :ivar service_inbound_presence_filter: service filters for received presences.
    :ivar app_outbound_message_filter: application filters for messages to be sent.
    :ivar service_outbound_message_filter: service filters for messages to be sent.
    :ivar app_outbound_presence_filter: application filters for presences to be sent.
    :ivar service_outbound_presence_filter: service filters for presences to be sent.
    """

    # one per stream, for the stream's life
    __slots__ = (
        "_iq_handlers",
        "_iq_handlers_by_name",
        "_message_callbacks",
        "_presence_callbacks",
        "app_inbound_message_filter",
        "app_inbound_presence_filter",
        "app_outbound_message_filter",
        "app_outbound_presence_filter",
        "service_inbound_message_filter",
        "service_inbound_presence_filter",
        "service_outbound_message_filter",
        "service_outbound_presence_filter",
    )

    def __init__(self) -> None:
        self.app_inbound_message_filter: Filter[Message] = Filter()
        self.service_inbound_message_filter: Filter[Message] = Filter()
        self.app_inbound_presence_filter: Filter[Presence] = Filter()
        self.service_inbound_presence_filter: Filter[Presence] = Filter()
        self.app_outbound_message_filter: Filter[Message] = Filter()
        self.service_outbound_message_filter: Filter[Message] = Filter()
        self.app_outbound_presence_filter: Filter[Presence] = Filter()
        self.service_outbound_presence_filter: Filter[Presence] = Filter()
        self._iq_handlers: dict[tuple[IQType, str], IQHandlerEntry] = {}
        # The same entries keyed by the type attribute as written ("get", "set"), so that a
        # request is found without converting its type first.
        self._iq_handlers_by_name: dict[tuple[str | None, str], IQHandlerEntry] = {}
        self._message_callbacks: _CallbackTable[Message, MessageType] = _CallbackTable("message")
        self._presence_callbacks: _CallbackTable[Presence, PresenceType] = _CallbackTable(
            "presence"
        )

    # -- filters

    @overload
    def filter_inbound(self, stanza: Message) -> Message | None: ...
    @overload
    def filter_inbound(self, stanza: Presence) -> Presence | None: ...
    @overload
    def filter_inbound(self, stanza: IQ) -> IQ: ...
    @overload
    def filter_inbound(self, stanza: Stanza) -> Stanza | None: ...

    def filter_inbound(self, stanza: Stanza) -> Stanza | None:
        """Run a received stanza through the service chain, then the application chain.

        Returns what the chains let through, or ``None`` if a filter dropped it.  IQs are
        returned unchanged.

        :raises TypeError: for anything but a message, presence or IQ.
        """
        if isinstance(stanza, Message):
            message = self.service_inbound_message_filter.filter(stanza)
            return None if message is None else self.app_inbound_message_filter.filter(message)
        if isinstance(stanza, Presence):
            presence = self.service_inbound_presence_filter.filter(stanza)
            if presence is None:
                return None
            return self.app_inbound_presence_filter.filter(presence)
        return _check_iq(stanza)

    @overload
    def filter_outbound(self, stanza: Message) -> Message | None: ...
    @overload
    def filter_outbound(self, stanza: Presence) -> Presence | None: ...
    @overload
    def filter_outbound(self, stanza: IQ) -> IQ: ...
    @overload
    def filter_outbound(self, stanza: Stanza) -> Stanza | None: ...

    def filter_outbound(self, stanza: Stanza) -> Stanza | None:
        """Run a stanza to be sent through the application chain, then the service chain.

        Returns what the chains let through, or ``None`` if a filter dropped it (then it must
        not be sent).  IQs are returned unchanged.

        :raises TypeError: for anything but a message, presence or IQ.
        """
        if isinstance(stanza, Message):
            message = self.app_outbound_message_filter.filter(stanza)
            return None if message is None else self.service_outbound_message_filter.filter(message)
        if isinstance(stanza, Presence):
            presence = self.app_outbound_presence_filter.filter(stanza)
            if presence is None:
                return None
            return self.service_outbound_presence_filter.filter(presence)
        return _check_iq(stanza)

    # -- IQ request handlers

    @overload
    def register_iq_request_handler(
        self,
        type_: IQType | str,
        payload_tag: str,
        handler: IQRequestHandler,
        *,
        with_send_reply: Literal[False] = False,
    ) -> None: ...
    @overload
    def register_iq_request_handler(
        self,
        type_: IQType | str,
        payload_tag: str,
        handler: IQRequestHandlerWithReply,
        *,
        with_send_reply: Literal[True],
    ) -> None: ...
    @overload
    def register_iq_request_handler(
        self,
        type_: IQType | str,
        payload_tag: str,
        handler: Callable[..., object],
        *,
        with_send_reply: bool,
    ) -> None: ...

    def register_iq_request_handler(
        self,
        type_: IQType | str,
        payload_tag: str,
        handler: Callable[..., object],
        *,
        with_send_reply: bool = False,
    ) -> None:
        """Handle IQ requests of *type_* whose payload element is *payload_tag*.

        :param type_: :attr:`IQType.GET` or :attr:`IQType.SET` (or ``"get"``/``"set"``).
        :param payload_tag: the payload's qualified name in Clark notation, for example
            ``"{urn:xmpp:ping}ping"``.
        :param handler: called by the stanza stream as ``handler(iq)``, or as
            ``handler(iq, send_reply)`` if *with_send_reply* is true.
        :raises ValueError: if *type_* is not ``get`` or ``set``, if *payload_tag* is not
            ``{namespace}localname``, or if a handler for the pair is already registered.
        :raises TypeError: if *handler* is not callable.
        """
        type_ = _iq_request_type(type_)
        payload_tag = _payload_tag(payload_tag)
        if not callable(handler):
            raise TypeError(f"an IQ handler must be callable, not {type(handler).__name__}")
        key = (type_, payload_tag)
        existing = self._iq_handlers.get(key)
        if existing is not None:
            raise ValueError(
                f"an IQ request handler for type {type_.value!r} and payload {payload_tag} is"
                f" already registered ({_describe(existing.handler)})"
            )
        entry = IQHandlerEntry(handler, bool(with_send_reply))
        self._iq_handlers[key] = entry
        self._iq_handlers_by_name[type_.value, payload_tag] = entry

    def unregister_iq_request_handler(self, type_: IQType | str, payload_tag: str) -> None:
        """Remove the handler registered for *type_* and *payload_tag*.

        :raises KeyError: if no handler is registered for the pair.
        :raises ValueError: if the arguments are invalid (as for registering).
        """
        key = (_iq_request_type(type_), _payload_tag(payload_tag))
        try:
            del self._iq_handlers[key]
            del self._iq_handlers_by_name[key[0].value, key[1]]
        except KeyError:
            raise KeyError(
                f"no IQ request handler for type {key[0].value!r} and payload {key[1]}"
            ) from None

    def lookup_iq_request_handler(self, iq: IQ) -> IQHandlerEntry | None:
        """Return the handler entry for the request *iq*, or ``None`` if there is none.

        Responses (``result``, ``error``) and IQs without a payload have no handler.

        :raises ValueError: if the IQ's ``type`` attribute is invalid.
        """
        payload = iq.payload
        if payload is None:
            return None
        tag = str(payload.tag)
        entry = self._iq_handlers_by_name.get((iq.get("type"), tag))
        if entry is not None:
            return entry
        # Not a registered pair as written: the type is converted, which refuses invalid ones.
        return self._iq_handlers.get((iq.type_, tag))

    # -- message callbacks

    def register_message_callback(
        self,
        type_: MessageType | str | None,
        from_: JID | str | None,
        cb: MessageCallback,
    ) -> None:
        """Call *cb* with received messages of *type_* from *from_*.

        ``None`` is a wildcard for either argument.  A bare *from_* also matches messages
        from every full JID with that bare JID; a full *from_* matches that full JID only.
        Only one callback gets each message: see :meth:`dispatch_message`.

        :raises ValueError: if a callback is already registered for the same (normalised)
            type and sender, or if *type_* or *from_* is invalid.
        :raises TypeError: if *cb* is not callable.
        """
        self._message_callbacks.register(_message_type_key(type_), _sender_key(from_), cb)

    def unregister_message_callback(
        self, type_: MessageType | str | None, from_: JID | str | None
    ) -> None:
        """Remove the message callback registered with the same *type_* and *from_*.

        :raises KeyError: if none is registered for them.
        """
        self._message_callbacks.unregister(_message_type_key(type_), _sender_key(from_))

    def dispatch_message(self, message: Message) -> bool:
        """Give *message* to the most specific matching callback; return whether there was one.

        With *t* the message type, *f* the sender's full JID and *b* its bare JID, the first
        registered key of

        1. (*t*, *f*)
        2. (*t*, *b*)
        3. any type, *f*
        4. any type, *b*
        5. (*t*, anyone)
        6. any type, anyone

        wins, and only its callback is called.  A message without ``from`` comes from the
        user's own server or account; it matches only keys 5 and 6 (callbacks registered for
        the account's own JID do not see it).  A message without ``type`` is ``normal``.

        Exceptions raised by the callback propagate to the caller, as does the
        :class:`ValueError` of a message whose ``type`` or ``from`` is invalid.
        """
        callback = self._message_callbacks.lookup(message.type_, message.from_)
        if callback is None:
            return False
        callback(message)
        return True

    # -- presence callbacks

    def register_presence_callback(
        self,
        type_: PresenceType | str | None,
        from_: JID | str | None,
        cb: PresenceCallback,
    ) -> None:
        """Call *cb* with received presences of *type_* from *from_*.

        *type_* ``None`` means **any type**, including available presences; to receive
        available presences (those without a ``type`` attribute) only, pass
        :attr:`PresenceType.AVAILABLE`.  (``PresenceType(None)`` is ``AVAILABLE``, but a bare
        ``None`` here is the wildcard.)  The strings of the other types are accepted too;
        ``"available"`` is not a presence type and is refused.  *from_* and the matching
        rules are as for :meth:`register_message_callback`.

        :raises ValueError: if a callback is already registered for the same (normalised)
            type and sender, or if *type_* or *from_* is invalid.
        :raises TypeError: if *cb* is not callable.
        """
        self._presence_callbacks.register(_presence_type_key(type_), _sender_key(from_), cb)

    def unregister_presence_callback(
        self, type_: PresenceType | str | None, from_: JID | str | None
    ) -> None:
        """Remove the presence callback registered with the same *type_* and *from_*.

        :raises KeyError: if none is registered for them.
        """
        self._presence_callbacks.unregister(_presence_type_key(type_), _sender_key(from_))

    def dispatch_presence(self, presence: Presence) -> bool:
        """Give *presence* to the most specific matching callback; return whether there was one.

        The order of keys, the handling of a missing ``from`` and of exceptions are those of
        :meth:`dispatch_message`; the type of a presence without ``type`` is
        :attr:`PresenceType.AVAILABLE`, matched by callbacks registered for ``AVAILABLE`` or
        for any type.
        """
        callback = self._presence_callbacks.lookup(presence.type_, presence.from_)
        if callback is None:
            return False
        callback(presence)
        return True


def _check_iq(stanza: Stanza) -> IQ:
    if not isinstance(stanza, IQ):
        raise TypeError(f"not a message, presence or IQ: {type(stanza).__name__}")
    return stanza
