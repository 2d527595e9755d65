"""The Client scenarios against a real Prosody, written once and run on both faces.

Each scenario is a coroutine function ``scenario(run) -> dict`` whose code does not know which
face it drives:

* ``run.face`` is the API: the :mod:`txxmppnode` package (Twisted) or
  :mod:`txxmppnode.asyncio_compat`; both have ``Client``, ``make_security_layer``, the stanzas,
  and clients whose ``send()``/``stop()``/``next()`` results and tokens can be awaited by the
  face's coroutines;
* futures the scenario resolves itself come from txaio, which each face selects (Twisted in
  the pytest process, asyncio in the subprocess);
* the test harness's own Twisted objects (the :class:`FaultProxy`) run on the reactor in both
  cases -- under the asyncio face that is the asyncio reactor the face installed -- and their
  Deferreds are awaited through ``run.twisted(deferred)``.

A scenario returns plain data; :data:`EXPECTED` says what each must return, the same for both
faces.  The Twisted face runs in the pytest process's reactor thread; the asyncio face runs in a
subprocess, one scenario per process, under ``asyncio.run``::

    TXXMPPNODE_TEST_SERVER='{...}' python -m tests.integration.client_scenarios connect

which prints the result as one JSON line (the server's details come from :class:`ServerInfo`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any, Final

import txaio as _txaio
from lxml import etree

from tests.support.proxy import FaultProxy

# txaio's functions are installed when a face selects its framework: untyped until then
txaio: Any = _txaio
SERVER_ENV: Final = "TXXMPPNODE_TEST_SERVER"
#: seconds a whole scenario may take before it counts as hung
SCENARIO_TIMEOUT: Final = 30.0
ECHO_NS: Final = "urn:example:echo"


@dataclass(frozen=True)
class ServerInfo:
    """What a scenario needs to know about the Prosody under test (JSON-serialisable)."""

    domain: str
    starttls_port: int
    ca_pem_path: str
    accounts: dict[str, str]
    host: str = "127.0.0.1"

    @classmethod
    def of(cls, server: Any) -> ServerInfo:
        """From a :class:`~tests.support.prosody.ProsodyServer`."""
        return cls(server.domain, server.starttls_port, str(server.ca_pem_path),
                   dict(server.accounts))  # fmt: skip

    def jid(self, account: str) -> str:
        return f"{account}@{self.domain}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerInfo:
        return cls(**json.loads(text))


@dataclass
class Run:
    """One scenario's face, server and resources (closed by :meth:`close`)."""

    face: ModuleType
    server: ServerInfo
    reactor: Any
    clients: list[Any] = field(default_factory=list)
    proxies: list[FaultProxy] = field(default_factory=list)

    def twisted(self, deferred: Any) -> Awaitable[Any]:
        """*deferred* (of the harness) as something this face's coroutines can await."""
        raise NotImplementedError

    def client(
        self,
        account: str = "juliet",
        *,
        resource: str = "node",
        port: int | None = None,
        password: str | None = None,
        cls: str = "Client",
        **options: Any,
    ) -> Any:
        security = self.face.make_security_layer(
            password if password is not None else self.server.accounts[account],
            trust_root=self.server.ca_pem_path,
        )
        peer = (self.server.host, port or self.server.starttls_port, self.face.STARTTLSConnector())
        client = getattr(self.face, cls)(
            self.face.JID.fromstr(f"{self.server.jid(account)}/{resource}"),
            security,
            override_peer=[peer],
            negotiation_timeout=timedelta(seconds=5),
            **options,
        )
        client.backoff_start = timedelta(seconds=0.05)
        self.clients.append(client)
        return client

    async def proxy(self) -> FaultProxy:
        proxy = FaultProxy(self.server.host, self.server.starttls_port, self.reactor)
        await self.twisted(proxy.start())
        self.proxies.append(proxy)
        return proxy

    async def close(self) -> None:
        for client in self.clients:
            await client.stop()
        for proxy in self.proxies:
            await self.twisted(proxy.stop())


