"""Cost of one ``Signal.emit``: nanoseconds per emission for the listener counts that occur.

Run ``.venv/bin/python benchmarks/signals.py``.  The stream's hot signals
(``on_stanza_received``, ``on_stanza_enqueued``) are emitted once per stanza when somebody
listens, and tested for truth (``if signal:``) on every stanza; the client's signals have one
to a few listeners.  Each case runs 200,000 emissions, five times, and prints the median per
emission:

``truth test``
    ``bool(signal)`` of a signal nobody listens to (what the stream pays per stanza then);
``0 listeners``, ``1 listener``, ``3 listeners``
    ``emit(stanza)`` to that many plain listeners returning ``None``;
``1 weak listener``
    a bound method connected with ``WEAK`` (when the tree has connect modes).

The figures are for comparing two trees on one machine (before and after a change), not
absolute.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from txxmppnode.signal import Signal

EMISSIONS = 200_000
ROUNDS = 5


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def seen(self, stanza: object) -> None:
        self.calls += 1


def _per_emission(run: Callable[[], object]) -> float:
    """Median nanoseconds per emission over the rounds."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / EMISSIONS * 1e9)
    return statistics.median(times)


def _emitting(signal: Signal[[object]]) -> Callable[[], None]:
    emit, payload = signal.emit, object()

    def run() -> None:
        for _ in range(EMISSIONS):
            emit(payload)

    return run


def main() -> None:
    cases: list[tuple[str, Callable[[], object]]] = []
    quiet: Signal[[object]] = Signal("quiet")

    def truth() -> None:
        for _ in range(EMISSIONS):
            if quiet:
                raise AssertionError("nobody listens")

    cases.append(("truth test", truth))
    cases.append(("0 listeners", _emitting(Signal("none"))))
    for count in (1, 3):
        signal: Signal[[object]] = Signal(f"{count}")
        for _ in range(count):
            signal.connect(lambda stanza: None)
        cases.append((f"{count} listener{'s' if count > 1 else ''}", _emitting(signal)))
    weak = getattr(Signal, "WEAK", None)
    if weak is not None:
        counter = _Counter()
        signal = Signal("weak")
        signal.connect(counter.seen, weak)
        cases.append(("1 weak listener", _emitting(signal)))
    print(f"{EMISSIONS:,} emissions, median of {ROUNDS} rounds; ns per emission")
    for name, run in cases:
        print(f"{name:<18} {_per_emission(run):8.1f}")


if __name__ == "__main__":
    main()
