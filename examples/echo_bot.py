"""An echo bot: answers every chat message with the same text.

    python examples/echo_bot.py JID PASSWORD [--host H --port P] [--ca-file PEM]

The password may also come from the environment (XMPP_PASSWORD) to keep it out of the shell
history.  Stop it with Ctrl-C: it goes unavailable and closes the stream cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver

from txxmppnode import JID, Message, MessageType, STARTTLSConnector, make_security_layer
from txxmppnode.presence import PresenceManagedClient
from txxmppnode.presence_state import PresenceState


def make_echo_bot(client: PresenceManagedClient) -> None:
    """Answer chat messages on *client* (a plain function so other programs can reuse it)."""

    def echo(message: Message) -> None:
        if message.body is None or message.from_ is None:
            return
        reply = Message(to=message.from_, type_=MessageType.CHAT, body=message.body)
        client.enqueue(reply)

    client.stream.register_message_callback(MessageType.CHAT, None, echo)


async def main(reactor: object, args: argparse.Namespace) -> None:
    password = args.password or os.environ.get("XMPP_PASSWORD")
    if not password:
        raise SystemExit("no password: give it as an argument or in XMPP_PASSWORD")
    peer = [(args.host, args.port, STARTTLSConnector())] if args.host else []
    client = PresenceManagedClient(
        JID.fromstr(args.jid),
        make_security_layer(password, trust_root=args.ca_file),
        override_peer=peer,
    )
    make_echo_bot(client)
    stopped: defer.Deferred[None] = defer.Deferred()
    client.on_stopped.connect(lambda: stopped.callback(None))
    client.on_failure.connect(stopped.errback)
    client.on_stream_established.connect(lambda: print(f"online as {client.local_jid}"))
    client.presence = PresenceState(True)
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(  # type: ignore[attr-defined]
        setattr, client, "presence", PresenceState(False)))  # fmt: skip
    await stopped


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jid")
    parser.add_argument("password", nargs="?")
    parser.add_argument("--host", help="connect here instead of looking the domain up in DNS")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--ca-file", help="PEM file of the CA to trust (default: the system's)")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, parser.parse_args())))
