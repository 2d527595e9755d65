"""The TLS policy of client streams: trust, pins, host names, protocol versions, credentials.

:func:`make` builds a :class:`SecurityLayer`, an immutable configuration the stream layer
consults.  For every TLS connection it asks :meth:`SecurityLayer.tls_verifier` for a
:class:`TLSVerifier`, the connection creator handed to ``transport.startTLS()`` or
:func:`twisted.internet.endpoints.wrapClientTLS`.

How a server certificate is judged
----------------------------------

OpenSSL builds and checks the chain against the trust root, but the verifier's verify callback
only *records* what went wrong (error, depth) and lets the handshake go on.  When the handshake
completes (the ``SSL_CB_HANDSHAKE_DONE`` info callback) the verifier decides, once:

1. the chain is acceptable if OpenSSL reported no error, or if the leaf certificate is pinned
   for the domain in the pin store;
2. the leaf certificate must be valid for the domain (``service_identity``), pinned or not;
3. with ``no_verify`` both checks are still made and logged, but nothing is refused.

The name checked is always the XMPP domain given to :meth:`SecurityLayer.tls_verifier`, never
the host the TCP connection went to.  A refused certificate becomes a
:class:`~txxmppnode.errors.TLSFailure` whose message names every reason.  Without
``post_handshake_deferred_failure`` the connection is then aborted through
``failVerification``, so the application protocol's ``connectionLost`` receives that
:class:`~txxmppnode.errors.TLSFailure`; with it, the failure is only recorded and
:meth:`SecurityLayer.decide_after_handshake` asks the application.

Errors that are not about the certificate (no common protocol version or cipher, an alert
from the server) still reach ``connectionLost`` as :class:`OpenSSL.SSL.Error`;
:func:`tls_failure_from` turns them into a :class:`~txxmppnode.errors.TLSFailure`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, Final, NamedTuple, TypeAlias, cast

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet import defer, ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot  # public only under this name
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import TLSFailure
from .jid import JID
from .key_derivation import KeyDeriver
from .pinning import (
    AbstractPinStore,
    CertificatePinStore,
    PinType,
    PublicKeyPinStore,
    canonical_hostname,
    make_pin_store,
)
from .scram import MAX_ITERATIONS, MIN_ITERATIONS

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

#: Readable reasons for the certificate verification errors of OpenSSL's ``x509_vfy.h``.
_X509_ERRORS: Final[Mapping[int, str]] = {
    2: "unable to get issuer certificate",
    4: "unable to decrypt the certificate's signature",
    6: "unable to decode the issuer's public key",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    13: "invalid notBefore field in the certificate",
    14: "invalid notAfter field in the certificate",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "issuer certificate has no public key",
    25: "path length constraint exceeded",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    32: "key usage does not include certificate signing",
    34: "unhandled critical extension",
    37: "invalid non-CA certificate (basicConstraints CA is true)",
    41: "invalid or inconsistent certificate extension",
    47: "permitted subtree violation",
    48: "excluded subtree violation",
    55: "path loop",
    66: "EE certificate key too weak",
    67: "CA certificate key too weak",
    68: "CA signature digest algorithm too weak",
    76: "unsupported signature algorithm",
    79: "invalid CA certificate",
}


class ChainError(NamedTuple):
    """One error OpenSSL reported while checking the server's certificate chain."""

    #: The ``X509_V_ERR_*`` code.
    code: int
    #: The position in the chain: 0 is the server's own certificate.
    depth: int

    @property
    def reason(self) -> str:
        """A readable description, e.g. ``"self-signed certificate (depth 0)"``."""
        text = _X509_ERRORS.get(self.code, f"certificate verification error {self.code}")
        return f"{text} (depth {self.depth})"


def tls_failure_from(error: BaseException | Failure) -> TLSFailure:
    """Return *error* (from ``connectionLost`` during a handshake) as a :class:`TLSFailure`.

    A :class:`TLSFailure` is returned as it is; an :class:`OpenSSL.SSL.Error` or anything
    else is wrapped, with the original as ``__cause__``.
    """
    value = error.value if isinstance(error, Failure) else error
    if isinstance(value, TLSFailure):
        return value
    if isinstance(value, SSL.Error):
        message = f"TLS handshake failed: {_ssl_error_text(value)}"
    else:
        message = f"TLS handshake failed: {value}"
    failure = TLSFailure(message)
    failure.__cause__ = value
    return failure


