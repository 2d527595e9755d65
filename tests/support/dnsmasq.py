"""A real DNS server (dnsmasq) on the loopback address, serving records chosen by the tests.

:class:`DnsmasqServer` writes a self-contained dnsmasq configuration into a private directory
(no upstream servers, no ``/etc/hosts``, no cache), picks a port that is free for both UDP and
TCP, runs ``dnsmasq -k`` in the foreground as a child process and waits until it answers a
query.  It has no pytest dependency::

    with DnsmasqServer(Path(tmp), [LocalDomain("a.test"), SRV("_xmpp-client._tcp.a.test",
                                                              "xmpp.a.test", 5222)]) as dns:
        resolver = dns.resolver()  # a twisted.names client for this server only

:data:`DEFAULT_RECORDS` is the zone the session fixture serves: one domain per SRV discovery
scenario (see the ``*_DOMAIN`` constants).

dnsmasq facts the configuration relies on:

* ``srv-host=NAME`` without a target answers with the ``.`` ("service not available") record;
* ``local=/DOMAIN/`` makes dnsmasq answer for the whole domain from its own configuration only,
  so names there that it has no record for are NXDOMAIN; a name outside every local domain gets
  REFUSED, since no upstream server is configured;
* with ``log-facility=-`` and ``-k`` it logs (every query, with ``log-queries``) to stderr, which
  goes to :attr:`DnsmasqServer.log_path`;
* a port it cannot bind makes it exit at once with "failed to create listening socket".
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypeAlias

from tests.support.process import terminate

if TYPE_CHECKING:
    from twisted.names.client import Resolver

__all__ = [
    "BOTH_SERVICES_DOMAIN",
    "DEFAULT_RECORDS",
    "DIRECT_TLS_ONLY_DOMAIN",
    "DISABLED_DOMAIN",
    "LOOPBACK",
    "NO_RECORDS_DOMAIN",
    "REFUSED_DOMAIN",
    "SRV",
    "AddressRecord",
    "DnsmasqError",
    "DnsmasqNotInstalledError",
    "DnsmasqServer",
    "LocalDomain",
    "Record",
    "free_dns_port",
    "free_udp_port",
    "probe",
]

LOOPBACK: Final = "127.0.0.1"

_PORT_ATTEMPTS: Final = 3
_POLL_INTERVAL: Final = 0.005
_PROBE_TIMEOUT: Final = 0.2
_NOERROR: Final = 0
# a local domain of the server's own: each instance answers one random name in it, which tells
# its answers from those of another dnsmasq that holds the port
_PROBE_DOMAIN: Final = "dnsmasq-ready.test"


class DnsmasqError(RuntimeError):
    """Something went wrong while preparing or starting dnsmasq."""


class DnsmasqNotInstalledError(DnsmasqError):
    """The ``dnsmasq`` executable was not found."""


class _PortInUseError(DnsmasqError):
    """dnsmasq could not bind the chosen port."""


@dataclass(frozen=True)
class SRV:
    """An SRV record (``srv-host``); ``target=None`` makes the ``.`` record (no service)."""

    name: str
    target: str | None = None
    port: int = 0
    priority: int = 0
    weight: int = 0

    def config_line(self) -> str:
        """Return the dnsmasq option for this record."""
        if self.target is None:
            return f"srv-host={self.name}"
        return f"srv-host={self.name},{self.target},{self.port},{self.priority},{self.weight}"


@dataclass(frozen=True)
class LocalDomain:
    """A domain answered from the configuration only: names without a record are NXDOMAIN."""

    domain: str

    def config_line(self) -> str:
        """Return the dnsmasq option for this domain."""
        return f"local=/{self.domain}/"


@dataclass(frozen=True)
class AddressRecord:
    """An A record for exactly *host* (``host-record``)."""

    host: str
    address: str = LOOPBACK

    def config_line(self) -> str:
        """Return the dnsmasq option for this record."""
        return f"host-record={self.host},{self.address}"


Record: TypeAlias = SRV | LocalDomain | AddressRecord

#: ``_xmpp-client`` and ``_xmpps-client`` records at several priorities and weights.
BOTH_SERVICES_DOMAIN: Final = "both.discovery.test"
#: ``.`` for ``_xmpp-client``, records for ``_xmpps-client``.
DIRECT_TLS_ONLY_DOMAIN: Final = "direct-only.discovery.test"
#: ``.`` for both services.
DISABLED_DOMAIN: Final = "disabled.discovery.test"
#: A local domain without any record: both lookups are NXDOMAIN.
NO_RECORDS_DOMAIN: Final = "none.discovery.test"
#: Outside every local domain: dnsmasq, with no upstream server, answers REFUSED.
REFUSED_DOMAIN: Final = "refused.example"

#: The records the session fixture serves (each scenario domain is a local domain).
DEFAULT_RECORDS: Final[tuple[Record, ...]] = (
    LocalDomain(BOTH_SERVICES_DOMAIN),
    SRV(f"_xmpp-client._tcp.{BOTH_SERVICES_DOMAIN}", f"c1.{BOTH_SERVICES_DOMAIN}", 5222, 10, 60),
    SRV(f"_xmpp-client._tcp.{BOTH_SERVICES_DOMAIN}", f"c2.{BOTH_SERVICES_DOMAIN}", 5223, 30, 0),
    SRV(f"_xmpp-client._tcp.{BOTH_SERVICES_DOMAIN}", f"c3.{BOTH_SERVICES_DOMAIN}", 5224, 10, 0),
    SRV(f"_xmpps-client._tcp.{BOTH_SERVICES_DOMAIN}", f"s1.{BOTH_SERVICES_DOMAIN}", 5270, 5, 10),
    SRV(f"_xmpps-client._tcp.{BOTH_SERVICES_DOMAIN}", f"s2.{BOTH_SERVICES_DOMAIN}", 443, 20, 1),
    AddressRecord(f"c1.{BOTH_SERVICES_DOMAIN}"),
    AddressRecord(f"s1.{BOTH_SERVICES_DOMAIN}"),
    LocalDomain(DIRECT_TLS_ONLY_DOMAIN),
    SRV(f"_xmpp-client._tcp.{DIRECT_TLS_ONLY_DOMAIN}"),
    SRV(
        f"_xmpps-client._tcp.{DIRECT_TLS_ONLY_DOMAIN}",
        f"tls.{DIRECT_TLS_ONLY_DOMAIN}",
        5223,
        0,
        5,
    ),
    LocalDomain(DISABLED_DOMAIN),
    SRV(f"_xmpp-client._tcp.{DISABLED_DOMAIN}"),
    SRV(f"_xmpps-client._tcp.{DISABLED_DOMAIN}"),
    LocalDomain(NO_RECORDS_DOMAIN),
)


def _bind_pair(port: int) -> tuple[socket.socket, socket.socket] | None:
    """Bind a TCP and a UDP socket to *port* on the loopback address (``None`` if taken)."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind((LOOPBACK, port))
        udp.bind((LOOPBACK, tcp.getsockname()[1] if port == 0 else port))
    except OSError:
        tcp.close()
        udp.close()
        return None
    return tcp, udp


