"""A real ejabberd server (Debian's 23.01), started per test session in a private directory.

:class:`EjabberdServer` has the interface of :class:`~tests.support.prosody.ProsodyServer`
(``domain``, ``starttls_port``, ``direct_tls_port``, ``ca_pem_path``, ``accounts``, ``jid()``,
``register()``, ``restart()``, the log accessors), so a test can take either server.  Nothing
under ``/etc``, ``/var`` or the caller's home is read or written::

    with EjabberdServer(Path(tmp)) as server:
        print(server.jid("juliet"), server.accounts["juliet"], server.starttls_port)

Facts about the Debian package the configuration relies on:

* ``ejabberdctl`` refuses to run ejabberd as root unless its ``INSTALLUSER`` is empty, and reads
  ``/etc/ejabberd/ejabberdctl.cfg`` unless given ``--ctl-config``: the server runs a copy of the
  script with ``INSTALLUSER`` cleared, and with ``exec`` in front of the VM so that the process
  this class starts *is* the Erlang VM and can be stopped by its PID;
* ``ERL_DIST_PORT`` starts no ``epmd`` and puts the distribution port (which ``ejabberdctl
  register`` talks to) on a fixed port, and ``INET_DIST_INTERFACE`` keeps it on 127.0.0.1; the
  Erlang cookie is written under ``HOME``, which is the server's directory;
* the certificate manager crashes on certificates valid beyond the year 2100 (trustme's default
  is the year 3000), after which STARTTLS fails with ``no_certfile``: the server certificate is
  issued for 30 days;
* ``ejabberdctl register`` boots a VM per call (~0.5 s), so accounts are registered in parallel;
* ejabberd offers ``SCRAM-SHA-1-PLUS`` on TLS 1.2 and 1.3, without XEP-0440, and computes
  ``tls-unique`` from the Finished message on both.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

import trustme

from tests.support.local_server import LOOPBACK, Account, LocalServer, free_ports
from tests.support.prosody import DEFAULT_ACCOUNTS, DEFAULT_DOMAIN

__all__ = ["EjabberdError", "EjabberdNotInstalledError", "EjabberdServer", "EjabberdStartError"]

_EJABBERDCTL: Final = "/usr/sbin/ejabberdctl"
_TLS_OPTIONS: Final = {"1.2": ["no_tlsv1_3"], "1.3": ["no_tlsv1_2"]}
_POLL_INTERVAL: Final = 0.01
_CERT_LIFETIME: Final = datetime.timedelta(days=30)


class EjabberdError(RuntimeError):
    """Something went wrong while preparing, starting or driving ejabberd."""


class EjabberdNotInstalledError(EjabberdError):
    """The Debian package ``ejabberd`` is not installed."""


class EjabberdStartError(EjabberdError):
    """ejabberd exited early or did not accept connections in time (the message has its log)."""


def _yaml_string(value: str | os.PathLike[str]) -> str:
    """Return *value* as a double-quoted YAML scalar."""
    text = os.fspath(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class EjabberdServer(LocalServer):
    """One ejabberd instance with its own directory, certificates, ports and accounts.

    :param directory: a private directory (created if missing) for the configuration, the
        Mnesia spool, certificates, logs and the Erlang cookie.
    :param domain: the single XMPP host.
    :param accounts: local parts registered at the first start, each with a random password.
    :param tls_max_version: ``None`` (TLS 1.2 and 1.3), ``"1.2"`` or ``"1.3"`` only.
    :param ca: a trustme CA to issue the server certificate from; a new CA when omitted.
    :param resume_timeout: ``mod_stream_mgmt``'s ``resume_timeout`` in seconds (ejabberd's own
        default is 300).
    :param start_timeout: seconds :meth:`start` waits for both ports to accept connections.
    """

    stop_timeout = 10.0

    def __init__(
        self,
        directory: Path,
        *,
        domain: str = DEFAULT_DOMAIN,
        accounts: Sequence[str] = DEFAULT_ACCOUNTS,
        tls_max_version: str | None = None,
        ca: trustme.CA | None = None,
        resume_timeout: int = 300,
        start_timeout: float = 20.0,
    ) -> None:
        """Prepare the directory, the scripts and the certificate; nothing runs until start."""
        if tls_max_version is not None and tls_max_version not in _TLS_OPTIONS:
            raise ValueError(f"tls_max_version must be one of {sorted(_TLS_OPTIONS)} or None")
        if not os.access(_EJABBERDCTL, os.X_OK) or shutil.which("erl") is None:
            raise EjabberdNotInstalledError(
                f"{_EJABBERDCTL} or erl not found (Debian package ejabberd)"
            )
        self.domain = domain
        self.tls_max_version = tls_max_version
        self.resume_timeout = resume_timeout
        self.start_timeout = start_timeout
        self.directory = Path(directory).absolute()
        self.spool_path = self.directory / "spool"
        self.logs_path = self.directory / "logs"
        for path in (self.directory, self.spool_path, self.logs_path):
            path.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "ejabberd.yml"
        self.ctl_config_path = self.directory / "ejabberdctl.cfg"
        self.ctl_path = self.directory / "ejabberdctl"
        self.log_path = self.logs_path / "ejabberd.log"
        self.console_path = self.directory / "ejabberd.console"
        # a node name of its own, so that several servers can run side by side
        self.node = f"ejabberd-{secrets.token_hex(4)}@localhost"

        self.ca = ca if ca is not None else trustme.CA()
        self.ca_pem_path = self.directory / "ca.pem"
        self.cert_pem_path = self.directory / "server.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        now = datetime.datetime.now(datetime.UTC)
        issued = self.ca.issue_cert(
            domain,
            not_before=now - datetime.timedelta(hours=1),
            not_after=now + _CERT_LIFETIME,
        )
        self.cert_pem_path.write_bytes(
            issued.private_key_pem.bytes() + b"".join(b.bytes() for b in issued.cert_chain_pems)
        )
        (self.directory / "inetrc").write_text('{lookup, ["file", "native"]}.\n')
        script = Path(_EJABBERDCTL).read_text()
        script = script.replace("INSTALLUSER=ejabberd", "INSTALLUSER=", 1)
        script = script.replace('as_current_user) "$@" ;;', 'as_current_user) exec "$@" ;;', 1)
        self.ctl_path.write_text(script)
        self.ctl_path.chmod(0o700)

        self._accounts: dict[str, str] = {}
        self._pending: list[str] = []
        for localpart in accounts:
            self._accounts[localpart] = secrets.token_urlsafe(18)
            self._pending.append(localpart)
        self._ports: tuple[int, int, int] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # -- logs ---------------------------------------------------------------------------------

    def wait_for_log(self, pattern: str, offset: int = 0, timeout: float = 10.0) -> str:
        """Return the log from *offset* once it matches the regular expression *pattern*.

        ejabberd's logger writes its file in batches, up to about a second after the event:
        this polls the file until the line is there.

        :raises EjabberdError: the pattern did not appear within *timeout* seconds.
        """
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text(offset)
            if wanted.search(text):
                return text
            if time.monotonic() > deadline:
                raise EjabberdError(f"{pattern!r} not logged within {timeout} s")
            time.sleep(_POLL_INTERVAL)

    def log_barrier(self) -> int:
        """Return the log offset after everything logged so far, once it is on disk.

        Because ejabberd writes its log late, :meth:`log_size` may stop short of events that
        already happened.  This makes a TCP connection (which ejabberd logs with the client's
        port), waits for that line and returns the offset just after it: lines before it are
        older, lines after it newer.
        """
        with socket.create_connection((self.host, self.starttls_port), timeout=5.0) as sock:
            port = sock.getsockname()[1]
        line = rf"Accepted connection {re.escape(LOOPBACK)}:{port} .*\n"
        text = self.wait_for_log(line)
        last = list(re.finditer(line, text))[-1]
        return len(text[: last.end()].encode())

    def log_between(self, start: int, end: int) -> str:
        """Return the log between the byte offsets *start* and *end* (from :meth:`log_barrier`)."""
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read(end - start).decode("utf-8", "replace")

    # -- accounts -----------------------------------------------------------------------------

    def register(self, localpart: str | None = None, password: str | None = None) -> Account:
        """Create an account (random password by default; random local part if omitted).

        While the server runs the account is created at once; before the first start it is
        created by :meth:`start`.
        """
        localpart = localpart or f"user-{secrets.token_hex(4)}"
        if localpart in self._accounts:
            raise ValueError(f"account {localpart!r} already exists on {self.domain}")
        self._accounts[localpart] = password or secrets.token_urlsafe(18)
        self._pending.append(localpart)
        if self.running:
            self._register_pending()
        return self.account(localpart)

    def _ctl_command(self, *arguments: str) -> list[str]:
        """Return the ``ejabberdctl`` command line with this server's paths and *arguments*."""
        return [str(self.ctl_path), "--ctl-config", str(self.ctl_config_path),
                "--config-dir", str(self.directory), "--spool", str(self.spool_path),
                "--logs", str(self.logs_path), *arguments]  # fmt: skip

    def _ctl(self, *arguments: str) -> subprocess.Popen[bytes]:
        """Start ``ejabberdctl`` with *arguments*, its output in a pipe."""
        return subprocess.Popen(
            self._ctl_command(*arguments),
            cwd=self.directory,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def _register_pending(self) -> None:
        """Register the pending accounts with ``ejabberdctl register``, in parallel."""
        pending, self._pending = self._pending, []
        runs = [
            (name, self._ctl("register", name, self.domain, self._accounts[name]))
            for name in pending
        ]
        failures = []
        for name, run in runs:
            output, _ = run.communicate(timeout=60)
            if run.returncode != 0:
                failures.append(f"{name}: exit {run.returncode}: {output.decode(errors='replace')}")
        if failures:
            raise EjabberdError("ejabberdctl register failed:\n" + "\n".join(failures))

    # -- configuration ------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The environment of ``ejabberdctl``: HOME (and so the Erlang cookie) in the directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL", "EJABBERD"))}
        env["HOME"] = str(self.directory)
        return env

    def ctl_config_text(self, dist_port: int) -> str:
        """Return the ``ejabberdctl.cfg`` for the distribution port *dist_port*."""
        return (
            f"ERLANG_NODE={self.node}\n"
            f"EJABBERD_CONFIG_PATH={self.config_path}\n"
            f"ERL_DIST_PORT={dist_port}\n"
            f"INET_DIST_INTERFACE={LOOPBACK}\n"
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n'
        )

    def config_text(self, starttls_port: int, direct_tls_port: int) -> str:
        """Return the ejabberd configuration for the given ports."""
        tls_options = ["no_sslv3", "no_tlsv1", "no_tlsv1_1", *_TLS_OPTIONS.get(
            self.tls_max_version or "", []
        )]  # fmt: skip
        options = "[" + ", ".join(_yaml_string(o) for o in tls_options) + "]"
        return f"""\
# Generated for one test run; every path is inside this directory.
loglevel: info
log_rotate_count: 0
hosts: [{_yaml_string(self.domain)}]
certfiles: [{_yaml_string(self.cert_pem_path)}]
ca_file: {_yaml_string(self.ca_pem_path)}
c2s_protocol_options: {options}
listen:
  - port: {starttls_port}
    ip: "{LOOPBACK}"
    module: ejabberd_c2s
    starttls_required: true
  - port: {direct_tls_port}
    ip: "{LOOPBACK}"
    module: ejabberd_c2s
    tls: true
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
shaper_rules: {{}}
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_stream_mgmt:
    resume_timeout: {self.resume_timeout}
"""

    # -- process control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start ejabberd, wait until both c2s ports accept connections, register accounts.

        The first start picks free ports; later starts reuse them so that clients reconnect.
        Raises :class:`EjabberdStartError`, with the log tail, on failure.
        """
        if self.running:
            raise EjabberdError("ejabberd is already running")
        ports = self._ports or tuple(free_ports(3))
        starttls_port, direct_tls_port, dist_port = ports
        self.config_path.write_text(self.config_text(starttls_port, direct_tls_port))
        self.ctl_config_path.write_text(self.ctl_config_text(dist_port))
        log_offset = self.log_size()
        began = time.monotonic()
        self._console = self.console_path.open("ab")
        self._process = subprocess.Popen(
            self._ctl_command("foreground"),
            cwd=self.directory,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        try:
            self._ports = (starttls_port, direct_tls_port, dist_port)
            self._wait_ready(log_offset, began)
            self._register_pending()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(self, log_offset: int, began: float) -> None:
        """Poll until ejabberd logs that it started and both ports accept TCP connections."""
        assert self._process is not None
        started = re.compile(r"ejabberd \S+ is started in the node")
        failed = re.compile(r"\[critical\].*")
        deadline = began + self.start_timeout
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                raise EjabberdStartError(self._failure_report(f"ejabberd exited with {returncode}"))
            log = self.log_text(log_offset)
            critical = failed.search(log)
            if critical:
                raise EjabberdStartError(self._failure_report(critical.group(0)))
            ports = (self.starttls_port, self.direct_tls_port)
            if started.search(log) and all(self._accepts(port) for port in ports):
                return
            if time.monotonic() > deadline:
                raise EjabberdStartError(
                    self._failure_report(f"not ready within {self.start_timeout} s")
                )
            time.sleep(_POLL_INTERVAL)

    def _failure_report(self, headline: str) -> str:
        """Return *headline* with the console output and the log tail."""
        try:
            console = self.console_path.read_text("utf-8", "replace").strip()
        except FileNotFoundError:
            console = ""
        return (
            f"{headline}\nconfiguration: {self.config_path}\n"
            f"--- console output ---\n{console[-4000:] or '(empty)'}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail(60) or '(empty)'}"
        )
