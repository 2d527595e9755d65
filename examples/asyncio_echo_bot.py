"""An echo bot for asyncio programs: answers every chat message with the same text.

    XMPP_PASSWORD=... python examples/asyncio_echo_bot.py JID [--host H --port P] [--ca-file PEM]

The same bot as echo_bot.py, written with txxmppnode.asyncio_compat: no Twisted in sight.  The
password may also be given as the second argument.  Stop it with Ctrl-C (or SIGTERM): it goes
unavailable and closes the stream cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from txxmppnode.asyncio_compat import (
    JID,
    Message,
    MessageType,
    PresenceManagedClient,
    PresenceState,
    STARTTLSConnector,
    make_security_layer,
)


def make_echo_bot(client: PresenceManagedClient) -> None:
    """Answer chat messages on *client*."""

    def echo(message: Message) -> None:
        if message.body is None or message.from_ is None:
            return
        client.enqueue(Message(to=message.from_, type_=MessageType.CHAT, body=message.body))

    client.stream.register_message_callback(MessageType.CHAT, None, echo)


async def main(args: argparse.Namespace) -> None:
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
    stopped, failed = client.on_stopped.next(), client.on_failure.next()
    client.on_stream_established.connect(lambda: print(f"online as {client.local_jid}", flush=True))

    def go_offline() -> None:
        client.presence = PresenceState(False)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, go_offline)
    client.presence = PresenceState(True)
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        raise SystemExit(f"the client failed: {failed.result()}")
    print("offline", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jid")
    parser.add_argument("password", nargs="?")
    parser.add_argument("--host", help="connect here instead of looking the domain up in DNS")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--ca-file", help="PEM file of the CA to trust (default: the system's)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("twisted").setLevel(logging.WARNING)
    asyncio.run(main(parser.parse_args()))
