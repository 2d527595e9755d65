"""SASL for XMPP client streams (RFC 4422, RFC 6120 §6): choosing and building mechanisms.

The mechanisms are pure state machines (:mod:`txxmppnode.sasl_mechanisms` holds their
interface, their errors and the simple ones; :mod:`txxmppnode.scram` the SCRAM family); every
name of :mod:`~txxmppnode.sasl_mechanisms` is importable from here too and documented here.
Nothing here does I/O: the stream layer sends ``<auth/>`` with
:meth:`SASLMechanism.initial_response` (``None``: no initial response; ``b""``: an empty one,
sent as ``=``), answers each ``<challenge/>`` with :meth:`SASLMechanism.respond`, and on
``<success/>`` calls :meth:`SASLMechanism.finish`, which may still refuse (SCRAM checks the
server signature there).  A ``<failure/>`` goes through :func:`failure_for_condition`.

Work too slow for the caller's thread is not done in a mechanism either: instead of the
response, :meth:`~SASLMechanism.respond` may return a :class:`KeyDerivation` (SCRAM's PBKDF2,
whose cost the server chooses), which the stream layer computes where it likes and hands to
:meth:`SASLMechanism.resume`.

Which mechanism to try is decided by :func:`choose_mechanisms`, strongest first; the stream
layer tries them in order while the server answers with :class:`MechanismRefused`, then raises
:class:`~txxmppnode.errors.SASLUnavailable` with :func:`unavailable_message`.
:meth:`MechanismChoice.build` makes the mechanism for a choice.  The SCRAM family lives in
:mod:`txxmppnode.scram`.

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .sasl_mechanisms import (
    AUTHENTICATION_FAILURE_CONDITIONS,
    MECHANISM_REFUSED_CONDITIONS,
    AnonymousMechanism,
    CredentialsError,
    ExternalMechanism,
    KeyDerivation,
    MechanismRefused,
    PlainMechanism,
    SASLMechanism,
    SASLProtocolError,
    failure_for_condition,
    prepare_credential,
)
from .scram import MAX_ITERATIONS, ScramMechanism

__all__ = [
    "AUTHENTICATION_FAILURE_CONDITIONS",
    "BINDING_AUTO",
    "BINDING_NONE",
    "BINDING_TYPE_PREFERENCE",
    "MECHANISM_REFUSED_CONDITIONS",
    "SCRAM_HASH_PREFERENCE",
    "AnonymousMechanism",
    "CredentialsError",
    "ExternalMechanism",
    "KeyDerivation",
    "MechanismChoice",
    "MechanismRefused",
    "PlainMechanism",
    "SASLMechanism",
    "SASLProtocolError",
    "binding_types",
    "choose_mechanisms",
    "failure_for_condition",
    "prepare_credential",
    "unavailable_message",
]

#: SCRAM hash families, strongest first.
SCRAM_HASH_PREFERENCE: Final = ("SHA-512", "SHA-256", "SHA-1")
#: Channel-binding types, most preferred first: ``tls-exporter`` (RFC 9266, TLS 1.3),
#: ``tls-unique`` (RFC 5929, TLS ≤ 1.2), ``tls-server-end-point`` (RFC 5929, any version).
BINDING_TYPE_PREFERENCE: Final = ("tls-exporter", "tls-unique", "tls-server-end-point")
#: The values of the ``channel_binding`` setting besides a binding type: decide per connection
#: (:func:`binding_types`), or never bind.
BINDING_AUTO: Final = "auto"
BINDING_NONE: Final = "none"
# -- choosing mechanisms ---------------------------------------------------------------------


@dataclass(frozen=True)
class MechanismChoice:
    """One candidate mechanism chosen by :func:`choose_mechanisms`; :meth:`build` makes it.

    :ivar name: the mechanism name, e.g. ``"SCRAM-SHA-256-PLUS"``.
    :ivar binding: for ``-PLUS`` mechanisms, the channel-binding type to use.
    :ivar binding_supported: for SCRAM without ``-PLUS``: we could bind but the server offered
        no ``-PLUS`` mechanism, so the GS2 header is ``y,,`` (RFC 5802 §6 downgrade detection).
    :ivar binding_guessed: for ``-PLUS``: the server did not say which binding types it
        implements and more than one is plausible (see :func:`binding_types`), so a refusal
        of the credentials may mean a binding the server computes differently; the next
        choice with the same :attr:`name` tries the next type.
    """

    name: str
    binding: str | None = None
    binding_supported: bool = False
    binding_guessed: bool = False

    @property
    def needs_password(self) -> bool:
        """Whether :meth:`build` needs a username and password (SCRAM, PLAIN)."""
        return self.name not in ("ANONYMOUS", "EXTERNAL")

    def build(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        channel_binding: bytes | None = None,
        authzid: str | None = None,
        trace: str = "",
        max_iterations: int | None = None,
    ) -> SASLMechanism:
        """Build the mechanism.

        :param username: the account's local part (SCRAM, PLAIN).
        :param password: the password (SCRAM, PLAIN).
        :param channel_binding: the data of the :attr:`binding` type (SCRAM ``-PLUS``).
        :param authzid: the authorization identity for EXTERNAL.
        :param trace: the trace information for ANONYMOUS.
        :param max_iterations: for SCRAM, the most PBKDF2 iterations accepted from the server
            (``None``: :data:`txxmppnode.scram.MAX_ITERATIONS`).
        :raises CredentialsError: the credentials are missing or unusable.
        :raises ValueError: the mechanism is unknown, or the binding data is missing.
        """
        if self.name == "EXTERNAL":
            return ExternalMechanism(authzid)
        if self.name == "ANONYMOUS":
            return AnonymousMechanism(trace)
        if username is None or password is None:
            raise CredentialsError(f"{self.name} needs a username and a password")
        if self.name == "PLAIN":
            return PlainMechanism(username, password)
        binding = None
        if self.binding is not None:
            if not channel_binding:
                raise ValueError(f"{self.name}: no {self.binding} channel-binding data")
            binding = (self.binding, channel_binding)
        return ScramMechanism(
            self.name,
            username,
            password,
            channel_binding=binding,
            binding_supported=self.binding_supported,
            max_iterations=MAX_ITERATIONS if max_iterations is None else max_iterations,
        )


def binding_types(
    channel_bindings: Mapping[str, bytes],
    server_binding_types: Sequence[str] | None,
    *,
    policy: str = BINDING_AUTO,
    confirmed: str | None = None,
) -> list[str]:
    """Return the channel-binding types to try for SCRAM ``-PLUS``, in order.

    :param channel_bindings: the data computable for this connection, by type
        (:func:`txxmppnode.channel_binding.channel_bindings`; ``tls-exporter`` is there exactly
        on TLS 1.3).
    :param server_binding_types: the types the server announces with XEP-0440, or ``None``.
    :param policy: :data:`BINDING_AUTO`, :data:`BINDING_NONE` (never bind) or one type to use
        whatever the server says (pinned).
    :param confirmed: a type this server accepted before without announcing it (tried first).

    The rule (``docs/security.rst`` has it as a table):

    * pinned: that type, if this connection has it; never bind: none;
    * XEP-0440 announced: the most preferred common type of :data:`BINDING_TYPE_PREFERENCE`
      (only one: the server said what it implements);
    * nothing announced, TLS 1.2 or older: ``tls-unique``, the default of RFC 5929 that
      every server offering ``-PLUS`` implements;
    * nothing announced, TLS 1.3: undecidable -- RFC 9266 says ``tls-exporter``, but the
      servers that offer ``-PLUS`` on TLS 1.3 without XEP-0440 (ejabberd up to 23.01) compute
      ``tls-unique`` from the Finished message.  Both are returned, the one seen in the field
      first (or the *confirmed* one); more than one type means each is a guess.

    No type means ``-PLUS`` is not used on this connection (SCRAM then says ``n,,`` if the
    server offered ``-PLUS``, since we do not bind to what it offers).
    """
    computable = [t for t in BINDING_TYPE_PREFERENCE if channel_bindings.get(t)]
    if policy == BINDING_NONE:
        return []
    if policy != BINDING_AUTO:
        return [policy] if policy in computable else []
    if server_binding_types is not None:
        return [t for t in computable if t in server_binding_types][:1]
    if "tls-exporter" not in computable:  # TLS 1.2 or older
        return ["tls-unique"] if "tls-unique" in computable else []
    guesses: list[str] = [t for t in ("tls-unique", "tls-exporter") if t in computable]
    if confirmed in guesses:
        guesses.remove(confirmed)
        guesses.insert(0, confirmed)
    return guesses


def _assess(
    offered: Sequence[str],
    *,
    tls_active: bool,
    channel_bindings: Mapping[str, bytes],
    server_binding_types: Sequence[str] | None,
    allow_plain_without_tls: bool,
    anonymous: bool,
    external: bool,
    use_password: bool,
    binding_policy: str = BINDING_AUTO,
    confirmed_binding: str | None = None,
) -> tuple[list[MechanismChoice], dict[str, str]]:
    """Return the acceptable choices (best first) and, per refused offer, the reason."""
    names = list(dict.fromkeys(name.strip().upper() for name in offered))
    refused: dict[str, str] = {}
    no_password = "no password is configured"
    computable = [t for t in BINDING_TYPE_PREFERENCE if channel_bindings.get(t)]
    types = (
        binding_types(
            channel_bindings,
            server_binding_types,
            policy=binding_policy,
            confirmed=confirmed_binding,
        )
        if tls_active
        else []
    )
    plus_offered = any(n.startswith("SCRAM-") and n.endswith("-PLUS") for n in names)
    binding_supported = (
        tls_active and bool(computable) and not plus_offered and binding_policy != BINDING_NONE
    )

    plus: list[MechanismChoice] = []
    scram: list[MechanismChoice] = []
    for family in SCRAM_HASH_PREFERENCE:
        name = f"SCRAM-{family}"
        if f"{name}-PLUS" in names:
            if not use_password:
                refused[f"{name}-PLUS"] = no_password
            elif not tls_active:
                refused[f"{name}-PLUS"] = "channel binding needs TLS"
            elif binding_policy == BINDING_NONE:
                refused[f"{name}-PLUS"] = "channel binding is disabled"
            elif not types:
                refused[f"{name}-PLUS"] = (
                    "no channel-binding data for this TLS connection"
                    if not computable
                    else f"the pinned channel binding {binding_policy} is not available on "
                    f"this connection (it has {', '.join(computable)})"
                    if binding_policy != BINDING_AUTO
                    else "no common channel-binding type (the server announces "
                    f"{', '.join(server_binding_types or ())}; this connection has "
                    f"{', '.join(computable)})"
                )
            else:
                guessed = len(types) > 1
                plus += [
                    MechanismChoice(f"{name}-PLUS", binding=t, binding_guessed=guessed)
                    for t in types
                ]
        if name in names:
            if use_password:
                scram.append(MechanismChoice(name, binding_supported=binding_supported))
            else:
                refused[name] = no_password

    choices: list[MechanismChoice] = []
    if "EXTERNAL" in names:
        if not external:
            refused["EXTERNAL"] = "no client certificate is configured"
        elif not tls_active:
            refused["EXTERNAL"] = "EXTERNAL refused without TLS"
        else:
            choices.append(MechanismChoice("EXTERNAL"))
    choices += plus + scram
    if "PLAIN" in names:
        if not use_password:
            refused["PLAIN"] = no_password
        elif not (tls_active or allow_plain_without_tls):
            refused["PLAIN"] = "PLAIN refused without TLS (allow_plain_without_tls is not set)"
        else:
            choices.append(MechanismChoice("PLAIN"))
    if "ANONYMOUS" in names:
        if anonymous:
            choices.append(MechanismChoice("ANONYMOUS"))
        else:
            refused["ANONYMOUS"] = "anonymous login is not enabled"
    chosen = {choice.name for choice in choices}
    for name in names:
        if name not in chosen and name not in refused:
            refused[name] = "not supported"
    return choices, refused


def choose_mechanisms(
    offered: Sequence[str],
    *,
    tls_active: bool,
    channel_bindings: Mapping[str, bytes],
    server_binding_types: Sequence[str] | None = None,
    allow_plain_without_tls: bool = False,
    anonymous: bool = False,
    external: bool = False,
    use_password: bool = True,
    binding_policy: str = BINDING_AUTO,
    confirmed_binding: str | None = None,
) -> list[MechanismChoice]:
    """Return the mechanisms to try among *offered*, strongest first.

    The order is: EXTERNAL (only with ``external``, i.e. a client certificate, and TLS); the
    SCRAM ``-PLUS`` variants (SHA-512, SHA-256, SHA-1) when TLS is active and a channel-binding
    type both sides support can be computed (:func:`binding_types`; when it returns several,
    each ``-PLUS`` mechanism comes once per type, marked
    :attr:`~MechanismChoice.binding_guessed`); SCRAM without binding (same hash order); PLAIN
    only under TLS or with ``allow_plain_without_tls``; ANONYMOUS only with ``anonymous``.

    :param offered: the mechanism names from ``<mechanisms/>``.
    :param tls_active: whether the stream runs over TLS.
    :param channel_bindings: the binding data computable for this connection, by type (see
        :func:`txxmppnode.channel_binding.channel_bindings`).
    :param server_binding_types: the types announced by the server with XEP-0440
        (``<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'/>``), or ``None`` if it announced
        none; only those are used then.  Otherwise :data:`BINDING_TYPE_PREFERENCE` decides.
    :param use_password: ``False`` when no username and password are configured (SCRAM and
        PLAIN are then not chosen).
    :param binding_policy: ``"auto"``, ``"none"`` or a pinned type (see :func:`binding_types`).
    :param confirmed_binding: a binding type this server accepted before without announcing
        it.

    Plain SCRAM carries the GS2 header ``y,,`` when we could bind but the server offered no
    ``-PLUS`` mechanism at all, so that a server which does support binding detects the
    stripped offer (RFC 5802 §6); when the server offered ``-PLUS``, plain SCRAM (tried only
    after the server refused the ``-PLUS`` candidates, or when no binding type is shared)
    uses ``n,,``.

    An empty list means nothing is acceptable: raise
    ``SASLUnavailable(unavailable_message(...))``.
    """
    return _assess(
        offered,
        tls_active=tls_active,
        channel_bindings=channel_bindings,
        server_binding_types=server_binding_types,
        allow_plain_without_tls=allow_plain_without_tls,
        anonymous=anonymous,
        external=external,
        use_password=use_password,
        binding_policy=binding_policy,
        confirmed_binding=confirmed_binding,
    )[0]


def unavailable_message(
    offered: Sequence[str],
    *,
    tls_active: bool,
    channel_bindings: Mapping[str, bytes] | None = None,
    server_binding_types: Sequence[str] | None = None,
    allow_plain_without_tls: bool = False,
    anonymous: bool = False,
    external: bool = False,
    use_password: bool = True,
    binding_policy: str = BINDING_AUTO,
    confirmed_binding: str | None = None,
    refused_by_server: Iterable[MechanismRefused] = (),
) -> str:
    """Return the message of the :class:`~txxmppnode.errors.SASLUnavailable` to raise when no
    mechanism is left.

    Takes the arguments of :func:`choose_mechanisms`, plus the :class:`MechanismRefused` errors
    received for the candidates that were tried; the message lists each offered mechanism with
    the reason it was not used, e.g. ``PLAIN: PLAIN refused without TLS``.
    """
    if not offered:
        return "no SASL mechanism acceptable: the server offered none"
    _, reasons = _assess(
        offered,
        tls_active=tls_active,
        channel_bindings=channel_bindings or {},
        server_binding_types=server_binding_types,
        allow_plain_without_tls=allow_plain_without_tls,
        anonymous=anonymous,
        external=external,
        use_password=use_password,
        binding_policy=binding_policy,
        confirmed_binding=confirmed_binding,
    )
    for refusal in refused_by_server:
        if refusal.mechanism:
            reasons[refusal.mechanism] = f"refused by the server ({refusal.condition})"
    names = list(dict.fromkeys(name.strip().upper() for name in offered))
    details = "; ".join(f"{name}: {reasons.get(name, 'not tried')}" for name in names)
    return f"no SASL mechanism acceptable: the server offered {', '.join(names)}; {details}"
