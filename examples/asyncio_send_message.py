"""Send one message and exit: the smallest complete txxmppnode program for asyncio.

XMPP_PASSWORD=... python examples/asyncio_send_message.py FROM_JID TO_JID TEXT
    [--host H --port P] [--ca-file PEM]
"""

from __future__ import annotations

import argparse
import asyncio
import os

from txxmppnode.asyncio_compat import (
    JID,
    Client,
    Message,
    MessageType,
    STARTTLSConnector,
    make_security_layer,
)


async def main(args: argparse.Namespace) -> None:
    security = make_security_layer(os.environ["XMPP_PASSWORD"], trust_root=args.ca_file)
    peer = [(args.host, args.port, STARTTLSConnector())] if args.host else []
    client = Client(JID.fromstr(args.sender), security, override_peer=peer)
    async with client.connected(timeout=30):
        # waits until the server acknowledged the message (or it was written, without XEP-0198)
        await client.send(Message(to=args.recipient, type_=MessageType.CHAT, body=args.text))
    print("sent")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sender")
    parser.add_argument("recipient")
    parser.add_argument("text")
    parser.add_argument("--host", help="connect here instead of looking the domain up in DNS")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--ca-file")
    asyncio.run(main(parser.parse_args()))
