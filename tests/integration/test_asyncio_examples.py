"""The asyncio example programs run for real against the local Prosody.

Each runs in its own process (an asyncio program with the asyncio reactor); the other side of
the conversation is a Twisted client in this process's reactor thread.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from twisted.internet import defer

from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread
from txxmppnode import IQ, JID, IQType, Message
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.security_layer import make

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 20.0


class Program:
    """An example running in a subprocess, its stdout read line by line."""

    def __init__(self, script: str, *args: str, password: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "XMPP_PASSWORD": password},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def wait_for_line(self, prefix: str) -> str:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no line starting with {prefix!r} in {TIMEOUT}s")
            if line is None:
                self.finish()
                pytest.fail(f"the program ended without {prefix!r}:\n{self.stderr}")
            if line.startswith(prefix):
                return line

    def rest(self) -> list[str]:
        """The lines not read yet, once the program ended."""
        lines = []
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            lines.append(line)
        return lines

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self) -> int:
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(timeout=TIMEOUT)
        return self.process.returncode


def server_args(prosody: ProsodyServer) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(prosody.starttls_port),
            "--ca-file", str(prosody.ca_pem_path)]  # fmt: skip


@pytest.fixture
def romeo(prosody: ProsodyServer, reactor_thread: ReactorThread) -> Iterator[Client]:
    """A Twisted client for romeo, established; stopped after the test."""
    client = Client(
        JID.fromstr(prosody.jid("romeo") + "/inbox"),
        make(prosody.accounts["romeo"], trust_root=str(prosody.ca_pem_path)),
        override_peer=[("127.0.0.1", prosody.starttls_port, STARTTLSConnector())],
    )

    def start() -> defer.Deferred[Any]:
        established = client.on_stream_established.next()
        client.start()
        return established

    reactor_thread.run(start, timeout=TIMEOUT)
    yield client
    reactor_thread.run(client.stop, timeout=TIMEOUT)


def receive_one(reactor_thread: ReactorThread, client: Client) -> Callable[[], Any]:
    """Catch the next chat message to *client*; return a function waiting for it."""
    arrived: defer.Deferred[Any] = defer.Deferred()

    def register() -> None:
        client.stream.register_message_callback("chat", None, arrived.callback)

    reactor_thread.run(register)
    return lambda: reactor_thread.run(lambda: arrived, timeout=TIMEOUT)


def test_asyncio_send_message_delivers_one_message(
    prosody: ProsodyServer, reactor_thread: ReactorThread, romeo: Client
) -> None:
    wait = receive_one(reactor_thread, romeo)
    program = Program(
        "asyncio_send_message.py", prosody.jid("juliet"), str(romeo.local_jid),
        "wherefore art thou", *server_args(prosody), password=prosody.accounts["juliet"],
    )  # fmt: skip
    assert program.wait_for_line("sent") == "sent"
    assert program.finish() == 0, program.stderr
    message = wait()
    assert message.body == "wherefore art thou"
    assert str(message.from_.bare()) == prosody.jid("juliet")


def test_asyncio_echo_bot_answers_and_goes_offline_on_sigint(
    prosody: ProsodyServer, reactor_thread: ReactorThread, romeo: Client
) -> None:
    program = Program(
        "asyncio_echo_bot.py", prosody.jid("nurse") + "/echo", *server_args(prosody),
        password=prosody.accounts["nurse"],
    )  # fmt: skip
    try:
        bot = program.wait_for_line("online as ").removeprefix("online as ")
        assert bot == prosody.jid("nurse") + "/echo"
        for text in ("Good morrow", "Is the nurse near?"):
            wait = receive_one(reactor_thread, romeo)
            reactor_thread.run(romeo.send, Message(to=bot, type_="chat", body=text))
            reply = wait()
            assert (reply.body, str(reply.from_)) == (text, bot)
            reactor_thread.run(romeo.stream.unregister_message_callback, "chat", None)
    finally:
        returncode = program.interrupt()
    assert returncode == 0, program.stderr
    assert program.rest() == ["offline"]


def test_asyncio_version_bot_answers_software_version(
    prosody: ProsodyServer, reactor_thread: ReactorThread, romeo: Client
) -> None:
    program = Program(
        "asyncio_version_bot.py", prosody.jid("nurse") + "/version", *server_args(prosody),
        password=prosody.accounts["nurse"],
    )  # fmt: skip
    ns = "jabber:iq:version"
    try:
        bot = program.wait_for_line("online as ").removeprefix("online as ")
        request = IQ(IQType.GET, to=bot, payload=etree.Element(f"{{{ns}}}query"))
        answer = reactor_thread.run(romeo.send, request, timeout=TIMEOUT)
        fields = {etree.QName(child).localname: child.text for child in answer}
        assert fields["name"] == "txxmppnode asyncio version bot"
        assert fields["version"] and fields["os"]
    finally:
        returncode = program.interrupt()
    assert returncode == 0, program.stderr
    assert program.rest() == ["offline"]
