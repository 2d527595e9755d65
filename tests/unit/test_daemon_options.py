"""The options of ``twistd xmppnode``: command line, config files, checks and messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

from txxmppnode import JID, PresenceShow, PresenceState
from txxmppnode.connector import DirectTLSConnector, STARTTLSConnector
from txxmppnode.daemon import NodeOptions, NodeSettings, Options, Secret, echo_handler
from txxmppnode.daemon.handlers import HandlerError, resolve_handler
from txxmppnode.presence import PresenceManagedClient

PASSWORD = "correct horse battery staple"


def sample_handler(client: PresenceManagedClient) -> None:
    """A handler for the ``package.module:factory`` tests."""


class Namespace:
    handler = staticmethod(sample_handler)
    not_callable = 42


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def parse(password_file: Path) -> Callable[..., NodeSettings]:
    """``parse(*args)`` with ``--jid`` and ``--password-file`` filled in unless given."""

    def parse(*args: str) -> NodeSettings:
        argv = list(args)
        if not any(a.startswith(("--jid", "--config")) for a in argv):
            argv.insert(0, "--jid=node@example.org")
        if not any(a.startswith(("--password", "--config")) for a in argv):
            argv.append(f"--password-file={password_file}")
        options = NodeOptions()
        options.parseOptions(argv)
        return options.settings

    return parse


def usage_error(parse: Callable[..., Any], *args: str) -> str:
    with pytest.raises(usage.UsageError) as caught:
        parse(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the command line ---------------------------------------------------------------------------


def test_defaults(parse: Callable[..., NodeSettings]) -> None:
    settings = parse()
    assert settings.jid == JID.fromstr("node@example.org")
    assert settings.password.reveal() == PASSWORD  # the trailing newline is not part of it
    assert settings.host is None and settings.override_peer() == []
    assert settings.describe_peer() == "example.org (DNS SRV lookup)"
    assert settings.presence == PresenceState(True)
    assert (settings.status, settings.priority, settings.offline_status) == (None, 0, None)
    assert settings.handlers == ()
    assert settings.metrics is None
    assert settings.shutdown_timeout == 10.0
    assert not settings.log_bodies


def test_every_option(parse: Callable[..., NodeSettings], tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pins = {"example.org": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]}
    pin_file = tmp_path / "pins.json"
    pin_file.write_text(json.dumps(pins))
    settings = parse(
        "--jid=node@example.org/ignored",
        "--resource=bot",
        "--host=xmpp.example.org",
        "--port=5223",
        "--direct-tls",
        f"--ca-file={ca_file}",
        f"--pin-file={pin_file}",
        "--presence=dnd",
        "--status=busy",
        "--priority=-5",
        "--offline-status=bye",
        "--handler=echo",
        "--handler=log",
        "--metrics=tcp:9100:interface=127.0.0.1",
        "--shutdown-timeout=2.5",
        "--log-bodies",
    )
    assert settings.jid == JID.fromstr("node@example.org/bot")
    assert settings.override_peer() == [("xmpp.example.org", 5223, DirectTLSConnector())]
    assert settings.describe_peer() == "xmpp.example.org:5223 (direct TLS)"
    assert settings.ca_file == str(ca_file)
    assert settings.pins == pins
    assert settings.presence == PresenceState(True, PresenceShow.DND)
    assert (settings.status, settings.priority, settings.offline_status) == ("busy", -5, "bye")
    assert [spec for spec, _ in settings.handlers] == ["echo", "log"]
    assert settings.metrics == "tcp:9100:interface=127.0.0.1"
    assert settings.shutdown_timeout == 2.5
    assert settings.log_bodies
    layer = settings.security_layer()
    assert layer.pin_store is not None
    assert layer.pin_store.export_to_json() == pins


def test_port_defaults_to_5222_or_5223_with_direct_tls(parse: Callable[..., NodeSettings]) -> None:
    assert parse("--host=h").override_peer() == [("h", 5222, STARTTLSConnector())]
    assert parse("--host=h", "--direct-tls").port == 5223


def test_password_from_the_environment(
    parse: Callable[..., NodeSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_PASSWORD", PASSWORD)
    assert parse("--password-env=NODE_PASSWORD").password.reveal() == PASSWORD


def test_the_password_never_shows(parse: Callable[..., NodeSettings]) -> None:
    settings = parse()
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.password) + repr(settings.password)
    assert PASSWORD not in repr(settings.security_layer())
    assert Secret("a") == Secret("a") != Secret("b")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of --password-file and --password-env"),
        (("--password-env=X", "--password-file=/p"),
         "give exactly one of --password-file and --password-env"),
        (("--password-file=/nonexistent/p",),
         "cannot read the password file /nonexistent/p: No such file or directory"),
        (("--password-env=TXXMPPNODE_UNSET",),
         "the environment variable TXXMPPNODE_UNSET is not set"),
    ],
)  # fmt: skip
def test_password_errors(args: tuple[str, ...], message: str) -> None:
    options = NodeOptions()
    with pytest.raises(usage.UsageError, match="^" + message + "$"):
        options.parseOptions(["--jid=node@example.org", *args])


def test_empty_password_sources(
    parse: Callable[..., NodeSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in usage_error(parse, f"--password-file={empty}")
    two_lines = tmp_path / "two"
    two_lines.write_text("a\nb\n")
    assert "more than one line" in usage_error(parse, f"--password-file={two_lines}")
    monkeypatch.setenv("NODE_PASSWORD", "")
    assert "is empty" in usage_error(parse, "--password-env=NODE_PASSWORD")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--jid=a@@b",), "invalid JID"),
        (("--jid=example.org",), "invalid JID 'example.org': it needs a user (user@domain)"),
        (("--port=5222",), "--port and --direct-tls need --host"),
        (("--direct-tls",), "--port and --direct-tls need --host"),
        (("--host=h", "--port=http"), "--port must be an integer, not 'http'"),
        (("--host=h", "--port=70000"), "--port must be between 1 and 65535, not 70000"),
        (("--presence=asleep",), "--presence must be one of available, chat, away, xa, dnd"),
        (("--priority=128",), "--priority must be between -128 and 127, not 128"),
        (("--shutdown-timeout=0",), "--shutdown-timeout must be a positive number"),
        (("--shutdown-timeout=soon",), "--shutdown-timeout must be a positive number"),
        (("--metrics=carrier-pigeon:9100",), "--metrics 'carrier-pigeon:9100' is not a server"),
        (("--metrics=tcp:port",), "--metrics 'tcp:port' is not a server endpoint"),
        (("--handler=parrot",), "unknown handler 'parrot': use echo, log or package.module:f"),
        (("--ca-file=/nonexistent/ca.pem",), "cannot read the CA file /nonexistent/ca.pem"),
    ],
)
def test_bad_values(
    parse: Callable[..., NodeSettings], args: tuple[str, ...], message: str
) -> None:
    assert usage_error(parse, *args).startswith(message)


def test_a_ca_file_without_certificates(parse: Callable[..., NodeSettings], tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    assert "no usable PEM certificate" in usage_error(parse, f"--ca-file={bogus}")


def test_bad_pin_files(parse: Callable[..., NodeSettings], tmp_path: Path) -> None:
    pins = tmp_path / "pins.json"
    pins.write_text("{not json")
    assert usage_error(parse, f"--pin-file={pins}").startswith(f"the pin file {pins} is not JSON")
    pins.write_text(json.dumps({"example.org": ["short"]}))
    assert "not valid base64" in usage_error(parse, f"--pin-file={pins}")
    assert "cannot read the pin file" in usage_error(parse, "--pin-file=/nonexistent/pins")


def test_unknown_option(parse: Callable[..., NodeSettings]) -> None:
    assert "option --frobnicate not recognized" in usage_error(parse, "--frobnicate")


# -- handlers -----------------------------------------------------------------------------------


def test_handlers_by_name_and_by_module(parse: Callable[..., NodeSettings]) -> None:
    module = __name__
    settings = parse("--handler=echo", f"--handler={module}:sample_handler",
                     f"--handler={module}:Namespace.handler")  # fmt: skip
    factories = [factory for _, factory in settings.handlers]
    assert factories == [echo_handler, sample_handler, sample_handler]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonexistent_module_xyz:f",
         "handler 'nonexistent_module_xyz:f': cannot import nonexistent_module_xyz: "
         "ModuleNotFoundError"),
        (f"{__name__}:missing", f"handler '{__name__}:missing': {__name__} has no missing"),
        (f"{__name__}:Namespace.not_callable", "is not callable"),
        (":factory", "handler ':factory' must look like package.module:factory"),
    ],
)  # fmt: skip
def test_bad_handlers(spec: str, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        resolve_handler(spec)


# -- config files -------------------------------------------------------------------------------


def test_ini_config(tmp_path: Path, parse: Callable[..., NodeSettings]) -> None:
    (tmp_path / "secret").write_text(PASSWORD)
    config = tmp_path / "node.ini"
    config.write_text(
        "[xmppnode]\n"
        "jid = node@example.org\n"
        "password_file = secret\n"  # relative to the file, underscores allowed
        "host = 127.0.0.1\n"
        "port = 5999\n"
        "direct-tls = yes\n"
        "presence = away\n"
        "handler = echo, log\n"
        "log-bodies = true\n"
    )
    settings = parse(f"--config={config}")
    assert settings.jid == JID.fromstr("node@example.org")
    assert settings.password.reveal() == PASSWORD
    assert settings.override_peer() == [("127.0.0.1", 5999, DirectTLSConnector())]
    assert settings.presence == PresenceState(True, PresenceShow.AWAY)
    assert [spec for spec, _ in settings.handlers] == ["echo", "log"]
    assert settings.log_bodies


def test_toml_config_and_the_command_line_wins(
    tmp_path: Path, parse: Callable[..., NodeSettings]
) -> None:
    (tmp_path / "secret").write_text(PASSWORD)
    config = tmp_path / "node.toml"
    config.write_text(
        "[xmppnode]\n"
        'jid = "node@example.org"\n'
        'password-file = "secret"\n'
        'host = "127.0.0.1"\n'
        "port = 5999\n"
        "priority = 3\n"
        'handler = ["log"]\n'
        "shutdown-timeout = 1.5\n"
    )
    settings = parse(f"--config={config}", "--port=6000", "--handler=echo")
    assert settings.port == 6000
    assert settings.priority == 3
    assert settings.shutdown_timeout == 1.5
    assert [spec for spec, _ in settings.handlers] == ["echo"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("n.ini", "[other]\njid = a@b\n", "has no [xmppnode] section"),
        ("n.toml", 'jid = "a@b"\n', "has no [xmppnode] table"),
        ("n.ini", "[xmppnode]\njdi = a@b\n", "unknown setting 'jdi'"),
        ("n.ini", "[xmppnode]\npassword = hunter2\n", "no password here; use password-file"),
        ("n.toml", "[xmppnode]\njid = [", "config file"),
        ("n.toml", "[xmppnode]\njid = true\n", "jid must be a string, not True"),
        ("n.toml", '[xmppnode]\njid = "a@b"\npassword-file = "p"\ndirect-tls = "maybe"\n',
         "direct-tls must be true or false"),
        ("n.toml", '[xmppnode]\njid = "a@b"\npassword-file = "p"\nhandler = 3\n',
         "handler must be a name or a list"),
    ],
)  # fmt: skip
def test_bad_config_files(
    tmp_path: Path, parse: Callable[..., NodeSettings], name: str, text: str, message: str
) -> None:
    (tmp_path / "p").write_text(PASSWORD)
    config = tmp_path / name
    config.write_text(text)
    assert message in usage_error(parse, f"--config={config}")
    assert "hunter2" not in usage_error(parse, f"--config={config}")


def test_unreadable_config_file(parse: Callable[..., NodeSettings]) -> None:
    message = usage_error(parse, "--config=/nonexistent/node.ini")
    assert message == "cannot read the config file /nonexistent/node.ini: No such file or directory"


# -- twistd -------------------------------------------------------------------------------------


def test_twistd_options_exit_with_one_line(password_file: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        Options().parseOptions(["--jid=a@@b", f"--password-file={password_file}"])
    message = str(caught.value.code)
    assert message.startswith("twistd xmppnode: invalid JID")
    assert message.endswith("(see twistd xmppnode --help)")
    assert "\n" not in message


def test_the_plugin_is_found() -> None:
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    maker = makers["xmppnode"]
    assert maker.options is Options
