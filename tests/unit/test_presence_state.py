"""Tests of txxmppnode.presence_state: validation, ordering, hashing and stanza round trips."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
from lxml import etree

from txxmppnode.presence_state import PresenceState
from txxmppnode.stanza import Presence, PresenceShow, PresenceType

# every state, in the documented order from least to most available
DOCUMENTED_ORDER = [
    PresenceState(),
    PresenceState(True, PresenceShow.XA),
    PresenceState(True, PresenceShow.AWAY),
    PresenceState(True),
    PresenceState(True, PresenceShow.CHAT),
    PresenceState(True, PresenceShow.DND),
]


def test_defaults_are_unavailable_without_show() -> None:
    state = PresenceState()
    assert state.available is False
    assert state.show is PresenceShow.NONE


def test_available_default_show_is_none() -> None:
    assert PresenceState(True).show is PresenceShow.NONE


def test_documented_order_covers_every_state_once() -> None:
    assert len(set(DOCUMENTED_ORDER)) == 1 + len(PresenceShow)
    assert {state.show for state in DOCUMENTED_ORDER if state.available} == set(PresenceShow)


def test_sorting_gives_the_documented_order() -> None:
    shuffled = DOCUMENTED_ORDER[::-1]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled) == DOCUMENTED_ORDER
    assert sorted(DOCUMENTED_ORDER[::-1]) == DOCUMENTED_ORDER


@pytest.mark.parametrize("i", range(len(DOCUMENTED_ORDER)))
@pytest.mark.parametrize("j", range(len(DOCUMENTED_ORDER)))
def test_comparison_operators_agree_with_positions(i: int, j: int) -> None:
    a, b = DOCUMENTED_ORDER[i], DOCUMENTED_ORDER[j]
    assert (a < b) is (i < j)
    assert (a <= b) is (i <= j)
    assert (a > b) is (i > j)
    assert (a >= b) is (i >= j)
    assert (a == b) is (i == j)
    assert (a != b) is (i != j)


def test_unavailable_is_below_every_available_state() -> None:
    unavailable = PresenceState()
    for show in PresenceShow:
        assert unavailable < PresenceState(True, show)
    assert max(DOCUMENTED_ORDER) == PresenceState(True, PresenceShow.DND)
    assert min(DOCUMENTED_ORDER) == unavailable


def test_ordering_against_other_types_is_refused() -> None:
    with pytest.raises(TypeError):
        _ = PresenceState() < 1
    with pytest.raises(TypeError):
        _ = PresenceState(True) >= "available"


def test_equality_and_hash() -> None:
    assert PresenceState(True, PresenceShow.AWAY) == PresenceState(True, "away")
    assert hash(PresenceState(True, PresenceShow.AWAY)) == hash(PresenceState(True, "away"))
    assert PresenceState(True) == PresenceState(True, None)
    assert PresenceState(True) != PresenceState(False)
    assert PresenceState(True, "away") != PresenceState(True, "xa")
    assert PresenceState() != (False, PresenceShow.NONE)
    assert PresenceState() != False  # noqa: E712  # not equal to its truth value
    fresh = [PresenceState(state.available, state.show.value) for state in DOCUMENTED_ORDER]
    assert len(set(DOCUMENTED_ORDER + fresh)) == len(DOCUMENTED_ORDER)
    assert {state: i for i, state in enumerate(DOCUMENTED_ORDER)}[PresenceState(True, "dnd")] == 5


@pytest.mark.parametrize(
    ("show", "expected"),
    [
        ("away", PresenceShow.AWAY),
        ("chat", PresenceShow.CHAT),
        ("dnd", PresenceShow.DND),
        ("xa", PresenceShow.XA),
        (None, PresenceShow.NONE),
        (PresenceShow.CHAT, PresenceShow.CHAT),
    ],
)
def test_show_is_normalised_to_the_enum(
    show: PresenceShow | str | None, expected: PresenceShow
) -> None:
    assert PresenceState(True, show).show is expected


@pytest.mark.parametrize("show", ["busy", "", "AWAY", " away", 1])
def test_invalid_show_is_refused(show: object) -> None:
    with pytest.raises(ValueError, match="invalid presence show"):
        PresenceState(True, show)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "show", [PresenceShow.AWAY, PresenceShow.CHAT, PresenceShow.DND, PresenceShow.XA, "away"]
)
def test_show_while_unavailable_is_refused(show: PresenceShow | str) -> None:
    with pytest.raises(ValueError, match="unavailable"):
        PresenceState(False, show)


@pytest.mark.parametrize("available", [1, 0, "yes", None])
def test_available_must_be_a_bool(available: object) -> None:
    with pytest.raises(TypeError, match="bool"):
        PresenceState(available)  # type: ignore[arg-type]


def test_keyword_arguments() -> None:
    assert PresenceState(available=True, show="chat") == DOCUMENTED_ORDER[4]


def test_bool_is_availability() -> None:
    assert not PresenceState()
    for state in DOCUMENTED_ORDER[1:]:
        assert state
        assert bool(state) is True
    assert bool(PresenceState()) is False


def test_immutable() -> None:
    state = PresenceState(True, "away")
    with pytest.raises(AttributeError):
        state.available = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        state._show = PresenceShow.DND
    with pytest.raises(AttributeError):
        state.extra = 1
    with pytest.raises(AttributeError):
        del state._available
    assert state == PresenceState(True, PresenceShow.AWAY)


@pytest.mark.parametrize("state", DOCUMENTED_ORDER, ids=repr)
def test_copy_and_pickle_keep_the_value(state: PresenceState) -> None:
    assert copy.copy(state) == state
    assert copy.deepcopy(state) == state
    restored = pickle.loads(pickle.dumps(state))
    assert restored == state
    assert type(restored) is PresenceState


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (PresenceState(), "<PresenceState>"),
        (PresenceState(True), "<PresenceState available>"),
        (PresenceState(True, "away"), "<PresenceState available show=away>"),
        (PresenceState(True, PresenceShow.DND), "<PresenceState available show=dnd>"),
        (PresenceState(True, "xa"), "<PresenceState available show=xa>"),
    ],
)
def test_repr(state: PresenceState, text: str) -> None:
    assert repr(state) == text


@pytest.mark.parametrize("state", DOCUMENTED_ORDER, ids=repr)
def test_apply_to_then_from_stanza_round_trips(state: PresenceState) -> None:
    presence = Presence(to="juliet@example.com", status="hi", priority=5)
    state.apply_to(presence)
    assert PresenceState.from_stanza(presence) == state
    # the state survives serialisation, and the rest of the stanza is left alone
    assert PresenceState.from_stanza(_reparse(presence)) == state
    assert presence.status == "hi"
    assert presence.priority == 5
    assert str(presence.to) == "juliet@example.com"


def _reparse(presence: Presence) -> Presence:
    """Serialise *presence* and parse it back."""
    parsed = etree.fromstring(etree.tostring(presence), Presence.PARSER)
    assert isinstance(parsed, Presence)
    return parsed


def test_apply_to_writes_type_and_show() -> None:
    presence = Presence(show="dnd")
    PresenceState().apply_to(presence)
    assert presence.type_ is PresenceType.UNAVAILABLE
    assert presence.show is PresenceShow.NONE  # the stale show is removed

    back_online = Presence(type_="unavailable")
    PresenceState(True, "away").apply_to(back_online)
    assert back_online.get("type") is None  # available: no type attribute
    assert back_online.findtext("{jabber:client}show") == "away"

    plain = Presence(show="xa")
    PresenceState(True).apply_to(plain)
    assert plain.type_ is PresenceType.AVAILABLE
    assert plain.findall("{jabber:client}show") == []


def test_apply_to_replaces_another_presence_type() -> None:
    presence = Presence(type_=PresenceType.SUBSCRIBE)
    PresenceState(True, "chat").apply_to(presence)
    assert presence.type_ is PresenceType.AVAILABLE
    assert presence.show is PresenceShow.CHAT


def test_from_stanza_reads_available_presences() -> None:
    assert PresenceState.from_stanza(Presence()) == PresenceState(True)
    assert PresenceState.from_stanza(Presence(show="xa")) == PresenceState(True, "xa")


def test_from_stanza_ignores_the_show_of_an_unavailable_presence() -> None:
    presence = Presence(type_="unavailable", show="away")
    assert PresenceState.from_stanza(presence) == PresenceState(False)


@pytest.mark.parametrize(
    "type_",
    [
        PresenceType.SUBSCRIBE,
        PresenceType.SUBSCRIBED,
        PresenceType.UNSUBSCRIBE,
        PresenceType.UNSUBSCRIBED,
        PresenceType.PROBE,
        PresenceType.ERROR,
    ],
)
def test_from_stanza_refuses_other_presence_types(type_: PresenceType) -> None:
    with pytest.raises(ValueError, match=repr(type_.value)):
        PresenceState.from_stanza(Presence(type_=type_))


def test_from_stanza_refuses_an_invalid_show() -> None:
    presence = Presence()
    show = etree.SubElement(presence, "{jabber:client}show")
    show.text = "sleeping"
    with pytest.raises(ValueError, match="sleeping"):
        PresenceState.from_stanza(presence)
