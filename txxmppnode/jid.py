"""Jabber identifiers (JIDs) as defined by RFC 7622.

A JID has the form ``[localpart@]domainpart[/resourcepart]``.  :class:`JID` is an immutable,
hashable, totally ordered value that holds the three parts in their prepared, canonical form,
so two JIDs that address the same entity compare equal.  Each part is prepared as follows:

* **localpart** -- enforced with the PRECIS ``UsernameCaseMapped`` profile (RFC 8265), as
  RFC 7622 §3.3 requires: full-width characters become their narrow forms, letters become
  lower case and the result is NFC-normalised.  The characters ``"&'/:<>@`` are refused
  afterwards (RFC 7622 §3.3.1), so a full-width ``＠`` is refused too.
* **domainpart** -- one trailing label separator (``.`` or one of its Unicode look-alikes) is
  stripped (RFC 7622 §3.2).  An IPv6 literal in brackets is kept in the canonical form of
  :mod:`ipaddress` (zone identifiers are refused); any other value is mapped and checked
  with UTS #46 and IDNA2008 (non-transitional) and stored as U-labels (RFC 7622 §3.2.2),
  so ``xn--mnchen-3ya.example`` and ``MÜNCHEN.example`` are both ``münchen.example``.  A
  result made only of digits and dots must be a valid dotted-quad IPv4 address.
* **resourcepart** -- enforced with the PRECIS ``OpaqueString`` profile (RFC 8265); case is
  preserved, and the resourcepart may contain ``@`` and ``/``.

Every prepared part must be 1 to 1023 octets long in UTF-8.  Invalid input raises
:class:`ValueError` naming the part and the reason (the offending JID is quoted, shortened to
80 characters); arguments of the wrong type raise :class:`TypeError`.

``strict=False`` exists only to interoperate with legacy servers that hand out identifiers
PRECIS forbids (a space in a localpart, for instance).  It relaxes nothing but the PRECIS
profile check of the localpart and resourcepart: a part the profile refuses is kept
NFC-normalised (a localpart also lower-cased) provided it holds no control or surrogate
characters and preparing it again gives the same string.  Emptiness, the length limit and the
forbidden localpart characters are still checked, and the domainpart is always strict.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
import unicodedata
from typing import Final, Self

import idna
import precis_i18n

__all__ = ["JID"]

_MAX_OCTETS: Final = 1023
#: Prepared parts remembered per kind: every received stanza's addresses are parsed, and a busy
#: node (a large room, a big roster) sees thousands of distinct senders; PRECIS preparation of
#: a new one costs tens of microseconds, a cache hit well under one.
_CACHE_SIZE: Final = 16384
_LOCAL_FORBIDDEN: Final = "\"&'/:<>@"
_SEPARATORS: Final = ".\u3002\uff0e\uff61"
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_DIGITS_AND_DOTS: Final = re.compile(r"[0-9.]+")
_PROFILES: Final = {
    "localpart": precis_i18n.get_profile("UsernameCaseMapped"),
    "resourcepart": precis_i18n.get_profile("OpaqueString"),
}


class _Keep(enum.Enum):
    """Marker for "leave this part unchanged" in :meth:`JID.replace`."""

    KEEP = enum.auto()


def _check_length(part: str, value: str) -> str:
    if len(value.encode("utf-8")) > _MAX_OCTETS:
        raise ValueError(f"{part} is longer than {_MAX_OCTETS} octets")
    return value


def _relax(part: str, value: str) -> str:
    return unicodedata.normalize("NFC", value.lower() if part == "localpart" else value)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _prepare_precis(part: str, value: str, strict: bool) -> str:
    """Prepare a localpart or resourcepart; *part* names it and selects the profile."""
    if not value:
        raise ValueError(f"{part} must not be empty")
    profile = _PROFILES[part]
    try:
        prepared = profile.enforce(value)
    except UnicodeError as exc:
        reason = getattr(exc, "reason", str(exc))
        if strict:
            raise ValueError(f"{part} is refused by PRECIS {profile.name} ({reason})") from exc
        if _CONTROL.search(value):
            raise ValueError(f"{part} must not contain control or surrogate characters") from exc
        prepared = _relax(part, value)
        try:
            again = profile.enforce(prepared)
        except UnicodeError:
            again = _relax(part, prepared)
        if again != prepared:
            raise ValueError(f"{part} is not stable under preparation") from exc
    if part == "localpart":
        for char in _LOCAL_FORBIDDEN:
            if char in prepared:
                raise ValueError(f"localpart must not contain {char!r}")
    return _check_length(part, prepared)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _prepare_domain(value: str) -> str:
    """Prepare a domainpart: an IP address literal or an internationalised domain name."""
    if value and value[-1] in _SEPARATORS:
        value = value[:-1]
    if not value:
        raise ValueError("domainpart must not be empty")
    if value.startswith("[") and value.endswith("]"):
        try:
            address = ipaddress.IPv6Address(value[1:-1])
            if address.scope_id:
                raise ValueError("zone identifier")
        except ValueError:
            raise ValueError("domainpart is not a valid IPv6 address literal") from None
        return f"[{address.compressed}]"
    try:
        prepared = idna.decode(idna.encode(value, uts46=True))
    except ValueError as exc:  # idna.IDNAError is a UnicodeError, hence a ValueError
        raise ValueError(f"domainpart is not a valid domain name ({exc})") from exc
    if prepared.endswith("."):
        raise ValueError("domainpart must not end with an empty label")
    if _DIGITS_AND_DOTS.fullmatch(prepared):
        try:
            prepared = str(ipaddress.IPv4Address(prepared))
        except ValueError:
            raise ValueError("domainpart is numeric but not a valid IPv4 address") from None
    return _check_length("domainpart", prepared)


def _join(localpart: str | None, domain: str, resource: str | None) -> str:
    local = "" if localpart is None else f"{localpart}@"
    return f"{local}{domain}" if resource is None else f"{local}{domain}/{resource}"


@functools.total_ordering
class JID:
    """An immutable, prepared Jabber identifier (RFC 7622).

    ``JID(localpart, domain, resource)`` prepares each part (see the module documentation);
    a missing localpart or resource is ``None``, never the empty string.  JIDs order by
    domainpart, then localpart, then resourcepart, where a missing part sorts first.
    Pass ``strict=False`` only for identifiers from legacy servers that PRECIS refuses.
    """

    __slots__ = ("_bare", "_hash", "_str", "domain", "localpart", "resource")
    localpart: str | None
    domain: str
    resource: str | None
    _hash: int
    _str: str
    _bare: Self | None

    def __init__(
        self,
        localpart: str | None,
        domain: str,
        resource: str | None = None,
        *,
        strict: bool = True,
    ) -> None:
        for name, value in (("localpart", localpart), ("resource", resource)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"JID {name} must be str or None, not {type(value).__name__}")
        if not isinstance(domain, str):
            raise TypeError(f"JID domain must be str, not {type(domain).__name__}")
        try:
            local = None if localpart is None else _prepare_precis("localpart", localpart, strict)
            host = _prepare_domain(domain)
            res = None if resource is None else _prepare_precis("resourcepart", resource, strict)
        except ValueError as exc:
            shown = _join(localpart, domain, resource)
            shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
            raise ValueError(f"invalid JID {shown!r}: {exc}") from exc
        self._set(local, host, res)

    def _set(self, localpart: str | None, domain: str, resource: str | None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "localpart", localpart)
        setattr_(self, "domain", domain)
        setattr_(self, "resource", resource)
        setattr_(self, "_hash", hash((localpart, domain, resource)))
        setattr_(self, "_str", _join(localpart, domain, resource))
        # A bare JID is its own bare form; a full one makes its bare form on first use.
        setattr_(self, "_bare", self if resource is None else None)

    @classmethod
    def fromstr(cls, s: str, *, strict: bool = True) -> Self:
        """Parse ``[localpart@]domainpart[/resourcepart]`` (RFC 7622 §3.1).

        The first ``/`` starts the resourcepart, which may itself contain ``@`` and ``/``.
        Before it, an ``@`` ends the localpart; a string with several is refused either way,
        and splitting at the last one reports the error against the localpart.

        JIDs are immutable, so the same string may give the same object: the last 16,384
        strings parsed as :class:`JID` (not a subclass) are remembered, so a received
        stanza's address is parsed once however often it is read.
        """
        if not isinstance(s, str):
            raise TypeError(f"JID.fromstr() needs a str, not {type(s).__name__}")
        if cls is JID:
            return _fromstr_cached(s, strict)  # type: ignore[return-value]
        return cls._parse(s, strict)

    @classmethod
    def _parse(cls, s: str, strict: bool) -> Self:
        rest, slash, resource = s.partition("/")
        localpart, at, domain = rest.rpartition("@")
        return cls(localpart if at else None, domain, resource if slash else None, strict=strict)

    def bare(self) -> Self:
        """Return this JID without its resourcepart (``self`` if it has none)."""
        bare = self._bare
        if bare is None:
            bare = object.__new__(type(self))
            bare._set(self.localpart, self.domain, None)
            object.__setattr__(self, "_bare", bare)
        return bare

    def replace(
        self,
        *,
        localpart: str | _Keep | None = _Keep.KEEP,
        domain: str | _Keep = _Keep.KEEP,
        resource: str | _Keep | None = _Keep.KEEP,
        strict: bool = True,
    ) -> Self:
        """Return a new JID with the given parts replaced (``None`` removes a part).

        All parts are prepared and validated again; pass ``strict=False`` to keep parts
        that were accepted leniently.
        """
        return type(self)(
            self.localpart if isinstance(localpart, _Keep) else localpart,
            self.domain if isinstance(domain, _Keep) else domain,
            self.resource if isinstance(resource, _Keep) else resource,
            strict=strict,
        )

    @property
    def is_bare(self) -> bool:
        """Whether the JID has no resourcepart."""
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        """Whether the JID is a bare domainpart (no localpart and no resourcepart)."""
        return self.localpart is None and self.resource is None

    def _sort_key(self) -> tuple[str, str, str]:
        # A missing part sorts like "", which no present part can be.
        return (self.domain, self.localpart or "", self.resource or "")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JID):
            return NotImplemented
        return (self.localpart, self.domain, self.resource) == (
            other.localpart,
            other.domain,
            other.resource,
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, JID):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"{type(self).__name__}.fromstr({str(self)!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"JID is immutable; use replace() instead of setting {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"JID is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # A module-level function, not the bound classmethod: twisted.persisted.styles, once
        # imported, pickles bound methods in a way that cannot restore classmethods.
        return (_unpickle, (str(self),))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _fromstr_cached(s: str, strict: bool) -> JID:
    return JID._parse(s, strict)


def _unpickle(text: str) -> JID:
    """Rebuild a pickled JID; its parts are prepared already, so lenient parsing suffices."""
    return JID.fromstr(text, strict=False)
