"""What the test suite's real XMPP servers (Prosody, ejabberd) have in common.

:class:`LocalServer` is the part of :class:`~tests.support.prosody.ProsodyServer` and
:class:`~tests.support.ejabberd.EjabberdServer` that does not depend on the server: the
accounts, the ports chosen at the first start, the log file, the process and how it stops.  A
subclass sets the attributes in its constructor and writes ``start()``.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Self

from tests.support.process import terminate

__all__ = ["LOOPBACK", "Account", "LocalServer", "free_ports"]

LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True)
class Account:
    """A registered account on a test server."""

    localpart: str
    password: str
    jid: str


def free_ports(count: int) -> list[int]:
    """Return *count* distinct loopback TCP ports that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalServer:
    """A server process on 127.0.0.1 with its own directory, accounts and log.

    Subclasses set :attr:`domain`, :attr:`directory` and :attr:`log_path`, fill
    ``_accounts``, and set ``_ports`` (STARTTLS port first, direct TLS second) and
    ``_process`` when they start.
    """

    host: str = LOOPBACK
    #: seconds :meth:`stop` waits after SIGTERM before SIGKILL
    stop_timeout: float = 5.0

    domain: str
    directory: Path
    log_path: Path
    _accounts: dict[str, str]
    _ports: tuple[int, ...] | None = None
    _process: subprocess.Popen[bytes] | None = None
    _console: IO[bytes] | None = None

    # -- public attributes --------------------------------------------------------------------

    @property
    def starttls_port(self) -> int:
        """The c2s port (STARTTLS); known once the server has started."""
        return self._require_ports()[0]

    @property
    def direct_tls_port(self) -> int:
        """The c2s direct-TLS port (XEP-0368); known once the server has started."""
        return self._require_ports()[1]

    @property
    def accounts(self) -> Mapping[str, str]:
        """A read-only view of the registered accounts: local part to password."""
        return types.MappingProxyType(self._accounts)

    @property
    def pid(self) -> int | None:
        """The PID of the running server, or ``None``."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def jid(self, localpart: str) -> str:
        """Return the bare JID ``localpart@domain``."""
        return f"{localpart}@{self.domain}"

    def account(self, localpart: str) -> Account:
        """Return the registered account *localpart*."""
        return Account(localpart, self._accounts[localpart], self.jid(localpart))

    def _require_ports(self) -> tuple[int, ...]:
        """Return the ports, or raise if the server never started."""
        if self._ports is None:
            raise RuntimeError("the ports are chosen by start(); start the server first")
        return self._ports

    # -- logs ---------------------------------------------------------------------------------

    def log_since(self, offset: int) -> tuple[str, int]:
        """Return the log from byte *offset* on, and the offset where that text ends."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                data = log.read()
        except FileNotFoundError:
            return "", offset
        return data.decode("utf-8", "replace"), offset + len(data)

    def log_text(self, offset: int = 0) -> str:
        """Return the server's log from byte *offset* on (everything by default)."""
        return self.log_since(offset)[0]

    def log_tail(self, lines: int = 60) -> str:
        """Return the last *lines* lines of the server's log."""
        return "\n".join(self.log_text().splitlines()[-lines:]) if lines > 0 else ""

    def log_size(self) -> int:
        """Return the log's current size: an offset for :meth:`log_text` to read what follows."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    # -- process control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        raise NotImplementedError

    def _accepts(self, port: int) -> bool:
        """Return whether a TCP connection to *port* on the loopback address succeeds."""
        try:
            with socket.create_connection((self.host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server with SIGTERM, then SIGKILL after *timeout* seconds; repeatable."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        try:
            terminate(process, self.stop_timeout if timeout is None else timeout)
        finally:
            if self._console is not None:
                self._console.close()
                self._console = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same accounts."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    def __repr__(self) -> str:
        """Return a summary with the domain, ports and state."""
        ports = f"{self._ports[0]}/{self._ports[1]}" if self._ports else "no ports yet"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.domain} {ports} {state} in {self.directory}>"
