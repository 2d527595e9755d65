"""SCRAM's key derivation in the stream layer: in a thread, under the timeout, through a cache.

The exchanges run over an in-memory transport with a ``task.Clock`` that also has a thread pool
(:class:`ThreadedClock`): derivations really run in another thread, and their results come back
through ``callFromThread`` only when the test lets them (:meth:`ThreadedClock.run_thread_call`).
Derivations that must stay pending block on a :class:`threading.Event` the test controls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from txxmppnode import JID
from txxmppnode.key_derivation import KeyDeriver, SaltedPasswordCache
from txxmppnode.negotiation import authenticate
from txxmppnode.sasl import KeyDerivation, SASLProtocolError
from txxmppnode.security_layer import SecurityLayer, make
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser
from txxmppnode.xmlstream import XMLStream

PEER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='abc'"
    b" version='1.0'>"
)
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
JULIET = JID.fromstr("juliet@example.com")
PASSWORD = "secret"
#: How long a test waits for a thread to reach a point; never reached when the code is right.
WAIT = 10.0


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A ``task.Clock`` with a real thread pool; calls from threads wait in a queue."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="test-derivation")
        self.pool.start()
        self.from_threads: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()

    def getThreadPool(self) -> ThreadPool:
        return self.pool

    def callInThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.pool.callInThread(f, *args, **kwargs)

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.from_threads.put(lambda: f(*args, **kwargs))

    def suggestThreadPoolSize(self, size: int) -> None:
        self.pool.adjustPoolsize(maxthreads=size)

    def run_thread_call(self) -> None:
        """Run the next call a thread handed to the reactor, waiting for it to arrive."""
        self.from_threads.get(timeout=WAIT)()

    def stop(self) -> None:
        self.pool.stop()


@pytest.fixture
def clock() -> Iterator[ThreadedClock]:
    reactor = ThreadedClock()
    yield reactor
    reactor.stop()


class Blocking:
    """A derivation function that records its thread and waits for :attr:`release`."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []

    def __call__(self, derivation: KeyDerivation) -> bytes:
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(WAIT), "the test never released the derivation"
        return derivation.compute()


class Counting:
    """The real derivation, counted."""

    def __init__(self) -> None:
        self.calls: list[KeyDerivation] = []

    def __call__(self, derivation: KeyDerivation) -> bytes:
        self.calls.append(derivation)
        return derivation.compute()


def layer_with(compute: Callable[[KeyDerivation], bytes], **options: Any) -> SecurityLayer:
    return replace(make(PASSWORD, **options), key_deriver=KeyDeriver(compute=compute))


def connected(reactor: Clock) -> tuple[XMLStream, StringTransport]:
    transport = StringTransport()
    stream = XMLStream("example.com", reactor=reactor)
    stream.makeConnection(transport)
    stream.dataReceived(PEER_HEADER)
    transport.clear()
    return stream, transport


def sent_elements(transport: StringTransport) -> list[Any]:
    parser = XMLStreamParser()
    parser.feed(PEER_HEADER)
    data = transport.value()
    transport.clear()
    return [e.element for e in parser.feed(data) if isinstance(e, ElementReceived)]


def scram_sha_1_features() -> Any:
    wanted = (
        f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-SHA-1</mechanism>"
        "</mechanisms></stream:features>"
    )
    return XMLStreamParser().feed(PEER_HEADER + wanted.encode())[-1].element


class Server:
    """The server side of SCRAM-SHA-1 for one exchange, from RFC 5802 §3."""

    def __init__(self, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> None:
        self.salt, self.iterations = salt, iterations
        salted = hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), salt, iterations)
        self.client_key = hmac.digest(salted, b"Client Key", "sha1")
        self.server_key = hmac.digest(salted, b"Server Key", "sha1")

    def first(self, auth: Any) -> bytes:
        """The ``<challenge/>`` answering ``<auth/>``."""
        self.client_first_bare = base64.b64decode(auth.text).split(b",", 2)[2]
        nonce = self.client_first_bare.rpartition(b"r=")[2] + b"srv"
        self.server_first = b"r=%s,s=%s,i=%d" % (
            nonce,
            base64.b64encode(self.salt),
            self.iterations,
        )
        return sasl_element("challenge", self.server_first)

    def final(self, response: Any) -> bytes:
        """The ``<success/>`` answering a correct ``<response/>``."""
        client_final = base64.b64decode(response.text)
        without_proof, _, proof = client_final.rpartition(b",p=")
        auth_message = b",".join((self.client_first_bare, self.server_first, without_proof))
        signature = hmac.digest(hashlib.sha1(self.client_key).digest(), auth_message, "sha1")
        expected = bytes(a ^ b for a, b in zip(self.client_key, signature, strict=True))
        assert base64.b64decode(proof) == expected, "wrong client proof"
        server_signature = hmac.digest(self.server_key, auth_message, "sha1")
        return sasl_element("success", b"v=" + base64.b64encode(server_signature))


