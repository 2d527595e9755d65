"""The SCRAM SASL mechanisms, client side: SCRAM-SHA-1, -SHA-256, -SHA-512 and their -PLUS
variants with channel binding (RFC 5802, RFC 7677; SHA-512 by the same pattern).

Why this module implements SCRAM itself, with :mod:`hashlib` and :mod:`hmac`, rather than
wrapping ``scramp.ScramClient`` (checked with scramp 1.5.0):

* scramp refuses the ``tls-exporter`` channel-binding type outright (``CbName`` lists it as
  unsupported and raises ``ScramException``), and it does so even for the ``y,,`` header, where
  no binding data is sent.  ``tls-exporter`` is the only binding TLS 1.3 has besides
  ``tls-server-end-point`` (RFC 9266), so a SCRAM client of our own is needed for it anyway;
  once it exists, a second implementation of the same exchange behind it would only double
  what has to be tested.
* Every scramp failure is one ``ScramException`` class; telling a server-signature mismatch
  (an :class:`~txxmppnode.errors.AuthenticationFailure`: the server is not who it claims) from
  a malformed message or a too-low iteration count (a :class:`~txxmppnode.sasl.SASLProtocolError`)
  would mean matching its message strings.
* scramp refuses salts shorter than 12 bytes, a limit RFC 5802 does not set, and prepares the
  username as a SASLprep "stored string", while RFC 5802 §5.1 prepares it as a "query"
  (unassigned code points allowed).

What scramp did cover, and is used for in the tests as an independent implementation: its
``ScramServer`` authenticates this client for every hash with and without ``tls-unique`` and
``tls-server-end-point`` binding, and its ``saslprep`` agrees with
:func:`txxmppnode.sasl.saslprep` on stored strings.

The exchange: :meth:`ScramMechanism.initial_response` is the client-first message (GS2 header
``n,,`` without binding, ``y,,`` when we could bind but the server offered no ``-PLUS``
mechanism, ``p=<type>,,`` with binding); :meth:`ScramMechanism.respond` checks the server-first
message and returns the :class:`~txxmppnode.sasl.KeyDerivation` of the salted password;
:meth:`ScramMechanism.resume` takes the salted password and returns the client-final message (a
second challenge carrying the server-final message is accepted too, as some servers send it
so); :meth:`ScramMechanism.finish` verifies the server signature.

The salted password is PBKDF2 with the iteration count the *server* sends (4096 to
*max_iterations*, :data:`MAX_ITERATIONS` by default): up to a second of CPU, chosen by the
peer.  That is why the mechanism
does not compute it itself but asks for it: the stream layer runs it off the reactor thread,
under the negotiation timeout, and remembers it for reconnections
(:mod:`txxmppnode.key_derivation`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import Final

from .errors import AuthenticationFailure
from .sasl_mechanisms import (
    KeyDerivation,
    SASLMechanism,
    SASLProtocolError,
    prepare_credential,
)

__all__ = ["HASHES", "MAX_ITERATIONS", "MIN_ITERATIONS", "ScramMechanism", "escape_username"]

#: The SCRAM hash families supported, with their :mod:`hashlib` names.
HASHES: Final = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
#: The fewest PBKDF2 iterations accepted (RFC 5802 §5.1, RFC 7677 §4).
MIN_ITERATIONS: Final = 4096
#: The most PBKDF2 iterations computed by default; a server asking for more is refused with
#: :class:`~txxmppnode.sasl.SASLProtocolError` (and ``<abort/>``).  Real servers stay far below:
#: Prosody uses 10,000, ejabberd 4,096, RFC 7677 asks for at least 4,096, and even the counts
#: recommended for password *storage* (OWASP, 2023: 600,000 for PBKDF2-HMAC-SHA-256, 210,000
#: for SHA-512) are below it.  It costs about 0.3 s of CPU with SHA-256 and 1 s with SHA-512,
#: which bounds what one attempt of a hostile server can make us spend.
MAX_ITERATIONS: Final = 1_000_000

_NAME: Final = re.compile(r"SCRAM-(SHA-1|SHA-256|SHA-512)(-PLUS)?")
_BINDING_TYPE: Final = re.compile(r"[A-Za-z0-9.-]+")
_PRINTABLE: Final = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 "printable": no ","
_ITERATIONS: Final = re.compile(r"[1-9][0-9]*")


def escape_username(username: str) -> str:
    """Escape ``=`` as ``=3D`` and ``,`` as ``=2C`` (RFC 5802 §5.1 ``saslname``)."""
    return username.replace("=", "=3D").replace(",", "=2C")


def _b64decode(value: str, what: str) -> bytes:
    """Decode strict base64 *value*, refusing malformed input as a protocol error."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SASLProtocolError(f"SCRAM: {what} is not valid base64") from None


