"""A software-version responder (XEP-0092) for asyncio programs.

    XMPP_PASSWORD=... python examples/asyncio_version_bot.py JID [--host H --port P]
        [--ca-file PEM]

It answers ``jabber:iq:version`` requests with its name, txxmppnode's version and the operating
system; anything else gets the ``service-unavailable`` error the stream sends for requests
nobody serves.  Stop it with Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
from importlib import metadata

from lxml import etree

from txxmppnode.asyncio_compat import (
    IQ,
    JID,
    Client,
    IQType,
    STARTTLSConnector,
    make_security_layer,
)

VERSION_NS = "jabber:iq:version"
NAME = "txxmppnode asyncio version bot"


async def answer_version(request: IQ) -> etree._Element:
    """The ``<query/>`` of a version result (a coroutine handler: the reply waits for it)."""
    query = etree.Element(f"{{{VERSION_NS}}}query", nsmap={None: VERSION_NS})
    for name, text in (
        ("name", NAME),
        ("version", metadata.version("txxmppnode")),
        ("os", platform.system() or "unknown"),
    ):
        etree.SubElement(query, f"{{{VERSION_NS}}}{name}").text = text
    return query


async def main(args: argparse.Namespace) -> None:
    password = args.password or os.environ.get("XMPP_PASSWORD")
    if not password:
        raise SystemExit("no password: give it as an argument or in XMPP_PASSWORD")
    peer = [(args.host, args.port, STARTTLSConnector())] if args.host else []
    client = Client(
        JID.fromstr(args.jid),
        make_security_layer(password, trust_root=args.ca_file),
        override_peer=peer,
    )
    client.stream.register_iq_request_handler(IQType.GET, f"{{{VERSION_NS}}}query", answer_version)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with client.connected(timeout=30):
        print(f"online as {client.local_jid}", flush=True)
        await stop.wait()
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
