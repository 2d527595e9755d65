"""Client, PresenceManagedClient, UseConnected and services, for asyncio code.

Each client here faces one core client (:attr:`Client.core`), which does all the work: the
connection, reconnection, resumption and signals are those described in
:mod:`txxmppnode.client`.  The face converts at the border:

* ``send()``, ``stop()`` and the signals' ``next()`` return asyncio futures, ``enqueue()`` an
  awaitable token; cancelling a future cancels the operation underneath;
* signal listeners, stanza callbacks and IQ handlers may be coroutine functions;
* the *logger* is a :class:`logging.Logger`.

Services: ``summon()`` works with the core's services (returned as they are) and with
subclasses of :class:`Service` here, whose :attr:`~Service.client` is the asyncio client and
whose ``shutdown`` may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from inspect import isawaitable
from typing import Any, ClassVar, TypeVar

from twisted.internet import defer, interfaces

from .. import client as _core_client
from .. import presence as _core_presence
from .. import presence_server as _core_presence_server
from .. import service as _core_service
from .. import use_connected as _core_use_connected
from ..connect import PeerOption
from ..features import StreamFeatures
from ..jid import JID
from ..presence_state import PresenceState
from ..security_layer import SecurityLayer
from ..stanza import IQ, Presence, Stanza
from ._bridge import as_deferred, as_future, awaited_by_twisted
from ._delegate import delegate
from ._reactor import install_reactor, stdlib_twisted_logger
from .signal import CoroutineSignal, Event, Signal, face_of_core_signal
from .stream import StanzaStream, StanzaToken

__all__ = ["Client", "PresenceManagedClient", "PresenceServer", "Service", "UseConnected"]

S = TypeVar("S", bound=_core_service.Service)
Status = _core_presence_server.Status

# core client -> its asyncio face, for services summoned through the core's registry
_faces: weakref.WeakKeyDictionary[_core_client.Client, weakref.ref[Client]] = (
    weakref.WeakKeyDictionary()
)
_DEFAULT_PRESENCE = PresenceState(True)


class Client:
    """An XMPP client session that reconnects and resumes on its own.

    The arguments are those of :class:`txxmppnode.Client`, with *loop* (the running loop when
    ``None``) instead of the reactor, and a :class:`logging.Logger` as *logger* (by default the
    logger named after the class).  Construct it in a coroutine, or pass *loop*.

    :raises ~txxmppnode.asyncio_compat.ReactorConflict: if Twisted cannot run on the loop.
    """

    _core_class: ClassVar[type[_core_client.Client]] = _core_client.Client

    def __init__(
        self,
        local_jid: JID | str,
        security_layer: SecurityLayer,
        *,
        negotiation_timeout: timedelta = timedelta(seconds=60),
        max_initial_attempts: int | None = 4,
        override_peer: Sequence[PeerOption] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        logger: logging.Logger | None = None,
        resolver: interfaces.IResolver | None = None,
    ) -> None:
        reactor = install_reactor(loop)
        self.loop: asyncio.AbstractEventLoop = loop or asyncio.get_running_loop()
        #: The :class:`logging.Logger` of the client.
        self.logger = logger or logging.getLogger(f"{type(self).__module__}.{type(self).__name__}")
        self._core = self._core_class(
            local_jid,
            security_layer,
            negotiation_timeout=negotiation_timeout,
            max_initial_attempts=max_initial_attempts,
            override_peer=override_peer,
            reactor=reactor,
            logger=stdlib_twisted_logger(self.logger, self.logger.name),
            resolver=resolver,
        )
        _faces[self._core] = weakref.ref(self)
        self._stop_future: tuple[defer.Deferred[None], asyncio.Future[None]] | None = None
        core, loop_ = self._core, self.loop
        #: The client's :class:`~txxmppnode.asyncio_compat.StanzaStream`.
        self.stream = StanzaStream._of(core.stream, loop_)
        #: Set while the stream is established (``is_set()``, ``await wait()``).
        self.established_event = Event(loop=loop_, core=core.established_event)
        #: Emitted with the error when the client fails and stops.
        self.on_failure: Signal[[BaseException]] = Signal(loop=loop_, core=core.on_failure)
        #: Emitted when the client stopped after :meth:`stop`.
        self.on_stopped: Signal[[]] = Signal(loop=loop_, core=core.on_stopped)
        #: Emitted (coroutine listeners awaited in turn) before ``on_stream_established``.
        self.before_stream_established: CoroutineSignal[[]] = CoroutineSignal(
            loop=loop_, core=core.before_stream_established
        )
        #: Emitted when a new stream is bound and usable.
        self.on_stream_established: Signal[[]] = Signal(loop=loop_, core=core.on_stream_established)
        #: Emitted with the reason when the connection is lost (resumption follows).
        self.on_stream_suspended: Signal[[BaseException | None]] = Signal(
            loop=loop_, core=core.on_stream_suspended
        )
        #: Emitted when the stream was resumed without loss.
        self.on_stream_resumed: Signal[[]] = Signal(loop=loop_, core=core.on_stream_resumed)
        #: Emitted with the reason when the session's state is lost.
        self.on_stream_destroyed: Signal[[BaseException | None]] = Signal(
            loop=loop_, core=core.on_stream_destroyed
        )

    @property
    def core(self) -> _core_client.Client:
        """The Twisted-side client this one faces."""
        return self._core

    def __getattr__(self, name: str) -> Signal[...]:
        """Every other signal of the core client, as an asyncio signal."""
        if "_core" not in self.__dict__:
            raise AttributeError(name)
        return face_of_core_signal(self, self._core, name, self.loop)

    # -- state and settings (the core's) ------------------------------------------------------

    local_jid: JID = delegate("local_jid", "Our address: the bound full JID once established.")
    running: bool = delegate(
        "running", "True from :meth:`start` until the client stopped or failed."
    )
    established: bool = delegate("established", "True while the stream is bound and usable.")
    suspended: bool = delegate("suspended", "True between a connection loss and what follows it.")
    stream_features: StreamFeatures | None = delegate(
        "stream_features", "The stream features before binding."
    )
    security_layer: SecurityLayer = delegate("security_layer", writable=True)
    negotiation_timeout: timedelta = delegate("negotiation_timeout", writable=True)
    max_initial_attempts: int | None = delegate("max_initial_attempts", writable=True)
    override_peer: list[PeerOption] = delegate("override_peer", writable=True)
    resolver: interfaces.IResolver | None = delegate("resolver", writable=True)
    backoff_start: timedelta = delegate("backoff_start", writable=True)
    backoff_factor: float = delegate("backoff_factor", writable=True)
    backoff_cap: timedelta = delegate("backoff_cap", writable=True)
    backoff_jitter: float = delegate("backoff_jitter", writable=True)
    resumption_timeout: int | None = delegate("resumption_timeout", writable=True)
    allow_implicit_reconnect: bool = delegate("allow_implicit_reconnect", writable=True)
    state: _core_client.ClientState = delegate("state", "Where the client is in its life cycle.")
    reactor: Any = delegate("reactor", "The Twisted reactor (on :attr:`loop`).")

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting and keep the session alive until :meth:`stop`.

        :raises RuntimeError: if the client is already running.
        """
        self._core.start()

    def stop(self) -> asyncio.Future[None]:
        """Close the stream cleanly and stop; the future is done once stopped.

        Awaiting it is optional.  A second call while the first is in progress returns the
        same future.
        """
        stopping = self._core.stop()
        if self._stop_future is not None and self._stop_future[0] is stopping:
            return self._stop_future[1]
        future = as_future(stopping, self.loop)
        self._stop_future = (stopping, future)
        return future

    def connected(self, **kwargs: Any) -> UseConnected:
        """``async with client.connected(timeout=...) as stream:`` -- see :class:`UseConnected`.

        The presence is left alone.
        """
        return UseConnected._of(self, self._core.connected(**kwargs))

    def summon(self, class_: type[S]) -> S:
        """The instance of service *class_*, summoned (with its dependencies) if needed."""
        return self._core.summon(class_)

    # -- sending ------------------------------------------------------------------------------

    def enqueue(self, stanza: Stanza, **kwargs: Any) -> StanzaToken:
        """Queue *stanza*; return its awaitable token (queued during a suspension).

        :raises ConnectionError: if there is no session; see :meth:`txxmppnode.Client.enqueue`.
        """
        if not self._core._can_send():
            raise ConnectionError("the stream is not established")
        return self.stream.enqueue(stanza, **kwargs)

    def send(
        self, stanza: Stanza, *, timeout: float | None = None, cb: Callable[[IQ], Any] | None = None
    ) -> asyncio.Future[Any]:
        """Send *stanza* once the stream is established; see :meth:`StanzaStream.send`."""
        adapted = None if cb is None else awaited_by_twisted(cb, self.loop)
        return as_future(self._core.send(stanza, timeout=timeout, cb=adapted), self.loop)