class TwistedRun(Run):
    """The Twisted face: coroutines run by ``Deferred.fromCoroutine`` in the reactor thread."""

    def __init__(self, server: ServerInfo, reactor: Any) -> None:
        import txxmppnode

        txaio.use_twisted()
        super().__init__(txxmppnode, server, reactor)

    def twisted(self, deferred: Any) -> Awaitable[Any]:
        return deferred  # type: ignore[no-any-return]


class AsyncioRun(Run):
    """The asyncio face: coroutines run by ``asyncio.run``; Twisted runs on its loop."""

    def __init__(self, server: ServerInfo) -> None:
        from txxmppnode import asyncio_compat

        reactor = asyncio_compat.install_reactor()  # also selects asyncio for txaio
        super().__init__(asyncio_compat, server, reactor)

    def twisted(self, deferred: Any) -> Awaitable[Any]:
        return deferred.asFuture(asyncio.get_running_loop())  # type: ignore[no-any-return]


class Recorder:
    """Every signal of a client, in order, by name."""

    NAMES: Final = (
        "before_stream_established",
        "on_stream_established",
        "on_stream_suspended",
        "on_stream_resumed",
        "on_stream_destroyed",
        "on_stopped",
        "on_failure",
    )

    def __init__(self, client: Any, names: list[str] | None = None) -> None:
        self.names: list[str] = [] if names is None else names
        for name in self.NAMES:
            getattr(client, name).connect(lambda *_, name=name: self.names.append(name))


def _chat(run: Run, to: Any, body: str) -> Any:
    return run.face.Message(to=to, type_=run.face.MessageType.CHAT, body=body)


# -- the scenarios -----------------------------------------------------------------------------


async def connect(run: Run) -> dict[str, Any]:
    """Start, establish (awaiting a coroutine listener of before_stream_established), stop."""
    juliet = run.client()
    events: list[str] = []

    async def prepare() -> None:
        await txaio.sleep(0.01)
        events.append("before_stream_established: awaited")

    # connected before the recorder: the emission awaits it before the recorder hears it
    juliet.before_stream_established.connect(prepare)
    dropped = juliet.on_stream_established.connect(lambda: events.append("disconnected!"))
    juliet.on_stream_established.disconnect(dropped)
    Recorder(juliet, events)
    established = juliet.on_stream_established.next()
    juliet.start()
    await established
    state = {
        "established": juliet.established,
        "running": juliet.running,
        "suspended": juliet.suspended,
        "jid": str(juliet.local_jid),
        "sm_enabled": juliet.stream.sm_enabled,
    }
    await juliet.stop()
    return {**state, "events": events, "running_after_stop": juliet.running}


async def send_receive(run: Run) -> dict[str, Any]:
    """A message with send(), one with enqueue() and its token, received by the other client."""
    juliet, romeo = run.client(), run.client("romeo")
    bodies: list[str] = []
    both = txaio.create_future()

    def received(message: Any) -> None:
        bodies.append(str(message.body))
        if len(bodies) == 2:
            txaio.resolve(both, None)

    async with juliet.connected(timeout=10) as stream, romeo.connected(timeout=10):
        romeo.stream.register_message_callback("chat", None, received)
        await juliet.send(_chat(run, romeo.local_jid, "sent"))
        token = juliet.enqueue(_chat(run, romeo.local_jid, "enqueued"))
        await token
        await both
        result = {
            "stream_is_client_stream": stream is juliet.stream,
            "token_state": token.state.name,
        }
    return {**result, "bodies": bodies, "running_after_block": juliet.running}


