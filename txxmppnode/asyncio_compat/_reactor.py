"""Twisted's reactor on the caller's asyncio event loop.

The asyncio face runs the one Twisted implementation of txxmppnode on
:class:`twisted.internet.asyncioreactor.AsyncioSelectorReactor`, a reactor whose file
descriptors and timers are the asyncio loop's own (``loop.add_reader``, ``loop.call_at``).
:func:`install_reactor` makes that reactor the process's reactor and binds it to the running
loop the first time an asyncio object of txxmppnode is created.

How the reactor runs without ``reactor.run()``
----------------------------------------------

``AsyncioSelectorReactor.run()`` is two steps: ``startRunning()`` (the base class's start-up:
fire the ``startup`` system event, which sets ``reactor.running``; register the I/O thread;
optionally install signal handlers) and then ``loop.run_forever()``.  The second step belongs to
the caller here -- the loop already runs, under ``asyncio.run`` or whatever started it -- so
only the first one is done, with ``installSignalHandlers=False`` so that asyncio keeps its own
signal handling.  From then on the reactor believes it is running, which it is: every
``callLater`` becomes a ``loop.call_at`` and every socket a ``loop.add_reader``.

The reactor is never stopped: stopping would fire Twisted's ``shutdown`` event, which
disconnects everything and makes the reactor unusable for the rest of the process (Twisted
reactors cannot restart).  Nothing of the caller's loop is started, stopped or closed here.
Two consequences are handled:

* the reactor's thread pool (host name resolution runs there) gets daemon threads, so that the
  interpreter can exit after ``asyncio.run`` returned without a ``shutdown`` event to stop it;
* a program may run several loops one after the other (``asyncio.run`` twice, or a test
  runner with a loop per test).  When the loop the reactor was bound to is *closed* and another
  one asks for it, the reactor moves to the new loop: its readers, writers and timer are
  registered there.  A loop that is still open is never taken over; that is an error.

Errors are :class:`ReactorConflict`, raised when an asyncio object is constructed, with what to
do about them: another reactor installed already (something imported
``twisted.internet.reactor`` first), a Windows Proactor loop, no running loop.

When this module installs the reactor, it also routes Twisted's global log (the events of
txxmppnode's modules and of Twisted itself) to the standard :mod:`logging` module, each event to
the logger named after its namespace (``txxmppnode.stanzastream``, ``twisted.internet.defer``,
...).  It selects asyncio for txaio (``txaio.use_asyncio()``) unless the process chose Twisted
for txaio explicitly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import warnings
from typing import Any, Final

import txaio
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent, globalLogBeginner
from txaio import aio as txaio_aio
from zope.interface import implementer

__all__ = ["ReactorConflict", "install_reactor", "stdlib_twisted_logger"]

_REACTOR_MODULE: Final = "twisted.internet.reactor"

_LEVELS: Final = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


class ReactorConflict(RuntimeError):
    """Twisted cannot run on this asyncio loop; the message says what to do instead."""


@implementer(ILogObserver)
class _StdlibObserver:
    """A Twisted log observer writing each event to a :class:`logging.Logger`.

    :param logger: the logger to write to; ``None`` picks the logger named after each event's
        namespace.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger

    def __call__(self, event: dict[str, Any]) -> None:
        logger = self._logger or logging.getLogger(event.get("log_namespace") or "twisted")
        level = _LEVELS.get(event.get("log_level", LogLevel.info), logging.INFO)
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = None
        if failure is not None:
            exc_info = (failure.type, failure.value, failure.getTracebackObject())
        logger.log(level, "%s", formatEvent(event), exc_info=exc_info)


def stdlib_twisted_logger(logger: logging.Logger | None, default_name: str) -> Logger:
    """A Twisted :class:`~twisted.logger.Logger` whose events go to a :mod:`logging` logger.

    :param logger: the standard logger to write to; ``None`` for ``getLogger(default_name)``.
    """
    target = logger if logger is not None else logging.getLogger(default_name)
    return Logger(namespace=target.name, observer=_StdlibObserver(target))