class PresenceManagedClient(Client):
    """A client whose connection follows its presence: available connects, unavailable stops.

    The arguments are those of :class:`Client`.  The initial presence is unavailable.
    """

    _core_class = _core_presence.PresenceManagedClient

    def __init__(self, jid: JID | str, security_layer: SecurityLayer, **kwargs: Any) -> None:
        super().__init__(jid, security_layer, **kwargs)
        #: Emitted after ``on_stream_established`` once the initial presence was sent.
        self.on_presence_sent: Signal[[]] = Signal(
            loop=self.loop, core=self._presence_core.on_presence_sent
        )

    @property
    def _presence_core(self) -> _core_presence.PresenceManagedClient:
        core = self._core
        assert isinstance(core, _core_presence.PresenceManagedClient)
        return core

    @property
    def core(self) -> _core_presence.PresenceManagedClient:
        """The Twisted-side client this one faces."""
        return self._presence_core

    @property
    def presence(self) -> PresenceState:
        """The presence set; setting it connects (available) or goes offline (unavailable)."""
        return self._presence_core.presence

    @presence.setter
    def presence(self, value: PresenceState) -> None:
        self._presence_core.presence = value

    def set_presence(self, state: PresenceState, status: Status = None, priority: int = 0) -> None:
        """Set presence and status; connect when available, go offline when unavailable."""
        self._presence_core.set_presence(state, status, priority)

    def connected(self, **kwargs: Any) -> UseConnected:
        """Like :meth:`Client.connected`, setting an available presence first."""
        return UseConnected._of(self, self._presence_core.connected(**kwargs))


