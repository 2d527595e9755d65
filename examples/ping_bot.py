"""A bot for ``twistd xmppnode``: answers ``ping`` and ``uptime``, and shows its count as status.

    PYTHONPATH=examples twistd -n xmppnode --config bot.toml --handler ping_bot:make_bot

:func:`make_bot` is the handler factory: the node calls it with its client before going online.
It registers a message callback, and returns a Twisted service that the node runs alongside
the client (started before it goes online, stopped before it goes offline).
"""

from __future__ import annotations

import time

from twisted.application.internet import TimerService
from twisted.logger import Logger

from txxmppnode import Message, MessageType
from txxmppnode.presence import PresenceManagedClient, PresenceServer

log = Logger(namespace="ping_bot")

#: Seconds between two updates of the status text.
STATUS_INTERVAL = 60.0


def make_bot(client: PresenceManagedClient) -> TimerService:
    """Answer chat messages on *client*; return the service that keeps the status up to date."""
    started = time.monotonic()
    answered = 0

    def answer(message: Message) -> None:
        nonlocal answered
        if message.from_ is None or message.body is None:
            return  # chat states and the like carry no text
        question = message.body.strip().lower()
        if question == "ping":
            text = "pong"
        elif question == "uptime":
            text = f"up for {time.monotonic() - started:.0f} s"
        else:
            text = "I answer 'ping' and 'uptime'."
        client.stream.enqueue(Message(to=message.from_, type_=MessageType.CHAT, body=text))
        answered += 1

    client.stream.register_message_callback(MessageType.CHAT, None, answer)

    # the presence the node keeps: change its status, keep its state and priority
    presence = client.summon(PresenceServer)

    def show_count() -> None:
        if presence.state.available:
            status = f"{answered} questions answered"
            presence.set_presence(presence.state, status, presence.priority)
            log.info("status: {status}", status=status)

    return TimerService(STATUS_INTERVAL, show_count)