def _attributes(message: bytes, what: str) -> list[tuple[str, str]]:
    """Split a SCRAM message into ``(letter, value)`` pairs, in order."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLProtocolError(f"SCRAM: the {what} is not UTF-8") from None
    pairs = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not ("a" <= part[0].lower() <= "z"):
            raise SASLProtocolError(f"SCRAM: malformed {what} (attribute {part[:2]!r}...)")
        pairs.append((part[0], part[2:]))
    return pairs


class ScramMechanism(SASLMechanism):
    """One SCRAM authentication, client side.

    :param mechanism: ``SCRAM-SHA-1``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``, with ``-PLUS``
        for channel binding.
    :param username: the user name; SASLprep'd as a query string and escaped.
    :param password: the password; SASLprep'd as a stored string (RFC 5802 §2.2).
    :param channel_binding: ``(type, data)``, required by and only allowed for ``-PLUS``.
    :param binding_supported: without ``-PLUS``: whether we could have bound (GS2 ``y``), which
        makes a server that does support binding refuse what must then be a downgrade.
    :param client_nonce: the client nonce (printable ASCII without ``,``); random by default.
        Fixed values are for test vectors only.
    :param max_iterations: the most PBKDF2 iterations accepted from the server (at least
        :data:`MIN_ITERATIONS`); more is a :class:`SASLProtocolError`.
    :raises CredentialsError: the username or password cannot be prepared.
    :raises ValueError: inconsistent arguments.
    """

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        channel_binding: tuple[str, bytes] | None = None,
        binding_supported: bool = False,
        client_nonce: str | None = None,
        max_iterations: int = MAX_ITERATIONS,
    ) -> None:
        """Prepare the credentials and the client-first message."""
        match = _NAME.fullmatch(mechanism)
        if match is None:
            raise ValueError(f"not a supported SCRAM mechanism: {mechanism!r}")
        if max_iterations < MIN_ITERATIONS:
            raise ValueError(f"max_iterations must be at least {MIN_ITERATIONS}")
        self._max_iterations = max_iterations
        if bool(match.group(2)) != (channel_binding is not None):
            raise ValueError(f"{mechanism}: channel_binding is required for -PLUS and only then")
        self.name = mechanism
        self._hash = HASHES[match.group(1)]
        if channel_binding is not None:
            binding_type, binding_data = channel_binding
            if not _BINDING_TYPE.fullmatch(binding_type) or not binding_data:
                raise ValueError(f"{mechanism}: invalid channel binding {binding_type!r}")
            gs2_header = f"p={binding_type},,"
            self._cbind_input = gs2_header.encode() + binding_data
        else:
            gs2_header = "y,," if binding_supported else "n,,"
            self._cbind_input = gs2_header.encode()
        user = prepare_credential(username, "username", query=True, allow_empty=False)
        self._password: bytes | None = prepare_credential(
            password, "password", query=False, allow_empty=True
        ).encode()
        self._client_nonce = client_nonce or secrets.token_urlsafe(24)
        if not _PRINTABLE.fullmatch(self._client_nonce):
            raise ValueError("the client nonce must be printable ASCII without ','")
        self._client_first_bare = f"n={escape_username(user)},r={self._client_nonce}"
        self._client_first = gs2_header + self._client_first_bare
        self._server_signature: bytes | None = None
        self._server_first = b""
        self._nonce = ""
        self._state = "start"

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        """HMAC with this mechanism's hash."""
        return hmac.new(key, message, self._hash).digest()

    def initial_response(self) -> bytes:
        """Return the client-first message."""
        if self._state != "start":
            raise RuntimeError("initial_response() is called once, first")
        self._state = "client-first"
        return self._client_first.encode()

    def respond(self, challenge: bytes) -> bytes | KeyDerivation:
        """Check the server-first message; return the derivation of the salted password.

        Pass the derived key to :meth:`resume` for the client-final message.  A second
        challenge may carry the server-final message (verified here; the answer is empty).
        Anything else is a :class:`SASLProtocolError`.
        """
        if self._state == "client-first":
            derivation = self._server_first_message(challenge)
            self._state = "deriving"
            return derivation
        if self._state == "client-final":
            self._verify(challenge)
            self._state = "verified"
            return b""
        if self._state == "start":
            raise RuntimeError("initial_response() must come first")
        if self._state == "deriving":
            raise RuntimeError("resume() must come before the next challenge")
        raise SASLProtocolError(f"{self.name}: unexpected challenge after the server-final one")

    def resume(self, derived_key: bytes) -> bytes:
        """Return the client-final message, given the salted password :meth:`respond` asked for."""
        if self._state != "deriving":
            raise RuntimeError("resume() answers the KeyDerivation that respond() returned")
        self._state = "client-final"
        return self._client_final(derived_key)

    def finish(self, additional_data: bytes | None) -> None:
        """Verify the server signature from ``<success/>`` (unless a challenge carried it).

        :raises AuthenticationFailure: ``server-signature-mismatch``: the signature is wrong or
            missing, so the server has not shown it knows the password (with ``-PLUS``, also: the
            TLS channel is not the server's).
        """
        if self._state == "verified":
            if additional_data:
                self._verify(additional_data)
            self._state = "done"
            return
        if self._state != "client-final" or not additional_data:
            raise AuthenticationFailure(
                "server-signature-mismatch",
                f"{self.name}: the server reported success without a server signature",
            )
        self._verify(additional_data)
        self._state = "done"

    def _server_first_message(self, server_first: bytes) -> KeyDerivation:
        """Check the server-first message; return what to derive the salted password with."""
        attributes = _attributes(server_first, "server-first message")
        letters = [letter for letter, _ in attributes]
        if letters[:1] == ["m"]:
            raise SASLProtocolError("SCRAM: the server requires an unsupported extension (m=)")
        if letters[:3] != ["r", "s", "i"]:
            raise SASLProtocolError(
                "SCRAM: malformed server-first message (expected r=, s=, i= in this order)"
            )
        nonce, salt_b64, iterations_text = (value for _, value in attributes[:3])
        if not _PRINTABLE.fullmatch(nonce):
            raise SASLProtocolError("SCRAM: the server nonce has invalid characters")
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(self._client_nonce):
            raise SASLProtocolError("SCRAM: the server nonce does not extend the client nonce")
        salt = _b64decode(salt_b64, "the salt")
        if not salt:
            raise SASLProtocolError("SCRAM: the salt is empty")
        if not _ITERATIONS.fullmatch(iterations_text):
            raise SASLProtocolError(f"SCRAM: invalid iteration count {iterations_text[:20]!r}")
        iterations = int(iterations_text)
        if iterations < MIN_ITERATIONS:
            raise SASLProtocolError(
                f"SCRAM: the server asks for {iterations} PBKDF2 iterations; fewer than "
                f"{MIN_ITERATIONS} are refused as too weak (RFC 5802 §5.1, RFC 7677 §4)"
            )
        if iterations > self._max_iterations:
            raise SASLProtocolError(
                f"SCRAM: the server asks for {iterations} PBKDF2 iterations; more than "
                f"{self._max_iterations} are refused (scram_max_iterations)"
            )

        assert self._password is not None
        derivation = KeyDerivation(self._hash, self._password, salt, iterations)
        self._password = None  # needed once; don't keep it around
        self._server_first = server_first
        self._nonce = nonce
        return derivation

    def _client_final(self, salted: bytes) -> bytes:
        """Compute the client proof and the expected server signature from the salted password."""
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c={base64.b64encode(self._cbind_input).decode('ascii')},r={self._nonce}"
        auth_message = b",".join(
            (self._client_first_bare.encode(), self._server_first, without_proof.encode())
        )
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode()

    def _verify(self, server_final: bytes) -> None:
        """Check the server-final message against the expected server signature."""
        attributes = _attributes(server_final, "server-final message")
        letter, value = attributes[0]
        if letter == "e":
            raise AuthenticationFailure(
                "not-authorized", f"{self.name}: the server reported the SCRAM error {value!r}"
            )
        if letter != "v":
            raise SASLProtocolError("SCRAM: malformed server-final message (expected v=)")
        assert self._server_signature is not None
        if not hmac.compare_digest(
            _b64decode(value, "the server signature"), self._server_signature
        ):
            raise AuthenticationFailure(
                "server-signature-mismatch",
                f"{self.name}: the server signature is wrong: the server does not know the "
                "password, or (with channel binding) the TLS channel is not the server's",
            )