def _check_loop(loop: asyncio.AbstractEventLoop) -> None:
    if sys.platform == "win32" and isinstance(loop, asyncio.ProactorEventLoop):
        raise ReactorConflict(
            "txxmppnode cannot run on a Windows ProactorEventLoop (Twisted's asyncio reactor "
            "needs a selector loop); before starting the loop, call "
            "asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())"
        )
    if loop.is_closed():
        raise ReactorConflict("the asyncio event loop is closed")


def _route_twisted_logs_to_logging() -> None:
    """Send Twisted's global log to :mod:`logging`, leaving :mod:`warnings` alone."""
    show_warning = warnings.showwarning
    try:
        globalLogBeginner.beginLoggingTo([_StdlibObserver()], redirectStandardIO=False)
    finally:
        warnings.showwarning = show_warning  # beginLoggingTo redirects warnings to the log


def _select_txaio(loop: asyncio.AbstractEventLoop) -> None:
    try:
        txaio.use_asyncio()  # type: ignore[no-untyped-call]
    except RuntimeError:
        return  # the process chose Twisted for txaio; that is its business
    txaio_aio.config.loop = loop  # type: ignore[assignment]  # (txaio.config is this one now)


def _daemon_thread_pool(reactor: Any) -> None:
    """Let the interpreter exit with the reactor's pool threads alive (no shutdown event)."""
    pool = reactor.getThreadPool()
    pool.threadFactory = functools.partial(threading.Thread, daemon=True)


def _rebind(reactor: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Move the reactor from its closed loop to *loop*: readers, writers and the timer."""
    readers, writers = list(reactor._readers), list(reactor._writers)
    reactor._readers.clear()
    reactor._writers.clear()
    reactor._asyncioEventloop = loop
    reactor._timerHandle = None
    reactor._scheduledAt = None
    for reader in readers:
        if reader.fileno() >= 0:
            reactor.addReader(reader)
    for writer in writers:
        if writer.fileno() >= 0:
            reactor.addWriter(writer)
    reactor._reschedule()


def _start(reactor: Any) -> None:
    if reactor.running:
        return
    if reactor._startedBefore:
        raise ReactorConflict(
            "the Twisted reactor was stopped earlier in this process and cannot run again; "
            "do not call reactor.stop() in a program that uses txxmppnode.asyncio_compat"
        )
    _daemon_thread_pool(reactor)
    reactor.startRunning(installSignalHandlers=False)


def install_reactor(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Make Twisted run on *loop* (the running loop by default); return the reactor.

    Called by every asyncio object of txxmppnode when it is created; call it yourself at the
    start of a program only to get the error early or to use the reactor directly.  Calling it
    again with the same loop does nothing more.

    :raises ReactorConflict: there is no running loop and none was given; another reactor
        than ``AsyncioSelectorReactor`` is installed; the reactor runs on another loop that is
        still open; or the loop is a Windows Proactor loop.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ReactorConflict(
                "no running asyncio event loop: create txxmppnode's asyncio objects inside a "
                "coroutine (under asyncio.run(...)), or pass loop="
            ) from None
    _check_loop(loop)
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if _REACTOR_MODULE in sys.modules:
        from twisted.internet import reactor

        if not isinstance(reactor, AsyncioSelectorReactor):
            raise ReactorConflict(
                f"Twisted's {type(reactor).__name__} is installed already, and txxmppnode's "
                "asyncio face needs AsyncioSelectorReactor.  Something imported "
                "twisted.internet.reactor before the first txxmppnode.asyncio_compat object "
                "was created: create that object (or call install_reactor()) before importing "
                "the module that does it, or install the reactor yourself first with "
                "twisted.internet.asyncioreactor.install(asyncio.get_running_loop())"
            )
        current = reactor._asyncioEventloop
        if current is not loop:
            if not current.is_closed():
                raise ReactorConflict(
                    "the Twisted reactor runs on another asyncio event loop that is still "
                    "open; txxmppnode runs on one loop at a time (close the other loop first)"
                )
            _rebind(reactor, loop)
        _start(reactor)
        _select_txaio(loop)
        return reactor

    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    _route_twisted_logs_to_logging()
    _start(reactor)
    _select_txaio(loop)
    return reactor
