"""What only the asyncio face has, checked against a real Prosody, one check per process.

Each check is a plain function ``check(server) -> dict`` that runs its own event loop(s) (some
need two, or a reactor imported first); :data:`EXPECTED` is what each must return.  Run one
with::

    TXXMPPNODE_TEST_SERVER='{...}' python -m tests.integration.asyncio_checks NAME

which prints the result as one JSON line.  The Client scenarios shared with the Twisted face
are in :mod:`tests.integration.client_scenarios`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

from lxml import etree

from tests.integration.client_scenarios import (
    SCENARIO_TIMEOUT,
    SERVER_ENV,
    AsyncioRun,
    ServerInfo,
)

NS: Final = "urn:example:checks"


class Records(logging.Handler):
    """The messages logged to one :mod:`logging` logger."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_checked(server: ServerInfo, body: Callable[[AsyncioRun], Awaitable[Any]]) -> Any:
    """``asyncio.run`` *body* with a fresh :class:`AsyncioRun`, released afterwards."""

    async def main() -> Any:
        run = AsyncioRun(server)
        try:
            return await asyncio.wait_for(body(run), SCENARIO_TIMEOUT)
        finally:
            await run.close()

    return asyncio.run(main())


def _chat(run: AsyncioRun, to: Any, body: str) -> Any:
    return run.face.Message(to=to, type_="chat", body=body)


def _request(run: AsyncioRun, to: Any, tag: str) -> Any:
    return run.face.IQ(run.face.IQType.GET, to=to, payload=etree.Element(f"{{{NS}}}{tag}"))


# -- checks --------------------------------------------------------------------------------------


def cancellation(server: ServerInfo) -> dict[str, Any]:
    """Cancelling a task, ``asyncio.wait_for`` and ``gather`` reach the Twisted operations."""

    async def body(run: AsyncioRun) -> dict[str, Any]:
        juliet, romeo = run.client(), run.client("romeo")
        bodies: list[str] = []
        marker = asyncio.get_running_loop().create_future()

        def received(message: Any) -> None:
            if message.body == "marker":
                marker.set_result(None)
            else:
                bodies.append(message.body)

        async with romeo.connected(timeout=10):
            romeo.stream.register_message_callback("chat", None, received)

            async def never_answer(iq: Any) -> None:
                await asyncio.Event().wait()

            romeo.stream.register_iq_request_handler("get", f"{{{NS}}}hang", never_answer)
            # waits for the stream, which is not there yet: cancelled, it must never be sent
            pending = asyncio.ensure_future(juliet.send(_chat(run, romeo.local_jid, "cancelled")))
            await asyncio.sleep(0.05)
            pending.cancel()
            async with juliet.connected(timeout=10):
                timed_out = []
                try:
                    await asyncio.wait_for(juliet.send(_request(run, romeo.local_jid, "hang")), 0.2)
                except TimeoutError:
                    timed_out.append("iq")
                try:
                    await asyncio.wait_for(juliet.on_stream_destroyed.next(), 0.05)
                except TimeoutError:
                    timed_out.append("signal")
                waiters_left = len(juliet.core.on_stream_destroyed._waiters)
                sent = await asyncio.gather(
                    *(juliet.send(_chat(run, romeo.local_jid, str(n))) for n in range(3))
                )
                await juliet.send(_chat(run, romeo.local_jid, "marker"))
                await marker
        return {
            "pending_cancelled": pending.cancelled(),
            "timed_out": timed_out,
            "waiters_left": waiters_left,
            "gathered": sent,
            "bodies": bodies,
        }

    return run_checked(server, body)  # type: ignore[no-any-return]


