"""The command line of ``twistd xmppnode``, and the same settings from an INI or TOML file.

:class:`NodeOptions` reads the options, merges them with the ``--config`` file (the command
line wins), checks everything and leaves the result in :attr:`NodeOptions.settings`, a
:class:`NodeSettings`.  Every problem is a :class:`twisted.python.usage.UsageError` whose
message is one line.  :class:`Options` is what ``twistd`` uses: the same, except that a bad
option ends the process at once with that line on stderr and exit status 1, instead of
twistd's full usage text.

The password is read here (from the file or the environment variable), never from the command
line, and kept in a :class:`Secret` whose ``repr`` and ``str`` hide it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn

from twisted.python import usage

from ..connect import PeerOption
from ..connector import DirectTLSConnector, STARTTLSConnector
from ..jid import JID
from ..pinning import PinType, make_pin_store
from ..presence_state import PresenceState
from ..security_layer import SecurityLayer, make
from .handlers import HandlerError, HandlerFactory, resolve_handler
from .subscriptions import SubscriptionPolicy

__all__ = [
    "CONFIG_SECTION",
    "PRESENCE_CHOICES",
    "NodeOptions",
    "NodeSettings",
    "Options",
    "Secret",
    "load_config",
]

#: The section (INI) or table (TOML) of a ``--config`` file that holds the settings.
CONFIG_SECTION: Final = "xmppnode"
#: ``--presence`` values and the ``<show/>`` each one sends.
PRESENCE_CHOICES: Final[Mapping[str, str | None]] = {
    "available": None,
    "chat": "chat",
    "away": "away",
    "xa": "xa",
    "dnd": "dnd",
}
_DEFAULT_PORT: Final = 5222
_DEFAULT_DIRECT_TLS_PORT: Final = 5223
_DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0

# the settings a --config file may hold (long option names), and which of them are flags
_PARAMETERS: Final = (
    "jid",
    "password-file",
    "password-env",
    "host",
    "port",
    "ca-file",
    "pin-file",
    "resource",
    "presence",
    "status",
    "priority",
    "offline-status",
    "metrics",
    "shutdown-timeout",
    "subscriptions",
)
_FLAGS: Final = ("direct-tls", "log-bodies")
_PATHS: Final = ("password-file", "ca-file", "pin-file")


class Secret:
    """A string that does not show itself: ``repr`` and ``str`` print ``'<hidden>'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node needs, checked; made by :class:`NodeOptions`.

    :ivar jid: the account, with the resource to ask for (if any).
    :ivar password: the account's password.
    :ivar host: connect here instead of looking the domain up in DNS, or ``None``.
    :ivar port: the port on :attr:`host`.
    :ivar direct_tls: TLS from the first byte (XEP-0368) instead of STARTTLS.
    :ivar ca_file: a PEM file of the CAs to trust, or ``None`` for the system's.
    :ivar pins: public-key pins (``{host: [base64 SHA-256, ...]}``), or ``None``.
    :ivar presence: the presence the node keeps while it runs.
    :ivar status: the status text of that presence, or ``None``.
    :ivar priority: the presence priority (-128..127).
    :ivar offline_status: the status text of the unavailable presence sent when stopping.
    :ivar handlers: ``(spec, factory)`` for each ``--handler``, in order.
    :ivar metrics: the server endpoint string to serve metrics on, or ``None``.
    :ivar shutdown_timeout: seconds the node waits to go offline cleanly when stopping.
    :ivar log_bodies: include message bodies in the ``log`` handler's lines.
    :ivar subscriptions: which presence subscription requests the node approves.
    """

    jid: JID
    password: Secret = field(repr=False)
    host: str | None = None
    port: int = _DEFAULT_PORT
    direct_tls: bool = False
    ca_file: str | None = None
    pins: Mapping[str, Any] | None = None
    presence: PresenceState = field(default_factory=lambda: PresenceState(True))
    status: str | None = None
    priority: int = 0
    offline_status: str | None = None
    handlers: tuple[tuple[str, HandlerFactory], ...] = ()
    metrics: str | None = None
    shutdown_timeout: float = _DEFAULT_SHUTDOWN_TIMEOUT
    log_bodies: bool = False
    subscriptions: SubscriptionPolicy = field(default_factory=SubscriptionPolicy)

    def security_layer(self) -> SecurityLayer:
        """The TLS and authentication policy: the password, the CA file and the pins.

        :raises ValueError: if the CA file holds no usable certificate.
        :raises OSError: if the CA file cannot be read.
        """
        pins = make_pin_store(PinType.PUBLIC_KEY, self.pins) if self.pins is not None else None
        return make(self.password.reveal(), trust_root=self.ca_file, pin_store=pins)

    def override_peer(self) -> list[PeerOption]:
        """The ``(host, port, connector)`` to try before DNS discovery (none without a host)."""
        if self.host is None:
            return []
        connector = DirectTLSConnector() if self.direct_tls else STARTTLSConnector()
        return [(self.host, self.port, connector)]

    def describe_peer(self) -> str:
        """Where the node connects, for the log: ``host:port (STARTTLS)`` or the DNS lookup."""
        if self.host is None:
            return f"{self.jid.domain} (DNS SRV lookup)"
        method = "direct TLS" if self.direct_tls else "STARTTLS"
        return f"{self.host}:{self.port} ({method})"


def _one_line(text: object) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ``[xmppnode]`` settings of an INI or TOML file (``.toml``: TOML, else INI).

    Keys are the long option names (``password-file``, or ``password_file``).  Relative
    paths are made relative to the file's directory.  Values are strings, except in TOML,
    where numbers and booleans may be native and ``handler`` may be a list.

    :raises usage.UsageError: the file cannot be read or parsed, has no ``[xmppnode]``
        section, or holds an unknown key or a password.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise usage.UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    values: Mapping[str, Any]
    if path.suffix.lower() == ".toml":
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise usage.UsageError(f"config file {path}: {_one_line(exc)}") from None
        table = document.get(CONFIG_SECTION)
        if not isinstance(table, dict):
            raise usage.UsageError(f"config file {path} has no [{CONFIG_SECTION}] table")
        values = table
    else:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(raw.decode("utf-8"), source=str(path))
        except (UnicodeDecodeError, configparser.Error) as exc:
            raise usage.UsageError(f"config file {path}: {_one_line(exc)}") from None
        if not parser.has_section(CONFIG_SECTION):
            raise usage.UsageError(f"config file {path} has no [{CONFIG_SECTION}] section")
        values = dict(parser.items(CONFIG_SECTION))

    settings: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).strip().lower().replace("_", "-")
        if key == "password":
            raise usage.UsageError(
                f"config file {path}: no password here; use password-file or password-env"
            )
        if key not in (*_PARAMETERS, *_FLAGS, "handler"):
            raise usage.UsageError(f"config file {path}: unknown setting {raw_key!r}")
        if key in _PATHS and isinstance(value, str) and value:
            value = str(path.parent / Path(value).expanduser())
        settings[key] = value
    return settings


def _flag(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off", ""):
            return False
    raise usage.UsageError(f"{key} must be true or false, not {value!r}")


def _handler_specs(value: object) -> list[str]:
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return [part.strip() for part in value if part.strip()]
    raise usage.UsageError(f"handler must be a name or a list of names, not {value!r}")


def _read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise usage.UsageError(f"cannot read the password file {path}: {reason}") from None
    except UnicodeDecodeError:
        raise usage.UsageError(f"the password file {path} is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise usage.UsageError(f"the password file {path} is empty")
    if "\n" in password:
        raise usage.UsageError(f"the password file {path} has more than one line")
    return password


def _int(value: str, key: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"--{key} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise usage.UsageError(f"--{key} must be between {low} and {high}, not {number}")
    return number


class NodeOptions(usage.Options):
    """The options of ``twistd xmppnode``; after parsing, :attr:`settings` holds the result."""

    synopsis = "--jid JID (--password-file PATH | --password-env VAR) [options]"
    longdesc = (
        "Keep an XMPP account online: connect, stay available, reconnect and resume after "
        "network faults, run handlers on received stanzas, serve metrics.  Settings may also "
        f"come from --config FILE (INI [{CONFIG_SECTION}] section or TOML [{CONFIG_SECTION}] "
        "table, same keys as the long options); the command line wins."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        ["direct-tls", None, "TLS from the first byte (XEP-0368) to --host, not STARTTLS."],
        ["log-bodies", None, "The log handler includes message bodies (off by default)."],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["jid", "j", None, "The account, user@domain[/resource]."],
        ["password-file", None, None, "Read the password from this file (first line)."],
        ["password-env", None, None, "Read the password from this environment variable."],
        ["host", None, None, "Connect to this host instead of looking up DNS SRV records."],
        ["port", None, None, "The port on --host [default: 5222, 5223 with --direct-tls]."],
        ["ca-file", None, None, "PEM file of the CAs to trust [default: the system's]."],
        ["pin-file", None, None, 'JSON public-key pins: {"host": ["base64 sha256", ...]}.'],
        ["resource", None, None, "The resource to ask for (overrides the JID's)."],
        ["presence", None, None, "available, chat, away, xa or dnd [default: available]."],
        ["status", None, None, "The status text of the presence."],
        ["priority", None, None, "The presence priority, -128..127 [default: 0]."],
        ["offline-status", None, None, "Status text of the unavailable presence at stop."],
        ["metrics", None, None, "Serve Prometheus metrics here (tcp:9100:interface=127.0.0.1)."],
        ["shutdown-timeout", None, None, "Seconds allowed to go offline cleanly [default: 10]."],
        [
            "subscriptions",
            None,
            None,
            "Approve presence subscriptions from: domain (the node's own), all, none, or a "
            "comma-separated list of JIDs and domains [default: domain].",
        ],
        ["config", "c", None, "Read settings from this INI or TOML file."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.handler_specs: list[str] = []
        self._settings: NodeSettings | None = None

    def opt_handler(self, spec: str) -> None:
        """echo, log or package.module:factory; repeat for several [default: none]."""
        self.handler_specs.append(spec)

    @property
    def settings(self) -> NodeSettings:
        """The checked settings (after :meth:`parseOptions`)."""
        if self._settings is None:
            raise RuntimeError("the options were not parsed")
        return self._settings

    def postOptions(self) -> None:
        """Merge the config file, check every setting and build :attr:`settings`."""
        values: dict[str, Any] = {}
        if self["config"]:
            values.update(load_config(self["config"]))
        for key in _PARAMETERS:
            if self[key] is not None:
                values[key] = self[key]
        for key in _FLAGS:
            if self[key]:
                values[key] = True
        if self.handler_specs:
            values["handler"] = list(self.handler_specs)
        self._settings = self._check(values)

    def _check(self, values: dict[str, Any]) -> NodeSettings:
        def text(key: str) -> str | None:
            value = values.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise usage.UsageError(f"{key} must be a string, not {value!r}")
            return str(value)

        jid_text = text("jid")
        if not jid_text:
            raise usage.UsageError("--jid is required")
        try:
            jid = JID.fromstr(jid_text)
        except ValueError as exc:
            raise usage.UsageError(_one_line(exc)) from None
        if jid.localpart is None:
            raise usage.UsageError(f"invalid JID {jid_text!r}: it needs a user (user@domain)")
        resource = text("resource")
        if resource is not None:
            try:
                jid = jid.replace(resource=resource)
            except ValueError as exc:
                raise usage.UsageError(_one_line(exc)) from None

        password = self._password(text("password-file"), text("password-env"))

        direct_tls = _flag(values.get("direct-tls", False), "direct-tls")
        host = text("host")
        port_text = text("port")
        if host is None and (port_text is not None or direct_tls):
            raise usage.UsageError("--port and --direct-tls need --host")
        default_port = _DEFAULT_DIRECT_TLS_PORT if direct_tls else _DEFAULT_PORT
        port = default_port if port_text is None else _int(port_text, "port", 1, 65535)

        ca_file = text("ca-file")
        if ca_file is not None:
            ca_file = os.path.abspath(ca_file)
        pins = self._pins(text("pin-file"))

        presence_name = (text("presence") or "available").strip().lower()
        if presence_name not in PRESENCE_CHOICES:
            raise usage.UsageError(
                f"--presence must be one of {', '.join(PRESENCE_CHOICES)}, not {presence_name!r}"
            )
        presence = PresenceState(True, PRESENCE_CHOICES[presence_name])
        priority_text = text("priority")
        priority = 0 if priority_text is None else _int(priority_text, "priority", -128, 127)

        timeout_text = text("shutdown-timeout")
        shutdown_timeout = _DEFAULT_SHUTDOWN_TIMEOUT
        if timeout_text is not None:
            try:
                shutdown_timeout = float(timeout_text)
            except ValueError:
                shutdown_timeout = float("nan")
            if not 0 < shutdown_timeout < float("inf"):
                raise usage.UsageError(
                    f"--shutdown-timeout must be a positive number of seconds, not {timeout_text!r}"
                )

        metrics = text("metrics")
        if metrics is not None:
            self._check_endpoint(metrics)

        try:
            subscriptions = SubscriptionPolicy.parse(text("subscriptions") or "domain")
        except ValueError as exc:
            raise usage.UsageError(f"--subscriptions: {_one_line(exc)}") from None

        log_bodies = _flag(values.get("log-bodies", False), "log-bodies")
        handlers: list[tuple[str, HandlerFactory]] = []
        for spec in _handler_specs(values.get("handler", [])):
            try:
                handlers.append((spec, resolve_handler(spec, log_bodies=log_bodies)))
            except HandlerError as exc:
                raise usage.UsageError(_one_line(exc)) from None

        settings = NodeSettings(
            jid=jid,
            password=password,
            host=host,
            port=port,
            direct_tls=direct_tls,
            ca_file=ca_file,
            pins=pins,
            presence=presence,
            status=text("status"),
            priority=priority,
            offline_status=text("offline-status"),
            handlers=tuple(handlers),
            metrics=metrics,
            shutdown_timeout=shutdown_timeout,
            log_bodies=log_bodies,
            subscriptions=subscriptions,
        )
        try:
            settings.security_layer()
        except OSError as exc:
            raise usage.UsageError(
                f"cannot read the CA file {ca_file}: {exc.strerror or exc}"
            ) from None
        except (TypeError, ValueError) as exc:
            raise usage.UsageError(_one_line(exc)) from None
        return settings

    @staticmethod
    def _password(path: str | None, variable: str | None) -> Secret:
        if (path is None) == (variable is None):
            raise usage.UsageError("give exactly one of --password-file and --password-env")
        if path is not None:
            return Secret(_read_password_file(path))
        assert variable is not None
        value = os.environ.get(variable)
        if value is None:
            raise usage.UsageError(f"the environment variable {variable} is not set")
        if not value:
            raise usage.UsageError(f"the environment variable {variable} is empty")
        return Secret(value)

    @staticmethod
    def _pins(path: str | None) -> Mapping[str, Any] | None:
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except OSError as exc:
            raise usage.UsageError(f"cannot read the pin file {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise usage.UsageError(f"the pin file {path} is not JSON: {_one_line(exc)}") from None
        try:
            make_pin_store(PinType.PUBLIC_KEY, data)
        except ValueError as exc:
            raise usage.UsageError(f"the pin file {path}: {_one_line(exc)}") from None
        pins: Mapping[str, Any] = data
        return pins

    @staticmethod
    def _check_endpoint(description: str) -> None:
        from twisted.internet import endpoints, reactor

        try:
            endpoints.serverFromString(reactor, description)  # type: ignore[no-untyped-call]
        except Exception as exc:
            reason = _one_line(exc) or type(exc).__name__
            raise usage.UsageError(
                f"--metrics {description!r} is not a server endpoint: {reason}"
            ) from None


class Options(NodeOptions):
    """:class:`NodeOptions` for ``twistd``: a bad option ends the process with one line.

    twistd prints its whole usage text before the reason; an operator reading a service log
    wants the reason alone, so it goes to stderr and the process exits with status 1.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as exc:
            _exit_with(f"twistd xmppnode: {_one_line(exc)} (see twistd xmppnode --help)")


def _exit_with(message: str) -> NoReturn:
    raise SystemExit(message)