def sasl_element(name: str, payload: bytes) -> bytes:
    return f"<{name} xmlns='{SASL}'>{base64.b64encode(payload).decode()}</{name}>".encode()


def start(stream: XMLStream, layer: SecurityLayer, timeout: float = 5) -> defer.Deferred[None]:
    return defer.Deferred.fromCoroutine(
        authenticate(stream, scram_sha_1_features(), JULIET, layer, timeout)
    )


def failure_of(result: defer.Deferred[Any]) -> BaseException:
    assert result.called, "the authentication has not ended"
    failures: list[BaseException] = []
    result.addErrback(lambda f: failures.append(f.value))
    assert failures, "the authentication succeeded"
    return failures[0]


# -- in a thread, with the reactor running on ---------------------------------------------------


def test_the_derivation_runs_in_a_thread_while_timers_keep_firing(clock: ThreadedClock) -> None:
    blocking = Blocking()
    stream, transport = connected(clock)
    result = start(stream, layer_with(blocking))
    server = Server()
    (auth,) = sent_elements(transport)
    ticks: list[float] = []
    clock.callLater(1, lambda: ticks.append(clock.seconds()))
    stream.dataReceived(server.first(auth))
    assert blocking.started.wait(WAIT)
    # the reactor thread is free: the derivation waits in its thread, and timers still fire
    assert blocking.threads != [threading.get_ident()]
    clock.advance(1)
    assert ticks == [1.0]
    assert not result.called and transport.value() == b""
    blocking.release.set()
    clock.run_thread_call()
    (response,) = sent_elements(transport)
    assert response.tag == f"{{{SASL}}}response"
    stream.dataReceived(server.final(response))
    assert result.called and result.result is None
    assert stream.sasl_mechanism == "SCRAM-SHA-1"


def test_the_timeout_fires_while_the_derivation_still_runs(clock: ThreadedClock) -> None:
    blocking = Blocking()
    layer = layer_with(blocking)
    stream, transport = connected(clock)
    result = start(stream, layer, timeout=5)
    (auth,) = sent_elements(transport)
    stream.dataReceived(Server().first(auth))
    assert blocking.started.wait(WAIT)
    clock.advance(4.9)
    assert not result.called
    clock.advance(0.1)
    error = failure_of(result)
    assert type(error) is TimeoutError
    assert "SCRAM key derivation (4096 iterations of PBKDF2-SHA1) took longer than 5s" in str(error)
    # the thread finishes later: its result is dropped, neither sent nor remembered
    blocking.release.set()
    clock.run_thread_call()
    assert transport.value() == b""
    assert len(layer.key_deriver.cache) == 0


def test_a_reactor_without_threads_is_a_type_error() -> None:
    stream, transport = connected(Clock())
    result = start(stream, layer_with(Counting()))
    (auth,) = sent_elements(transport)
    stream.dataReceived(Server().first(auth))
    error = failure_of(result)
    assert type(error) is TypeError and "IReactorThreads" in str(error)


# -- the cache ------------------------------------------------------------------------------------


def authenticate_once(clock: ThreadedClock, layer: SecurityLayer, server: Server) -> None:
    """One whole exchange; the derivation's result is let through if one was started."""
    stream, transport = connected(clock)
    result = start(stream, layer)
    (auth,) = sent_elements(transport)
    stream.dataReceived(server.first(auth))
    if not transport.value():
        clock.run_thread_call()
    (response,) = sent_elements(transport)
    stream.dataReceived(server.final(response))
    assert result.called and result.result is None


def test_a_second_authentication_with_the_same_salt_hits_the_cache(clock: ThreadedClock) -> None:
    counting = Counting()
    layer = layer_with(counting)
    authenticate_once(clock, layer, Server())
    authenticate_once(clock, layer, Server())
    assert len(counting.calls) == 1
    assert (layer.key_deriver.computed, layer.key_deriver.hits) == (1, 1)


def test_another_salt_or_count_misses_the_cache(clock: ThreadedClock) -> None:
    counting = Counting()
    layer = layer_with(counting)
    authenticate_once(clock, layer, Server(salt=b"first salt"))
    authenticate_once(clock, layer, Server(salt=b"other salt"))
    authenticate_once(clock, layer, Server(salt=b"other salt", iterations=5000))
    assert [(c.salt, c.iterations) for c in counting.calls] == [
        (b"first salt", 4096),
        (b"other salt", 4096),
        (b"other salt", 5000),
    ]
    assert layer.key_deriver.hits == 0


