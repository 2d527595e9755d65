"""The TLS policy of client streams: trust, pins, host names, protocol versions, credentials.

:func:`make` builds a :class:`SecurityLayer`, an immutable configuration the stream layer
consults.  For every TLS connection it asks :meth:`SecurityLayer.tls_verifier` for a
:class:`~txxmppnode.tls_verifier.TLSVerifier`, the connection creator handed to
``transport.startTLS()`` or :func:`twisted.internet.endpoints.wrapClientTLS`, which judges the
server's certificate during the handshake (:mod:`txxmppnode.tls_verifier` says how).  This
module holds the configuration: checking and converting the settings, building the one OpenSSL
context per ALPN list that the connections share, the password provider, and asking the
application about a refused certificate.

:class:`~txxmppnode.tls_verifier.TLSVerifier`, :class:`~txxmppnode.tls_verifier.ChainError`
and :func:`~txxmppnode.tls_verifier.tls_failure_from` are importable from here too, as are the
pin stores of :mod:`txxmppnode.pinning`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, Final, TypeAlias, cast

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import defer, ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot  # public only under this name
from twisted.logger import Logger

from .errors import TLSFailure
from .jid import JID
from .key_derivation import KeyDeriver
from .pinning import (
    AbstractPinStore,
    CertificatePinStore,
    PinType,
    PublicKeyPinStore,
    make_pin_store,
)
from .scram import MAX_ITERATIONS, MIN_ITERATIONS
from .tls_verifier import ChainError, TLSVerifier, tls_failure_from

__all__ = [
    "CHANNEL_BINDING_SETTINGS",
    "AbstractPinStore",
    "CertificatePinStore",
    "ChainError",
    "PasswordProvider",
    "PinType",
    "PublicKeyPinStore",
    "SecurityLayer",
    "TLSVerifier",
    "make",
    "tls_failure_from",
]

_log = Logger(namespace="txxmppnode.security_layer")

#: ``(jid, attempt) -> password``; the password may come synchronously, as a Deferred or as
#: any other awaitable.  ``None`` means "give up".
PasswordProvider: TypeAlias = Callable[[JID, int], "str | Awaitable[str | None] | None"]

#: ``(verifier) -> accept?`` consulted after a failed verification.
FailureDecider: TypeAlias = Callable[["TLSVerifier"], "bool | Awaitable[bool]"]

_TLS_VERSIONS: Final[Mapping[str, int]] = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
#: The values of ``channel_binding``: decide per connection, never bind, or one pinned type.
CHANNEL_BINDING_SETTINGS: Final = (
    "auto",
    "none",
    "tls-exporter",
    "tls-unique",
    "tls-server-end-point",
)

#: TLS 1.2 suites with forward secrecy and no legacy algorithms (TLS 1.3 suites are all fine).
_TLS12_CIPHERS: Final = (
    b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:!aNULL:!eNULL:!MD5:!DSS"
)


@dataclass(frozen=True)
class SecurityLayer:
    """The security configuration of client streams; build it with :func:`make`.

    :ivar password_provider: the password (``str``), a callable ``(jid, attempt) -> password``
        or ``None``; read it through :meth:`get_password`.
    :ivar trust_root: the CAs server certificates are verified against.
    :ivar pin_store: certificates accepted per host without a trusted chain, or ``None``.
    :ivar post_handshake_deferred_failure: asked whether to accept a refused certificate.
    :ivar anonymous: authenticate with SASL ANONYMOUS.
    :ivar no_verify: accept any certificate (logged as a warning); for tests only.
    :ivar client_certificate: presented to the server (for SASL EXTERNAL), or ``None``.
    :ivar client_certificate_chain: intermediates sent after :attr:`client_certificate`.
    :ivar allow_plain_without_tls: allow SASL PLAIN on a stream without TLS (STARTTLS is
        still demanded; this only affects the mechanism choice).
    :ivar tls_max_version: ``None`` (the newest OpenSSL offers), ``"1.2"`` or ``"1.3"``.
    :ivar channel_binding: which channel binding SCRAM ``-PLUS`` uses: ``"auto"`` (the rule
        of :func:`txxmppnode.sasl.binding_types`), ``"none"`` (never ``-PLUS``) or one type
        pinned (``"tls-exporter"``, ``"tls-unique"``, ``"tls-server-end-point"``).
    :ivar scram_max_iterations: the most PBKDF2 iterations a server may ask SCRAM for.
    :ivar key_deriver: computes SCRAM's salted passwords in the reactor's thread pool and
        remembers the last few, so the connections made with this layer derive each once
        (:mod:`txxmppnode.key_derivation`); :meth:`clear_scram_cache` empties it.
    """

    password_provider: str | PasswordProvider | None = field(repr=False)
    trust_root: IOpenSSLTrustRoot
    pin_store: AbstractPinStore | None = None
    post_handshake_deferred_failure: FailureDecider | None = None
    anonymous: bool = False
    no_verify: bool = False
    client_certificate: ssl.PrivateCertificate | None = None
    client_certificate_chain: tuple[x509.Certificate, ...] = ()
    allow_plain_without_tls: bool = False
    tls_max_version: str | None = None
    channel_binding: str = "auto"
    # Per domain, the binding type a server accepted when it was a guess (it did not announce
    # its types with XEP-0440): later connections try it first instead of failing a guess
    # again, which a server may count as a failed login.
    confirmed_bindings: dict[str, str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    scram_max_iterations: int = MAX_ITERATIONS
    key_deriver: KeyDeriver = field(default_factory=KeyDeriver, repr=False, compare=False)
    # One OpenSSL context per ALPN list, shared by every connection: building one loads the
    # trust store, which costs milliseconds (per-connection state lives on the Connection).
    _contexts: dict[tuple[bytes, ...], SSL.Context] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        """Refuse inconsistent settings (:func:`make` also converts and checks types)."""
        provider = self.password_provider
        if provider is None and not self.anonymous and self.client_certificate is None:
            raise ValueError(
                "password_provider may only be None with anonymous=True or a client_certificate"
            )
        if provider is not None and not isinstance(provider, str) and not callable(provider):
            raise TypeError(
                "password_provider must be a str, a callable or None, "
                f"not {type(provider).__name__}"
            )
        if self.tls_max_version is not None and self.tls_max_version not in _TLS_VERSIONS:
            raise ValueError(
                f"tls_max_version must be one of {sorted(_TLS_VERSIONS)} or None, "
                f"not {self.tls_max_version!r}"
            )
        if not IOpenSSLTrustRoot.providedBy(self.trust_root):
            raise TypeError("trust_root must provide IOpenSSLTrustRoot")
        if self.channel_binding not in CHANNEL_BINDING_SETTINGS:
            raise ValueError(
                f"channel_binding must be one of {', '.join(CHANNEL_BINDING_SETTINGS)}, "
                f"not {self.channel_binding!r}"
            )
        iterations = self.scram_max_iterations
        if not isinstance(iterations, int) or isinstance(iterations, bool):
            raise TypeError(f"scram_max_iterations must be an int, not {type(iterations).__name__}")
        if iterations < MIN_ITERATIONS:
            raise ValueError(
                f"scram_max_iterations must be at least {MIN_ITERATIONS} (the fewest SCRAM "
                f"iterations accepted), not {iterations}"
            )

    # -- credentials -----------------------------------------------------------------------

    @property
    def asks_again(self) -> bool:
        """Whether asking for the password again (after a refusal) can give another one.

        True for a callable provider; a fixed password or none at all is not worth retrying.
        """
        return callable(self.password_provider)

    def get_password(self, jid: JID, attempt: int) -> defer.Deferred[str | None]:
        """Ask the password provider for the password of *jid* for this *attempt*.

        Fires with the password, or ``None`` when there is none (give up); fails with the
        provider's exception, or :class:`TypeError` if it produced something else.
        """
        provider = self.password_provider

        async def obtain() -> str | None:
            if provider is None or isinstance(provider, str):
                return provider
            result: object = provider(jid, attempt)
            while isawaitable(result):
                result = await result
            if result is not None and not isinstance(result, str):
                raise TypeError(
                    f"the password provider returned {type(result).__name__}, not str or None"
                )
            return result

        return defer.Deferred.fromCoroutine(obtain())

    def clear_scram_cache(self) -> None:
        """Forget the SCRAM salted passwords remembered for reconnections.

        The next SCRAM authentication derives its key again.  Nothing needs clearing when the
        password changes (the cache is keyed by it); this is for dropping what is held in
        memory.
        """
        self.key_deriver.clear()

    # -- TLS -----------------------------------------------------------------------------------

    def tls_verifier(self, domain: str, *, alpn: Sequence[bytes] = ()) -> TLSVerifier:
        """Return a connection creator for one TLS connection to the XMPP *domain*.

        :param domain: the domain of the JID: sent as SNI and verified in the certificate.
        :param alpn: the ALPN protocol names to offer (e.g. ``[b"xmpp-client"]``).
        :raises ValueError: if *domain* or an ALPN name is invalid.
        """
        if not isinstance(domain, str):
            raise TypeError(f"domain must be str, not {type(domain).__name__}")
        protocols = tuple(alpn)
        for name in protocols:
            if not isinstance(name, bytes) or not 0 < len(name) < 256:
                raise ValueError(f"invalid ALPN protocol name {name!r}")
        if self.no_verify:
            _log.warn(
                "TLS certificate verification is DISABLED (no_verify) for {domain}: the "
                "connection is open to interception",
                domain=domain,
            )
        context = self._contexts.get(protocols)
        if context is None:
            context = self._contexts[protocols] = self._make_context(protocols)
        return TLSVerifier(self, domain, protocols, context)

    def _make_context(self, alpn: Sequence[bytes]) -> SSL.Context:
        """Return a new client context with the versions, trust and client certificate set."""
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.tls_max_version is not None:
            context.set_max_proto_version(_TLS_VERSIONS[self.tls_max_version])
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        # an idle stream holds no read/write buffers (measured: ~20 KiB less per connection)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_cipher_list(_TLS12_CIPHERS)
        # no session resumption: every connection is verified from its certificate
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        self.trust_root._addCACertsToContext(context)  # type: ignore[no-untyped-call]
        if self.client_certificate is not None:
            context.use_certificate(self.client_certificate.original.to_cryptography())
            context.use_privatekey(
                self.client_certificate.privateKey.original.to_cryptography_key()
            )
            context.check_privatekey()
            for intermediate in self.client_certificate_chain:
                context.add_extra_chain_cert(intermediate)
        if alpn:
            context.set_alpn_protos(list(alpn))
        return context

    def decide_after_handshake(self, verifier: TLSVerifier) -> defer.Deferred[None]:
        """Return a Deferred that fires if the connection of *verifier* may be used.

        It fires at once when the certificate was accepted; fails with the
        :class:`TLSFailure` when it was refused and the connection aborted, or when
        ``post_handshake_deferred_failure`` does not return ``True``.

        :raises RuntimeError: if the handshake of *verifier* has not completed.
        """
        if not verifier.handshake_done:
            raise RuntimeError("decide_after_handshake() called before the TLS handshake ended")
        failure = verifier.failure
        decider = self.post_handshake_deferred_failure
        if failure is None:
            return defer.succeed(None)
        if verifier.aborted or decider is None:
            return defer.fail(failure)

        async def ask(refused: TLSFailure, decide: FailureDecider) -> None:
            try:
                answer: object = decide(verifier)
                while isawaitable(answer):
                    answer = await answer
            except Exception as exc:
                _log.failure("post_handshake_deferred_failure raised")
                raise refused from exc
            if answer is not True:
                _log.info("the application refused the certificate of {d}", d=verifier.domain)
                raise refused
            verifier.accepted_by_application = True
            _log.info("the application accepted the certificate of {d}", d=verifier.domain)

        return defer.Deferred.fromCoroutine(ask(failure, decider))


def _load_pem_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Return every certificate in the PEM file *path*."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"no usable PEM certificate in {os.fsdecode(path)!r}: {exc}") from None


def _trust_root(value: object) -> IOpenSSLTrustRoot:
    """Return the trust root that *value* (see :func:`make`) describes."""
    if value is None:
        return cast(IOpenSSLTrustRoot, ssl.platformTrust())  # type: ignore[no-untyped-call]
    if isinstance(value, str | os.PathLike):
        certificates = [
            ssl.Certificate(crypto.X509.from_cryptography(c))  # type: ignore[no-untyped-call]
            for c in _load_pem_certificates(value)
        ]
        roots = ssl.trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]
        return cast(IOpenSSLTrustRoot, roots)
    if isinstance(value, ssl.Certificate):
        roots = ssl.trustRootFromCertificates([value])  # type: ignore[no-untyped-call]
        return cast(IOpenSSLTrustRoot, roots)
    if IOpenSSLTrustRoot.providedBy(value):
        return value
    raise TypeError(
        "trust_root must be None, a PEM file path, a twisted Certificate or an "
        f"IOpenSSLTrustRoot, not {type(value).__name__}"
    )


def _client_certificate(
    value: object,
) -> tuple[ssl.PrivateCertificate, tuple[x509.Certificate, ...]]:
    """Return the client certificate and its extra chain that *value* describes."""
    if isinstance(value, ssl.PrivateCertificate):
        return value, ()
    if isinstance(value, str | os.PathLike):
        with open(value, "rb") as file:
            data = file.read()
        try:
            private = ssl.PrivateCertificate.loadPEM(data)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ValueError(
                f"{os.fsdecode(value)!r} must hold a PEM certificate and its private key: {exc}"
            ) from None
        rest = _load_pem_certificates(value)[1:]
        return private, tuple(rest)
    raise TypeError(
        "client_certificate must be a twisted PrivateCertificate or a PEM file path, "
        f"not {type(value).__name__}"
    )


def make(
    password_provider: str | PasswordProvider | None,
    *,
    trust_root: str | os.PathLike[str] | IOpenSSLTrustRoot | ssl.Certificate | None = None,
    pin_store: AbstractPinStore | Mapping[str, Any] | None = None,
    pin_type: PinType = PinType.PUBLIC_KEY,
    post_handshake_deferred_failure: FailureDecider | None = None,
    anonymous: bool = False,
    no_verify: bool = False,
    client_certificate: ssl.PrivateCertificate | str | os.PathLike[str] | None = None,
    allow_plain_without_tls: bool = False,
    tls_max_version: str | None = None,
    channel_binding: str | None = "auto",
    scram_max_iterations: int = MAX_ITERATIONS,
) -> SecurityLayer:
    """Build a :class:`SecurityLayer`; every argument is checked here.

    :param password_provider: the password (``str``, used for every attempt), a callable
        ``(jid, attempt) -> str | None`` that may also return a Deferred or an awaitable, or
        ``None`` (only with *anonymous* or *client_certificate*).
    :param trust_root: ``None`` for the platform's CAs, the path of a PEM file with one or
        more CA certificates, a :class:`twisted.internet.ssl.Certificate` or an
        ``IOpenSSLTrustRoot``.
    :param pin_store: a pin store, or its JSON export to import into a new store of
        *pin_type* (which is ignored when a store is given).
    :param post_handshake_deferred_failure: ``(verifier) -> bool`` (or a Deferred/awaitable
        of one), asked after a refused certificate instead of aborting the handshake.
    :param anonymous: use SASL ANONYMOUS.
    :param no_verify: accept any certificate; a warning is logged for every connection.
    :param client_certificate: a :class:`twisted.internet.ssl.PrivateCertificate`, or a PEM
        file holding the certificate, its key and optionally intermediates.
    :param allow_plain_without_tls: allow SASL PLAIN without TLS (STARTTLS stays required).
    :param tls_max_version: ``None``, ``"1.2"`` or ``"1.3"``.
    :param channel_binding: ``"auto"`` (default: the binding type is chosen per connection by
        the rule in ``docs/security.rst``), ``"none"`` or ``None`` (never use ``-PLUS``; for a
        server whose binding is broken), or a type to pin (``"tls-exporter"``,
        ``"tls-unique"``, ``"tls-server-end-point"``: the only one used).
    :param scram_max_iterations: the most PBKDF2 iterations a server may ask SCRAM for
        (default :data:`~txxmppnode.scram.MAX_ITERATIONS`, 1,000,000; at least 4096).  A server
        asking for more gets ``<abort/>`` and the attempt fails with
        :class:`~txxmppnode.sasl.SASLProtocolError`.
    :raises TypeError: for an argument of the wrong type.
    :raises ValueError: for an unusable value (e.g. no password and no alternative).
    """
    if password_provider is None:
        if not anonymous and client_certificate is None:
            raise ValueError(
                "password_provider may only be None with anonymous=True or a client_certificate"
            )
    elif not isinstance(password_provider, str) and not callable(password_provider):
        raise TypeError(
            "password_provider must be a str, a callable or None, "
            f"not {type(password_provider).__name__}"
        )
    if post_handshake_deferred_failure is not None and not callable(
        post_handshake_deferred_failure
    ):
        raise TypeError("post_handshake_deferred_failure must be callable or None")

    store: AbstractPinStore | None
    if pin_store is None or isinstance(pin_store, AbstractPinStore):
        store = pin_store
    elif isinstance(pin_store, Mapping):
        store = make_pin_store(pin_type, pin_store)
    else:
        raise TypeError(
            f"pin_store must be a pin store, a JSON dict or None, not {type(pin_store).__name__}"
        )

    certificate, chain = (
        (None, ()) if client_certificate is None else _client_certificate(client_certificate)
    )
    return SecurityLayer(
        password_provider=password_provider,
        trust_root=_trust_root(trust_root),
        pin_store=store,
        post_handshake_deferred_failure=post_handshake_deferred_failure,
        anonymous=bool(anonymous),
        no_verify=bool(no_verify),
        client_certificate=certificate,
        client_certificate_chain=chain,
        allow_plain_without_tls=bool(allow_plain_without_tls),
        tls_max_version=tls_max_version,
        channel_binding="none" if channel_binding is None else channel_binding,
        scram_max_iterations=scram_max_iterations,
    )
