"""``twistd -n xmppnode`` run for real, as a subprocess, against the session's Prosody and ejabberd.

The node runs on a fresh account that an *observer* account is subscribed to (the module
fixture sets that up over XMPP: the observer asks, the node's account approves), so the
observer -- a txxmppnode client in the test's reactor thread -- receives the node's presence
broadcasts exactly as any contact would: available when it comes online, unavailable when it
stops.  The observer also talks to the node's echo handler.  The node's log lines, read from its
stdout by a thread, tell the tests where it is (nothing here waits for time to pass).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from twisted.internet import defer

from tests.conftest import SERVER_KINDS, XMPPServer
from tests.support.prosody import Account
from tests.support.proxy import FaultProxy
from tests.support.reactor import ReactorThread
from txxmppnode import JID, Message, MessageType, Presence, PresenceShow, PresenceType
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.presence import PresenceManagedClient
from txxmppnode.presence_state import PresenceState
from txxmppnode.security_layer import make

ROOT = Path(__file__).resolve().parents[2]
TWISTD = Path(sys.executable).with_name("twistd")
# bounds of the waits below (generous: they only matter when something is broken)
START_TIMEOUT = 15.0
STEP_TIMEOUT = 10.0

T = TypeVar("T")
C = TypeVar("C", bound=Client)


# -- the daemon process -------------------------------------------------------------------------


class Daemon:
    """One ``twistd -n xmppnode`` process; its stdout (the log) and stderr, line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.argv = [str(TWISTD), "-n", "--pidfile=", "xmppnode", *args]
        environment = {**os.environ, **(env or {})}
        # the checkout itself provides twisted/plugins, whatever the install mode
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), environment.get("PYTHONPATH")])
        )
        environment["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr,
                                                                        self.stderr))
        ]  # fmt: skip
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        with self._changed:
            return "\n".join([*self.stdout, *self.stderr])

    def wait_for(
        self, pattern: str, timeout: float = STEP_TIMEOUT, start: int = 0
    ) -> re.Match[str]:
        """The first log line from index *start* on matching *pattern*; fail after *timeout*."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.stdout[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not any(r.is_alive() for r in self._readers)
                ):
                    pytest.fail(f"no log line matching {pattern!r}; output:\n{self.output()}")
                self._changed.wait(remaining)  # woken by each new line

    def exit_status(self, timeout: float = STEP_TIMEOUT) -> int:
        """Wait for the process to end; return its exit status."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the node did not exit within {timeout} s; output:\n{self.output()}")
        for reader in self._readers:
            reader.join(STEP_TIMEOUT)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STEP_TIMEOUT)
        for reader in self._readers:
            reader.join(STEP_TIMEOUT)


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``run_daemon(*args, env=None) -> Daemon``; processes still running are killed after."""
    started: list[Daemon] = []

    def run(*args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(list(args), tmp_path, env)
        started.append(daemon)
        return daemon

    yield run
    for daemon in started:
        daemon.kill()


# -- the accounts and the observer -------------------------------------------------------------


@dataclass
class Accounts:
    """The node's account and the observer's, which is subscribed to the node's presence."""

    node: Account
    observer: Account


def _client(server: XMPPServer, account: Account, resource: str, cls: type[C]) -> C:
    client = cls(
        JID.fromstr(f"{account.jid}/{resource}"),
        make(account.password, trust_root=str(server.ca_pem_path)),
        override_peer=[("127.0.0.1", server.starttls_port, STARTTLSConnector())],
        negotiation_timeout=timedelta(seconds=5),
    )
    client.backoff_start = timedelta(seconds=0.05)
    return client


