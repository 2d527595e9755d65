"""What the end-to-end benchmarks share for slixmpp: knowing when a client is ready.

slixmpp has no single "established" event: a client is ready for the benchmarks once it has
both started its session and enabled stream management (XEP-0198), in either order.
``connect.py`` keeps its own version, which also takes the time of the moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import slixmpp

#: The events that together mean ready.
READY_EVENTS = frozenset({"session_start", "sm_enabled"})


def ready_future(
    xmpp: slixmpp.ClientXMPP, who: str, failure_events: Iterable[str]
) -> asyncio.Future[None]:
    """A future set once *xmpp* is ready, failed with :class:`RuntimeError` on any of
    *failure_events* first (*who* names the client in the error)."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    awaited = set(READY_EVENTS)

    def reached(event: str) -> Callable[[Any], None]:
        def handler(_: Any = None) -> None:
            awaited.discard(event)
            if not awaited and not ready.done():
                ready.set_result(None)

        return handler

    def failed(data: Any = None) -> None:
        if not ready.done():
            ready.set_exception(RuntimeError(f"{who} could not connect: {data!r}"))

    for event in READY_EVENTS:
        xmpp.add_event_handler(event, reached(event))
    for event in failure_events:
        xmpp.add_event_handler(event, failed)
    return ready
