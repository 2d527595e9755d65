"""Certificate pin stores: accept a server certificate that no trusted CA vouches for.

A *pin* is the SHA-256 digest of something that identifies a server's certificate, remembered
per host name.  :class:`PublicKeyPinStore` hashes the certificate's SubjectPublicKeyInfo (the
RFC 7469 ``pin-sha256`` value), so a certificate re-issued for the same key stays pinned;
:class:`CertificatePinStore` hashes the whole DER certificate, so any change of certificate
needs a new pin.

Pins are exported and imported as JSON-compatible dictionaries that map each host name to a
list of base64-encoded digests, for example::

    {"example.org": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]}

Host names are compared in a canonical form: lower case, without a trailing dot, with
internationalised labels as A-labels (``xn--...``) and IP addresses in the form
:mod:`ipaddress` prints.  :func:`canonical_hostname` computes it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final, TypeAlias

import idna
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from OpenSSL import crypto

__all__ = [
    "AbstractPinStore",
    "CertificateLike",
    "CertificatePinStore",
    "PinType",
    "PublicKeyPinStore",
    "canonical_hostname",
    "make_pin_store",
]

#: A certificate as either pyOpenSSL or cryptography represents it.
CertificateLike: TypeAlias = crypto.X509 | x509.Certificate

_DIGEST_SIZE: Final = hashlib.sha256().digest_size
_MAX_LABEL: Final = 63
_MAX_NAME: Final = 253


class PinType(enum.Enum):
    """What a pin covers."""

    #: The SHA-256 of the SubjectPublicKeyInfo: survives re-issuing a certificate for one key.
    PUBLIC_KEY = "public_key"
    #: The SHA-256 of the whole DER certificate: pins exactly one certificate.
    CERTIFICATE = "certificate"


def canonical_hostname(hostname: str) -> str:
    """Return *hostname* in the form pins and certificate checks compare.

    IP literals (IPv6 with or without brackets) become their :mod:`ipaddress` text; other names
    lose one trailing dot, are lower-cased and have internationalised labels converted to
    A-labels.

    :raises TypeError: if *hostname* is not a ``str``.
    :raises ValueError: if it is empty or not a valid host name.
    """
    if not isinstance(hostname, str):
        raise TypeError(f"host name must be str, not {type(hostname).__name__}")
    name = hostname[:-1] if hostname.endswith(".") else hostname
    literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        pass
    if name.isascii():
        # ASCII names are taken as they are (lower-cased), so names such as ``my_host.test``
        # that IDNA2008 would refuse still work; only their shape is checked.
        canonical = name.lower()
    else:
        try:
            canonical = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"invalid host name {hostname!r}: {exc}") from None
    labels = canonical.split(".")
    if (
        not canonical
        or len(canonical) > _MAX_NAME
        or any(not label or len(label) > _MAX_LABEL for label in labels)
        or any(not (ch.isalnum() or ch in "-_") for ch in canonical.replace(".", ""))
    ):
        raise ValueError(f"invalid host name {hostname!r}")
    return canonical


def _as_cryptography(certificate: object) -> x509.Certificate:
    """Return *certificate* (pyOpenSSL or cryptography) as a cryptography certificate."""
    if isinstance(certificate, x509.Certificate):
        return certificate
    if isinstance(certificate, crypto.X509):
        return certificate.to_cryptography()
    raise TypeError(
        "certificate must be an OpenSSL.crypto.X509 or a cryptography.x509.Certificate, "
        f"not {type(certificate).__name__}"
    )


class AbstractPinStore(ABC):
    """Pins per host name; subclasses decide which part of a certificate is hashed.

    The store is a plain in-memory mapping; persist it with :meth:`export_to_json` and
    :meth:`import_from_json`.
    """

    #: The kind of pins the store holds.
    pin_type: ClassVar[PinType]

    def __init__(self) -> None:
        """Create an empty store."""
        self._pins: dict[str, set[str]] = {}

    @abstractmethod
    def _pinned_bytes(self, certificate: x509.Certificate) -> bytes:
        """Return the DER bytes of *certificate* whose SHA-256 is the pin."""

    def fingerprint(self, certificate: CertificateLike) -> str:
        """Return the pin of *certificate*: the base64 SHA-256 this store records for it."""
        digest = hashlib.sha256(self._pinned_bytes(_as_cryptography(certificate))).digest()
        return base64.b64encode(digest).decode("ascii")

    def pin(self, hostname: str, certificate: CertificateLike) -> None:
        """Accept *certificate* for *hostname* from now on."""
        self._pins.setdefault(canonical_hostname(hostname), set()).add(
            self.fingerprint(certificate)
        )

    def query(self, hostname: str, certificate: CertificateLike) -> bool:
        """Return whether *certificate* is pinned for *hostname*."""
        pins = self._pins.get(canonical_hostname(hostname))
        return pins is not None and self.fingerprint(certificate) in pins

    def get_pinned_for_host(self, hostname: str) -> frozenset[str]:
        """Return the pins (base64 SHA-256 digests) recorded for *hostname*."""
        return frozenset(self._pins.get(canonical_hostname(hostname), ()))

    def export_to_json(self) -> dict[str, list[str]]:
        """Return every pin as ``{hostname: [base64 digest, ...]}`` (sorted, JSON-ready)."""
        return {host: sorted(pins) for host, pins in sorted(self._pins.items()) if pins}

    def import_from_json(self, data: Mapping[str, Any], *, override: bool = False) -> None:
        """Add the pins in *data* (as made by :meth:`export_to_json`).

        By default the pins are merged with those already stored; with *override*, each host
        named in *data* keeps only the pins given for it there (hosts not named are kept).
        Nothing changes unless all of *data* is valid.

        :raises ValueError: naming the offending host or entry, if *data* is not a mapping of
            host names to lists of base64 SHA-256 digests.
        """
        parsed = _parse_pins(data)
        for host, pins in parsed.items():
            if override:
                self._pins[host] = set(pins)
            else:
                self._pins.setdefault(host, set()).update(pins)

    def __repr__(self) -> str:
        count = sum(len(pins) for pins in self._pins.values())
        return f"<{type(self).__name__} hosts={len(self._pins)} pins={count}>"


def _parse_pins(data: object) -> dict[str, set[str]]:
    """Validate imported pins; return them by canonical host name."""
    if not isinstance(data, Mapping):
        raise ValueError(f"pin data must be a JSON object, not {type(data).__name__}")
    parsed: dict[str, set[str]] = {}
    for host, values in data.items():
        if not isinstance(host, str):
            raise ValueError(f"pin data: host name {host!r} is not a string")
        try:
            key = canonical_hostname(host)
        except ValueError as exc:
            raise ValueError(f"pin data: {exc}") from None
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            raise ValueError(
                f"pin data: the pins of {host!r} must be a list of base64 strings, "
                f"not {type(values).__name__}"
            )
        pins = parsed.setdefault(key, set())
        for index, value in enumerate(values):
            where = f"pin data: entry {index} of {host!r}"
            if not isinstance(value, str):
                raise ValueError(f"{where} is not a string but {type(value).__name__}")
            try:
                digest = base64.b64decode(value.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                raise ValueError(f"{where} is not valid base64: {value!r}") from None
            if len(digest) != _DIGEST_SIZE:
                raise ValueError(
                    f"{where} is {len(digest)} bytes long, not a SHA-256 digest "
                    f"({_DIGEST_SIZE} bytes)"
                )
            pins.add(base64.b64encode(digest).decode("ascii"))
    return parsed


class PublicKeyPinStore(AbstractPinStore):
    """Pins the SHA-256 of the certificate's SubjectPublicKeyInfo (DER).

    A certificate re-issued for the same key pair matches the pin.
    """

    pin_type = PinType.PUBLIC_KEY

    def _pinned_bytes(self, certificate: x509.Certificate) -> bytes:
        return certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )


class CertificatePinStore(AbstractPinStore):
    """Pins the SHA-256 of the whole certificate (DER): exactly one certificate matches."""

    pin_type = PinType.CERTIFICATE

    def _pinned_bytes(self, certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(Encoding.DER)


_STORE_CLASSES: Final[Mapping[PinType, type[AbstractPinStore]]] = {
    PinType.PUBLIC_KEY: PublicKeyPinStore,
    PinType.CERTIFICATE: CertificatePinStore,
}


def make_pin_store(
    pin_type: PinType = PinType.PUBLIC_KEY, data: Mapping[str, Any] | None = None
) -> AbstractPinStore:
    """Return a new store for *pin_type*, filled from the JSON *data* if given.

    :raises ValueError: if *data* is malformed (see :meth:`AbstractPinStore.import_from_json`).
    """
    try:
        store = _STORE_CLASSES[PinType(pin_type)]()
    except ValueError:
        raise ValueError(f"unknown pin type {pin_type!r}") from None
    if data is not None:
        store.import_from_json(data)
    return store