class Inbox(Generic[T]):
    """Stanzas as they arrive, and Deferreds waiting for a condition on all of them so far."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._waiting: list[tuple[Callable[[list[T]], bool], defer.Deferred[list[T]]]] = []

    def add(self, item: T) -> None:
        self.items.append(item)
        ready = [entry for entry in self._waiting if entry[0](self.items)]
        for entry in ready:
            self._waiting.remove(entry)
            entry[1].callback(list(self.items))

    def when(self, condition: Callable[[list[T]], bool]) -> defer.Deferred[list[T]]:
        if condition(self.items):
            return defer.succeed(list(self.items))

        def cancel(waiter: defer.Deferred[list[T]]) -> None:
            self._waiting = [entry for entry in self._waiting if entry[1] is not waiter]

        waiter: defer.Deferred[list[T]] = defer.Deferred(cancel)
        self._waiting.append((condition, waiter))
        return waiter


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> XMPPServer:
    """The session's Prosody, then its ejabberd: every daemon test runs against each."""
    chosen: XMPPServer = request.getfixturevalue(request.param)
    return chosen


@pytest.fixture(scope="module")
def accounts(server: XMPPServer, reactor_thread: ReactorThread) -> Accounts:
    """Two fresh accounts; the observer is subscribed to the node's presence."""
    node = server.register()
    observer = server.register()

    async def subscribe() -> None:
        asker = _client(server, observer, "setup", PresenceManagedClient)
        approver = _client(server, node, "setup", Client)
        approved: Inbox[Presence] = Inbox()
        asker.stream.register_presence_callback(None, JID.fromstr(f"{node.jid}/setup"),
                                                approved.add)  # fmt: skip

        def approve(request: Presence) -> None:
            approver.enqueue(Presence(to=JID.fromstr(observer.jid), type_="subscribed"))

        approver.stream.register_presence_callback(PresenceType.SUBSCRIBE, None, approve)
        online = asker.on_stream_established.next()
        asker.presence = PresenceState(True)
        await online
        asker.enqueue(Presence(to=JID.fromstr(node.jid), type_="subscribe"))
        # the request waits on the server until the node's account comes online
        online = approver.on_stream_established.next()
        approver.start()
        await online
        approver.enqueue(Presence())
        # the asker sees the approver's presence only once it is subscribed
        await approved.when(lambda items: any(p.type_ is PresenceType.AVAILABLE for p in items))
        await approver.stop()
        await asker.stop()

    reactor_thread.run(lambda: defer.Deferred.fromCoroutine(subscribe()), timeout=20)
    return Accounts(node, observer)


class Observer:
    """The observer account online, recording what the node sends it."""

    def __init__(self, client: PresenceManagedClient) -> None:
        self.client = client
        self.presences: Inbox[Presence] = Inbox()
        self.messages: Inbox[Message] = Inbox()
        client.stream.register_presence_callback(None, None, self.presences.add)
        client.stream.register_message_callback(MessageType.CHAT, None, self.messages.add)

    def presence_from(self, jid: str, type_: PresenceType) -> defer.Deferred[Presence]:
        """Fires with the first presence of *type_* from *jid* (maybe received already)."""

        def match(items: list[Presence]) -> Presence | None:
            return next((p for p in items if str(p.from_) == jid and p.type_ is type_), None)

        waiting = self.presences.when(lambda items: match(items) is not None)
        return waiting.addCallback(lambda items: match(items))

    def say(self, to: str, *bodies: str) -> None:
        for body in bodies:
            self.client.enqueue(Message(to=JID.fromstr(to), type_=MessageType.CHAT, body=body))

    def echoes(self, sender: str, *bodies: str) -> defer.Deferred[list[Message]]:
        """Fires once a message with each of *bodies* came from *sender*."""

        def arrived(items: list[Message]) -> bool:
            got = {m.body for m in items if str(m.from_) == sender}
            return all(body in got for body in bodies)

        return self.messages.when(arrived)


