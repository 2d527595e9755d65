"""Serving the server's IQ requests, and the error replies a stanza stream owes.

The stanza stream hands every IQ request it receives to an :class:`IQServer`, which finds the
handler registered for it (:meth:`~txxmppnode.dispatch.Dispatcher.lookup_iq_request_handler`),
calls it and answers: with the handler's result, with the
:class:`~txxmppnode.errors.XMPPError` it raised, with ``undefined-condition`` for anything else
it raised (logged), with ``service-unavailable`` when nobody serves the request and with
``bad-request`` when it carries no payload.  The stream also uses it to answer a message or
presence it cannot read with ``bad-request``.  An error is never answered with an error.

Replies are serialised here and handed to the stream as bytes together with the stanza (for
``on_stanza_enqueued``): nobody waits for them, so they get no token, and once queued they hold
no element tree -- a flood of requests costs the bytes of the answers only.  How many the
stream holds is the stream's business (``max_unacked``).

A handler that answers with a plain return is served by a plain call: the reply is queued
before :meth:`IQServer.serve` returns, with no coroutine or Deferred for the request.  Only a
handler that returns a Deferred or another awaitable (a coroutine function's result) is
awaited, in a coroutine run by :meth:`twisted.internet.defer.Deferred.fromCoroutine`; its reply
is queued when it completes.  Most handlers (ping, disco, version) are synchronous, and the
receive path is measured with them (``benchmarks/compare.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any, Final

from lxml import etree
from twisted.internet import defer
from twisted.logger import Logger

from . import namespaces
from .dispatch import Dispatcher
from .errors import ErrorCondition, XMPPError
from .stanza import IQ, IQType, Message, Presence, Stanza, make_error_reply
from .xmlwriter import serialize

#: The payload of an XEP-0199 ping, which every stream answers.
PING: Final = f"{{{namespaces.PING}}}ping"

#: Where replies go: ``(stanza as filtered, its serialised bytes)``.
ReplySink = Callable[[Stanza, bytes], None]


def _pong(iq: IQ) -> None:
    """XEP-0199: an empty result answers a ping."""
    return None


class _Reply:
    """The ``send_reply`` given to a handler registered ``with_send_reply``: answers once."""

    __slots__ = ("_iq", "_server", "sent")

    def __init__(self, server: IQServer, iq: IQ) -> None:
        self._server = server
        self._iq = iq
        self.sent = False

    def __call__(self, result: Any = None) -> None:
        if self.sent:
            raise RuntimeError(f"IQ {self._iq.id_} was answered already")
        self.sent = True
        self._server._reply(self._iq, result)


class IQServer:
    """Answers the IQ requests of one stanza stream; see the module documentation.

    :param dispatcher: holds the handler table; the ping handler is registered in it here.
    :param sink: called with each reply and its bytes; the stream queues them.
    :param log: where failing handlers and unsendable replies are logged.
    """

    def __init__(self, dispatcher: Dispatcher, sink: ReplySink, log: Logger) -> None:
        self.dispatcher = dispatcher
        self.sink = sink
        self.log = log
        dispatcher.register_iq_request_handler(IQType.GET, PING, _pong)

    def serve(self, iq: IQ) -> None:
        """Answer the request *iq* (its type is ``get`` or ``set``)."""
        payload = iq.payload
        entry = None if payload is None else self.dispatcher.lookup_iq_request_handler(iq)
        if payload is None:
            self.reply_error(iq, ErrorCondition.BAD_REQUEST, "an IQ request needs a payload")
            return
        if entry is None:
            self.reply_error(iq, ErrorCondition.SERVICE_UNAVAILABLE, None)
            return
        handler = entry.handler
        reply = _Reply(self, iq) if entry.with_send_reply else None
        try:
            outcome = handler(iq) if reply is None else handler(iq, reply)
        except XMPPError as error:
            outcome = error
        except Exception as exc:
            outcome = self._failed(handler, exc)
        else:
            if isawaitable(outcome):
                defer.Deferred.fromCoroutine(self._settle(iq, handler, outcome, reply))
                return
        self._answer(iq, outcome, reply)

    async def _settle(
        self, iq: IQ, handler: Callable[..., Any], pending: Awaitable[Any], reply: _Reply | None
    ) -> None:
        """Await what an asynchronous handler returned, then answer."""
        try:
            outcome = await pending
        except XMPPError as error:
            outcome = error
        except Exception as exc:
            outcome = self._failed(handler, exc)
        self._answer(iq, outcome, reply)

    def _failed(self, handler: Callable[..., Any], exc: Exception) -> XMPPError:
        self.log.failure("IQ handler {handler!r} failed", handler=handler)
        return XMPPError(ErrorCondition.UNDEFINED_CONDITION, type(exc).__name__)

    def _answer(self, iq: IQ, outcome: Any, reply: _Reply | None) -> None:
        if reply is None:
            self._reply(iq, outcome)
        elif not reply.sent:
            reply(outcome)

    def _reply(self, iq: IQ, result: Any) -> None:
        if result is not None and not isinstance(result, XMPPError | etree._Element):
            self.log.error("IQ handler returned {result!r}, not an element", result=result)
            result = XMPPError(ErrorCondition.UNDEFINED_CONDITION)
        if isinstance(result, XMPPError):
            reply = make_error_reply(iq, result)
        else:
            reply = IQ(IQType.RESULT, id_=iq.id_, to=iq.get("from"), payload=result)
        try:
            self._queue(reply)
        except ValueError:
            self.log.failure("cannot send the reply to IQ {id}", id=iq.id_)

    def reply_error(self, stanza: Stanza, condition: ErrorCondition, text: str | None) -> None:
        """Answer *stanza* with an error of *condition* (never an error with an error)."""
        if stanza.get("type") == "error":
            return
        self._queue(make_error_reply(stanza, XMPPError(condition, text)))

    def _queue(self, reply: Stanza) -> None:
        """Check, filter (messages and presences) and serialise *reply*; hand it to the sink.

        :raises ValueError: the reply is invalid or cannot be serialised; nothing is queued.
        """
        reply.validate()
        filtered: Stanza | None = reply
        if isinstance(reply, Message | Presence):
            filtered = self.dispatcher.filter_outbound(reply)
        if filtered is None:
            return
        self.sink(filtered, serialize(filtered))


__all__ = ["PING", "IQServer", "ReplySink"]
