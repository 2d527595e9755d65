"""The whole stack on one machine: a local Prosody, a node, and a visitor talking to it.

    make run            (or: .venv/bin/python examples/demo.py)

It starts a Prosody on 127.0.0.1 from the project's own test harness (a generated CA and two
accounts in a temporary directory), runs an echo node (a PresenceManagedClient) as
juliet@xmppnode.test/node, connects a visitor as romeo@xmppnode.test, exchanges a few messages
and prints them, then shuts everything down.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bot import make_echo_bot

from tests.support.prosody import ProsodyServer
from txxmppnode import JID, Message, MessageType, make_security_layer
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.presence import PresenceManagedClient
from txxmppnode.presence_state import PresenceState

LINES = ["Good morrow, Juliet.", "Is the nurse near?", "Parting is such sweet sorrow."]


async def converse(server: ProsodyServer) -> None:
    peer = [("127.0.0.1", server.starttls_port, STARTTLSConnector())]

    def account(name: str, resource: str) -> tuple[JID, object]:
        security = make_security_layer(server.accounts[name], trust_root=str(server.ca_pem_path))
        return JID.fromstr(f"{server.jid(name)}/{resource}"), security

    jid, security = account("juliet", "node")
    node = PresenceManagedClient(jid, security, override_peer=peer)  # type: ignore[arg-type]
    make_echo_bot(node)
    online = node.on_presence_sent.next()
    node.presence = PresenceState(True, "chat")
    await online
    print(f"[node]    online as {node.local_jid}, answering chat messages")

    jid, security = account("romeo", "visitor")
    visitor = Client(jid, security, override_peer=peer)  # type: ignore[arg-type]
    async with visitor.connected(timeout=20):
        print(f"[visitor] connected as {visitor.local_jid}")
        for line in LINES:
            answer = defer.Deferred()
            visitor.stream.register_message_callback(MessageType.CHAT, node.local_jid,
                                                      answer.callback)  # fmt: skip
            print(f"[visitor] -> {line}")
            await visitor.send(Message(to=node.local_jid, type_=MessageType.CHAT, body=line))
            reply = await answer
            visitor.stream.unregister_message_callback(MessageType.CHAT, node.local_jid)
            print(f"[visitor] <- {reply.body}   (from {reply.from_})")
    print("[visitor] disconnected")
    node.presence = PresenceState(False)
    if node.running:
        await node.on_stopped.next()
    print("[node]    offline")


async def main(reactor: object) -> None:
    with tempfile.TemporaryDirectory(prefix="txxmppnode-demo-") as directory:
        server = ProsodyServer(Path(directory), accounts=("juliet", "romeo"))
        server.start()
        print(f"[prosody] {server.domain} on 127.0.0.1:{server.starttls_port} (pid {server.pid})")
        try:
            await converse(server)
        finally:
            server.stop()
            print("[prosody] stopped")


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