@pytest.fixture
def observer(
    server: XMPPServer, accounts: Accounts, reactor_thread: ReactorThread
) -> Iterator[Observer]:
    """The observer online (available, so that presence broadcasts reach it)."""
    client = _client(server, accounts.observer, "observer", PresenceManagedClient)
    watcher = Observer(client)

    def start() -> defer.Deferred[Any]:
        online = client.on_stream_established.next()
        client.presence = PresenceState(True)
        return online

    reactor_thread.run(start, timeout=START_TIMEOUT)
    yield watcher
    reactor_thread.run(client.stop)


def node_args(
    server: XMPPServer, accounts: Accounts, tmp_path: Path, resource: str, port: int
) -> list[str]:
    """The options of a node on *port* of 127.0.0.1, password from a 0600 file."""
    password_file = tmp_path / "password"
    password_file.write_text(accounts.node.password + "\n")
    password_file.chmod(0o600)
    return [
        f"--jid={accounts.node.jid}",
        f"--resource={resource}",
        f"--password-file={password_file}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--ca-file={server.ca_pem_path}",
        "--handler=echo",
        "--metrics=tcp:0:interface=127.0.0.1",
    ]


def scrape(daemon: Daemon) -> tuple[str, str]:
    """GET the node's metrics: ``(content type, body)``."""
    url = daemon.wait_for(r"metrics: serving on (http://\S+)").group(1)
    with urllib.request.urlopen(url, timeout=STEP_TIMEOUT) as response:
        assert response.status == 200
        return response.headers["Content-Type"], response.read().decode("utf-8")


def sample(metrics: str, name: str, labels: str = "") -> float:
    """The value of the sample *name* with *labels* (``kind="iq"``, say) in *metrics*."""
    selector = re.escape(name + (f"{{{labels}}}" if labels else ""))
    match = re.search(rf"^{selector} (\S+)$", metrics, re.MULTILINE)
    assert match, f"no sample {name}{{{labels}}} in:\n{metrics}"
    return float(match.group(1))


EXPECTED_FAMILIES = {
    "xmppnode_info": "gauge",
    "xmppnode_connection_state": "gauge",
    "xmppnode_connection_attempts_total": "counter",
    "xmppnode_connection_failures_total": "counter",
    "xmppnode_reconnects_total": "counter",
    "xmppnode_sessions_established_total": "counter",
    "xmppnode_resumptions_total": "counter",
    "xmppnode_stream_errors_total": "counter",
    "xmppnode_stanzas_received_total": "counter",
    "xmppnode_stanzas_sent_total": "counter",
    "xmppnode_sm_unacked_stanzas": "gauge",
    "xmppnode_send_queue_stanzas": "gauge",
    "xmppnode_last_negotiation_duration_seconds": "gauge",
}


# -- the tests ----------------------------------------------------------------------------------