def coroutine_callbacks(server: ServerInfo) -> dict[str, Any]:
    """Coroutine listeners and stanza callbacks run as tasks; failures go to logging."""
    failures = Records("txxmppnode.asyncio_compat._bridge")

    async def body(run: AsyncioRun) -> dict[str, Any]:
        juliet, romeo = run.client(), run.client("romeo")
        seen: list[str] = []
        done = asyncio.get_running_loop().create_future()

        async def established() -> None:
            await asyncio.sleep(0)
            seen.append("established (task)")

        async def broken() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("a broken listener")

        async def message(msg: Any) -> None:
            await asyncio.sleep(0.01)
            seen.append(f"message {msg.body} (task)")
            done.set_result(None)

        states: list[tuple[bool, str]] = []

        def state_changed(token: Any, state: Any) -> None:
            states.append((isinstance(token, run.face.StanzaToken), state.name))

        juliet.on_stream_established.connect(established)
        juliet.on_stream_established.connect(broken)
        async with juliet.connected(timeout=10), romeo.connected(timeout=10):
            romeo.stream.register_message_callback("chat", None, message)
            token = juliet.enqueue(
                _chat(run, romeo.local_jid, "hello"), on_state_change=state_changed
            )
            await token
            await done
        return {
            "seen": seen,
            "states": states,
            "token_type": type(token).__name__,
            "logged": [m.splitlines()[0] for m in failures.messages],
        }

    return run_checked(server, body)  # type: ignore[no-any-return]


def cancel_while_connecting(server: ServerInfo) -> dict[str, Any]:
    """Cancelling the task entering ``client.connected()`` stops the client it started."""

    async def body(run: AsyncioRun) -> dict[str, Any]:
        proxy = await run.proxy()
        juliet = run.client(port=proxy.port)
        proxy.black_hole()
        stopped = juliet.on_stopped.next()

        async def enter() -> None:
            async with juliet.connected():
                pass

        task = asyncio.ensure_future(enter())
        await asyncio.sleep(0.2)
        running_before = juliet.running
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(stopped, 5)
        return {"running_before": running_before, "running_after": juliet.running}

    return run_checked(server, body)  # type: ignore[no-any-return]


def logging_goes_to_stdlib(server: ServerInfo) -> dict[str, Any]:
    """The client's *logger* gets the client's log; the core's modules log under their names."""
    mine = Records("my.app.xmpp")
    negotiation = Records("txxmppnode.negotiation")

    async def body(run: AsyncioRun) -> None:
        juliet = run.client(logger=logging.getLogger("my.app.xmpp"))
        async with juliet.connected(timeout=10):
            pass

    run_checked(server, body)
    return {
        "client": [m for m in mine.messages if m.startswith(("stream established", "stopped"))],
        "negotiation": any("authenticated with" in m for m in negotiation.messages),
    }


def presence_and_services(server: ServerInfo) -> dict[str, Any]:
    """PresenceManagedClient, the PresenceServer face, and an asyncio service's async shutdown."""
    from txxmppnode import PresenceServer as CorePresenceServer
    from txxmppnode.asyncio_compat import PresenceServer, Service

    shutdowns: list[str] = []

    class Greeter(Service):
        ORDER_AFTER = frozenset({PresenceServer})

        async def shutdown(self) -> None:  # type: ignore[override]  # the core's says Deferred
            await asyncio.sleep(0.01)
            shutdowns.append(f"shut down by {type(self.client).__name__}")

    async def body(run: AsyncioRun) -> dict[str, Any]:
        face = run.face
        juliet = run.client(cls="PresenceManagedClient")
        greeter = juliet.summon(Greeter)
        presence = juliet.summon(PresenceServer)
        sent = presence.on_presence_sent.next()
        online = juliet.on_presence_sent.next()
        async with juliet.connected(timeout=10):
            stanza = await sent
            await online
            result = {
                "available": juliet.presence.available,
                "sent_type": stanza.get("type"),
                "same_service": greeter.dependency(PresenceServer) is presence,
                "core_service": type(juliet.summon(CorePresenceServer)).__module__,
                "face_state_is_core_state": presence.state is presence.core.state,
            }
            presence.set_presence(face.PresenceState(True, "away"), "brb")
            result["stanza_show"] = presence.make_stanza().show.value
        return {**result, "shutdowns": shutdowns, "running": juliet.running}

    return run_checked(server, body)  # type: ignore[no-any-return]


