"""Matching IQ responses to our requests (RFC 6120 §8.2.3, §10.1).

A response is delivered only if its id *and* sender match the request.  Who may answer a
request depends on where it went, with the equivalences RFC 6120 defines:

=========================================  =============================================
request addressed to                       accepted senders of the response
=========================================  =============================================
nobody (no ``to``) or our bare JID          no ``from``, our bare JID, our server's domain
our server's domain                         no ``from``, our server's domain
anyone else                                 exactly the address the request went to
=========================================  =============================================

A response with a known id from anyone else is ignored and logged: a third party guessing ids
must not be able to answer for the server.  Pending requests live across stream resumptions
and fail when the stream is destroyed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from twisted.internet import defer, interfaces
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import ErroneousStanza
from .jid import JID
from .stanza import IQ, IQType
from .token import StanzaToken

_log = Logger()

ResponseCallback = Callable[[IQ], Any]


@dataclass
class _Pending:
    senders: frozenset[JID | None]
    result: defer.Deferred[IQ]
    timer: interfaces.IDelayedCall | None = None
    callback: ResponseCallback | None = field(default=None)


class IQTracker:
    """The requests waiting for a response, by id.

    :param reactor: the clock for request timeouts.
    """

    def __init__(self, reactor: interfaces.IReactorTime) -> None:
        self.reactor = reactor
        self.local_jid: JID | None = None
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, request: IQ, timeout: float | None = None) -> defer.Deferred[IQ]:
        """Register *request* (which has an id); the Deferred fires with the response stanza.

        It fails with :class:`TimeoutError` after *timeout* seconds.
        """
        request_id = request.id_
        if not request_id:
            raise ValueError("an IQ request needs an id before it is tracked")
        if request_id in self._pending:
            raise ValueError(f"an IQ request with id {request_id!r} is already pending")
        result: defer.Deferred[IQ] = defer.Deferred(lambda _: self._forget(request_id))
        pending = _Pending(self._senders_for(request.to), result)
        if timeout is not None:
            pending.timer = self.reactor.callLater(timeout, self._time_out, request_id, timeout)
        self._pending[request_id] = pending
        return result

    def request(
        self, token: StanzaToken, timeout: float | None, cb: ResponseCallback | None
    ) -> defer.Deferred[Any]:
        """Track the IQ request of *token*; the Deferred fires with the response's payload.

        The response proves the server got the request, so it is not held up waiting for
        the acknowledgement; but if the request can never reach the server (its token fails),
        it fails now, with the token's error.  *cb*, if given, is called with the response
        first; what it returns (awaited if it is awaitable) is the result unless ``None``.

        :raises ValueError: as :meth:`expect`.
        :raises XMPPError: (through the Deferred) the response is an error.
        :raises ErroneousStanza: (through the Deferred) the response cannot be understood.
        :raises TimeoutError: (through the Deferred) no response in *timeout* seconds.
        """
        request = token.stanza
        assert isinstance(request, IQ)
        response = self.expect(request, timeout)
        request_id = request.id_ or ""

        def undeliverable(failure: Failure) -> None:
            self.fail(request_id, failure.value or ConnectionError("not delivered"))

        token.deferred().addErrback(undeliverable)
        return defer.Deferred.fromCoroutine(_payload(response, cb))

    def _senders_for(self, to: JID | None) -> frozenset[JID | None]:
        local = self.local_jid
        if local is None:
            return frozenset({to})
        account, server = local.bare(), JID(None, local.domain, None)
        if to is None or to == account:
            return frozenset({None, account, server})
        if to == server:
            return frozenset({None, server})
        return frozenset({to})

    def handle_response(self, response: IQ) -> bool:
        """Deliver *response* to its request; False if it answers nothing we asked.

        The Deferred fires with the response stanza whatever its type; the caller turns an
        error response into an exception.
        """
        response_id = response.id_
        pending = self._pending.get(response_id or "")
        if pending is None:
            return False
        try:
            sender = response.from_
        except ValueError:
            sender = None
            _log.warn("IQ response {id} with an invalid from address ignored", id=response_id)
            return False
        if sender not in pending.senders:
            _log.warn(
                "IQ response {id} from {sender} ignored: the request went to {expected}",
                id=response_id,
                sender=str(sender),
                expected=", ".join(sorted(str(s) for s in pending.senders)),
            )
            return False
        self._forget(response_id or "")
        pending.result.callback(response)
        return True

    def fail(self, request_id: str, reason: BaseException) -> None:
        """Fail the request *request_id* with *reason*, if it is still pending."""
        entry = self._pending.get(request_id)
        if entry is not None:
            self._forget(request_id)
            entry.result.errback(reason)

    def fail_all(self, reason: BaseException) -> None:
        """Fail every pending request with *reason* (the stream is destroyed)."""
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.result.errback(reason)

    def _forget(self, request_id: str) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None and entry.timer is not None and entry.timer.active():
            entry.timer.cancel()

    def _time_out(self, request_id: str, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            entry.timer = None
            entry.result.errback(TimeoutError(f"no response to IQ {request_id} in {timeout:g}s"))


async def _payload(response: defer.Deferred[IQ], cb: ResponseCallback | None) -> Any:
    reply = await response
    if cb is not None:
        outcome = cb(reply)
        if isawaitable(outcome):
            outcome = await outcome
        if outcome is not None:
            return outcome
    return response_payload(reply)


def response_payload(response: IQ) -> Any:
    """The payload of a result, or raise the error of an error response.

    :raises XMPPError: the mapped error of an error response.
    :raises ErroneousStanza: an error response whose ``<error/>`` cannot be understood.
    """
    if response.type_ is IQType.ERROR:
        try:
            error = response.error
        except ValueError as exc:
            raise ErroneousStanza(f"unparsable error response: {exc}", response) from exc
        if error is None:
            raise ErroneousStanza("error response without an <error/>", response)
        raise error
    return response.payload
