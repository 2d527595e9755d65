"""Fixtures and hooks shared by the whole test suite.

* ``prosody``: one real Prosody server for the test session (:class:`ProsodyServer`).
* ``make_prosody``: a factory for extra servers with their own options, stopped after the test.
* ``ejabberd``: one real ejabberd server for the test session (:class:`EjabberdServer`), and
  ``make_ejabberd``, its per-test factory.
* ``xmpp_server``: the session's Prosody, then its ejabberd: a test that takes it runs once
  against each server (``make_xmpp_server`` is the matching per-test factory).
* ``reactor_thread``: the global Twisted reactor running in a daemon thread; call
  ``reactor_thread.run(fn, *args, timeout=...)`` to run Deferred-returning code to completion.

Everything under ``tests/integration`` (and every test using a server fixture) is marked
``integration``.  When such a test fails, the server log lines written while it ran are
attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.support.ejabberd import EjabberdNotInstalledError, EjabberdServer
from tests.support.prosody import ProsodyNotInstalledError, ProsodyServer
from tests.support.reactor import ReactorThread, get_reactor_thread

_INTEGRATION_DIR: Final = Path(__file__).parent / "integration"
_SERVER_FIXTURES: Final = frozenset(
    {"prosody", "make_prosody", "ejabberd", "make_ejabberd", "xmpp_server", "make_xmpp_server"}
)
#: the servers a parametrised scenario runs against, in this order
SERVER_KINDS: Final = ("prosody", "ejabberd")
# the most log lines attached to one failing report (the full log stays on disk)
LOG_SECTION_MAX_LINES: Final = 200

XMPPServer = ProsodyServer | EjabberdServer
# the session servers by fixture name, for the hooks
_SESSION_SERVERS = pytest.StashKey[dict[str, XMPPServer]]()
# per test: section label -> (server, log offset from which to report)
_WATCHED_LOGS = pytest.StashKey[dict[str, tuple[XMPPServer, int]]]()


def _new_server(directory: Path, **options: Any) -> ProsodyServer:
    """Create a :class:`ProsodyServer`, failing the test clearly if Prosody is missing."""
    try:
        return ProsodyServer(directory, **options)
    except ProsodyNotInstalledError as error:
        missing = str(error)
    pytest.fail(
        f"Prosody is not installed: {missing}. The integration tests run a real Prosody; "
        "run `make test`, which installs it (scripts/install-system-deps.sh).",
        pytrace=False,
    )


def _new_ejabberd(directory: Path, **options: Any) -> EjabberdServer:
    """Create an :class:`EjabberdServer`, failing the test clearly if ejabberd is missing."""
    try:
        return EjabberdServer(directory, **options)
    except EjabberdNotInstalledError as error:
        missing = str(error)
    pytest.fail(
        f"ejabberd is not installed: {missing}. The integration tests run a real ejabberd; "
        "run `make test`, which installs it (scripts/install-system-deps.sh).",
        pytrace=False,
    )


def _session_server(
    name: str, server: XMPPServer, pytestconfig: pytest.Config
) -> Iterator[XMPPServer]:
    """Start *server* for the session, watched by the log hooks under fixture *name*."""
    server.start()
    pytestconfig.stash.setdefault(_SESSION_SERVERS, {})[name] = server
    try:
        yield server
    finally:
        del pytestconfig.stash[_SESSION_SERVERS][name]
        server.stop()


@pytest.fixture(scope="session")
def prosody(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ProsodyServer]:
    """Start one Prosody (domain ``xmppnode.test``, accounts juliet/romeo/nurse) per session."""
    server = _new_server(tmp_path_factory.mktemp("prosody"))
    yield from _session_server("prosody", server, pytestconfig)  # type: ignore[misc]


@pytest.fixture(scope="session")
def ejabberd(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[EjabberdServer]:
    """Start one ejabberd (domain ``xmppnode.test``, accounts juliet/romeo/nurse) per session."""
    server = _new_ejabberd(tmp_path_factory.mktemp("ejabberd"))
    yield from _session_server("ejabberd", server, pytestconfig)  # type: ignore[misc]


@pytest.fixture(params=SERVER_KINDS)
def xmpp_server(request: pytest.FixtureRequest) -> XMPPServer:
    """The session's Prosody or ejabberd: the test runs once against each."""
    server: XMPPServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture(params=SERVER_KINDS)
def make_xmpp_server(request: pytest.FixtureRequest) -> Callable[..., XMPPServer]:
    """``make_prosody`` or ``make_ejabberd``: the test runs once with each factory.

    Only the options both servers know apply (``tls_max_version``, ``ca``, ``accounts``).
    """
    factory: Callable[..., XMPPServer] = request.getfixturevalue(f"make_{request.param}")
    return factory


def _per_test_servers(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    name: str,
    new: Callable[..., XMPPServer],
) -> Iterator[Callable[..., XMPPServer]]:
    """Yield ``make(**options)``; the servers it starts are watched, then stopped after."""
    servers: list[XMPPServer] = []

    def make(**options: Any) -> XMPPServer:
        server = new(tmp_path / f"{name.lower()}-{len(servers) + 1}", **options)
        servers.append(server)
        label = f"{name} #{len(servers)} ({server.domain})"
        request.node.stash.setdefault(_WATCHED_LOGS, {})[label] = (server, 0)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
