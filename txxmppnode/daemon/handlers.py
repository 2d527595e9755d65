"""What the node does with the stanzas it receives: the ``--handler`` values.

A handler is a factory called once, with the node's
:class:`~txxmppnode.presence.PresenceManagedClient`, before the client starts.  It registers
its callbacks (message and presence callbacks, IQ request handlers, filters, signal
listeners) and may summon library services with ``client.summon(...)``.  It returns ``None``,
or a Twisted :class:`~twisted.application.service.IService` that the node starts before going
online and stops before going offline (for timers, connections to other systems, ...).

Built in:

``echo``
    Answers every chat message that has a body with a chat message carrying the same body.
``log``
    Logs every received stanza as one line: kind, type, sender, recipient, id and the names of
    its child elements; message bodies only with ``--log-bodies``.

Any other value is ``package.module:factory`` (``factory`` may be a dotted attribute path); the
module is imported when the options are read, so a typo ends the start with a clear message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import TypeAlias

from lxml import etree
from twisted.application.service import IService
from twisted.logger import Logger

from ..presence import PresenceManagedClient
from ..stanza import IQ, Message, MessageType, Presence, Stanza

__all__ = [
    "BUILTIN_HANDLERS",
    "HandlerError",
    "HandlerFactory",
    "echo_handler",
    "log_handler",
    "resolve_handler",
]

#: A handler: called with the client before it starts; may return a service to run with it.
HandlerFactory: TypeAlias = Callable[[PresenceManagedClient], "IService | None"]

_log = Logger(namespace="xmppnode.handler")
_THREAD = "{jabber:client}thread"


class HandlerError(ValueError):
    """A ``--handler`` value that names no usable handler (the message says why)."""


def echo_handler(client: PresenceManagedClient) -> None:
    """Answer each chat message with a body by a chat message with the same body (and thread)."""

    def echo(message: Message) -> None:
        sender = message.from_
        body = message.body
        if sender is None or body is None:
            return
        reply = Message(to=sender, type_=MessageType.CHAT, body=body)
        thread = message.find(_THREAD)
        if thread is not None and thread.text:
            etree.SubElement(reply, _THREAD).text = thread.text
        client.stream.enqueue(reply)

    client.stream.register_message_callback(MessageType.CHAT, None, echo)


def _kind(stanza: Stanza) -> str:
    if isinstance(stanza, Message):
        return "message"
    if isinstance(stanza, Presence):
        return "presence"
    if isinstance(stanza, IQ):
        return "iq"
    return etree.QName(stanza).localname


def log_handler(client: PresenceManagedClient, *, include_bodies: bool = False) -> None:
    """Log every received stanza as one line; the body of messages only with *include_bodies*.

    The event carries the fields ``kind``, ``stanza_type``, ``sender``, ``recipient``,
    ``stanza_id`` and ``children`` (and ``body`` when included) for structured log observers.
    """

    def received(stanza: Stanza) -> None:
        children = ",".join(
            etree.QName(child).localname for child in stanza if isinstance(child.tag, str)
        )
        fields = {
            "kind": _kind(stanza),
            "stanza_type": stanza.get("type") or "-",
            "sender": stanza.get("from") or "-",
            "recipient": stanza.get("to") or "-",
            "stanza_id": stanza.get("id") or "-",
            "children": children or "-",
        }
        text = (
            "received {kind} type={stanza_type} from={sender} to={recipient} id={stanza_id} "
            "children={children}"
        )
        if include_bodies and isinstance(stanza, Message) and stanza.body is not None:
            _log.info(text + " body={body!r}", body=stanza.body, **fields)
        else:
            _log.info(text, **fields)

    client.stream.on_stanza_received.connect(received)


#: The handlers named by a single word.
BUILTIN_HANDLERS: dict[str, HandlerFactory] = {"echo": echo_handler, "log": log_handler}


def resolve_handler(spec: str, *, log_bodies: bool = False) -> HandlerFactory:
    """The handler factory *spec* names: ``echo``, ``log`` or ``package.module:factory``.

    :param log_bodies: make the ``log`` handler include message bodies.
    :raises HandlerError: with a one-line reason if *spec* names nothing callable.
    """
    spec = spec.strip()
    if spec == "log":
        return partial(log_handler, include_bodies=log_bodies)
    if spec in BUILTIN_HANDLERS:
        return BUILTIN_HANDLERS[spec]
    module_name, colon, attribute = spec.partition(":")
    if not colon:
        raise HandlerError(
            f"unknown handler {spec!r}: use {', '.join(sorted(BUILTIN_HANDLERS))} "
            "or package.module:factory"
        )
    if not module_name or not attribute:
        raise HandlerError(f"handler {spec!r} must look like package.module:factory")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerError(
            f"handler {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise HandlerError(f"handler {spec!r}: {module_name} has no {attribute}") from None
    if not callable(target):
        raise HandlerError(f"handler {spec!r}: {attribute} is not callable")
    factory: HandlerFactory = target
    return factory
