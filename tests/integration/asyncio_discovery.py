"""The asyncio face's ``discover_connectors(domain, loop=None, logger=...)`` against the real
dnsmasq, in a process of its own (the asyncio reactor cannot be installed in pytest's process)::

    TXXMPPNODE_TEST_DNS=127.0.0.1:5353 python -m tests.integration.asyncio_discovery

prints one JSON line: for each call, the options found and the lines each :mod:`logging`
logger received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
from typing import Any, Final

from tests.support.dnsmasq import BOTH_SERVICES_DOMAIN, NO_RECORDS_DOMAIN

DNS_ENV: Final = "TXXMPPNODE_TEST_DNS"
#: the logger an application passes
MINE: Final = "my.app.discovery"
#: where discovery logs when it is given no logger
DEFAULT: Final = "txxmppnode.discovery"


class Lines(logging.Handler):
    """The messages one logger received, at every level."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def _options(options: list[Any]) -> list[list[Any]]:
    return [[host, port, type(connector).__name__] for host, port, connector in options]


async def main(host: str, port: int) -> dict[str, Any]:
    from txxmppnode.asyncio_compat import discover_connectors, install_reactor

    install_reactor()
    from twisted.names.client import Resolver

    def resolver() -> Any:
        return Resolver(servers=[(host, port)])  # type: ignore[no-untyped-call]

    mine, default = Lines(MINE), Lines(DEFAULT)
    logger = logging.getLogger(MINE)
    both = await discover_connectors(
        BOTH_SERVICES_DOMAIN, logger=logger, resolver=resolver(), rng=random.Random(0)
    )
    result: dict[str, Any] = {
        "both": {"options": _options(both), "mine": mine.take(), "default": default.take()}
    }
    loop = asyncio.get_running_loop()
    none = await discover_connectors(NO_RECORDS_DOMAIN, loop, logger, resolver=resolver())
    result["none"] = {"options": _options(none), "mine": mine.take(), "default": default.take()}
    unlogged = await discover_connectors(NO_RECORDS_DOMAIN, resolver=resolver())
    result["no_logger"] = {
        "options": _options(unlogged),
        "mine": mine.take(),
        "default": default.take(),
    }
    return result


if __name__ == "__main__":
    dns_host, _, dns_port = os.environ[DNS_ENV].rpartition(":")
    print(json.dumps(asyncio.run(main(dns_host, int(dns_port)))))
    sys.exit(0)