def free_dns_port(attempts: int = 20) -> int:
    """Return a loopback port that was free for both TCP and UDP a moment ago."""
    for _ in range(attempts):
        pair = _bind_pair(0)
        if pair is not None:
            tcp, udp = pair
            port: int = tcp.getsockname()[1]
            tcp.close()
            udp.close()
            return port
    raise DnsmasqError(f"found no port free for both TCP and UDP in {attempts} attempts")


def free_udp_port() -> int:
    """Return a loopback UDP port that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOOPBACK, 0))
        port: int = udp.getsockname()[1]
        return port


def _encode_name(name: str) -> bytes:
    """Return *name* in DNS wire format (ASCII labels)."""
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def probe(port: int, name: str, timeout: float = _PROBE_TIMEOUT) -> int | None:
    """Send one UDP query for *name* (type A) to *port*; return the response code, or ``None``.

    ``None`` means no matching response arrived within *timeout* seconds.
    """
    query_id = secrets.randbelow(0x10000)
    # header: id, flags (RD), 1 question, no answer/authority/additional; then QTYPE A, QCLASS IN
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + _encode_name(name)
    packet += struct.pack("!HH", 1, 1)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((LOOPBACK, port))
        try:
            udp.send(packet)
            while (left := deadline - time.monotonic()) > 0:
                udp.settimeout(left)
                data = udp.recv(4096)
                if len(data) >= 4 and struct.unpack("!H", data[:2])[0] == query_id:
                    return int(data[3] & 0x0F)
        except OSError:  # timeout, or ICMP port unreachable (connection refused)
            return None
    return None


class DnsmasqServer:
    """One dnsmasq process with its own configuration, port and log.

    :param directory: a private directory (created if missing) for the configuration and log.
    :param records: what to serve; more can be added with :meth:`add` before :meth:`start`.
    :param start_timeout: seconds :meth:`start` waits for the first answer.
    :param dnsmasq: the executable (``dnsmasq`` on ``PATH``, else ``/usr/sbin/dnsmasq``).
    """

    host: str = LOOPBACK

    def __init__(
        self,
        directory: Path,
        records: Iterable[Record] = (),
        *,
        start_timeout: float = 10.0,
        dnsmasq: str | None = None,
    ) -> None:
        """Prepare the directory; nothing runs until :meth:`start`."""
        found = dnsmasq or shutil.which("dnsmasq")
        if found is None and os.access("/usr/sbin/dnsmasq", os.X_OK):
            found = "/usr/sbin/dnsmasq"
        if found is None:
            raise DnsmasqNotInstalledError(
                "the dnsmasq executable was not found (Debian package dnsmasq-base)"
            )
        self.dnsmasq_bin: str = found
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "dnsmasq.conf"
        self.log_path = self.directory / "dnsmasq.log"
        self.start_timeout = start_timeout
        self._records: list[Record] = list(records)
        self.probe_name = f"{secrets.token_hex(8)}.{_PROBE_DOMAIN}"
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # -- public attributes --------------------------------------------------------------------

    @property
    def records(self) -> tuple[Record, ...]:
        """The records served."""
        return tuple(self._records)

    @property
    def port(self) -> int:
        """The UDP and TCP port; known once :meth:`start` has run."""
        if self._port is None:
            raise DnsmasqError("the port is chosen by start(); start the server first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the server, as twisted.names takes name servers."""
        return (self.host, self.port)

    @property
    def pid(self) -> int | None:
        """The PID of the running dnsmasq, or ``None``."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the dnsmasq process is alive."""
        return self._process is not None and self._process.poll() is None

    def add(self, *records: Record) -> None:
        """Serve *records* too; only before :meth:`start` (dnsmasq reads them once)."""
        if self._process is not None:
            raise DnsmasqError("records can only be added before the server starts")
        self._records.extend(records)

    def resolver(self, timeout: tuple[float, ...] = (1.0, 3.0)) -> Resolver:
        """Return a :class:`twisted.names.client.Resolver` that asks this server only.

        It reads no system file (no ``/etc/resolv.conf`` or ``/etc/hosts``).  Create it in the
        reactor thread: it uses the global reactor.
        """
        from twisted.names.client import Resolver

        # Resolver is unannotated
        return Resolver(servers=[self.address], timeout=timeout)  # type: ignore[no-untyped-call]

    def log_text(self) -> str:
        """Return what dnsmasq logged (start-up messages and every query)."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- configuration ------------------------------------------------------------------------

    def config_text(self, port: int) -> str:
        """Return the dnsmasq configuration for *port*."""
        lines = [
            "# Generated for one test run: loopback only, no upstream servers or system files.",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "cache-size=0",
            f"listen-address={LOOPBACK}",
            "bind-interfaces",
            f"port={port}",
            "user=root",
            "pid-file=",
            "log-facility=-",
            "log-queries",
            f"local=/{_PROBE_DOMAIN}/",
            f"host-record={self.probe_name},{LOOPBACK}",
            "",
            *(record.config_line() for record in self._records),
        ]
        return "\n".join(lines) + "\n"

    # -- process control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start dnsmasq and wait until it answers a query.

        The first start picks a free port (retrying with another one if dnsmasq cannot bind
        it); a restart reuses it.  Raises :class:`DnsmasqError`, with the log, if dnsmasq exits
        or does not answer within :attr:`start_timeout`.
        """
        if self.running:
            raise DnsmasqError("dnsmasq is already running")
        attempts = 1 if self._port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._port or free_dns_port()
            self.config_path.write_text(self.config_text(port))
            try:
                self._launch(port)
            except _PortInUseError:
                if attempt == attempts:
                    raise
                continue
            self._port = port
            return

    def _launch(self, port: int) -> None:
        """Run dnsmasq once on *port* and wait until it answers."""
        began = time.monotonic()
        self._log = self.log_path.open("ab")
        log_offset = self._log.tell()
        self._process = subprocess.Popen(
            [self.dnsmasq_bin, "-k", "-C", str(self.config_path)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(port, began, log_offset)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(self, port: int, began: float, log_offset: int) -> None:
        """Poll until dnsmasq answers its own probe name; fail early if it exits."""
        assert self._process is not None
        deadline = began + self.start_timeout
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                log = self._log_since(log_offset)
                error = _PortInUseError if "Address already in use" in log else DnsmasqError
                raise error(self._failure_report(f"dnsmasq exited with {returncode}", log))
            if probe(port, self.probe_name) == _NOERROR:
                return
            if time.monotonic() > deadline:
                raise DnsmasqError(
                    self._failure_report(
                        f"dnsmasq did not answer on port {port} within {self.start_timeout} s",
                        self._log_since(log_offset),
                    )
                )
            time.sleep(_POLL_INTERVAL)

    def _log_since(self, offset: int) -> str:
        """Return the log from byte *offset* on."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _failure_report(self, headline: str, log: str) -> str:
        """Return *headline* with the configuration path and dnsmasq's output."""
        return (
            f"{headline}\ncommand: {self.dnsmasq_bin} -k -C {self.config_path}\n"
            f"--- dnsmasq output ---\n{log.strip() or '(empty)'}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dnsmasq with SIGTERM, then SIGKILL after *timeout* seconds; safe to repeat."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        try:
            terminate(process, timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> DnsmasqServer:
        """Start the server."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    def __repr__(self) -> str:
        """Return a summary with the port and state."""
        port = self._port if self._port is not None else "no port yet"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<DnsmasqServer 127.0.0.1:{port} {state} in {self.directory}>"
