"""A real Prosody server, started per test session (or per test) in a private directory.

:class:`ProsodyServer` generates a throwaway CA and a server certificate with trustme, writes a
self-contained Prosody configuration into its directory (nothing under ``/etc`` or ``/var`` is
read or written), picks free loopback ports, creates test accounts with ``prosodyctl register``
and runs ``prosody -F`` in the foreground as a child process.  It has no pytest dependency, so
benchmarks and scripts can use it too::

    with ProsodyServer(Path(tmp)) as server:
        print(server.jid("juliet"), server.accounts["juliet"], server.direct_tls_port)

Prosody facts the configuration relies on:

* the direct-TLS port (XEP-0368) takes its certificate per host from ``c2s_direct_tls_ssl`` (or
  the certificate directory), not from the host's ``ssl`` option that STARTTLS uses, so both are
  written; without it the TLS handshake fails with a ``handshake_failure`` alert;
* a port that cannot be bound is only logged: the process keeps running without it.  Readiness is
  therefore taken from Prosody's own "Activated service" log lines *and* a TCP connection, and a
  port clash is retried with new ports;
* the global ``ssl`` table is merged into every TLS context, so ``protocol`` set there applies to
  both STARTTLS and direct TLS.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

import trustme

from tests.support.local_server import LOOPBACK, Account, LocalServer, free_ports

__all__ = [
    "DEFAULT_ACCOUNTS",
    "DEFAULT_DOMAIN",
    "DEFAULT_MODULES",
    "LOOPBACK",
    "Account",
    "ProsodyError",
    "ProsodyNotInstalledError",
    "ProsodyServer",
    "ProsodyStartError",
    "free_ports",
    "write_self_signed_certificate",
]

DEFAULT_DOMAIN: Final = "xmppnode.test"
DEFAULT_ACCOUNTS: Final = ("juliet", "romeo", "nurse")
DEFAULT_MODULES: Final = ("roster", "saslauth", "tls", "disco", "ping", "smacks")

_TLS_PROTOCOLS: Final = {"1.2": "tlsv1_2", "1.3": "tlsv1_3"}
_PASSWORD_HASHES: Final = ("SHA-1", "SHA-256")
_LOG_LEVELS: Final = ("debug", "info", "warn", "error")
_PORT_ATTEMPTS: Final = 3
_POLL_INTERVAL: Final = 0.002


class ProsodyError(RuntimeError):
    """Something went wrong while preparing, starting or driving Prosody."""


class ProsodyNotInstalledError(ProsodyError):
    """The ``prosody`` or ``prosodyctl`` executable was not found."""


class ProsodyStartError(ProsodyError):
    """Prosody exited early or did not accept connections in time (the message has its log)."""


class _PortInUseError(ProsodyStartError):
    """Prosody could not bind one of the chosen ports."""


def _lua_string(value: str | os.PathLike[str]) -> str:
    """Return *value* as a double-quoted Lua string literal."""
    text = os.fspath(value)
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )
    return f'"{escaped}"'


def _lua_list(values: Iterable[str | int]) -> str:
    """Return a Lua table constructor holding *values* (strings quoted, integers as they are)."""
    items = [str(v) if isinstance(v, int) else _lua_string(v) for v in values]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def _tail(text: str, lines: int) -> str:
    """Return the last *lines* lines of *text*."""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def write_self_signed_certificate(
    directory: Path, name: str, *, stem: str = "self-signed"
) -> tuple[Path, Path]:
    """Write a self-signed certificate for *name* and its key; return ``(cert, key)`` paths.

    The certificate is its own trust anchor (for pinning tests): pass the paths to
    :class:`ProsodyServer` as ``cert_path``/``key_path`` and load the certificate as the
    client's trust root.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{stem}-cert.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ProsodyServer(LocalServer):
    """One Prosody instance with its own directory, certificates, ports and accounts.

    :param directory: a private directory (created if missing) for the configuration, data,
        certificates and logs; use a fresh one per instance.
    :param domain: the XMPP domain of the single VirtualHost.
    :param accounts: local parts registered before the first start, each with a random password.
    :param tls_max_version: ``None`` (Prosody's default, TLS 1.2 and 1.3), ``"1.2"`` (TLS 1.2
        only: the server then offers ``SCRAM-*-PLUS`` with ``tls-unique``) or ``"1.3"``.
    :param password_hash: ``None`` (SCRAM-SHA-1), ``"SHA-1"`` or ``"SHA-256"``: the hash family
        ``internal_hashed`` stores, hence the only SCRAM family the server can offer.
    :param require_encryption: ``c2s_require_encryption``.
    :param modules: ``modules_enabled``.
    :param log_level: the lowest level written to :attr:`log_path`.
    :param global_config_lua: Lua placed in the global section, before the VirtualHost.
    :param config_lua: Lua appended at the end of the file, i.e. inside the VirtualHost section.
    :param ca: a trustme CA to issue the server certificate from (e.g. shared by several
        servers); a new CA is made when omitted.
    :param cert_identities: the names in the issued certificate (default: ``[domain]``); use
        another name to test host-name mismatches.
    :param cert_path: the caller's own certificate (chain) PEM; with ``key_path``, it replaces
        the trustme certificate and :attr:`ca` is ``None``.
    :param key_path: the private key PEM matching ``cert_path``.
    :param start_timeout: seconds :meth:`start` waits for both ports to accept connections.
    :param prosody: the ``prosody`` executable (looked up on ``PATH`` when omitted).
    :param prosodyctl: the ``prosodyctl`` executable (looked up on ``PATH`` when omitted).
    """

    def __init__(
        self,
        directory: Path,
        *,
        domain: str = DEFAULT_DOMAIN,
        accounts: Sequence[str] = DEFAULT_ACCOUNTS,
        tls_max_version: str | None = None,
        password_hash: str | None = None,
        require_encryption: bool = True,
        modules: Sequence[str] = DEFAULT_MODULES,
        log_level: str = "debug",
        global_config_lua: str = "",
        config_lua: str = "",
        ca: trustme.CA | None = None,
        cert_identities: Sequence[str] | None = None,
        cert_path: Path | None = None,
        key_path: Path | None = None,
        start_timeout: float = 10.0,
        prosody: str | None = None,
        prosodyctl: str | None = None,
    ) -> None:
        """Prepare the directory and certificates; nothing runs until :meth:`start`."""
        if tls_max_version is not None and tls_max_version not in _TLS_PROTOCOLS:
            raise ValueError(f"tls_max_version must be one of {sorted(_TLS_PROTOCOLS)} or None")
        if password_hash is not None and password_hash not in _PASSWORD_HASHES:
            raise ValueError(f"password_hash must be one of {_PASSWORD_HASHES} or None")
        if log_level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {_LOG_LEVELS}")
        if (cert_path is None) != (key_path is None):
            raise ValueError("cert_path and key_path go together")
        if cert_path is not None and (ca is not None or cert_identities is not None):
            raise ValueError("cert_path/key_path exclude ca and cert_identities")

        self.prosody_bin = prosody or shutil.which("prosody")
        self.prosodyctl_bin = prosodyctl or shutil.which("prosodyctl")
        if not self.prosody_bin or not self.prosodyctl_bin:
            raise ProsodyNotInstalledError(
                "the prosody and prosodyctl executables are not on PATH (Debian package prosody)"
            )

        self.domain = domain
        self.tls_max_version = tls_max_version
        self.password_hash = password_hash
        self.require_encryption = require_encryption
        self.modules = tuple(modules)
        self.log_level = log_level
        self.global_config_lua = global_config_lua
        self.config_lua = config_lua
        self.start_timeout = start_timeout

        self.directory = Path(directory).absolute()
        self.data_path = self.directory / "data"
        self.certs_path = self.directory / "certs"
        self.plugins_path = self.directory / "plugins"
        for path in (self.directory, self.data_path, self.certs_path, self.plugins_path):
            path.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "prosody.cfg.lua"
        self.log_path = self.directory / "prosody.log"
        self.console_path = self.directory / "prosody.console"
        self.pidfile_path = self.directory / "prosody.pid"
        self.admin_socket_path = self.directory / "admin.sock"

        self.ca: trustme.CA | None
        self.ca_pem_path: Path | None
        if cert_path is not None and key_path is not None:
            self.ca = None
            self.ca_pem_path = None
            self.cert_pem_path = Path(cert_path).absolute()
            self.key_pem_path = Path(key_path).absolute()
        else:
            self.ca = ca if ca is not None else trustme.CA()
            self.ca_pem_path = self.directory / "ca.pem"
            self.cert_pem_path = self.directory / "server-chain.pem"
            self.key_pem_path = self.directory / "server-key.pem"
            self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
            issued = self.ca.issue_cert(*(cert_identities or [domain]))
            issued.private_key_pem.write_to_path(str(self.key_pem_path))
            chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
            self.cert_pem_path.write_bytes(chain)

        self._accounts: dict[str, str] = {}
        self._pending: list[str] = []
        for localpart in accounts:
            self._add_account(localpart, None)
        self._ports: tuple[int, int] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # -- logs ---------------------------------------------------------------------------------

    def console_text(self) -> str:
        """Return what Prosody wrote to stdout/stderr (startup and configuration errors)."""
        try:
            return self.console_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # -- accounts -----------------------------------------------------------------------------

    def register(self, localpart: str | None = None, password: str | None = None) -> Account:
        """Create an account (random password by default; random local part if omitted).

        Works before the first start (the account is created on start), while the server
        runs and after it stopped.
        """
        if localpart is None:
            localpart = f"user-{secrets.token_hex(4)}"
        password = self._add_account(localpart, password)
        if self.config_path.exists():
            try:
                self._register_pending()
            except BaseException:
                del self._accounts[localpart]
                raise
        return self.account(localpart)

    def _add_account(self, localpart: str, password: str | None) -> str:
        """Record a new account as pending and return its password."""
        if localpart in self._accounts:
            raise ValueError(f"account {localpart!r} already exists on {self.domain}")
        password = password if password is not None else secrets.token_urlsafe(18)
        self._accounts[localpart] = password
        self._pending.append(localpart)
        return password

    def _register_pending(self) -> None:
        """Create the pending accounts with ``prosodyctl register``, all at once.

        Each run writes only its own account file, so the runs can go in parallel; the
        accounts leave the pending list whether or not their registration succeeded.
        """
        assert self.prosodyctl_bin is not None
        pending, self._pending = self._pending, []
        runs = [
            (
                localpart,
                subprocess.Popen(
                    [
                        self.prosodyctl_bin,
                        "--config",
                        str(self.config_path),
                        "register",
                        localpart,
                        self.domain,
                        self._accounts[localpart],
                    ],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for localpart in pending
        ]
        failed: list[str] = []
        first_output = ""
        returncode = 0
        for localpart, run in runs:
            output, _ = run.communicate(timeout=30)
            if run.returncode != 0:
                if not failed:
                    first_output = output.decode("utf-8", "replace").strip()
                    returncode = run.returncode
                failed.append(localpart)
        if failed:
            raise ProsodyError(
                f"prosodyctl register failed for {', '.join(failed)} on {self.domain} "
                f"(exit {returncode}):\n{first_output}"
            )

    # -- configuration ------------------------------------------------------------------------

    def config_text(self, starttls_port: int, direct_tls_port: int) -> str:
        """Return the Prosody configuration for the given ports."""
        global_ssl = (
            {"protocol": _TLS_PROTOCOLS[self.tls_max_version]} if self.tls_max_version else {}
        )
        host_ssl = {"certificate": self.cert_pem_path, "key": self.key_pem_path}
        log_sink = (
            f"{{ levels = {{ min = {_lua_string(self.log_level)} }}, "
            f'to = "file", filename = {_lua_string(self.log_path)} }}'
        )
        lines = [
            "-- Generated for one test run; every path is inside this directory.",
            "run_as_root = true",
            f"data_path = {_lua_string(self.data_path)}",
            f"pidfile = {_lua_string(self.pidfile_path)}",
            f"admin_socket = {_lua_string(self.admin_socket_path)}",
            f"plugin_paths = {_lua_list([os.fspath(self.plugins_path)])}",
            f"installer_plugin_path = {_lua_string(self.plugins_path)}",
            f"certificates = {_lua_string(self.certs_path)}",
            f"log = {{ {log_sink} }}",
            f"interfaces = {_lua_list([LOOPBACK])}",
            f"c2s_interfaces = {_lua_list([LOOPBACK])}",
            f"c2s_direct_tls_interfaces = {_lua_list([LOOPBACK])}",
            f"c2s_ports = {_lua_list([starttls_port])}",
            f"c2s_direct_tls_ports = {_lua_list([direct_tls_port])}",
            "legacy_ssl_ports = {}",
            "s2s_ports = {}",
            "component_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            'modules_disabled = { "s2s" }',
            f"modules_enabled = {_lua_list(self.modules)}",
            f"c2s_require_encryption = {'true' if self.require_encryption else 'false'}",
            'authentication = "internal_hashed"',
            "network_settings = { nagle = false }",
        ]
        if self.password_hash is not None:
            lines.append(f"password_hash = {_lua_string(self.password_hash)}")
        if global_ssl:
            lines.append(f"ssl = {self._lua_table(global_ssl)}")
        if self.global_config_lua:
            lines += ["", "-- global_config_lua", self.global_config_lua]
        lines += [
            "",
            f"VirtualHost {_lua_string(self.domain)}",
            f"  ssl = {self._lua_table(host_ssl)}",
            # the direct-TLS service picks its per-host (SNI) certificate from this option
            f"  c2s_direct_tls_ssl = {self._lua_table(host_ssl)}",
        ]
        if self.config_lua:
            lines += ["", "-- config_lua (VirtualHost section)", self.config_lua]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _lua_table(fields: Mapping[str, str | os.PathLike[str]]) -> str:
        """Return a Lua table constructor with string values."""
        return "{ " + ", ".join(f"{k} = {_lua_string(v)}" for k, v in fields.items()) + " }"

    # -- process control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start Prosody and wait until both ports accept connections.

        The first start picks free ports (retrying with new ones if Prosody cannot bind
        them); later starts reuse the same ports so that clients can reconnect.  Raises
        :class:`ProsodyStartError`, with the log tail, if Prosody exits or is not ready
        within :attr:`start_timeout`.
        """
        if self.running:
            raise ProsodyError("Prosody is already running")
        attempts = 1 if self._ports is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            ports = self._ports or tuple(free_ports(2))
            starttls_port, direct_tls_port = ports
            self.config_path.write_text(self.config_text(starttls_port, direct_tls_port))
            try:
                self._launch(starttls_port, direct_tls_port)
            except _PortInUseError:
                if attempt == attempts:
                    raise
                continue
            self._ports = (starttls_port, direct_tls_port)
            return

    def _launch(self, starttls_port: int, direct_tls_port: int) -> None:
        """Run Prosody once on the given ports and wait for it to be ready."""
        assert self.prosody_bin is not None
        log_offset = self.log_size()
        self._console = self.console_path.open("ab")
        began = time.monotonic()
        self._process = subprocess.Popen(
            [self.prosody_bin, "--config", str(self.config_path), "-F"],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        try:
            # accounts are plain files that Prosody reads when a client authenticates, so they
            # can be created while it starts up
            try:
                self._register_pending()
            except ProsodyError as error:
                raise ProsodyStartError(self._failure_report(str(error))) from None
            self._wait_ready(starttls_port, direct_tls_port, log_offset, began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(
        self, starttls_port: int, direct_tls_port: int, log_offset: int, began: float
    ) -> None:
        """Poll until Prosody reports both ports active and they accept TCP connections."""
        assert self._process is not None
        wanted = {
            port: re.compile(
                rf"Activated service '{service}' on \[{re.escape(LOOPBACK)}\]:{port}\b"
            )
            for service, port in (("c2s", starttls_port), ("c2s_direct_tls", direct_tls_port))
        }
        bind_failure = re.compile(r"Failed to open server port (\d+)")
        deadline = began + self.start_timeout
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                raise ProsodyStartError(self._failure_report(f"Prosody exited with {returncode}"))
            log = self.log_text(log_offset)
            failed = bind_failure.search(log)
            if failed:
                raise _PortInUseError(
                    self._failure_report(f"Prosody could not bind port {failed.group(1)}")
                )
            activated = all(pattern.search(log) for pattern in wanted.values())
            if activated and all(self._accepts(port) for port in wanted):
                return
            if time.monotonic() > deadline:
                raise ProsodyStartError(
                    self._failure_report(
                        f"Prosody did not accept connections on ports {starttls_port} and "
                        f"{direct_tls_port} within {self.start_timeout} s"
                    )
                )
            time.sleep(_POLL_INTERVAL)

    def _failure_report(self, headline: str) -> str:
        """Return *headline* with the console output and log tail, for start-up errors."""
        console = self.console_text().strip() or "(empty)"
        return (
            f"{headline}\nconfiguration: {self.config_path}\n"
            f"--- console output ---\n{_tail(console, 40)}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail(60) or '(empty)'}"
        )

    def kill(self) -> None:
        """Kill Prosody with SIGKILL at once (a crash, as seen by clients); safe to repeat."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()