async def iq_round_trip(run: Run) -> dict[str, Any]:
    """An IQ served by a coroutine handler; a response callback; an unserved IQ's error."""
    juliet, romeo = run.client(), run.client("romeo")
    face = run.face

    async def echo(iq: Any) -> Any:
        await txaio.sleep(0.01)
        answer = etree.Element(f"{{{ECHO_NS}}}answer")
        answer.text = iq.payload.text.upper()
        return answer

    async def describe_response(response: Any) -> str:
        await txaio.sleep(0)
        return "response of type " + str(response.get("type"))

    def request(text: str, tag: str = "question") -> Any:
        payload = etree.Element(f"{{{ECHO_NS}}}{tag}")
        payload.text = text
        return face.IQ(face.IQType.GET, to=romeo.local_jid, payload=payload)

    async with juliet.connected(timeout=10), romeo.connected(timeout=10):
        romeo.stream.register_iq_request_handler(face.IQType.GET, f"{{{ECHO_NS}}}question", echo)
        answer = await juliet.send(request("wherefore"))
        from_cb = await juliet.send(request("art thou"), cb=describe_response)
        try:
            await juliet.send(request("unserved", "nobody-serves-this"))
            error = None
        except face.errors.XMPPError as exc:
            error = exc.condition.value
    return {"answer": [answer.tag, answer.text], "from_cb": from_cb, "error": error}


async def cut_and_resume(run: Run) -> dict[str, Any]:
    """The connection is cut in a burst; the session resumes and nothing is lost."""
    proxy = await run.proxy()
    juliet, romeo = run.client(port=proxy.port), run.client("romeo")
    bodies: list[str] = []
    all_arrived = txaio.create_future()

    def received(message: Any) -> None:
        bodies.append(str(message.body))
        if len(bodies) == 10:
            txaio.resolve(all_arrived, None)

    async with juliet.connected(timeout=10), romeo.connected(timeout=10):
        romeo.stream.register_message_callback("chat", None, received)
        events = Recorder(juliet).names
        suspended = juliet.on_stream_suspended.next()
        resumed = juliet.on_stream_resumed.next()
        tokens = [juliet.enqueue(_chat(run, romeo.local_jid, str(n))) for n in range(5)]
        proxy.cut_after(bytes_from_client=300)
        await suspended
        # queued while suspended: the stream outlives the connection
        tokens += [juliet.stream.enqueue(_chat(run, romeo.local_jid, str(n))) for n in range(5, 10)]
        await resumed
        for token in tokens:
            await token
        await all_arrived
        result = {
            "established": juliet.established,
            "states": sorted({token.state.name for token in tokens}),
            "connections": proxy.connections_accepted,
        }
    return {**result, "bodies": bodies, "events": events[:2]}


async def enqueue_while_suspended(run: Run) -> dict[str, Any]:
    """While suspended the session stays established: enqueue queues, send does not wait,
    and both go out, in order, after the resumption."""
    proxy = await run.proxy()
    juliet, romeo = run.client(port=proxy.port), run.client("romeo")
    bodies: list[str] = []
    all_arrived = txaio.create_future()

    def received(message: Any) -> None:
        bodies.append(str(message.body))
        if len(bodies) == 3:
            txaio.resolve(all_arrived, None)

    async with juliet.connected(timeout=10), romeo.connected(timeout=10):
        romeo.stream.register_message_callback("chat", None, received)
        await juliet.send(_chat(run, romeo.local_jid, "before"))
        suspended = juliet.on_stream_suspended.next()
        resumed = juliet.on_stream_resumed.next()
        proxy.refuse()  # the session stays suspended until accept_again
        proxy.cut()
        await suspended
        during = {
            "established": juliet.established,
            "event": juliet.established_event.is_set(),
            "suspended": juliet.suspended,
        }
        token = juliet.enqueue(_chat(run, romeo.local_jid, "enqueued"))
        sending = juliet.send(_chat(run, romeo.local_jid, "sent"))
        during["queued"] = juliet.stream.queue_length
        proxy.accept_again()
        await resumed
        await token
        await sending
        await all_arrived
    return {"during": during, "bodies": bodies}


