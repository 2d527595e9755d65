"""What the benchmarks against a real server share: a local Prosody and the process's figures.

``connect.py``, ``memory.py`` and ``resume.py`` import this module by name: Python puts a
script's own directory first on ``sys.path``, so run them as scripts (``make bench-connect``,
``make bench-memory``, ``make bench-resume``).  The server is the test suite's
:class:`ProsodyServer` (a generated CA, loopback ports, a private directory), which this module
imports from the repository's root.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the root, for tests.support

from tests.support.prosody import DEFAULT_MODULES, ProsodyServer

__all__ = [
    "LOOPBACK",
    "MODULES",
    "NO_NAGLE",
    "ProsodyServer",
    "cpu_seconds",
    "rss_kib",
    "start_prosody",
]

LOOPBACK: Final = "127.0.0.1"
#: Small writes leave at once: without it Prosody's replies can wait for our delayed ACKs.
NO_NAGLE: Final = "network_settings = { nagle = false }"
#: roster, saslauth, tls, disco, ping, smacks: no MAM, nothing stored or pushed per session.
MODULES: Final = tuple(name for name in DEFAULT_MODULES if name != "mam")


def start_prosody(
    directory: Path, accounts: Sequence[str], *, global_config_lua: str = ""
) -> ProsodyServer:
    """Start a Prosody for a benchmark: Nagle off, MAM off, *accounts* registered."""
    server = ProsodyServer(
        directory,
        accounts=accounts,
        modules=MODULES,
        log_level="info",  # the level of the "Activated service" lines the start waits for
        global_config_lua=global_config_lua,
    )
    if NO_NAGLE not in server.config_text(0, 0):
        server.global_config_lua += "\n" + NO_NAGLE
    server.start()
    return server


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size of a process (``VmRSS`` in ``/proc/PID/status``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds() -> float:
    """User plus system CPU time this process has used (``getrusage``), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
