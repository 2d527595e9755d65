"""The Client scenarios of :mod:`tests.integration.client_scenarios`, on both faces and against
both servers, and the asyncio face's own checks (:mod:`tests.integration.asyncio_checks`).

The Twisted face runs in this process's reactor thread.  The asyncio face cannot: this process
has Twisted's default reactor installed, and the asyncio face installs the asyncio reactor on
its own loop; so each of its scenarios runs in a subprocess under ``asyncio.run``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from tests.conftest import XMPPServer
from tests.integration.asyncio_checks import CHECKS
from tests.integration.asyncio_checks import EXPECTED as ASYNCIO_EXPECTED
from tests.integration.client_scenarios import (
    EXPECTED,
    SCENARIO_TIMEOUT,
    SCENARIOS,
    SERVER_ENV,
    ServerInfo,
    TwistedRun,
    run_scenario,
)
from tests.support.prosody import ProsodyServer
from tests.support.reactor import ReactorThread

ROOT = Path(__file__).resolve().parents[2]


def run_twisted(name: str, server: ServerInfo, reactor_thread: ReactorThread) -> Any:
    def scenario() -> defer.Deferred[Any]:
        run = TwistedRun(server, reactor_thread.reactor)
        return defer.Deferred.fromCoroutine(run_scenario(run, name))

    return reactor_thread.run(scenario, timeout=SCENARIO_TIMEOUT)


def run_module(module: str, name: str, server: ServerInfo) -> Any:
    """Run ``python -m module name`` with the server's details; return its JSON output."""
    result = subprocess.run(
        [sys.executable, "-m", module, name],
        cwd=ROOT,
        env={**os.environ, SERVER_ENV: server.to_json()},
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT + 15,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("face", ["twisted", "asyncio"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(
    name: str, face: str, xmpp_server: XMPPServer, reactor_thread: ReactorThread
) -> None:
    """Each scenario, on each face, against each server (Prosody and ejabberd)."""
    server = ServerInfo.of(xmpp_server)
    if face == "twisted":
        outcome = run_twisted(name, server, reactor_thread)
    else:
        outcome = run_module("tests.integration.client_scenarios", name, server)
    assert outcome == EXPECTED[name]


@pytest.mark.parametrize("name", list(CHECKS))
def test_asyncio_only(name: str, prosody: ProsodyServer) -> None:
    outcome = run_module("tests.integration.asyncio_checks", name, ServerInfo.of(prosody))
    assert outcome == ASYNCIO_EXPECTED[name]
