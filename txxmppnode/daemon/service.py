"""The node as a Twisted service: a PresenceManagedClient kept online, logged and measured.

:class:`NodeService` is an :class:`~twisted.application.service.IService` (a
``MultiService``: the services that handlers return are its children):

* ``startService`` starts the handlers' services, then sets the configured presence, which
  connects the client;
* ``stopService`` stops the handlers' services, sends the unavailable presence, closes the
  stream and waits for the client to stop, at most ``shutdown_timeout`` seconds (then the
  connection is dropped);
* presence subscription requests are answered by ``settings.subscriptions``
  (:mod:`txxmppnode.daemon.subscriptions`), so that contacts can see the node online;
* every state change of the client is logged as one line in the ``xmppnode`` log namespace:
  ``connecting``, ``established``, ``suspended``, ``resumed``, ``destroyed``, ``stopped``,
  ``failed``, plus the delay before each retry and each stream error.  Stanza contents are
  never logged here.

Run by ``twistd`` (*standalone*), the service also owns the process: SIGTERM and SIGINT stop it
gracefully and the process then exits with status 0; a fatal failure (credentials refused, no
connection after the initial attempts, ...) stops the reactor and the process exits with
status 1 and the reason on stderr.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from types import FrameType
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import StreamError
from ..presence import PresenceManagedClient
from ..presence_state import PresenceState
from .handlers import HandlerError
from .metrics import NodeMetrics, metrics_site
from .options import NodeOptions, NodeSettings
from .subscriptions import answer_subscriptions

__all__ = ["NodeService", "makeService"]

_log = Logger(namespace="xmppnode")


def _describe(error: BaseException | None) -> str:
    """One line for *error*: its message, or its type when it has none."""
    if error is None:
        return "the connection closed"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _show(state: PresenceState) -> str:
    return "available" if state.show.value is None else str(state.show.value)


def _exit_when_done(status: int, message: str) -> None:
    """Make the process exit with *status*, printing *message* on stderr, once twistd is done.

    twistd always exits with 0 after the reactor stopped (or with the stopping signal); the
    only point after its clean-up (pid file, logs) is interpreter exit, hence ``atexit``.
    """

    def leave() -> None:
        for stream in (sys.stdout, sys.__stdout__, sys.stderr):
            if stream is not None:
                stream.flush()
        if sys.__stderr__ is not None:
            sys.__stderr__.write(message + "\n")
            sys.__stderr__.flush()
        os._exit(status)

    atexit.register(leave)


class NodeService(MultiService):
    """Runs one :class:`~txxmppnode.presence.PresenceManagedClient` from :class:`NodeSettings`.

    :param settings: what to run (see :class:`~txxmppnode.daemon.options.NodeOptions`).
    :param reactor: the reactor; the global one by default.
    :param standalone: the service owns the process (``twistd``): it handles SIGTERM and
        SIGINT, and a fatal failure stops the reactor and makes the process exit with 1.
    :raises HandlerError: if a handler factory raised or returned something other than an
        ``IService`` or ``None``.

    :ivar client: the client; handlers have registered on it when the constructor returns.
    :ivar metrics: its :class:`~txxmppnode.daemon.metrics.NodeMetrics`.
    :ivar failure: the error the client failed with, or ``None``.
    """

    name = "xmppnode"

    def __init__(
        self, settings: NodeSettings, *, reactor: Any = None, standalone: bool = False
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.settings = settings
        self.reactor = reactor
        self.standalone = standalone
        self.failure: BaseException | None = None
        self.client = PresenceManagedClient(
            settings.jid,
            settings.security_layer(),
            override_peer=settings.override_peer(),
            reactor=reactor,
        )
        # connected first, so that the log lines below see the updated numbers
        self.metrics = NodeMetrics(self.client, reactor)
        self._metrics_port: IListeningPort | None = None
        self._metrics_listening = False
        self._stopping = False
        self._stop_requested = False
        self._last_stream_error: BaseException | None = None
        self._watch(self.client)
        answer_subscriptions(self.client, settings.subscriptions)
        for spec, factory in settings.handlers:
            try:
                result = factory(self.client)
            except Exception as exc:
                raise HandlerError(f"handler {spec!r} failed: {_describe(exc)}") from exc
            if result is None:
                continue
            if not IService.providedBy(result):
                raise HandlerError(
                    f"handler {spec!r} returned {result!r}, not a Twisted service or None"
                )
            IService(result).setServiceParent(self)  # type: ignore[no-untyped-call]

    # -- life cycle -------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Listen for metrics now, before twistd gives up privileges (low ports)."""
        self._listen_for_metrics()
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        """Start the handlers' services, then go online with the configured presence."""
        self._listen_for_metrics()
        super().startService()  # type: ignore[no-untyped-call]
        settings = self.settings
        _log.info(
            "starting: {jid} via {peer}, presence {presence}",
            jid=str(settings.jid),
            peer=settings.describe_peer(),
            presence=_show(settings.presence),
        )
        self.client.set_presence(settings.presence, settings.status, settings.priority)
        if self.standalone:
            self.reactor.callWhenRunning(self._handle_signals)

    def stopService(self) -> defer.Deferred[None]:
        """Stop the handlers' services, go offline cleanly (bounded), stop serving metrics."""
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        children: defer.Deferred[Any] | None = super().stopService()  # type: ignore[no-untyped-call]
        if children is not None:
            await children
        await self._go_offline()
        port, self._metrics_port = self._metrics_port, None
        stopped = None if port is None else port.stopListening()
        if stopped is not None:
            await stopped

    async def _go_offline(self) -> None:
        client = self.client
        if not client.running:
            return
        waiters = [client.on_stopped.next(), client.on_failure.next()]
        done = defer.DeferredList(waiters, fireOnOneCallback=True, consumeErrors=True)
        _log.info("going offline: unavailable presence, then closing the stream")
        client.set_presence(PresenceState(False), self.settings.offline_status)
        timeout = self.settings.shutdown_timeout
        done.addTimeout(timeout, self.reactor)
        try:
            await done
        except defer.TimeoutError:
            _log.warn("not offline after {timeout:g}s: dropping the connection", timeout=timeout)
            self._drop_connection()
        for waiter in waiters:
            if not waiter.called:
                waiter.cancel()  # leaves the signal's list of waiters

    def _drop_connection(self) -> None:
        xmlstream = self.client.stream.xmlstream
        if xmlstream is not None:
            xmlstream.abort(ConnectionError("the node is stopping"))

    # -- process (standalone) ---------------------------------------------------------------

    def _handle_signals(self) -> None:
        """Replace the reactor's SIGTERM/SIGINT handlers: stop without re-raising the signal.

        The reactor's own handlers make twistd end by killing itself with the signal; a node
        that went offline cleanly on request exits with 0 instead.
        """
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self._signalled, signal.Signals(number).name)

    def _signalled(self, name: str) -> None:
        if self._stop_requested:
            _log.warn("{signal} again: dropping the connection now", signal=name)
            self._drop_connection()
            return
        self._stop_requested = True
        _log.info("{signal}: stopping", signal=name)
        if self.reactor.running:
            self.reactor.stop()

    def _fail_process(self, reason: str) -> None:
        """Stop the reactor; the process will exit with 1 and *reason* on stderr."""
        if not self.standalone or self._stop_requested:
            return
        self._stop_requested = True
        _exit_when_done(1, f"twistd xmppnode: {reason}")
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    # -- metrics ----------------------------------------------------------------------------

    def _listen_for_metrics(self) -> None:
        description = self.settings.metrics
        if description is None or self._metrics_listening:
            return
        self._metrics_listening = True
        endpoint = endpoints.serverFromString(self.reactor, description)  # type: ignore[no-untyped-call]
        listening = endpoint.listen(metrics_site(self.metrics))
        starting = not self.reactor.running
        failed_at_start: list[str] = []

        def listen_failed(failure: Failure) -> None:
            reason = f"cannot serve metrics on {description}: {_describe(failure.value)}"
            _log.error("{reason}", reason=reason)
            if self.standalone and starting and not failed_at_start:
                failed_at_start.append(reason)
            else:
                self._fail_process(reason)

        listening.addCallbacks(self._serving_metrics, listen_failed)
        starting = False
        if failed_at_start:
            # twistd is still starting up: end now, before the client connects
            self._stop_requested = True
            _exit_when_done(1, f"twistd xmppnode: {failed_at_start[0]}")
            raise SystemExit(1)

    def _serving_metrics(self, port: IListeningPort) -> None:
        self._metrics_port = port
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        name = getattr(address, "name", None)
        if host is not None and number is not None:
            where = f"http://{f'[{host}]' if ':' in host else host}:{number}/metrics"
        elif name is not None:
            where = "unix:" + (os.fsdecode(name) if isinstance(name, bytes) else str(name))
        else:
            where = str(address)
        _log.info("metrics: serving on {address}", address=where)

    # -- what the client does, as log lines ----------------------------------------------------

    def _watch(self, client: PresenceManagedClient) -> None:
        client.on_connecting.connect(self._connecting)
        client.on_connect_failed.connect(self._connect_failed)
        client.on_retry_scheduled.connect(self._retry_scheduled)
        client.on_stream_established.connect(self._established)
        client.on_stream_suspended.connect(self._suspended)
        client.on_stream_resumed.connect(self._resumed)
        client.on_stream_destroyed.connect(self._destroyed)
        client.on_stopped.connect(self._stopped)
        client.on_failure.connect(self._failed)

    def _stream_error(self, error: BaseException | None) -> None:
        """One line per stream error (an attempt's failure may also end the client)."""
        if isinstance(error, StreamError) and error is not self._last_stream_error:
            self._last_stream_error = error
            _log.warn(
                "stream error: {condition} ({by}){text}",
                condition=error.condition.value,
                by="sent by us" if error.sent_by_us else "from the server",
                text=f": {' '.join(error.text.split())}" if error.text else "",
            )

    def _connecting(self) -> None:
        _log.info("connecting: attempt {attempt} to {peer}",
                  attempt=self.metrics.connection_attempts, state="connecting",
                  peer=self.settings.describe_peer())  # fmt: skip

    def _connect_failed(self, error: BaseException) -> None:
        if self._stopping and isinstance(error, defer.CancelledError):
            return
        self._stream_error(error)
        _log.warn("connection attempt {attempt} failed: {error}",
                  attempt=self.metrics.connection_attempts, error=_describe(error))  # fmt: skip

    def _retry_scheduled(self, delay: float) -> None:
        _log.info("reconnect: next attempt in {delay:.2f}s", delay=delay)

    def _established(self) -> None:
        stream = self.client.stream
        _log.info(
            "established: {jid} (negotiation {seconds:.3f}s, stream management {sm})",
            jid=str(self.client.local_jid),
            seconds=self.metrics.last_negotiation_seconds or 0.0,
            sm=("resumable" if stream.sm_resumable else "on") if stream.sm_enabled else "off",
            state="established",
        )

    def _suspended(self, reason: BaseException | None) -> None:
        self._stream_error(reason)
        _log.warn("suspended: {reason}; reconnecting", reason=_describe(reason),
                  state="suspended")  # fmt: skip

    def _resumed(self) -> None:
        _log.info("resumed: nothing lost (negotiation {seconds:.3f}s)",
                  seconds=self.metrics.last_negotiation_seconds or 0.0,
                  state="resumed")  # fmt: skip

    def _destroyed(self, reason: BaseException | None) -> None:
        self._stream_error(reason)
        if self._stopping:
            _log.info("destroyed: {reason}", reason=_describe(reason), state="destroyed")
        else:
            _log.warn("destroyed: {reason}; unacknowledged stanzas are lost",
                      reason=_describe(reason), state="destroyed")  # fmt: skip

    def _stopped(self) -> None:
        _log.info("stopped", state="stopped")

    def _failed(self, error: BaseException) -> None:
        self.failure = error
        self._stream_error(error)
        _log.error("failed: {error}", error=_describe(error), state="failed")
        self._fail_process(f"failed: {_describe(error)}")


def makeService(options: NodeOptions) -> NodeService:
    """The ``twistd xmppnode`` service: a standalone :class:`NodeService` from *options*."""
    return NodeService(options.settings, standalone=True)