def make_prosody(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ProsodyServer]]:
    """Return ``make(**options) -> ProsodyServer``: start extra servers for this test only.

    The options are :class:`ProsodyServer`'s keyword arguments (``tls_max_version="1.2"``,
    ``password_hash="SHA-256"``, ``cert_path``/``key_path``, ``config_lua``, ...).  The
    servers are stopped after the test, and their logs are attached to its report if it fails.
    """
    yield from _per_test_servers(tmp_path, request, "Prosody", _new_server)  # type: ignore[misc]


@pytest.fixture
def make_ejabberd(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., EjabberdServer]]:
    """Return ``make(**options) -> EjabberdServer``: extra ejabberd servers for this test only."""
    yield from _per_test_servers(tmp_path, request, "ejabberd", _new_ejabberd)  # type: ignore[misc]


@pytest.fixture(scope="session")
def reactor_thread() -> ReactorThread:
    """Return the running reactor thread (stopped when the session finishes)."""
    runner = get_reactor_thread()
    runner.start()
    return runner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests under ``tests/integration`` and those using a server as integration."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(_INTEGRATION_DIR) or fixtures & _SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)


def _watch_session_server(item: pytest.Item, offset: int | None) -> None:
    """Remember where the session servers' logs stood for *item* (``None``: current end)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "xmpp_server" in fixtures:
        fixtures.add(callspec.params["xmpp_server"])
    for name, server in item.config.stash.get(_SESSION_SERVERS, {}).items():
        if name not in fixtures:
            continue
        watched = item.stash.setdefault(_WATCHED_LOGS, {})
        label = f"{name} ({server.domain})"
        if label not in watched:
            watched[label] = (server, server.log_size() if offset is None else offset)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Record the session server's log size before the test (from 0 if this test starts it)."""
    _watch_session_server(item, None)
    try:
        return (yield)
    finally:
        _watch_session_server(item, 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server log lines written during a failing test to its report."""
    report: pytest.TestReport = yield
    if report.failed:
        watched = item.stash.get(_WATCHED_LOGS, {})
        for label, (server, offset) in watched.items():
            text, end = server.log_since(offset)
            # a later failing phase (teardown) reports only what follows
            watched[label] = (server, end)
            lines = text.splitlines()
            if len(lines) > LOG_SECTION_MAX_LINES:
                omitted = len(lines) - LOG_SECTION_MAX_LINES
                lines = [
                    f"[{omitted} earlier lines omitted; full log: {server.log_path}]",
                    *lines[-LOG_SECTION_MAX_LINES:],
                ]
            body = "\n".join(lines) if lines else f"(nothing logged; log: {server.log_path})"
            report.sections.append((f"Captured {label} log {report.when}", body))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the reactor thread if a test started it."""
    get_reactor_thread().stop()


# -- dnsmasq: a real DNS server for the SRV discovery tests -----------------------------------

from tests.support.dnsmasq import (  # noqa: E402
    DEFAULT_RECORDS,
    DnsmasqNotInstalledError,
    DnsmasqServer,
)


@pytest.fixture(scope="session")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsmasqServer]:
    """Start one dnsmasq per session serving :data:`tests.support.dnsmasq.DEFAULT_RECORDS`.

    One domain per discovery scenario (the ``*_DOMAIN`` constants of that module).  Ask it with
    ``dnsmasq.resolver()``, a :class:`twisted.names.client.Resolver` for this server only, created
    in the reactor thread.
    """
    try:
        server = DnsmasqServer(tmp_path_factory.mktemp("dnsmasq"), DEFAULT_RECORDS)
    except DnsmasqNotInstalledError as error:
        pytest.fail(
            f"{error}. The SRV tests run a real dnsmasq; run `make test`, which installs it "
            "(scripts/install-system-deps.sh).",
            pytrace=False,
        )
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- FaultProxy: a TCP proxy that injects network faults between a client and a server -------

from tests.support.proxy import FaultProxy  # noqa: E402


@pytest.fixture
def make_fault_proxy(reactor_thread: ReactorThread) -> Iterator[Callable[..., FaultProxy]]:
    """Return ``make(target_port, target_host="127.0.0.1") -> FaultProxy``, already listening.

    Each proxy forwards ``127.0.0.1:proxy.port`` to the target (``prosody.starttls_port``, for
    instance); drive it with ``reactor_thread.run(proxy.cut)`` and the like.  The proxies are
    stopped, and all their connections reset, after the test.
    """
    proxies: list[FaultProxy] = []

    def make(target_port: int, target_host: str = "127.0.0.1", **options: Any) -> FaultProxy:
        proxy = FaultProxy(target_host, target_port, reactor_thread.reactor, **options)
        proxies.append(proxy)
        reactor_thread.run(proxy.start)
        return proxy

    try:
        yield make
    finally:
        for proxy in reversed(proxies):
            reactor_thread.run(proxy.stop)
