"""SCRAM's salted passwords: derived off the reactor thread, under a deadline, and remembered.

A SCRAM client derives its salted password with PBKDF2 and the iteration count the *server*
sends (:class:`~txxmppnode.sasl.KeyDerivation`).  On the reactor thread that froze every timer
and connection of the process while it ran: measured with ``benchmarks/scram_stall.py``,
0.7-0.95 s per connection for SCRAM-SHA-512 at 1,000,000 iterations, 7-11 s at 10,000,000.
:class:`KeyDeriver` runs it in a thread instead (:func:`hashlib.pbkdf2_hmac` releases the GIL,
so the reactor runs on meanwhile), under the negotiation step's timeout, through a small cache.

Why the reactor's thread pool (``reactor.getThreadPool()``) rather than a pool of our own: its
threads are started and joined with the reactor, so using the library never leaves behind a
thread that keeps a process from exiting; it comes with the reactor the stream was given, which
tests replace like every clock; and the iteration bound (``scram_max_iterations``, by default
:data:`txxmppnode.scram.MAX_ITERATIONS`, about a second of CPU at most) keeps each job short
enough not to hold the pool, which name resolution shares, for long.

Why the timeout is ours and not the thread's: a running PBKDF2 cannot be interrupted.  When the
deadline passes, :meth:`KeyDeriver.derive` fails at once with :class:`TimeoutError` and the
negotiation ends; the thread computes on and its result is dropped (not cached either).

Why a cache: the salted password depends only on the password, the salt, the iteration count
and the hash, and a server keeps the salt and count of an account until its password changes,
so every reconnection would pay the same derivation again.  RFC 5802 §5.1 lets a client keep
it.  :class:`SaltedPasswordCache` holds the last few, least recently used out first.  Its
dictionary keys are an HMAC-SHA-256, under a random key of that cache, of the four inputs:
no password is kept as a key, and a key means nothing outside this process.  The values are
the salted passwords themselves (what a client must hold to authenticate; each is only good
for the server account it was derived for).  :meth:`KeyDeriver.clear` forgets them all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from .sasl_mechanisms import KeyDerivation

__all__ = ["DEFAULT_CACHE_SIZE", "KeyDeriver", "SaltedPasswordCache"]

#: How many salted passwords a :class:`KeyDeriver` remembers by default: a few accounts, or one
#: account on a few servers, each reconnecting without deriving again.
DEFAULT_CACHE_SIZE: Final = 4

_log = Logger()


class SaltedPasswordCache:
    """The last *size* salted passwords, by (password, salt, iterations, hash); LRU.

    :param size: how many to keep; 0 keeps none.
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        """Start empty, with a fresh random key for the dictionary keys."""
        if size < 0:
            raise ValueError(f"the cache size must be 0 or more, not {size}")
        self.size = size
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        """How many salted passwords are remembered."""
        return len(self._entries)

    def _key(self, derivation: KeyDerivation) -> bytes:
        """The dictionary key of *derivation*: an HMAC of its four inputs, length-prefixed."""
        name = derivation.hash_name.encode()
        message = b"".join(
            (
                struct.pack(">BQI", len(name), derivation.iterations, len(derivation.salt)),
                name,
                derivation.salt,
                derivation.password,
            )
        )
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def get(self, derivation: KeyDerivation) -> bytes | None:
        """Return the remembered result of *derivation*, or ``None``."""
        key = self._key(derivation)
        salted = self._entries.get(key)
        if salted is not None:
            self._entries.move_to_end(key)
        return salted

    def put(self, derivation: KeyDerivation, salted: bytes) -> None:
        """Remember *salted* as the result of *derivation*, forgetting the oldest if full."""
        if self.size == 0:
            return
        key = self._key(derivation)
        self._entries[key] = salted
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every salted password."""
        self._entries.clear()


class KeyDeriver:
    """Performs :class:`~txxmppnode.sasl.KeyDerivation` requests in the reactor's thread pool.

    Each :class:`~txxmppnode.security_layer.SecurityLayer` has one
    (:attr:`~txxmppnode.security_layer.SecurityLayer.key_deriver`), so the connections made
    with a layer share its cache.

    :param cache_size: how many salted passwords to remember (0: none).
    :param compute: the function run in the thread; :meth:`KeyDerivation.compute` by default.
    :ivar cache: the :class:`SaltedPasswordCache`.
    :ivar hits: how many derivations were answered from the cache.
    :ivar computed: how many derivations were started in a thread.
    """

    def __init__(
        self,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        compute: Callable[[KeyDerivation], bytes] = KeyDerivation.compute,
    ) -> None:
        """Start with an empty cache."""
        self.cache = SaltedPasswordCache(cache_size)
        self.compute = compute
        self.hits = 0
        self.computed = 0

    def clear(self) -> None:
        """Forget every remembered salted password (e.g. after the password changed)."""
        self.cache.clear()

    def derive(
        self, derivation: KeyDerivation, reactor: IReactorTime, timeout: float | None = None
    ) -> defer.Deferred[bytes]:
        """Return a Deferred firing with the result of *derivation*.

        From the cache at once, or computed in ``reactor.getThreadPool()``; the result is
        delivered in the reactor thread.

        :param reactor: the reactor of the stream: its thread pool and its clock.
        :param timeout: after this many seconds the Deferred fails with :class:`TimeoutError`;
            the computation cannot be stopped, and its result is then dropped, not cached.
        :raises TypeError: *reactor* has no thread pool (does not provide ``IReactorThreads``).
        """
        salted = self.cache.get(derivation)
        if salted is not None:
            self.hits += 1
            _log.debug("SCRAM salted password from the cache")
            return defer.succeed(salted)
        if not IReactorThreads.providedBy(reactor):
            raise TypeError(
                f"the reactor {reactor!r} has no thread pool (IReactorThreads) to derive the "
                "SCRAM key in"
            )
        threads = cast(IReactorThreads, reactor)
        self.computed += 1
        started = reactor.seconds()
        # no canceller: cancelling (the timeout) fails it at once and later results are ignored
        result: defer.Deferred[bytes] = defer.Deferred()

        def finished(salted: bytes) -> None:
            elapsed = reactor.seconds() - started
            if result.called:
                _log.info(
                    "a SCRAM key derivation that was given up finished after {elapsed:.3f}s; "
                    "its result is dropped",
                    elapsed=elapsed,
                )
                return
            _log.debug(
                "derived the SCRAM salted password ({iterations} iterations of {hash}) in "
                "{elapsed:.3f}s",
                iterations=derivation.iterations,
                hash=derivation.hash_name,
                elapsed=elapsed,
            )
            self.cache.put(derivation, salted)
            result.callback(salted)

        def failed(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        running = deferToThreadPool(threads, threads.getThreadPool(), self.compute, derivation)
        running.addCallbacks(finished, failed)
        if timeout is not None:

            def timed_out(value: Any, timeout: float) -> Any:
                if isinstance(value, Failure) and isinstance(value.value, defer.CancelledError):
                    raise TimeoutError(
                        f"the SCRAM key derivation ({derivation.iterations} iterations of "
                        f"PBKDF2-{derivation.hash_name.upper()}) took longer than {timeout:g}s"
                    )
                return value

            result.addTimeout(timeout, reactor, timed_out)
        return result