def test_comes_online_echoes_serves_metrics_and_goes_offline_on_sigterm(
    server: XMPPServer,
    accounts: Accounts,
    observer: Observer,
    reactor_thread: ReactorThread,
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    args = node_args(server, accounts, tmp_path, "first", server.starttls_port)
    args += ["--presence=chat", "--status=at your service", "--priority=5",
             "--offline-status=gone fishing", "--handler=log"]  # fmt: skip
    node = run_daemon(*args)
    full_jid = f"{accounts.node.jid}/first"
    node.wait_for(rf"established: {re.escape(full_jid)} ", timeout=START_TIMEOUT)

    # online: the observer, subscribed to the node's account, gets its presence broadcast
    online = reactor_thread.run(observer.presence_from, full_jid, PresenceType.AVAILABLE)
    assert online.show is PresenceShow.CHAT
    assert online.status == "at your service"
    assert online.priority == 5

    # the echo handler answers, from the node's full JID
    reactor_thread.run(observer.say, full_jid, "wherefore art thou")
    (echo,) = reactor_thread.run(observer.echoes, full_jid, "wherefore art thou")
    assert echo.body == "wherefore art thou"
    assert echo.type_ is MessageType.CHAT
    # the log handler wrote one line for it, without the body
    line = node.wait_for(r"received message type=chat from=\S+/observer ").string
    assert "wherefore" not in line

    # the metrics endpoint, in the Prometheus text format
    content_type, metrics = scrape(node)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics, re.MULTILINE))
    assert families == EXPECTED_FAMILIES
    assert sample(metrics, "xmppnode_connection_state", 'state="established"') == 1
    assert sample(metrics, "xmppnode_connection_state", 'state="connecting"') == 0
    assert sample(metrics, "xmppnode_connection_attempts_total") == 1
    assert sample(metrics, "xmppnode_sessions_established_total") == 1
    assert sample(metrics, "xmppnode_stanzas_received_total", 'kind="message"') >= 1
    assert sample(metrics, "xmppnode_stanzas_sent_total", 'kind="message"') >= 1
    assert sample(metrics, "xmppnode_stanzas_sent_total", 'kind="presence"') >= 1
    assert sample(metrics, "xmppnode_last_negotiation_duration_seconds") > 0
    assert f'xmppnode_info{{jid="{full_jid}"}} 1' in metrics

    # SIGTERM: the unavailable presence the node sends (its offline status proves it is the
    # node's own, not one the server makes up for a vanished session), then exit 0
    node.process.send_signal(signal.SIGTERM)
    offline = reactor_thread.run(observer.presence_from, full_jid, PresenceType.UNAVAILABLE)
    assert offline.status == "gone fishing"
    assert node.exit_status() == 0
    node.wait_for(r"SIGTERM: stopping")
    node.wait_for(r"\[xmppnode#info\] stopped$")

    # the password is in no argument, log line, metric or message
    password = accounts.node.password
    assert all(password not in arg for arg in node.argv)
    assert password not in node.output()
    assert password not in metrics