def low_level(server: ServerInfo) -> dict[str, Any]:
    """``connect_xmlstream`` and ``discover_connectors`` as coroutines."""

    async def body(run: AsyncioRun) -> dict[str, Any]:
        face = run.face
        security = face.make_security_layer(
            server.accounts["juliet"], trust_root=server.ca_pem_path
        )
        peer = [(server.host, server.starttls_port, face.STARTTLSConnector())]
        _, xmlstream, features = await face.connect_xmlstream(
            face.JID.fromstr(server.jid("juliet")), security, 5.0, peer
        )
        was_open = xmlstream.is_open
        reason = await xmlstream.close()
        options = await face.discover_connectors("nowhere.invalid", timeout=0.5)
        return {
            "xmlstream": type(xmlstream).__module__,
            "was_open": was_open,
            "closed_cleanly": reason is None and not xmlstream.is_open,
            "has_bind": features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None,
            "discovered": [(host, port, type(c).__name__) for host, port, c in options],
        }

    return run_checked(server, body)  # type: ignore[no-any-return]


def two_loops_in_turn(server: ServerInfo) -> dict[str, Any]:
    """``asyncio.run`` twice in one process: the reactor moves to the second loop."""

    async def body(run: AsyncioRun) -> str:
        juliet = run.client()
        async with juliet.connected(timeout=10):
            return str(juliet.local_jid)

    return {"first": run_checked(server, body), "second": run_checked(server, body)}


def conflicts(server: ServerInfo) -> dict[str, Any]:
    """Clear errors: no running loop; another reactor installed first."""
    from txxmppnode.asyncio_compat import JID, Client, ReactorConflict, make_security_layer

    security = make_security_layer("secret")
    errors: dict[str, str] = {}
    try:
        Client(JID.fromstr(server.jid("juliet")), security)
    except ReactorConflict as exc:
        errors["outside_loop"] = str(exc)
    from twisted.internet import reactor  # the default reactor, as a Twisted program would

    async def construct() -> None:
        Client(JID.fromstr(server.jid("juliet")), security)

    try:
        asyncio.run(construct())
    except ReactorConflict as exc:
        errors["other_reactor"] = str(exc)
    return {
        "outside_loop": "no running asyncio event loop" in errors.get("outside_loop", ""),
        "other_reactor": f"{type(reactor).__name__} is installed already"
        in errors.get("other_reactor", ""),
        "says_what_to_do": "asyncioreactor.install" in errors.get("other_reactor", ""),
    }


CHECKS: Final[dict[str, Callable[[ServerInfo], dict[str, Any]]]] = {
    check.__name__: check
    for check in (
        cancellation,
        coroutine_callbacks,
        cancel_while_connecting,
        logging_goes_to_stdlib,
        presence_and_services,
        low_level,
        two_loops_in_turn,
        conflicts,
    )
}

EXPECTED: Final[dict[str, dict[str, Any]]] = {
    "cancellation": {
        "pending_cancelled": True,
        "timed_out": ["iq", "signal"],
        "waiters_left": 0,
        "gathered": [None, None, None],
        "bodies": ["0", "1", "2"],
    },
    "coroutine_callbacks": {
        "seen": ["established (task)", "message hello (task)"],
        "states": [[True, "SENT"], [True, "ACKED"]],
        "token_type": "StanzaToken",
        "logged": [
            "listener of Client.on_stream_established failed: Traceback (most recent call last):"
        ],
    },
    "cancel_while_connecting": {"running_before": True, "running_after": False},
    "logging_goes_to_stdlib": {
        "client": ["stream established as juliet@xmppnode.test/node", "stopped"],
        "negotiation": True,
    },
    "presence_and_services": {
        "available": True,
        "sent_type": None,
        "same_service": True,
        "core_service": "txxmppnode.presence_server",
        "face_state_is_core_state": True,
        "stanza_show": "away",
        "shutdowns": [],  # services live as long as the client: a stop shuts none down
        "running": False,
    },
    "low_level": {
        "xmlstream": "txxmppnode.asyncio_compat.stream",
        "was_open": True,
        "closed_cleanly": True,
        "has_bind": True,
        "discovered": [["nowhere.invalid", 5222, "STARTTLSConnector"]],
    },
    "two_loops_in_turn": {
        "first": "juliet@xmppnode.test/node",
        "second": "juliet@xmppnode.test/node",
    },
    "conflicts": {"outside_loop": True, "other_reactor": True, "says_what_to_do": True},
}


def main(argv: list[str]) -> int:
    """Run one check and print its result as JSON."""
    (name,) = argv
    server = ServerInfo.from_json(os.environ[SERVER_ENV])
    print(json.dumps(CHECKS[name](server)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