async def stop_racing_reset(run: Run) -> dict[str, Any]:
    """stop() 0-7 loop turns after an RST, reconnections refused: one on_stopped, no
    on_failure, not running, no connection left, and no connection attempt after the stop.

    The last is checked at each client's own proxy, which the client knows as two peers (two
    ways to the same server), with barriers (:meth:`FaultProxy.barrier`): one started just
    before ``stop()`` splits the connections the proxy sees into those the client began before
    the stop (a TCP handshake under way when the stop cancelled the attempt still reaches the
    proxy, whose loop accepts it later) and those begun after; a second one at the end of the
    scenario, after the other clients' runs, counts the latter, which must be none -- so none
    reaches the server after on_stopped either.  A stop cancelling an attempt that is resolving
    the host name used to go on to the second peer.  And nothing left behind could begin an
    attempt later: once the turns due have run, the reactor holds no timer the client's run
    added (the DNS resolver's own housekeeping aside)."""
    await txaio.sleep(0)  # the harness's own timers (the scenario's time limit) exist now
    baseline = set(run.reactor.getDelayedCalls())
    outcomes: list[dict[str, Any]] = []
    split: list[tuple[FaultProxy, int]] = []
    for turns in range(8):
        proxy = await run.proxy()
        juliet = run.client(port=proxy.port, resource=f"race{turns}")
        juliet.backoff_cap = timedelta(seconds=0.05)
        juliet.override_peer = juliet.override_peer * 2
        events = Recorder(juliet).names
        established = juliet.on_stream_established.next()
        juliet.start()
        await established
        proxy.refuse()
        proxy.cut()
        for _ in range(turns):
            await txaio.sleep(0)
        at_stop = proxy.barrier()
        first = juliet.stop()
        same = juliet.stop() is first
        await first
        split.append((proxy, await run.twisted(at_stop)))
        idle = await run.twisted(proxy.wait_until_idle())
        proxy.accept_again()  # an attempt after the stop would now reach the server
        for _ in range(3):
            await txaio.sleep(0)  # what was due at the stop runs
        timers_left = [
            repr(call)
            for call in run.reactor.getDelayedCalls()
            if call not in baseline
            and call.active()
            and not getattr(call.func, "__module__", "").startswith("twisted.names")
        ]
        outcomes.append(
            {
                "same_deferred": same,
                "stops": events.count("on_stopped"),
                "failures": events.count("on_failure"),
                "running": juliet.running,
                "idle": idle,
                "timers_left": timers_left,
            }
        )
    for outcome, (proxy, seen_by_stop) in zip(outcomes, split, strict=True):
        outcome["attempts_after_stop"] = await run.twisted(proxy.barrier()) - seen_by_stop
    return {"outcomes": outcomes}


async def presence_after_restart(run: Run) -> dict[str, Any]:
    """The PresenceServer drives a PresenceManagedClient; the presence reaches a subscribed
    peer again after unavailable/available and after a second ``connected()`` block."""
    juliet = run.client(cls="PresenceManagedClient")
    # another resource of the account: the server broadcasts juliet/node's presence to it
    romeo = run.client("juliet", resource="observer", cls="PresenceManagedClient")
    seen: list[str] = []
    waiters: list[Any] = []

    def received(presence: Any) -> None:
        if str(presence.get("from", "")) == run.server.jid("juliet") + "/node":
            seen.append(str(presence.get("type") or "available"))
            while waiters:
                txaio.resolve(waiters.pop(), None)

    def next_presence() -> Any:
        waiter = txaio.create_future()
        waiters.append(waiter)
        return waiter

    service = juliet.summon(run.face.PresenceServer)
    async with romeo.connected(timeout=10):
        romeo.stream.register_presence_callback(None, None, received)
        romeo.stream.register_presence_callback("unavailable", None, received)
        coming = next_presence()
        service.set_presence(run.face.PresenceState(True))  # starts the client
        await coming
        coming = next_presence()
        stopped = juliet.on_stopped.next()
        service.set_presence(run.face.PresenceState(False))
        await stopped
        await coming
        coming = next_presence()
        juliet.presence = run.face.PresenceState(True)
        await coming
        await juliet.stop()
        coming = next_presence()
        async with juliet.connected(timeout=10):
            await coming
        same = juliet.summon(run.face.PresenceServer) is service
    # ejabberd broadcasts unavailable again when the session closes: runs count once (that we
    # send one unavailable presence is checked by the unit tests)
    kinds = [p for p in seen if p in ("available", "unavailable")]
    changes = [p for i, p in enumerate(kinds) if i == 0 or kinds[i - 1] != p]
    return {"seen": changes, "same": same}


