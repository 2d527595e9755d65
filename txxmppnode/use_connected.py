"""UseConnected: ``async with client.connected() as stream:``, connect for the block's duration.

Entering starts the client (or reuses a running one) and waits until the stream is
established, the client fails, or ``timeout`` passes (then the client is stopped and
:class:`TimeoutError` raised).  Leaving stops the client and waits for it; an exception from the
block is never swallowed.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from .presence_server import PresenceServer
from .presence_state import PresenceState

if TYPE_CHECKING:
    from .client import Client
    from .stanzastream import StanzaStream

_DEFAULT_PRESENCE = PresenceState(True)


class UseConnected:
    """Asynchronous context manager that connects and disconnects a :class:`Client`.

    :param client: the client to manage.
    :param timeout: limit on the time it may take to connect (``timedelta`` or seconds).
    :param presence: deprecated: a presence to set through the
        :class:`~txxmppnode.presence_server.PresenceServer` before connecting.  An available
        presence (the default) emits :class:`DeprecationWarning`; set the presence through
        the service instead and pass ``PresenceState(False)`` here.
    """

    def __init__(
        self,
        client: Client,
        *,
        timeout: timedelta | float | None = None,
        presence: PresenceState = _DEFAULT_PRESENCE,
    ) -> None:
        self.client = client
        self._timeout = timeout
        self._presence = presence
        if presence.available:
            warnings.warn(
                "the presence argument of UseConnected is deprecated: set the presence with "
                "the PresenceServer service and pass PresenceState(False)",
                DeprecationWarning,
                stacklevel=3,
            )

    @property
    def timeout(self) -> timedelta | float | None:
        """The connection time limit (deprecated attribute)."""
        warnings.warn("UseConnected.timeout is deprecated", DeprecationWarning, stacklevel=2)
        return self._timeout

    @timeout.setter
    def timeout(self, value: timedelta | float | None) -> None:
        warnings.warn("UseConnected.timeout is deprecated", DeprecationWarning, stacklevel=2)
        self._timeout = value

    @property
    def presence(self) -> PresenceState:
        """The presence to set (deprecated attribute)."""
        warnings.warn("UseConnected.presence is deprecated", DeprecationWarning, stacklevel=2)
        return self._presence

    @presence.setter
    def presence(self, value: PresenceState) -> None:
        warnings.warn("UseConnected.presence is deprecated", DeprecationWarning, stacklevel=2)
        self._presence = value

    async def __aenter__(self) -> StanzaStream:
        client = self.client
        if self._presence.available:
            client.summon(PresenceServer).set_presence(self._presence)
        if client.established:
            return client.stream
        outcome: defer.Deferred[None] = defer.Deferred()

        def settle(error: BaseException | None = None) -> None:
            if outcome.called:
                return
            if error is None:
                outcome.callback(None)
            else:
                outcome.errback(error)

        established_token = client.on_stream_established.connect(settle)
        failure_token = client.on_failure.connect(settle)
        if not client.running:
            client.start()
        seconds = (
            self._timeout.total_seconds() if isinstance(self._timeout, timedelta) else self._timeout
        )
        timer = None
        if seconds is not None:
            timer = client.reactor.callLater(
                seconds, settle, TimeoutError(f"the client did not connect within {seconds:g}s")
            )
        try:
            await outcome
        except TimeoutError:
            await client.stop()
            raise
        finally:
            client.on_stream_established.disconnect(established_token)
            client.on_failure.disconnect(failure_token)
            if timer is not None and timer.active():
                timer.cancel()
        return client.stream

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        await self.client.stop()
        return False
