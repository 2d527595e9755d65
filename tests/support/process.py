"""Stopping the server processes the test harness starts (Prosody, dnsmasq)."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Stop *process* with SIGTERM, then SIGKILL after *timeout* seconds; None or gone is fine."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
