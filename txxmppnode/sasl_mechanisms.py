"""The SASL mechanism interface, its errors and the simple mechanisms, as pure state machines.

Nothing here does I/O: the stream layer sends ``<auth/>`` with
:meth:`SASLMechanism.initial_response` (``None``: no initial response; ``b""``: an empty one,
sent as ``=``), answers each ``<challenge/>`` with :meth:`SASLMechanism.respond`, and on
``<success/>`` calls :meth:`SASLMechanism.finish`, which may still refuse (SCRAM checks the
server signature there).  A ``<failure/>`` goes through :func:`failure_for_condition`.

Work too slow for the caller's thread is not done here either: instead of the response,
:meth:`~SASLMechanism.respond` may return a :class:`KeyDerivation` (SCRAM's PBKDF2, whose cost
the server chooses).  The stream layer computes it where it likes -- in a thread, from a cache
-- and hands the key to :meth:`SASLMechanism.resume`, which returns the response.  Keeping the
computation out of the mechanism keeps the mechanisms pure and synchronous, testable from
published vectors, and leaves threads, timeouts and caching to one place, the stream layer.

Why a module of its own: the SCRAM family (:mod:`txxmppnode.scram`) builds on this interface,
and choosing a mechanism (:mod:`txxmppnode.sasl`) builds the SCRAM ones, so both import this
module and neither imports the other's importer.  Every name here is also importable from
:mod:`txxmppnode.sasl`, where it is documented.

Errors, all :class:`~txxmppnode.errors.SASLFailure` subclasses:

* :class:`SASLProtocolError` (fatal): the server broke the mechanism's protocol.  The stream
  layer then sends ``<abort/>`` and reports this error, not the ``<aborted/>`` failure that the
  abort provokes;
* :class:`CredentialsError` (fatal): the configured username or password cannot be prepared;
* :class:`MechanismRefused` (not fatal): the server refused the mechanism itself
  (``mechanism-too-weak``, ``invalid-mechanism``, ``encryption-required``): try the next one;
* :class:`~txxmppnode.errors.AuthenticationFailure` (fatal): the credentials were refused, or the
  server could not prove it knows them.

Nothing in this module logs: credentials and SASL payloads never reach a log.
"""

from __future__ import annotations

import abc
import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from .errors import AuthenticationFailure, FatalError, SASLFailure
from .saslprep import saslprep

__all__ = [
    "AUTHENTICATION_FAILURE_CONDITIONS",
    "MECHANISM_REFUSED_CONDITIONS",
    "AnonymousMechanism",
    "CredentialsError",
    "ExternalMechanism",
    "KeyDerivation",
    "MechanismRefused",
    "PlainMechanism",
    "SASLMechanism",
    "SASLProtocolError",
    "failure_for_condition",
    "prepare_credential",
]

#: ``<failure/>`` conditions (RFC 6120 §6.5) that refuse the credentials.
AUTHENTICATION_FAILURE_CONDITIONS: Final = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "incorrect-encoding",
        "invalid-authzid",
        "malformed-request",
        "not-authorized",
        "temporary-auth-failure",
    }
)
#: ``<failure/>`` conditions that refuse the mechanism: another one may still succeed.
MECHANISM_REFUSED_CONDITIONS: Final = frozenset(
    {"encryption-required", "invalid-mechanism", "mechanism-too-weak"}
)


# -- errors ----------------------------------------------------------------------------------


class SASLProtocolError(SASLFailure, FatalError):
    """The server broke the SASL exchange: an unexpected challenge, a malformed or unsafe
    mechanism message (bad nonce, too few SCRAM iterations, ...).  The message says what."""


class CredentialsError(SASLFailure, FatalError):
    """The configured credentials cannot be used (SASLprep refuses them, or one is empty)."""


class MechanismRefused(SASLFailure):
    """The server refused the mechanism, not the credentials: try the next candidate.

    :ivar condition: ``mechanism-too-weak``, ``invalid-mechanism`` or ``encryption-required``.
    :ivar text: the server's explanation, or ``None``.
    :ivar mechanism: the refused mechanism's name, when known.
    """

    def __init__(
        self, condition: str, text: str | None = None, mechanism: str | None = None
    ) -> None:
        """Record the refusal of *mechanism* with *condition* and the server's *text*."""
        message = f"SASL mechanism {mechanism or '(unknown)'} refused: {condition}"
        if text:
            message += f" ({text})"
        super().__init__(message)
        self.condition = condition
        self.text = text
        self.mechanism = mechanism


def failure_for_condition(
    condition: str | None, text: str | None = None, *, mechanism: str | None = None
) -> AuthenticationFailure | MechanismRefused:
    """Return the exception for a received ``<failure/>`` (RFC 6120 §6.5); the caller raises it.

    :param condition: the local name of the condition element (``None`` if there was none).
    :param text: the content of ``<text/>``, if any.
    :param mechanism: the mechanism that failed, recorded on :class:`MechanismRefused`.

    ``mechanism-too-weak``, ``invalid-mechanism`` and ``encryption-required`` give
    :class:`MechanismRefused`; everything else gives
    :class:`~txxmppnode.errors.AuthenticationFailure` with the condition as received (a
    ``<failure/>`` without a condition, which RFC 6120 forbids, is reported as
    ``not-authorized``).
    """
    if condition in MECHANISM_REFUSED_CONDITIONS:
        return MechanismRefused(condition, text, mechanism)
    return AuthenticationFailure(condition or "not-authorized", text)


