"""The PresenceServer service: our own presence, held and announced.

:class:`PresenceServer` keeps the presence the application wants (state, status, priority) and
makes the server know it: the initial presence goes out from ``before_stream_established`` (so
it is re-sent on every new session, and not after a resumption, which kept it), changes are
broadcast at once while established.

It is a module of its own, below :mod:`txxmppnode.client`: the service needs only what every
client has (its signals, its stream, ``established``), so :mod:`txxmppnode.use_connected`
(which :meth:`Client.connected <txxmppnode.client.Client.connected>` returns) can summon it
without importing the client, and :mod:`txxmppnode.presence` builds the
:class:`~txxmppnode.presence.PresenceManagedClient` on both.  The layers import downwards
only: ``presence`` → ``client`` → ``use_connected`` → ``presence_server``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.internet import defer

from .presence_state import PresenceState
from .service import Service
from .signal import Signal
from .stanza import Presence

if TYPE_CHECKING:
    from .client import Client

#: A presence status: a text, or texts by language tag (``None`` for no tag).
Status = str | Mapping[str | None, str] | None


class PresenceServer(Service):
    """Holds and announces our presence; summon it with ``client.summon(PresenceServer)``."""

    def __init__(self, client: Client, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = PresenceState(False)
        self.status: dict[str | None, str] = {}
        self.priority = 0
        #: Emitted with the presence stanza after it was handed to the stream.
        self.on_presence_sent: Signal[[Presence]] = Signal("PresenceServer.on_presence_sent")
        #: Emitted when :meth:`set_presence` changed something.
        self.on_presence_changed: Signal[[]] = Signal("PresenceServer.on_presence_changed")
        self._token = client.before_stream_established.connect(self._send_initial)

    def make_stanza(self) -> Presence:
        """The presence stanza for the current state, status and priority."""
        stanza = Presence()
        self.state.apply_to(stanza)
        if self.state.available:
            stanza.priority = self.priority
        for lang, text in sorted(self.status.items(), key=lambda item: item[0] or ""):
            status = etree.SubElement(stanza, "{jabber:client}status")
            status.text = text
            if lang:
                status.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
        return stanza

    def set_presence(self, state: PresenceState, status: Status = None, priority: int = 0) -> None:
        """Set the presence; broadcast it at once when the stream is established.

        *status* is a text, or a mapping of language tags (``None`` for none) to texts.
        """
        if not -128 <= priority <= 127:
            raise ValueError(f"presence priority {priority} is outside -128..127")
        new_status: dict[str | None, str] = (
            {None: status} if isinstance(status, str) else dict(status or {})
        )
        if (state, new_status, priority) == (self.state, self.status, self.priority):
            return
        self.state, self.status, self.priority = state, new_status, priority
        if self.client.established:
            self._send()  # before the listeners: an unavailable presence precedes a stop
        self.on_presence_changed.emit()

    def _send_initial(self) -> None:
        if self.state.available:
            self._send()

    def _send(self) -> None:
        stanza = self.make_stanza()
        self.client.stream.enqueue(stanza)
        self.on_presence_sent.emit(stanza)

    def shutdown(self) -> defer.Deferred[None]:
        self.client.before_stream_established.disconnect(self._token)
        return super().shutdown()


__all__ = ["PresenceServer", "Status"]
