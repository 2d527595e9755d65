"""Our own presence: the PresenceManagedClient, and the PresenceServer it is built on.

:class:`PresenceManagedClient` is a client whose connection follows the presence held by its
:class:`~txxmppnode.presence_server.PresenceServer` (defined in
:mod:`txxmppnode.presence_server`, importable from here too): available starts it,
unavailable sends the unavailable presence and then stops it.
"""

from __future__ import annotations

from typing import Any

from .client import Client
from .presence_server import PresenceServer, Status
from .presence_state import PresenceState
from .signal import Signal
from .use_connected import UseConnected


class PresenceManagedClient(Client):
    """A client whose connection follows its presence: available connects, unavailable stops.

    The initial presence is unavailable, so the client does not connect until told to.
    """

    def __init__(self, jid: Any, security_layer: Any, **kwargs: Any) -> None:
        super().__init__(jid, security_layer, **kwargs)
        self._presence_server = self.summon(PresenceServer)
        #: Emitted after ``on_stream_established`` once the initial presence was sent.
        self.on_presence_sent: Signal[[]] = Signal("PresenceManagedClient.on_presence_sent")
        self.on_stream_established.connect(self._established)
        self._presence_server.on_presence_changed.connect(self._follow_presence)

    @property
    def presence(self) -> PresenceState:
        """The presence set (not necessarily the one the server knows yet)."""
        return self._presence_server.state

    @presence.setter
    def presence(self, value: PresenceState) -> None:
        self.set_presence(value)

    def set_presence(self, state: PresenceState, status: Status = None, priority: int = 0) -> None:
        """Set presence and status; connect when available, go offline when unavailable.

        The same as setting it through the :class:`PresenceServer`: the unavailable presence
        is sent once (by the service), then the client stops.
        """
        self._presence_server.set_presence(state, status, priority)

    def _follow_presence(self) -> None:
        if self.presence.available:
            if not self.running:
                self.start()
        elif self.running:
            self.stop()

    def _established(self) -> None:
        if self.presence.available:
            self.on_presence_sent.emit()

    def connected(self, **kwargs: Any) -> Any:
        """Like :meth:`Client.connected`, setting an available presence first."""
        if not self.presence.available:
            self._presence_server.set_presence(PresenceState(True))
        kwargs.setdefault("presence", PresenceState(False))
        return UseConnected(self, **kwargs)


__all__ = ["PresenceManagedClient", "PresenceServer", "Status"]