async def wrong_password(run: Run) -> dict[str, Any]:
    """Refused credentials: on_failure after one attempt, no retry loop."""
    proxy = await run.proxy()
    juliet = run.client(port=proxy.port, password="wrong")
    events = Recorder(juliet).names
    failed = juliet.on_failure.next()
    juliet.start()
    error = await failed
    return {
        "error": type(error).__name__,
        "is_authentication_failure": isinstance(error, run.face.errors.AuthenticationFailure),
        "condition": error.condition,
        "events": events,
        "running": juliet.running,
        "connections": proxy.connections_accepted,
    }


async def use_connected_timeout(run: Run) -> dict[str, Any]:
    """A dead link: entering ``client.connected(timeout=...)`` times out and stops the client."""
    proxy = await run.proxy()
    juliet = run.client(port=proxy.port)
    proxy.black_hole()
    error = None
    try:
        async with juliet.connected(timeout=0.5):
            pass
    except TimeoutError as exc:
        error = type(exc).__name__
    return {"error": error, "running": juliet.running}


Scenario = Callable[[Run], Awaitable[dict[str, Any]]]

SCENARIOS: Final[dict[str, Scenario]] = {
    scenario.__name__: scenario
    for scenario in (
        connect,
        send_receive,
        iq_round_trip,
        cut_and_resume,
        enqueue_while_suspended,
        stop_racing_reset,
        presence_after_restart,
        wrong_password,
        use_connected_timeout,
    )
}

EXPECTED: Final[dict[str, dict[str, Any]]] = {
    "connect": {
        "established": True,
        "running": True,
        "suspended": False,
        "jid": "juliet@xmppnode.test/node",
        "sm_enabled": True,
        "events": [
            "before_stream_established: awaited",
            "before_stream_established",
            "on_stream_established",
            "on_stream_destroyed",
            "on_stopped",
        ],
        "running_after_stop": False,
    },
    "send_receive": {
        "stream_is_client_stream": True,
        "token_state": "ACKED",
        "bodies": ["sent", "enqueued"],
        "running_after_block": False,
    },
    "iq_round_trip": {
        "answer": [f"{{{ECHO_NS}}}answer", "WHEREFORE"],
        "from_cb": "response of type result",
        "error": "service-unavailable",
    },
    "cut_and_resume": {
        "established": True,
        "states": ["ACKED"],
        "connections": 2,
        "bodies": [str(n) for n in range(10)],
        "events": ["on_stream_suspended", "on_stream_resumed"],
    },
    "enqueue_while_suspended": {
        "during": {"established": True, "event": True, "suspended": True, "queued": 2},
        "bodies": ["before", "enqueued", "sent"],
    },
    "stop_racing_reset": {
        "outcomes": [
            {
                "same_deferred": True,
                "stops": 1,
                "failures": 0,
                "running": False,
                "idle": 0,
                "attempts_after_stop": 0,
                "timers_left": [],
            }
        ]
        * 8
    },
    "presence_after_restart": {
        "seen": ["available", "unavailable"] * 3,
        "same": True,
    },
    "wrong_password": {
        "error": "AuthenticationFailure",
        "is_authentication_failure": True,
        "condition": "not-authorized",
        "events": ["on_failure"],
        "running": False,
        "connections": 1,
    },
    "use_connected_timeout": {"error": "TimeoutError", "running": False},
}


async def run_scenario(run: Run, name: str) -> dict[str, Any]:
    """Run scenario *name* on *run*, then release its clients and proxies."""
    try:
        return await SCENARIOS[name](run)
    finally:
        await run.close()


def main(argv: list[str]) -> int:
    """Run one scenario on the asyncio face and print its result as JSON."""
    (name,) = argv
    server = ServerInfo.from_json(os.environ[SERVER_ENV])

    async def scenario() -> dict[str, Any]:
        run = AsyncioRun(server)
        return await asyncio.wait_for(run_scenario(run, name), SCENARIO_TIMEOUT)

    print(json.dumps(asyncio.run(scenario())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