def test_clearing_the_cache_derives_again(clock: ThreadedClock) -> None:
    counting = Counting()
    layer = layer_with(counting)
    authenticate_once(clock, layer, Server())
    layer.clear_scram_cache()
    assert len(layer.key_deriver.cache) == 0
    authenticate_once(clock, layer, Server())
    assert len(counting.calls) == 2


def derivation(password: bytes = b"pw", salt: bytes = b"salt", **changes: Any) -> KeyDerivation:
    return replace(KeyDerivation("sha256", password, salt, 4096), **changes)


def test_the_cache_keys_on_all_four_inputs() -> None:
    cache = SaltedPasswordCache()
    cache.put(derivation(), b"salted")
    assert cache.get(derivation()) == b"salted"
    for other in (
        derivation(password=b"other"),
        derivation(salt=b"other"),
        derivation(iterations=4097),
        derivation(hash_name="sha512"),
    ):
        assert cache.get(other) is None


def test_the_cache_forgets_the_least_recently_used() -> None:
    cache = SaltedPasswordCache(size=2)
    cache.put(derivation(salt=b"a"), b"A")
    cache.put(derivation(salt=b"b"), b"B")
    assert cache.get(derivation(salt=b"a")) == b"A"  # now b is the oldest
    cache.put(derivation(salt=b"c"), b"C")
    assert len(cache) == 2
    assert cache.get(derivation(salt=b"b")) is None
    assert cache.get(derivation(salt=b"a")) == b"A"
    assert cache.get(derivation(salt=b"c")) == b"C"


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = SaltedPasswordCache(size=0)
    cache.put(derivation(), b"salted")
    assert len(cache) == 0 and cache.get(derivation()) is None
    with pytest.raises(ValueError):
        SaltedPasswordCache(size=-1)


def test_the_cache_holds_no_password() -> None:
    password = b"a password that must not be kept"
    cache = SaltedPasswordCache()
    cache.put(derivation(password=password), b"salted")
    (key,) = cache._entries
    assert password not in key and len(key) == 32  # an HMAC-SHA-256 digest
    # and another cache (another process) files the same inputs under another key
    other = SaltedPasswordCache()
    other.put(derivation(password=password), b"salted")
    assert list(other._entries) != [key]


def test_the_password_is_not_in_the_repr() -> None:
    assert "pw" not in repr(derivation(password=b"pw"))


# -- the iteration bound --------------------------------------------------------------------------


@pytest.mark.parametrize(("bound", "asked"), [(None, 1_000_001), (10_000, 10_001)])
def test_a_count_above_the_bound_is_aborted_without_deriving(
    clock: ThreadedClock, bound: int | None, asked: int
) -> None:
    counting = Counting()
    options = {} if bound is None else {"scram_max_iterations": bound}
    layer = layer_with(counting, **options)
    stream, transport = connected(clock)
    result = start(stream, layer)
    (auth,) = sent_elements(transport)
    stream.dataReceived(Server(iterations=asked).first(auth) if asked < 20_000 else greedy(auth))
    (abort,) = sent_elements(transport)
    assert abort.tag == f"{{{SASL}}}abort"
    error = failure_of(result)
    assert type(error) is SASLProtocolError
    assert f"asks for {asked} PBKDF2 iterations; more than {bound or 1_000_000}" in str(error)
    assert counting.calls == []


def greedy(auth: Any) -> bytes:
    """A server-first message asking for 1,000,001 iterations (no server keys needed)."""
    nonce = base64.b64decode(auth.text).rpartition(b"r=")[2] + b"srv"
    return sasl_element("challenge", b"r=%s,s=c2FsdA==,i=1000001" % nonce)


def test_a_higher_bound_lets_a_higher_count_through(clock: ThreadedClock) -> None:
    counting = Counting()
    layer = layer_with(counting, scram_max_iterations=20_000)
    authenticate_once(clock, layer, Server(iterations=20_000))
    assert [c.iterations for c in counting.calls] == [20_000]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (4095, ValueError, "at least 4096"),
        (0, ValueError, "at least 4096"),
        ("1000000", TypeError, "must be an int"),
        (True, TypeError, "must be an int"),
    ],
)
def test_make_checks_the_bound(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make(PASSWORD, scram_max_iterations=value)
    assert make(PASSWORD).scram_max_iterations == 1_000_000
    assert make(PASSWORD, scram_max_iterations=4096).scram_max_iterations == 4096