def _ssl_error_text(error: SSL.Error) -> str:
    """The reasons in an OpenSSL error queue (``[(lib, func, reason), ...]``), or its text."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(reasons)
    return str(error) or type(error).__name__


@implementer(IOpenSSLClientConnectionCreator)
class TLSVerifier:
    """Creates the OpenSSL connection for one TLS client connection and judges its peer.

    Use one verifier per connection.  After the handshake it reports:

    :ivar domain: the XMPP domain the certificate must be valid for (as given).
    :ivar handshake_done: whether the handshake completed and the decision was made.
    :ivar peer_certificate: the server's certificate, or ``None`` before the handshake.
    :ivar verified: whether the certificate passed every check (trusted chain or pin, and the
        host name), regardless of ``no_verify``.
    :ivar pinned: whether the certificate is pinned for the domain.
    :ivar chain_errors: what OpenSSL found wrong with the chain (empty when it verified).
    :ivar failure: the :class:`TLSFailure` when the certificate was refused, else ``None``
        (also ``None`` when ``no_verify`` let an unverified certificate through).
    :ivar aborted: whether the verifier aborted the connection because of :attr:`failure`.
    :ivar accepted_by_application: whether ``post_handshake_deferred_failure`` accepted a
        certificate that failed verification.

    The decision is made inside OpenSSL's handshake, so when it aborts the connection Twisted
    still calls ``handshakeCompleted()`` on an ``IHandshakeListener`` protocol, just before
    ``connectionLost`` delivers the :class:`TLSFailure`.  Whoever waits for the handshake
    should therefore go on with :meth:`SecurityLayer.decide_after_handshake`, which fails at
    once in that case.
    """

    def __init__(
        self, layer: SecurityLayer, domain: str, alpn: Sequence[bytes], context: SSL.Context
    ) -> None:
        """Use :meth:`SecurityLayer.tls_verifier` rather than calling this directly."""
        self.layer = layer
        self.domain = domain
        self.alpn: tuple[bytes, ...] = tuple(alpn)
        self._server_name = canonical_hostname(domain)
        self._is_ip = _is_ip_address(self._server_name)
        self._context = context
        self._protocol: TLSMemoryBIOProtocol | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget the outcome of any previous connection."""
        self.handshake_done = False
        self.peer_certificate: x509.Certificate | None = None
        self.verified = False
        self.pinned = False
        self.chain_errors: tuple[ChainError, ...] = ()
        self.failure: TLSFailure | None = None
        self.aborted = False
        self.accepted_by_application = False

    # -- IOpenSSLClientConnectionCreator --------------------------------------------------

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """Return the client-side OpenSSL connection for *tlsProtocol*.

        It sends the domain as SNI (not for IP literals) and carries the verify and info
        callbacks that record and then judge the server's certificate.
        """
        self._reset()
        self._protocol = tlsProtocol
        connection = SSL.Connection(self._context, None)
        if not self._is_ip:
            connection.set_tlsext_host_name(self._server_name.encode("ascii"))
        connection.set_verify(SSL.VERIFY_PEER, self._verify_callback)
        connection.set_info_callback(self._info_callback)
        return connection

    # -- OpenSSL callbacks (they must never raise) -------------------------------------------

    def _verify_callback(
        self, connection: SSL.Connection, certificate: crypto.X509, code: int, depth: int, ok: int
    ) -> bool:
        """Record a chain error and let the handshake continue; the decision comes later."""
        if not ok:
            self.chain_errors += (ChainError(code, depth),)
        return True

    def _info_callback(self, connection: SSL.Connection, where: int, ret: int) -> None:
        """At the end of the (first) handshake, decide about the certificate."""
        if not where & SSL.SSL_CB_HANDSHAKE_DONE or self.handshake_done:
            return
        try:
            self._decide(connection)
        except BaseException as exc:
            _log.failure("while checking the certificate of {domain}", domain=self.domain)
            self.verified = False
            self.failure = TLSFailure(f"certificate check of {self.domain!r} failed: {exc!r}")
            self._abort()
        finally:
            self._protocol = None

    # -- the decision ----------------------------------------------------------------------------

    def _decide(self, connection: SSL.Connection) -> None:
        """Judge the peer's certificate; record the outcome and abort if it is refused."""
        self.handshake_done = True
        certificate = connection.get_peer_certificate(as_cryptography=True)
        self.peer_certificate = certificate
        reasons: list[str] = []
        if certificate is None:
            reasons.append("the server presented no certificate")
        else:
            store = self.layer.pin_store
            self.pinned = store is not None and store.query(self._server_name, certificate)
            if self.chain_errors and not self.pinned:
                details = ", ".join(dict.fromkeys(e.reason for e in self.chain_errors))
                reasons.append(f"the certificate could not be verified: {details}")
            name_problem = self._check_name(connection, certificate)
            if name_problem:
                reasons.append(name_problem)
        self.verified = not reasons
        if not reasons:
            _log.debug(
                "certificate of {domain} accepted ({how})",
                domain=self.domain,
                how="pinned" if self.pinned and self.chain_errors else "trusted chain",
            )
            return
        message = f"certificate verify failed for {self.domain!r}: " + "; ".join(reasons)
        if self.layer.no_verify:
            _log.warn("no_verify: accepting a certificate that failed: {reason}", reason=message)
            return
        self.failure = TLSFailure(message)
        if self.layer.post_handshake_deferred_failure is None:
            _log.info("refusing the TLS connection: {reason}", reason=message)
            self._abort()
        else:
            _log.info("certificate refused, asking the application: {reason}", reason=message)

    def _check_name(self, connection: SSL.Connection, certificate: x509.Certificate) -> str | None:
        """Return why *certificate* is not valid for the domain, or ``None`` if it is."""
        try:
            if self._is_ip:
                verify_ip_address(connection, self._server_name)
            else:
                verify_hostname(connection, self._server_name)
        except CertificateError as exc:
            return f"the certificate is not usable for the host name {self.domain!r} ({exc})"
        except VerificationError:
            names = _certificate_names(certificate)
            return (
                f"the certificate is not valid for the host name {self.domain!r} "
                f"(it is for {', '.join(names) if names else 'no DNS name or address'})"
            )
        return None

    def _abort(self) -> None:
        """Abort the connection with :attr:`failure` as the reason given to the protocol."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and self.failure is not None:
            self.aborted = True
            protocol.failVerification(Failure(self.failure))  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        state = "failed" if self.failure else "verified" if self.verified else "pending"
        if self.handshake_done and not self.failure and not self.verified:
            state = "unverified"
        return f"<TLSVerifier {self.domain!r} {state}>"


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in *certificate*'s subjectAltName, for messages."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names.extend(str(address) for address in san.get_values_for_type(x509.IPAddress))
    return names


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
