"""The presence state of a client: whether it is available, and its ``<show/>`` if so."""

from __future__ import annotations

from typing import Any, Final

from .stanza import Presence, PresenceShow, PresenceType

# the position of each show among available states, from least to most available
_SHOW_RANK: Final = {
    PresenceShow.XA: 0,
    PresenceShow.AWAY: 1,
    PresenceShow.NONE: 2,
    PresenceShow.CHAT: 3,
    PresenceShow.DND: 4,
}


def _show(value: object) -> PresenceShow:
    if isinstance(value, PresenceShow):
        return value
    try:
        return PresenceShow(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in PresenceShow)
        raise ValueError(f"invalid presence show {value!r}; expected one of {allowed}") from None


class PresenceState:
    """An immutable, hashable presence state: availability and, if available, the show.

    :param available: whether the state is an available presence.
    :param show: the ``<show/>`` of an available state, as a :class:`PresenceShow` or its
        value (``"away"``, ``"chat"``, ``"dnd"``, ``"xa"``, or ``None`` for plain online).
    :raises TypeError: if *available* is not a bool.
    :raises ValueError: if *show* is not a valid show, or is not ``NONE`` while *available* is
        false (an unavailable presence has no show).

    States are totally ordered, from least to most available::

        PresenceState()                              # unavailable
        < PresenceState(True, PresenceShow.XA)       # extended away
        < PresenceState(True, PresenceShow.AWAY)
        < PresenceState(True)                        # plain online (show NONE)
        < PresenceState(True, PresenceShow.CHAT)     # free for chat
        < PresenceState(True, PresenceShow.DND)      # do not disturb

    ``DND`` ranks highest because the user is present and actively busy.  A state is true
    exactly when it is available.
    """

    __slots__ = ("_available", "_show")

    _available: bool
    _show: PresenceShow

    def __init__(
        self, available: bool = False, show: PresenceShow | str | None = PresenceShow.NONE
    ) -> None:
        if not isinstance(available, bool):
            raise TypeError(f"available must be a bool, not {available!r}")
        member = _show(show)
        if not available and member is not PresenceShow.NONE:
            raise ValueError(f"an unavailable presence state has no show (got {member.value!r})")
        object.__setattr__(self, "_available", available)
        object.__setattr__(self, "_show", member)

    @property
    def available(self) -> bool:
        """Whether the state is an available presence."""
        return self._available

    @property
    def show(self) -> PresenceShow:
        """The show of an available state; always ``NONE`` for an unavailable one."""
        return self._show

    @classmethod
    def from_stanza(cls, presence: Presence) -> PresenceState:
        """Read the state of an available or unavailable *presence*.

        The ``<show/>`` of an unavailable presence is ignored.

        :raises ValueError: if the presence has another type (subscription, probe, error), or
            an available presence carries an invalid ``<show/>``.
        """
        type_ = presence.type_
        if type_ is PresenceType.UNAVAILABLE:
            return cls(False)
        if type_ is PresenceType.AVAILABLE:
            return cls(True, presence.show)
        raise ValueError(f"a presence of type {type_.value!r} carries no presence state")

    def apply_to(self, presence: Presence) -> None:
        """Write the state onto *presence*: its type (available or unavailable) and show.

        Any other type the presence had is replaced; status and priority are left alone.
        """
        presence.type_ = PresenceType.AVAILABLE if self._available else PresenceType.UNAVAILABLE
        presence.show = self._show

    def _key(self) -> tuple[bool, int]:
        return (self._available, _SHOW_RANK[self._show])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PresenceState):
            return NotImplemented
        return self._available == other._available and self._show is other._show

    def __hash__(self) -> int:
        return hash((PresenceState, self._available, self._show))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PresenceState):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, PresenceState):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, PresenceState):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, PresenceState):
            return NotImplemented
        return self._key() >= other._key()

    def __bool__(self) -> bool:
        return self._available

    def __repr__(self) -> str:
        parts = ["<PresenceState"]
        if self._available:
            parts.append(" available")
        if self._show is not PresenceShow.NONE:
            parts.append(f" show={self._show.value}")
        return "".join(parts) + ">"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PresenceState is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PresenceState is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[PresenceState], tuple[bool, PresenceShow]]:
        return (type(self), (self._available, self._show))


__all__ = ["PresenceState"]
