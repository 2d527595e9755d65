"""STARTTLS servers for the injection tests: one appends plaintext after ``<proceed/>``.

A man in the middle who cannot break TLS can still add bytes to the plaintext part of the
connection: it appends, in the same TCP segment as the server's ``<proceed/>``, a
``<stream:features/>`` offering only PLAIN.  A client that parses it and uses it after the
handshake as the server's features picks the attacker's mechanism (the CVE-2011-0411 class).

Both servers here offer SCRAM-SHA-1 only inside TLS -- the genuine features -- and record the
mechanism the client asks for (answering ``not-authorized``); they differ only in what follows
``<proceed/>``.  See :mod:`tests.support.hostile_wire` for the server itself.
"""

from __future__ import annotations

from typing import ClassVar, Final

from tests.support.hostile_wire import ScriptedStream
from txxmppnode import namespaces as ns

__all__ = ["INJECTED_FEATURES", "BehavingStartTLS", "InjectingAfterProceed"]

#: what the man in the middle appends: features offering only PLAIN
INJECTED_FEATURES: Final = (
    f"<stream:features><mechanisms xmlns='{ns.SASL}'><mechanism>PLAIN</mechanism>"
    "</mechanisms></stream:features>"
).encode()


class BehavingStartTLS(ScriptedStream):
    """``<proceed/>`` and nothing else, then SCRAM-SHA-1 inside TLS."""

    mechanisms: ClassVar[tuple[str, ...]] = ("SCRAM-SHA-1",)


class InjectingAfterProceed(BehavingStartTLS):
    """``<proceed/>`` and, in the same write, features offering only PLAIN; then TLS."""

    def proceed(self) -> None:
        self.send(f"<proceed xmlns='{ns.TLS}'/>".encode() + INJECTED_FEATURES)