# -- credentials -----------------------------------------------------------------------------


def prepare_credential(value: str, what: str, *, query: bool, allow_empty: bool) -> str:
    """SASLprep *value* (a username or password, named by *what*) for a mechanism.

    :raises CredentialsError: if SASLprep refuses it, or it is empty and must not be.
    """
    try:
        prepared = saslprep(value, allow_unassigned=query)
    except ValueError as error:
        raise CredentialsError(f"the {what} cannot be used: {error}") from None
    if not prepared and not allow_empty:
        raise CredentialsError(f"the {what} is empty")
    return prepared


# -- the mechanism interface and the simple mechanisms ---------------------------------------


@dataclass(frozen=True)
class KeyDerivation:
    """A key derivation a mechanism needs before it can answer: PBKDF2-HMAC (RFC 8018 §5.2).

    :meth:`SASLMechanism.respond` returns it in place of the response; whoever runs the
    exchange computes it (:meth:`compute`, in any thread) and passes the result to
    :meth:`SASLMechanism.resume`.  The result depends on nothing but these four fields, so it
    may be remembered for them (RFC 5802 §5.1 allows a SCRAM client to cache it).

    :ivar hash_name: the :mod:`hashlib` name of the hash (``"sha1"``, ``"sha256"``, ...).
    :ivar password: the prepared password (never in the ``repr``; drop the object once used).
    :ivar salt: the salt the server sent.
    :ivar iterations: the iteration count the server sent, already checked against the bounds.
    """

    hash_name: str
    password: bytes = field(repr=False)
    salt: bytes
    iterations: int

    def compute(self) -> bytes:
        """Run PBKDF2; it takes as long as :attr:`iterations` says and releases the GIL."""
        return hashlib.pbkdf2_hmac(self.hash_name, self.password, self.salt, self.iterations)


class SASLMechanism(abc.ABC):
    """The client side of one SASL authentication exchange; use each instance once.

    :ivar name: the mechanism name as sent in ``<auth mechanism='...'/>``.
    """

    name: str

    @abc.abstractmethod
    def initial_response(self) -> bytes | None:
        """Return the initial response for ``<auth/>``: ``None`` for none, ``b""`` for an empty
        one (sent as ``=``)."""

    def respond(self, challenge: bytes) -> bytes | KeyDerivation:
        """Return the response to a ``<challenge/>`` (its base64-decoded content).

        A mechanism that must first derive a key returns a :class:`KeyDerivation` instead:
        compute it and pass the result to :meth:`resume`, which returns the response.

        :raises SASLProtocolError: the challenge is not acceptable; send ``<abort/>``.
        """
        raise SASLProtocolError(f"{self.name}: the server sent a challenge this mechanism lacks")

    def resume(self, derived_key: bytes) -> bytes:
        """Return the response whose :class:`KeyDerivation` :meth:`respond` returned.

        :param derived_key: the result of :meth:`KeyDerivation.compute` (or a remembered one).
        :raises RuntimeError: no key derivation is pending.
        """
        raise RuntimeError(f"{self.name}: no key derivation is pending")

    def finish(self, additional_data: bytes | None) -> None:
        """Accept ``<success/>`` with its decoded additional data (``None`` if it had none).

        :raises AuthenticationFailure: the server did not prove its identity (SCRAM).
        :raises SASLProtocolError: unexpected additional data.
        """
        if additional_data:
            raise SASLProtocolError(
                f"{self.name}: the server sent additional data with success, which this "
                "mechanism does not define"
            )


class PlainMechanism(SASLMechanism):
    """PLAIN (RFC 4616) with an empty authorization identity: ``NUL username NUL password``.

    The password travels in the clear inside the stream: use it over TLS only.
    """

    name = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        """Prepare *username* and *password* with SASLprep.

        :raises CredentialsError: either is empty or refused by SASLprep.
        """
        self._message = (
            b"\0"
            + prepare_credential(username, "username", query=True, allow_empty=False).encode()
            + b"\0"
            + prepare_credential(password, "password", query=False, allow_empty=False).encode()
        )

    def initial_response(self) -> bytes:
        """Return ``NUL username NUL password``."""
        return self._message


class AnonymousMechanism(SASLMechanism):
    """ANONYMOUS (RFC 4505): an initial response holding the optional trace information."""

    name = "ANONYMOUS"

    def __init__(self, trace: str = "") -> None:
        """Remember *trace* (at most 255 characters, no control characters; may be empty)."""
        if len(trace) > 255 or any(unicodedata.category(ch) == "Cc" for ch in trace):
            raise ValueError("ANONYMOUS trace: at most 255 characters and no control characters")
        self._trace = trace.encode()

    def initial_response(self) -> bytes:
        """Return the trace information (``b""`` when there is none)."""
        return self._trace


class ExternalMechanism(SASLMechanism):
    """EXTERNAL (RFC 4422 App. A, XEP-0178): authentication by the TLS client certificate.

    The initial response is the authorization identity, empty to let the server derive it from
    the certificate.
    """

    name = "EXTERNAL"

    def __init__(self, authzid: str | None = None) -> None:
        """Remember the authorization identity to request (``None``: derived by the server)."""
        self._authzid = (authzid or "").encode()

    def initial_response(self) -> bytes:
        """Return the authorization identity (``b""`` when none is requested)."""
        return self._authzid