class UseConnected:
    """``async with UseConnected(client) as stream:``: connect for the duration of the block.

    The behaviour (and the deprecated *presence* argument) is that of
    :class:`txxmppnode.UseConnected`: entering starts the client and waits until the stream is
    established, the client fails, or *timeout* passes (the client is stopped and
    :class:`TimeoutError` raised); leaving stops the client.  Cancelling the task while it
    enters stops a client the block started.

    :param client: an asyncio :class:`Client`.
    :param timeout: limit on the time it may take to connect (``timedelta`` or seconds).
    :param presence: deprecated, as in the core.
    """

    def __init__(
        self,
        client: Client,
        *,
        timeout: timedelta | float | None = None,
        presence: PresenceState = _DEFAULT_PRESENCE,
    ) -> None:
        if presence.available:
            warnings.warn(
                "the presence argument of UseConnected is deprecated: set the presence with "
                "the PresenceServer service and pass PresenceState(False)",
                DeprecationWarning,
                stacklevel=2,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            core = _core_use_connected.UseConnected(client.core, timeout=timeout, presence=presence)
        self._bind(client, core)

    @classmethod
    def _of(cls, client: Client, core: _core_use_connected.UseConnected) -> UseConnected:
        use = cls.__new__(cls)
        use._bind(client, core)
        return use

    def _bind(self, client: Client, core: _core_use_connected.UseConnected) -> None:
        self.client = client
        self._core = core

    @property
    def core(self) -> _core_use_connected.UseConnected:
        """The Twisted-side context manager."""
        return self._core

    @property
    def timeout(self) -> timedelta | float | None:
        """The connection time limit (deprecated attribute)."""
        warnings.warn("UseConnected.timeout is deprecated", DeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._core.timeout

    @property
    def presence(self) -> PresenceState:
        """The presence to set (deprecated attribute)."""
        warnings.warn("UseConnected.presence is deprecated", DeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._core.presence

    async def __aenter__(self) -> StanzaStream:
        client = self.client
        started_here = not client.running
        entering = defer.Deferred.fromCoroutine(self._core.__aenter__())
        try:
            await as_future(entering, client.loop)
        except asyncio.CancelledError:
            if started_here and client.running:
                await asyncio.shield(client.stop())
            raise
        return client.stream

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        leaving = defer.Deferred.fromCoroutine(self._core.__aexit__(exc_type, exc, traceback))
        await as_future(leaving, self.client.loop)
        return False


class Service(_core_service.Service):
    """Base class of client services written for asyncio.

    A subclass is summoned like any service (``client.summon(MyService)``) and ordered with
    ``ORDER_AFTER`` / ``ORDER_BEFORE`` as in :mod:`txxmppnode.service`; core services may be
    among them.  What differs from the core's base class:

    * :attr:`client` is the asyncio :class:`Client` (the core hands the core client; the face
      is looked up);
    * :attr:`logger` is a :class:`logging.Logger` (the *logger* argument, by default the one
      named after the class);
    * ``shutdown`` may be a coroutine function (``async def shutdown(self)``), awaited when the
      client stops.  (Type checkers compare it with the core's annotation, which says
      Deferred: such an override needs ``# type: ignore[override]``.)

    :raises TypeError: if summoned on a client that has no asyncio face.
    """

    client: Client

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        shutdown = cls.__dict__.get("shutdown")
        if shutdown is not None and not getattr(shutdown, "_txxmppnode_adapted", False):
            setattr(cls, "shutdown", _adapt_shutdown(shutdown))  # noqa: B010

    def __init__(
        self,
        client: Any,
        *,
        dependencies: Mapping[type[_core_service.Service], _core_service.Service] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        face = client if isinstance(client, Client) else _face_of(client)
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        #: The :class:`logging.Logger` of the service.
        self.logger = logger or logging.getLogger(name)
        super().__init__(
            face,
            dependencies=dependencies,
            logger=stdlib_twisted_logger(self.logger, name),
        )

    def shutdown(self) -> Any:
        """Release what the service holds; called (and awaited) when the client stops.

        Override it as ``async def shutdown(self) -> None`` (or a plain method); the default
        does nothing.
        """
        return defer.succeed(None)


def _face_of(core: Any) -> Client:
    ref = _faces.get(core) if isinstance(core, _core_client.Client) else None
    face = ref() if ref is not None else None
    if face is None:
        raise TypeError(
            "txxmppnode.asyncio_compat services need a txxmppnode.asyncio_compat client, "
            f"not {type(core).__name__}"
        )
    return face


def _adapt_shutdown(shutdown: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Make ``shutdown`` give the core's registry a Deferred even when it is ``async def``."""

    @functools.wraps(shutdown)
    def call(self: Service) -> Any:
        result = shutdown(self)
        if isawaitable(result) and not isinstance(result, defer.Deferred):
            return as_deferred(result, self.client.loop)
        return result

    call._txxmppnode_adapted = True  # type: ignore[attr-defined]
    return call


class PresenceServer(Service):
    """Holds and announces our presence: the core's PresenceServer, with asyncio signals.

    ``client.summon(PresenceServer)`` summons the core :class:`txxmppnode.PresenceServer` as
    its dependency and works on it: there is one presence per client.
    """

    ORDER_AFTER = frozenset({_core_presence_server.PresenceServer})

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._core = self.dependency(_core_presence_server.PresenceServer)
        loop = self.client.loop
        #: Emitted with the presence stanza after it was handed to the stream.
        self.on_presence_sent: Signal[[Presence]] = Signal(
            loop=loop, core=self._core.on_presence_sent
        )
        #: Emitted when :meth:`set_presence` changed something.
        self.on_presence_changed: Signal[[]] = Signal(
            loop=loop, core=self._core.on_presence_changed
        )

    @property
    def core(self) -> _core_presence_server.PresenceServer:
        """The core service this one faces."""
        return self._core

    state: PresenceState = delegate("state", "The presence state set.")
    status: dict[str | None, str] = delegate(
        "status", "The status texts, by language tag (``None``: none)."
    )
    priority: int = delegate("priority", "The presence priority.")

    def make_stanza(self) -> Presence:
        """The presence stanza for the current state, status and priority."""
        return self._core.make_stanza()

    def set_presence(self, state: PresenceState, status: Status = None, priority: int = 0) -> None:
        """Set the presence; broadcast it at once when the stream is established."""
        self._core.set_presence(state, status, priority)
