"""What the node counts, and the Prometheus text exposition of it over ``twisted.web``.

:class:`NodeMetrics` reads the connection state from the client itself
(:attr:`Client.state <txxmppnode.client.Client.state>`, the one place the client keeps it), and
counts what the client reports through its signals (``on_connecting``,
``on_stream_established``, ...) and its stanza stream's ``on_stanza_received`` and
``on_stanza_enqueued`` hooks; :meth:`NodeMetrics.render` writes the Prometheus text format
(version 0.0.4).  :func:`metrics_site` makes the ``twisted.web`` site that serves it at
``/metrics``; the node listens with it on a Twisted server endpoint string such as
``tcp:9100:interface=127.0.0.1``.

The families and what each means are listed in the operations guide (``docs/operations.rst``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..client import Client, ClientState
from ..errors import StreamError
from ..stanza import IQ, Message, Presence, Stanza

__all__ = ["CONTENT_TYPE", "STANZA_KINDS", "STATES", "NodeMetrics", "metrics_site"]

#: The Content-Type of the Prometheus text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The values of the ``state`` label of ``xmppnode_connection_state``: those of
#: :class:`~txxmppnode.client.ClientState`, in its order.
STATES: Final = tuple(state.value for state in ClientState)
#: The values of the ``kind`` label of the stanza counters.
STANZA_KINDS: Final = ("message", "presence", "iq")


def _kind(stanza: Stanza) -> str:
    if isinstance(stanza, Message):
        return "message"
    if isinstance(stanza, Presence):
        return "presence"
    if isinstance(stanza, IQ):
        return "iq"
    return "other"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    """Accumulates metric families in the text format."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        type_: str,
        help_: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        help_text = help_.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {type_}")
        for labels, value in samples:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{text}}} {_number(value)}" if text else
                              f"{name} {_number(value)}")  # fmt: skip

    def single(self, name: str, type_: str, help_: str, value: float | None) -> None:
        self.family(name, type_, help_, [] if value is None else [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class NodeMetrics:
    """The counters and gauges of one client.

    :param client: the client to follow; its signals are connected here.
    :param clock: what measures the negotiation durations (an ``IReactorTime``).
    """

    def __init__(self, client: Client, clock: IReactorTime) -> None:
        self.client = client
        self.clock = clock
        self.connection_attempts = 0
        self.connection_failures = 0
        self.reconnects = 0
        self.sessions_established = 0
        self.resumptions = 0
        self.stream_errors: Counter[str] = Counter()
        self.stanzas_received: Counter[str] = Counter()
        self.stanzas_sent: Counter[str] = Counter()
        #: Seconds from the start of the last successful attempt to established/resumed.
        self.last_negotiation_seconds: float | None = None
        self._attempt_started: float | None = None
        self._last_stream_error: BaseException | None = None

        client.on_connecting.connect(self._connecting)
        client.on_connect_failed.connect(self._connect_failed)
        client.on_retry_scheduled.connect(self._retry_scheduled)
        client.on_stream_established.connect(self._established)
        client.on_stream_resumed.connect(self._resumed)
        client.on_stream_suspended.connect(self._suspended)
        client.on_stream_destroyed.connect(self._destroyed)
        client.on_failure.connect(self._failed)
        client.stream.on_stanza_received.connect(self._received)
        client.stream.on_stanza_enqueued.connect(self._enqueued)

    @property
    def state(self) -> str:
        """The client's state, one of :data:`STATES` (read from the client, never stored)."""
        return self.client.state.value

    # -- what the client reports ----------------------------------------------------------

    def _connecting(self) -> None:
        self.connection_attempts += 1
        self._attempt_started = self.clock.seconds()

    def _connect_failed(self, error: BaseException) -> None:
        if isinstance(error, defer.CancelledError):
            return  # the client was stopped while connecting
        self.connection_failures += 1
        self._attempt_started = None
        self.count_stream_error(error)

    def _retry_scheduled(self, delay: float) -> None:
        self.reconnects += 1

    def _negotiated(self) -> None:
        if self._attempt_started is not None:
            self.last_negotiation_seconds = self.clock.seconds() - self._attempt_started
            self._attempt_started = None

    def _established(self) -> None:
        self.sessions_established += 1
        self._negotiated()

    def _resumed(self) -> None:
        self.resumptions += 1
        self._negotiated()

    def _suspended(self, reason: BaseException | None) -> None:
        self.count_stream_error(reason)

    def _destroyed(self, reason: BaseException | None) -> None:
        self.count_stream_error(reason)

    def _failed(self, error: BaseException) -> None:
        self.count_stream_error(error)

    def count_stream_error(self, error: BaseException | None) -> None:
        """Count *error* if it is a stream error (by its condition), once per exception."""
        if isinstance(error, StreamError) and error is not self._last_stream_error:
            self._last_stream_error = error
            self.stream_errors[error.condition.value] += 1

    def _received(self, stanza: Stanza) -> None:
        self.stanzas_received[_kind(stanza)] += 1

    def _enqueued(self, stanza: Stanza) -> None:
        self.stanzas_sent[_kind(stanza)] += 1

    # -- exposition ----------------------------------------------------------------------------

    def render(self) -> str:
        """The metrics in the Prometheus text format (version 0.0.4)."""
        stream = self.client.stream
        current = self.state
        out = _Writer()
        out.family("xmppnode_info", "gauge", "The node's account; always 1.",
                   [({"jid": str(self.client.local_jid)}, 1)])  # fmt: skip
        out.family(
            "xmppnode_connection_state",
            "gauge",
            "1 for the current connection state, 0 for the others.",
            [({"state": state}, int(state == current)) for state in STATES],
        )
        counters = (
            ("connection_attempts", "Connection attempts, the first and every retry.",
             self.connection_attempts),
            ("connection_failures", "Connection attempts that failed.",
             self.connection_failures),
            ("reconnects", "Retries scheduled after a failed attempt or a lost connection.",
             self.reconnects),
            ("sessions_established", "New sessions (a resource bound), the first included.",
             self.sessions_established),
            ("resumptions", "Sessions resumed after a connection loss, nothing lost (XEP-0198).",
             self.resumptions),
        )  # fmt: skip
        for name, help_, value in counters:
            out.single(f"xmppnode_{name}_total", "counter", help_, value)
        out.family(
            "xmppnode_stream_errors_total",
            "counter",
            "Stream errors received or sent, by condition.",
            [({"condition": c}, n) for c, n in sorted(self.stream_errors.items())],
        )
        for direction, counts, help_ in (
            ("received", self.stanzas_received, "Stanzas received, by kind."),
            ("sent", self.stanzas_sent, "Stanzas queued for sending (once each), by kind."),
        ):
            kinds = [*STANZA_KINDS, *sorted(set(counts) - set(STANZA_KINDS))]
            out.family(
                f"xmppnode_stanzas_{direction}_total",
                "counter",
                help_,
                [({"kind": kind}, counts[kind]) for kind in kinds],
            )
        out.single(
            "xmppnode_sm_unacked_stanzas",
            "gauge",
            "Stanzas sent and not yet acknowledged by the server (XEP-0198).",
            len(stream.sm_unacked_list) if stream.sm_enabled else 0,
        )
        out.single("xmppnode_send_queue_stanzas", "gauge", "Stanzas waiting to be written.",
                   stream.queue_length)  # fmt: skip
        out.single(
            "xmppnode_last_negotiation_duration_seconds",
            "gauge",
            "Seconds from the start of the last successful connection attempt to the "
            "established or resumed session.",
            self.last_negotiation_seconds,
        )
        return out.text()


class _MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))  # type: ignore[no-untyped-call]
        request.setHeader(b"cache-control", b"no-store")  # type: ignore[no-untyped-call]
        return self._metrics.render().encode("utf-8")


class _Index(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        return b"txxmppnode: the metrics are at /metrics\n"


class _QuietSite(Site):
    """A site that writes no access log line per request (scrapes come every few seconds)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def metrics_site(metrics: NodeMetrics) -> Site:
    """A ``twisted.web`` site serving *metrics* at ``/metrics`` (and a pointer at ``/``)."""
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", _MetricsResource(metrics))
    root.putChild(b"", _Index())
    return _QuietSite(root)  # type: ignore[no-untyped-call]