def test_survives_a_tcp_cut_without_losing_a_message(
    server: XMPPServer,
    accounts: Accounts,
    observer: Observer,
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    proxy = make_fault_proxy(server.starttls_port)
    node = run_daemon(*node_args(server, accounts, tmp_path, "cut", proxy.port))
    full_jid = f"{accounts.node.jid}/cut"
    node.wait_for(rf"established: {re.escape(full_jid)} ", timeout=START_TIMEOUT)
    reactor_thread.run(observer.presence_from, full_jid, PresenceType.AVAILABLE)

    before = [f"before the cut {n}" for n in range(5)]
    after = [f"after the cut {n}" for n in range(5)]

    async def talk_through_a_cut() -> None:
        observer.say(full_jid, *before)
        # traffic is flowing both ways: the first answer is back, the others are on their way
        await observer.echoes(full_jid, before[0])
        assert proxy.cut() == 1
        observer.say(full_jid, *after)
        await observer.echoes(full_jid, *before, *after)
        # anything sent twice would arrive before the answer to this last message
        observer.say(full_jid, "last")
        await observer.echoes(full_jid, "last")

    reactor_thread.run(lambda: defer.Deferred.fromCoroutine(talk_through_a_cut()))
    bodies = [m.body for m in observer.messages.items if str(m.from_) == full_jid]
    assert sorted(bodies) == sorted([*before, *after, "last"])  # each exactly once

    # the session was resumed, not replaced
    node.wait_for(r"suspended: ")
    node.wait_for(r"resumed: nothing lost")
    assert proxy.connections_accepted == 2
    _, metrics = scrape(node)
    assert sample(metrics, "xmppnode_resumptions_total") == 1
    assert sample(metrics, "xmppnode_sessions_established_total") == 1
    assert sample(metrics, "xmppnode_reconnects_total") >= 1
    assert sample(metrics, "xmppnode_stanzas_received_total", 'kind="message"') == 11
    assert sample(metrics, "xmppnode_stanzas_sent_total", 'kind="message"') == 11

    node.process.send_signal(signal.SIGINT)
    reactor_thread.run(observer.presence_from, full_jid, PresenceType.UNAVAILABLE)
    assert node.exit_status() == 0
    node.wait_for(r"SIGINT: stopping")


@pytest.mark.parametrize("policy", ["default", "listed", "elsewhere"])
def test_a_peer_that_is_not_subscribed_asks_and_is_answered_by_the_policy(
    server: XMPPServer,
    accounts: Accounts,
    policy: str,
    reactor_thread: ReactorThread,
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    stranger = server.register()
    args = node_args(server, accounts, tmp_path, f"sub-{policy}", server.starttls_port)
    if policy == "listed":
        args.append(f"--subscriptions=someone@else.example,{stranger.jid}")
    elif policy == "elsewhere":
        args.append("--subscriptions=else.example")
    node = run_daemon(*args)
    full_jid = f"{accounts.node.jid}/sub-{policy}"
    node.wait_for(rf"established: {re.escape(full_jid)} ", timeout=START_TIMEOUT)
    client = _client(server, stranger, "peer", PresenceManagedClient)
    presences: Inbox[Presence] = Inbox()
    client.stream.register_presence_callback(None, None, presences.add)

    def is_online(presence: Presence) -> bool:
        return str(presence.from_) == full_jid and presence.type_ is PresenceType.AVAILABLE

    async def ask() -> list[Presence]:
        online = client.on_stream_established.next()
        client.presence = PresenceState(True)
        await online
        client.enqueue(Presence(to=JID.fromstr(accounts.node.jid), type_="subscribe"))
        # approved: the server sends the node's current presence
        return await presences.when(lambda items: any(is_online(p) for p in items))

    try:
        if policy == "elsewhere":
            reactor_thread.run(lambda: defer.Deferred.fromCoroutine(client_online(client)))
            reactor_thread.run(
                client.enqueue, Presence(to=JID.fromstr(accounts.node.jid), type_="subscribe")
            )
            node.wait_for(
                rf"subscription request from {re.escape(stranger.jid)} ignored "
                r"\(policy: else\.example\)"
            )
            # not approved: nothing tells the requester that the node is online
            assert not [p for p in presences.items if is_online(p)]
            return
        seen = reactor_thread.run(lambda: defer.Deferred.fromCoroutine(ask()), timeout=STEP_TIMEOUT)
        # how the approval itself reaches the requester differs (ejabberd forwards the
        # <presence type='subscribed'/>, Prosody 0.12 sends an unavailable presence from the
        # bare JID first): what both do, as RFC 6121 §3.1.5 says, is send the node's presence
        # once it approved
        node.wait_for(rf"subscription request from {re.escape(stranger.jid)} approved")
        assert any(str(p.from_) == full_jid for p in seen)
    finally:
        reactor_thread.run(client.stop, timeout=STEP_TIMEOUT)


async def client_online(client: PresenceManagedClient) -> None:
    online = client.on_stream_established.next()
    client.presence = PresenceState(True)
    await online


def test_the_example_bot_of_the_operations_guide(
    server: XMPPServer,
    accounts: Accounts,
    observer: Observer,
    reactor_thread: ReactorThread,
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    args = node_args(server, accounts, tmp_path, "bot", server.starttls_port)
    args = [a for a in args if a != "--handler=echo"] + ["--handler=ping_bot:make_bot"]
    node = run_daemon(*args, env={"PYTHONPATH": str(ROOT / "examples")})
    full_jid = f"{accounts.node.jid}/bot"
    node.wait_for(rf"established: {re.escape(full_jid)} ", timeout=START_TIMEOUT)
    reactor_thread.run(observer.presence_from, full_jid, PresenceType.AVAILABLE)
    reactor_thread.run(observer.say, full_jid, "ping", "uptime")
    answers = reactor_thread.run(observer.messages.when, lambda items: len(items) == 2)
    assert [str(m.from_) for m in answers] == [full_jid, full_jid]
    assert answers[0].body == "pong"
    assert re.fullmatch(r"up for \d+ s", answers[1].body or "")
    node.process.send_signal(signal.SIGTERM)
    assert node.exit_status() == 0


def test_a_stream_error_is_logged_and_a_fatal_one_ends_with_status_1(
    server: XMPPServer,
    accounts: Accounts,
    reactor_thread: ReactorThread,
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    node = run_daemon(*node_args(server, accounts, tmp_path, "taken", server.starttls_port))
    node.wait_for(r"established: ", timeout=START_TIMEOUT)
    # another client binds the same resource: the server ends the node's stream with <conflict/>
    usurper = _client(server, accounts.node, "taken", Client)

    def start() -> defer.Deferred[Any]:
        online = usurper.on_stream_established.next()
        usurper.start()
        return online

    reactor_thread.run(start, timeout=START_TIMEOUT)
    try:
        assert node.exit_status() == 1
    finally:
        reactor_thread.run(usurper.stop)
    node.wait_for(r"\[xmppnode#warn\] stream error: conflict \(from the server\)")
    node.wait_for(r"\[xmppnode#error\] failed: stream error conflict")
    assert len(node.stderr) == 1, node.output()
    assert node.stderr[0].startswith("twistd xmppnode: failed: stream error conflict")


def test_a_wrong_password_ends_with_a_clear_message_and_status_1(
    server: XMPPServer, accounts: Accounts, run_daemon: Callable[..., Daemon]
) -> None:
    wrong = "not-the-password-" + accounts.node.password[:4]
    node = run_daemon(
        f"--jid={accounts.node.jid}",
        "--password-env=NODE_PASSWORD",
        "--host=127.0.0.1",
        f"--port={server.starttls_port}",
        f"--ca-file={server.ca_pem_path}",
        env={"NODE_PASSWORD": wrong},
    )
    assert node.exit_status(START_TIMEOUT) == 1
    assert len(node.stderr) == 1, node.output()
    assert node.stderr[0].startswith(
        "twistd xmppnode: failed: authentication failed: not-authorized"
    )
    node.wait_for(r"\[xmppnode#error\] failed: authentication failed: not-authorized")
    assert wrong not in node.output()


@pytest.mark.parametrize(
    ("make_args", "reason"),
    [
        (lambda p: ["--jid=juliet@xmppnode.test", f"--password-file={p}", "--handler=parrot"],
         "unknown handler 'parrot': use echo, log or package.module:factory"),
        (lambda p: ["--jid=juliet@xmppnode.test", "--password-file=/nonexistent/password"],
         "cannot read the password file /nonexistent/password: No such file or directory"),
        (lambda p: ["--jid=juliet@@xmppnode.test", f"--password-file={p}"], "invalid JID"),
        (lambda p: ["--jid=juliet@xmppnode.test", f"--password-file={p}", "--handler=no.such:f"],
         "handler 'no.such:f': cannot import no.such: ModuleNotFoundError"),
    ],
    ids=["unknown-handler", "unreadable-password-file", "invalid-jid", "unimportable-handler"],
)  # fmt: skip
def test_bad_options_end_with_one_line_and_status_1(
    make_args: Callable[[Path], list[str]],
    reason: str,
    run_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-pass\n")
    node = run_daemon(*make_args(password_file))
    assert node.exit_status() == 1
    assert len(node.stderr) == 1, node.output()
    assert node.stderr[0].startswith(f"twistd xmppnode: {reason}")
    assert node.stderr[0].endswith("(see twistd xmppnode --help)")
    assert node.stdout == []
    assert "s3cret-pass" not in node.output()


def test_a_metrics_port_in_use_ends_with_one_line_and_status_1(
    run_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-pass\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = run_daemon(
            "--jid=juliet@xmppnode.test",
            f"--password-file={password_file}",
            f"--metrics=tcp:{port}:interface=127.0.0.1",
        )
        assert node.exit_status() == 1
    assert node.stderr == [
        f"twistd xmppnode: cannot serve metrics on tcp:{port}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use."
    ]
    assert "connecting:" not in node.output()
