"""The aioxmpp side of ``connect.py``, run by an interpreter that has aioxmpp 0.13.

``connect.py`` starts it as ``PYTHON _aioxmpp_connect.py PLAN``, PLAN being JSON::

    {"jid": "aioxmpp@xmppnode.test", "password": "...", "ca": "/tmp/.../ca.pem",
     "host": "127.0.0.1", "connections": [[port, resource], ...]}

Each connection is made by a new ``aioxmpp.Client`` over STARTTLS to ``host:port``, is
measured from ``start()`` to ``on_stream_established`` and is stopped (``on_stopped``) before the
next one.  It prints one JSON line: ``{"version": ..., "runs": [[began, established, cpu],
...]}``, the instants from ``time.monotonic()`` (the system's monotonic clock, which the parent
shares) and the CPU time the process used in between (``time.process_time()``).

Only the standard library and aioxmpp are imported: this file runs outside the project's
virtualenv (see ``connect.py`` for why).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from typing import Any

import aioxmpp
import aioxmpp.connector
import aioxmpp.security_layer

TIMEOUT = 30.0


def security_layer(password: str, ca: str) -> Any:
    """aioxmpp's default security layer (PKIX, SASL with the password), trusting *ca* too."""

    def context() -> Any:
        ctx = aioxmpp.security_layer.default_ssl_context()
        ctx.load_verify_locations(ca)
        return ctx

    return aioxmpp.make_security_layer(password, ssl_context_factory=context)


async def connect_once(
    plan: dict[str, Any], security: Any, port: int, resource: str
) -> list[float]:
    loop = asyncio.get_running_loop()
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(f"{plan['jid']}/{resource}"),
        security,
        override_peer=[(plan["host"], port, aioxmpp.connector.STARTTLSConnector())],
        max_initial_attempts=1,
    )
    established: asyncio.Future[tuple[float, float]] = loop.create_future()
    stopped: asyncio.Future[None] = loop.create_future()

    def on_established() -> None:
        if not established.done():
            established.set_result((time.monotonic(), time.process_time()))

    def on_failure(exc: BaseException) -> None:
        if not established.done():
            established.set_exception(exc)

    def on_stopped() -> None:
        if not stopped.done():
            stopped.set_result(None)

    client.on_stream_established.connect(on_established)
    client.on_failure.connect(on_failure)
    client.on_stopped.connect(on_stopped)
    began, began_cpu = time.monotonic(), time.process_time()
    client.start()
    at, at_cpu = await asyncio.wait_for(established, TIMEOUT)
    if not client.stream.sm_enabled:
        raise RuntimeError("aioxmpp: established without stream management")
    client.stop()
    await asyncio.wait_for(stopped, TIMEOUT)
    return [began, at, at_cpu - began_cpu]


async def run(plan: dict[str, Any]) -> list[list[float]]:
    security = security_layer(plan["password"], plan["ca"])
    return [
        await connect_once(plan, security, port, resource) for port, resource in plan["connections"]
    ]


def main() -> None:
    plan = json.loads(sys.argv[1])
    runs = asyncio.run(run(plan))
    print(json.dumps({"version": version("aioxmpp"), "runs": runs}))


if __name__ == "__main__":
    main()
