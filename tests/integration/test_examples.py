"""The example programs run for real: the demo end to end, against its own Prosody."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_exchanges_messages_through_a_local_prosody() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "online as juliet@xmppnode.test/node" in lines[1]
    replies = [line for line in lines if "<-" in line]
    assert len(replies) == 3
    assert all("(from juliet@xmppnode.test/node)" in line for line in replies)
    assert "Parting is such sweet sorrow." in replies[-1]
    assert lines[-2:] == ["[node]    offline", "[prosody] stopped"]


def test_send_message_delivers_one_message(
    prosody: ProsodyServer, reactor_thread: ReactorThread
) -> None:
    from twisted.internet import defer

    from txxmppnode import JID
    from txxmppnode.client import Client
    from txxmppnode.connector import STARTTLSConnector
    from txxmppnode.security_layer import make

    romeo = Client(
        JID.fromstr(prosody.jid("romeo") + "/inbox"),
        make(prosody.accounts["romeo"], trust_root=str(prosody.ca_pem_path)),
        override_peer=[("127.0.0.1", prosody.starttls_port, STARTTLSConnector())],
    )
    arrived: defer.Deferred[Any] = defer.Deferred()

    def start() -> defer.Deferred[Any]:
        romeo.stream.register_message_callback("chat", None, arrived.callback)
        established = romeo.on_stream_established.next()
        romeo.start()
        return established

    reactor_thread.run(start, timeout=15)
    try:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "send_message.py"), prosody.jid("juliet"),
             prosody.jid("romeo") + "/inbox", "wherefore art thou", "--host", "127.0.0.1",
             "--port", str(prosody.starttls_port), "--ca-file", str(prosody.ca_pem_path)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "XMPP_PASSWORD": prosody.accounts["juliet"]},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "sent"
        message = reactor_thread.run(lambda: arrived, timeout=10)
        assert message.body == "wherefore art thou"
        assert str(message.from_.bare()) == prosody.jid("juliet")
    finally:
        reactor_thread.run(romeo.stop)
