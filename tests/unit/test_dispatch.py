"""Dispatch tables: filter chains, IQ request handlers, message and presence callbacks."""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from txxmppnode.dispatch import Dispatcher, Filter, IQHandlerEntry
from txxmppnode.jid import JID
from txxmppnode.stanza import (
    IQ,
    PARSER,
    IQType,
    Message,
    MessageType,
    Presence,
    PresenceType,
    Stanza,
)

ROMEO_FULL = "romeo@montague.example/orchard"
ROMEO_OTHER_FULL = "romeo@montague.example/balcony"
ROMEO_BARE = "romeo@montague.example"
NURSE_BARE = "nurse@capulet.example"


def payload(tag: str = "{urn:x}q") -> etree._Element:
    namespace = etree.QName(tag).namespace
    assert namespace is not None
    return etree.Element(tag, nsmap={None: namespace})


class Recorder:
    """Callables that record (name, stanza) in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Stanza]] = []

    def callback(self, name: str) -> Callable[[Any], None]:
        def record(stanza: Any) -> None:
            self.calls.append((name, stanza))

        record.__qualname__ = f"callback_{name}"
        return record

    def passing(self, name: str) -> Callable[[Any], Any]:
        def record(stanza: Any) -> Any:
            self.calls.append((name, stanza))
            return stanza

        return record

    def dropping(self, name: str) -> Callable[[Any], None]:
        def record(stanza: Any) -> None:
            self.calls.append((name, stanza))
            return None

        return record

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def record_into(seen: list[Message]) -> Callable[[Message], Message]:
    """A filter function that appends each stanza to *seen* and passes it on."""

    def record(stanza: Message) -> Message:
        seen.append(stanza)
        return stanza

    return record


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


# -- Filter ---------------------------------------------------------------------------------


def test_filter_runs_by_order_then_registration_order(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()
    chain.register(rec.passing("late"), order=5)
    chain.register(rec.passing("zero-a"))
    chain.register(rec.passing("early"), order=-1)
    chain.register(rec.passing("zero-b"), order=0)
    chain.register(rec.passing("zero-c"))
    stanza = Message(body="x")
    assert chain.filter(stanza) is stanza
    assert rec.names == ["early", "zero-a", "zero-b", "zero-c", "late"]
    assert len(chain) == 5


def test_filter_passes_each_result_to_the_next_function() -> None:
    chain: Filter[Message] = Filter()
    replacement = Message(body="replaced")
    seen: list[Message] = []
    chain.register(lambda m: replacement)
    chain.register(record_into(seen), order=1)
    assert chain.filter(Message(body="original")) is replacement
    assert seen == [replacement]


def test_filter_stops_at_the_first_none(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()
    chain.register(rec.passing("first"))
    chain.register(rec.dropping("dropper"), order=1)
    chain.register(rec.passing("never"), order=2)
    assert chain.filter(Message()) is None
    assert rec.names == ["first", "dropper"]


def test_empty_filter_returns_the_stanza() -> None:
    stanza = Message()
    assert Filter[Message]().filter(stanza) is stanza


def test_filter_unregister(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()
    token_a = chain.register(rec.passing("a"))
    chain.register(rec.passing("b"))
    chain.unregister(token_a)
    chain.filter(Message())
    assert rec.names == ["b"]
    assert len(chain) == 1
    with pytest.raises(ValueError, match="not registered"):
        chain.unregister(token_a)


def test_filter_unregister_token_of_another_filter() -> None:
    one: Filter[Message] = Filter()
    other: Filter[Message] = Filter()
    token = one.register(lambda m: m)
    with pytest.raises(ValueError):
        other.unregister(token)
    assert len(one) == 1


def test_same_function_twice_has_two_tokens(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()
    func = rec.passing("f")
    token_1 = chain.register(func)
    token_2 = chain.register(func)
    assert token_1 is not token_2
    chain.filter(Message())
    assert rec.names == ["f", "f"]
    chain.unregister(token_1)
    chain.filter(Message())
    assert rec.names == ["f", "f", "f"]


def test_filter_register_validates_arguments() -> None:
    chain: Filter[Message] = Filter()
    with pytest.raises(TypeError):
        chain.register("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        chain.register(lambda m: m, order="1")  # type: ignore[arg-type]
    assert len(chain) == 0


def test_filter_changes_during_a_run_apply_to_the_next_stanza(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()

    def adder(stanza: Message) -> Message:
        rec.calls.append(("adder", stanza))
        chain.register(rec.passing("added"), order=-10)
        return stanza

    chain.register(adder)
    chain.filter(Message())
    assert rec.names == ["adder"]
    chain.filter(Message())
    assert rec.names == ["adder", "added", "adder"]


def test_filter_exceptions_propagate() -> None:
    chain: Filter[Message] = Filter()

    def broken(stanza: Message) -> Message:
        raise RuntimeError("boom")

    chain.register(broken)
    with pytest.raises(RuntimeError, match="boom"):
        chain.filter(Message())


def test_context_register(rec: Recorder) -> None:
    chain: Filter[Message] = Filter()
    with chain.context_register(rec.passing("temp"), order=3) as token:
        assert len(chain) == 1
        chain.filter(Message())
    assert rec.names == ["temp"]
    assert len(chain) == 0
    with pytest.raises(ValueError):
        chain.unregister(token)


def test_context_register_unregisters_on_error_and_tolerates_early_removal() -> None:
    chain: Filter[Message] = Filter()
    with pytest.raises(KeyError), chain.context_register(lambda m: m):
        raise KeyError("inside")
    assert len(chain) == 0
    with chain.context_register(lambda m: m) as token:
        chain.unregister(token)
    assert len(chain) == 0


# -- Dispatcher filters ---------------------------------------------------------------------


def _chains(dispatcher: Dispatcher, kind: str, direction: str) -> tuple[Filter[Any], Filter[Any]]:
    service = getattr(dispatcher, f"service_{direction}_{kind}_filter")
    app = getattr(dispatcher, f"app_{direction}_{kind}_filter")
    return service, app


STANZA_MAKERS: dict[str, Callable[[], Stanza]] = {
    "message": lambda: Message(body="hi"),
    "presence": lambda: Presence(),
}


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_inbound_runs_service_then_application(kind: str, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    service, app = _chains(dispatcher, kind, "inbound")
    # the application chain is registered first and with a lower order: chains still run
    # service first
    app.register(rec.passing("app"), order=-100)
    service.register(rec.passing("service"), order=100)
    stanza = STANZA_MAKERS[kind]()
    assert dispatcher.filter_inbound(stanza) is stanza
    assert rec.names == ["service", "app"]


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_outbound_runs_application_then_service(kind: str, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    service, app = _chains(dispatcher, kind, "outbound")
    service.register(rec.passing("service"), order=-100)
    app.register(rec.passing("app"), order=100)
    stanza = STANZA_MAKERS[kind]()
    assert dispatcher.filter_outbound(stanza) is stanza
    assert rec.names == ["app", "service"]


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_inbound_service_drop_hides_the_stanza_from_the_application(
    kind: str, rec: Recorder
) -> None:
    dispatcher = Dispatcher()
    service, app = _chains(dispatcher, kind, "inbound")
    service.register(rec.dropping("service"))
    app.register(rec.passing("app"))
    assert dispatcher.filter_inbound(STANZA_MAKERS[kind]()) is None
    assert rec.names == ["service"]


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_outbound_application_drop_skips_services(kind: str, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    service, app = _chains(dispatcher, kind, "outbound")
    service.register(rec.passing("service"))
    app.register(rec.dropping("app"))
    assert dispatcher.filter_outbound(STANZA_MAKERS[kind]()) is None
    assert rec.names == ["app"]


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_application_drop_inbound_and_service_drop_outbound(kind: str, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    _, app_in = _chains(dispatcher, kind, "inbound")
    service_out, _ = _chains(dispatcher, kind, "outbound")
    app_in.register(rec.dropping("app-in"))
    service_out.register(rec.dropping("service-out"))
    assert dispatcher.filter_inbound(STANZA_MAKERS[kind]()) is None
    assert dispatcher.filter_outbound(STANZA_MAKERS[kind]()) is None
    assert rec.names == ["app-in", "service-out"]


def test_a_replacement_from_the_service_chain_reaches_the_application() -> None:
    dispatcher = Dispatcher()
    replacement = Message(body="decrypted")
    seen: list[Message] = []
    dispatcher.service_inbound_message_filter.register(lambda m: replacement)
    dispatcher.app_inbound_message_filter.register(record_into(seen))
    assert dispatcher.filter_inbound(Message(body="encrypted")) is replacement
    assert seen == [replacement]


def _register_everywhere(dispatcher: Dispatcher, rec: Recorder) -> None:
    for kind, direction in itertools.product(("message", "presence"), ("inbound", "outbound")):
        service, app = _chains(dispatcher, kind, direction)
        service.register(rec.passing(f"service-{direction}-{kind}"))
        app.register(rec.passing(f"app-{direction}-{kind}"))


def test_chains_only_see_their_kind_and_direction(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    _register_everywhere(dispatcher, rec)
    dispatcher.filter_inbound(Presence())
    assert rec.names == ["service-inbound-presence", "app-inbound-presence"]
    rec.calls.clear()
    dispatcher.filter_outbound(Message())
    assert rec.names == ["app-outbound-message", "service-outbound-message"]


def test_iqs_are_not_filtered(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    _register_everywhere(dispatcher, rec)
    for filters in ("service", "app"):
        for name in ("message", "presence"):
            getattr(dispatcher, f"{filters}_inbound_{name}_filter").register(rec.dropping("x"))
    iq = IQ("get", payload=payload())
    assert dispatcher.filter_inbound(iq) is iq
    assert dispatcher.filter_outbound(iq) is iq
    assert rec.calls == []


def test_filtering_something_else_is_refused() -> None:
    dispatcher = Dispatcher()
    element: Any = etree.Element("{jabber:client}message")
    with pytest.raises(TypeError):
        dispatcher.filter_inbound(element)
    with pytest.raises(TypeError):
        dispatcher.filter_outbound(element)


# -- IQ request handlers --------------------------------------------------------------------


def handler_a(iq: IQ) -> None:
    pass


def handler_b(iq: IQ) -> None:
    pass


def test_iq_handler_lookup_by_type_and_payload_tag() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler(IQType.GET, "{urn:x}q", handler_a)
    dispatcher.register_iq_request_handler("set", "{urn:x}q", handler_b, with_send_reply=True)
    dispatcher.register_iq_request_handler("get", "{urn:y}q", handler_b)

    get_x = dispatcher.lookup_iq_request_handler(IQ("get", payload=payload("{urn:x}q")))
    assert get_x == IQHandlerEntry(handler_a, False)
    set_x = dispatcher.lookup_iq_request_handler(IQ("set", payload=payload("{urn:x}q")))
    assert set_x == IQHandlerEntry(handler_b, True)
    get_y = dispatcher.lookup_iq_request_handler(IQ(IQType.GET, payload=payload("{urn:y}q")))
    assert get_y == IQHandlerEntry(handler_b, False)

    assert dispatcher.lookup_iq_request_handler(IQ("set", payload=payload("{urn:y}q"))) is None
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload("{urn:x}r"))) is None
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload("{urn:z}q"))) is None


def test_iq_handler_entry_is_frozen() -> None:
    entry = IQHandlerEntry(handler_a, False)
    with pytest.raises(AttributeError):
        entry.with_send_reply = True  # type: ignore[misc]


def test_iq_handler_lookup_on_a_parsed_iq() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:xmpp:ping}ping", handler_a)
    iq = etree.fromstring(
        b"<iq xmlns='jabber:client' type='get' id='p1' from='capulet.example'>"
        b"<ping xmlns='urn:xmpp:ping'/></iq>",
        PARSER,
    )
    assert isinstance(iq, IQ)
    entry = dispatcher.lookup_iq_request_handler(iq)
    assert entry is not None
    assert entry.handler is handler_a


def test_iq_responses_and_empty_iqs_have_no_handler() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_a)
    assert dispatcher.lookup_iq_request_handler(IQ("result", payload=payload())) is None
    assert dispatcher.lookup_iq_request_handler(IQ("error", payload=payload())) is None
    assert dispatcher.lookup_iq_request_handler(IQ("get")) is None


def test_duplicate_iq_handler_is_refused_naming_type_and_tag() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_a)
    with pytest.raises(ValueError, match=r"'get'.*\{urn:x\}q.*handler_a"):
        dispatcher.register_iq_request_handler(IQType.GET, "{urn:x}q", handler_b)
    entry = dispatcher.lookup_iq_request_handler(IQ("get", payload=payload()))
    assert entry is not None
    assert entry.handler is handler_a


@pytest.mark.parametrize("type_", ["result", "error", IQType.RESULT, IQType.ERROR, "GET", "x"])
def test_iq_handler_type_must_be_get_or_set(type_: Any) -> None:
    dispatcher = Dispatcher()
    with pytest.raises(ValueError, match="'get' and 'set'"):
        dispatcher.register_iq_request_handler(type_, "{urn:x}q", handler_a)


@pytest.mark.parametrize(
    "tag",
    [
        "q",
        "{}q",
        "{urn:x}",
        "urn:x:q",
        "{urn:x}1q",
        "{urn:x}a:b",
        "{urn x}q",
        "{urn:x}q r",
        "{{urn:x}q",
        "{urn:x}}q",
        " {urn:x}q",
    ],
)
def test_iq_handler_payload_tag_must_be_clark_notation(tag: str) -> None:
    dispatcher = Dispatcher()
    with pytest.raises(ValueError, match="payload tag"):
        dispatcher.register_iq_request_handler("get", tag, handler_a)


def test_iq_handler_argument_types() -> None:
    dispatcher = Dispatcher()
    with pytest.raises(TypeError):
        dispatcher.register_iq_request_handler("get", etree.QName("{urn:x}q"), handler_a)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        dispatcher.register_iq_request_handler("get", "{urn:x}q", None)  # type: ignore[call-overload]
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload())) is None


def test_unregister_iq_handler() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_a)
    dispatcher.register_iq_request_handler("set", "{urn:x}q", handler_b)
    dispatcher.unregister_iq_request_handler(IQType.GET, "{urn:x}q")
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload())) is None
    assert dispatcher.lookup_iq_request_handler(IQ("set", payload=payload())) is not None
    with pytest.raises(KeyError):
        dispatcher.unregister_iq_request_handler("get", "{urn:x}q")
    with pytest.raises(ValueError):
        dispatcher.unregister_iq_request_handler("result", "{urn:x}q")
    # the pair is free again
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_b)
    entry = dispatcher.lookup_iq_request_handler(IQ("get", payload=payload()))
    assert entry is not None
    assert entry.handler is handler_b


# -- message and presence callbacks: shared machinery ---------------------------------------


class Kind:
    """Adapts a test to message or presence callbacks."""

    def __init__(
        self,
        name: str,
        type_: Any,
        other_type: Any,
        make: Callable[..., Stanza],
    ) -> None:
        self.name = name
        self.type_ = type_
        self.other_type = other_type
        self._make = make

    def __repr__(self) -> str:
        return self.name

    def make(self, from_: str | None, type_: Any = None) -> Stanza:
        return self._make(from_=from_, type_=self.type_ if type_ is None else type_)

    def register(self, d: Dispatcher, type_: Any, from_: Any, cb: Callable[[Any], Any]) -> None:
        getattr(d, f"register_{self.name}_callback")(type_, from_, cb)

    def unregister(self, d: Dispatcher, type_: Any, from_: Any) -> None:
        getattr(d, f"unregister_{self.name}_callback")(type_, from_)

    def dispatch(self, d: Dispatcher, stanza: Stanza) -> bool:
        result: bool = getattr(d, f"dispatch_{self.name}")(stanza)
        return result


MESSAGE = Kind("message", MessageType.CHAT, MessageType.HEADLINE, Message)
PRESENCE = Kind("presence", PresenceType.UNAVAILABLE, PresenceType.SUBSCRIBE, Presence)
KINDS = [MESSAGE, PRESENCE]

# the documented lookup order for a stanza of the kind's type from ROMEO_FULL


def ordered_keys(kind: Kind) -> list[tuple[Any, str | None]]:
    return [
        (kind.type_, ROMEO_FULL),
        (kind.type_, ROMEO_BARE),
        (None, ROMEO_FULL),
        (None, ROMEO_BARE),
        (kind.type_, None),
        (None, None),
    ]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@pytest.mark.parametrize("pair", list(itertools.combinations(range(6), 2)))
def test_more_specific_key_wins_for_every_pair(
    kind: Kind, pair: tuple[int, int], rec: Recorder
) -> None:
    keys = ordered_keys(kind)
    dispatcher = Dispatcher()
    # register the less specific key first so that registration order cannot decide
    for index in reversed(pair):
        type_, from_ = keys[index]
        kind.register(dispatcher, type_, from_, rec.callback(str(index)))
    stanza = kind.make(ROMEO_FULL)
    assert kind.dispatch(dispatcher, stanza) is True
    assert rec.calls == [(str(pair[0]), stanza)]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_unregistering_falls_back_step_by_step(kind: Kind, rec: Recorder) -> None:
    keys = ordered_keys(kind)
    dispatcher = Dispatcher()
    for index, (type_, from_) in enumerate(keys):
        kind.register(dispatcher, type_, from_, rec.callback(str(index)))
    for index, (type_, from_) in enumerate(keys):
        rec.calls.clear()
        assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is True
        assert rec.names == [str(index)]
        kind.unregister(dispatcher, type_, from_)
    rec.calls.clear()
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is False
    assert rec.calls == []


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_non_matching_keys_are_not_called(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, kind.other_type, None, rec.callback("other type"))
    kind.register(dispatcher, kind.other_type, ROMEO_FULL, rec.callback("other type, full"))
    kind.register(dispatcher, None, ROMEO_OTHER_FULL, rec.callback("other resource"))
    kind.register(dispatcher, kind.type_, NURSE_BARE, rec.callback("other bare"))
    kind.register(dispatcher, None, "montague.example", rec.callback("the sender's domain"))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is False
    assert rec.calls == []


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_bare_jid_callback_matches_every_resource_and_the_bare_sender(
    kind: Kind, rec: Recorder
) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, None, ROMEO_BARE, rec.callback("bare"))
    for sender in (ROMEO_FULL, ROMEO_OTHER_FULL, ROMEO_BARE):
        assert kind.dispatch(dispatcher, kind.make(sender)) is True
    assert rec.names == ["bare", "bare", "bare"]
    assert [stanza.from_ for _, stanza in rec.calls] == [
        JID.fromstr(ROMEO_FULL),
        JID.fromstr(ROMEO_OTHER_FULL),
        JID.fromstr(ROMEO_BARE),
    ]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_full_jid_callback_matches_that_resource_only(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, kind.type_, ROMEO_FULL, rec.callback("full"))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_OTHER_FULL)) is False
    assert kind.dispatch(dispatcher, kind.make(ROMEO_BARE)) is False
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is True
    assert rec.names == ["full"]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_bare_sender_prefers_typed_key(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, None, ROMEO_BARE, rec.callback("any type"))
    kind.register(dispatcher, kind.type_, ROMEO_BARE, rec.callback("typed"))
    kind.register(dispatcher, kind.type_, None, rec.callback("typed, anyone"))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_BARE)) is True
    assert kind.dispatch(dispatcher, kind.make(ROMEO_BARE, kind.other_type)) is True
    assert rec.names == ["typed", "any type"]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_wildcards(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, kind.type_, None, rec.callback("typed"))
    assert kind.dispatch(dispatcher, kind.make(NURSE_BARE)) is True
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL, kind.other_type)) is False
    kind.register(dispatcher, None, None, rec.callback("anything"))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL, kind.other_type)) is True
    assert kind.dispatch(dispatcher, kind.make(None, kind.other_type)) is True
    assert rec.names == ["typed", "anything", "anything"]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_stanza_without_from_matches_sender_wildcards_only(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    own_bare = "juliet@capulet.example"
    kind.register(dispatcher, kind.type_, own_bare, rec.callback("own account, typed"))
    kind.register(dispatcher, None, own_bare, rec.callback("own account"))
    kind.register(dispatcher, None, "capulet.example", rec.callback("own server"))
    assert kind.dispatch(dispatcher, kind.make(None)) is False
    kind.register(dispatcher, None, None, rec.callback("anything"))
    assert kind.dispatch(dispatcher, kind.make(None)) is True
    kind.register(dispatcher, kind.type_, None, rec.callback("typed"))
    assert kind.dispatch(dispatcher, kind.make(None)) is True
    assert rec.names == ["anything", "typed"]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_keys_are_normalised_at_registration(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, kind.type_.value, "Romeo@Montague.EXAMPLE/orchard", rec.callback("s"))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is True
    assert rec.names == ["s"]
    with pytest.raises(ValueError, match="already registered"):
        kind.register(dispatcher, kind.type_, JID.fromstr(ROMEO_FULL), rec.callback("dup"))
    # unregistering with the other spelling removes it
    kind.unregister(dispatcher, kind.type_, JID.fromstr(ROMEO_FULL))
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is False


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_duplicate_registration_is_refused_and_keeps_the_first(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, None, None, rec.callback("first"))
    with pytest.raises(ValueError, match=r"any type from anyone.*callback_first"):
        kind.register(dispatcher, None, None, rec.callback("second"))
    kind.dispatch(dispatcher, kind.make(ROMEO_FULL))
    assert rec.names == ["first"]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_unregister_unknown_callback(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, kind.type_, ROMEO_BARE, rec.callback("x"))
    with pytest.raises(KeyError):
        kind.unregister(dispatcher, kind.type_, ROMEO_FULL)
    with pytest.raises(KeyError):
        kind.unregister(dispatcher, None, ROMEO_BARE)
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is True


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_registration_arguments_are_validated(kind: Kind) -> None:
    dispatcher = Dispatcher()
    with pytest.raises(ValueError):
        kind.register(dispatcher, "bogus", None, lambda s: None)
    with pytest.raises(ValueError):
        kind.register(dispatcher, None, "@example.com", lambda s: None)
    with pytest.raises(TypeError):
        kind.register(dispatcher, None, 42, lambda s: None)
    with pytest.raises(TypeError):
        kind.register(dispatcher, None, None, "not callable")  # type: ignore[arg-type]
    assert kind.dispatch(dispatcher, kind.make(ROMEO_FULL)) is False


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_callback_exceptions_propagate(kind: Kind) -> None:
    dispatcher = Dispatcher()

    def broken(stanza: Stanza) -> None:
        raise RuntimeError("callback failed")

    kind.register(dispatcher, None, None, broken)
    with pytest.raises(RuntimeError, match="callback failed"):
        kind.dispatch(dispatcher, kind.make(ROMEO_FULL))


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_invalid_sender_in_the_stanza_propagates(kind: Kind, rec: Recorder) -> None:
    dispatcher = Dispatcher()
    kind.register(dispatcher, None, None, rec.callback("x"))
    stanza = kind.make(None)
    stanza.set("from", "@nobody")
    with pytest.raises(ValueError):
        kind.dispatch(dispatcher, stanza)
    assert rec.calls == []


# -- messages and presences: type specifics ------------------------------------------------


def test_message_without_type_is_normal(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    dispatcher.register_message_callback(MessageType.NORMAL, None, rec.callback("normal"))
    dispatcher.register_message_callback(MessageType.CHAT, None, rec.callback("chat"))
    message = etree.fromstring(
        b"<message xmlns='jabber:client' from='romeo@montague.example/orchard'>"
        b"<body>hi</body></message>",
        PARSER,
    )
    assert isinstance(message, Message)
    assert dispatcher.dispatch_message(message) is True
    assert rec.calls == [("normal", message)]
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register_message_callback("normal", None, rec.callback("again"))


def test_presence_available_is_not_the_any_type_wildcard(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    dispatcher.register_presence_callback(PresenceType.AVAILABLE, None, rec.callback("available"))
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL)) is True
    # an available-only callback does not get other types
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL, type_="unavailable")) is False
    # None (any type) and AVAILABLE are different keys
    dispatcher.register_presence_callback(None, None, rec.callback("any"))
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL, type_="unavailable")) is True
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL)) is True
    assert rec.names == ["available", "any", "available"]
    dispatcher.unregister_presence_callback(None, None)
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL, type_="subscribe")) is False
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL)) is True
    assert rec.names == ["available", "any", "available", "available"]


def test_presence_any_type_gets_available_presences(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    dispatcher.register_presence_callback(None, ROMEO_BARE, rec.callback("any"))
    presence = etree.fromstring(
        b"<presence xmlns='jabber:client' from='romeo@montague.example/orchard'/>", PARSER
    )
    assert isinstance(presence, Presence)
    assert dispatcher.dispatch_presence(presence) is True
    assert rec.calls == [("any", presence)]


def test_presence_available_by_enum_value(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    dispatcher.register_presence_callback(PresenceType(None), ROMEO_BARE, rec.callback("a"))
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register_presence_callback(PresenceType.AVAILABLE, ROMEO_BARE, rec.callback("b"))
    with pytest.raises(KeyError):
        dispatcher.unregister_presence_callback(None, ROMEO_BARE)
    dispatcher.unregister_presence_callback(PresenceType.AVAILABLE, ROMEO_BARE)
    assert dispatcher.dispatch_presence(Presence(from_=ROMEO_FULL)) is False


def test_presence_type_strings(rec: Recorder) -> None:
    dispatcher = Dispatcher()
    dispatcher.register_presence_callback("subscribe", None, rec.callback("subscribe"))
    assert dispatcher.dispatch_presence(Presence(from_=NURSE_BARE, type_="subscribe")) is True
    assert rec.names == ["subscribe"]
    with pytest.raises(ValueError, match=r"PresenceType\.AVAILABLE"):
        dispatcher.register_presence_callback("available", None, rec.callback("x"))
    with pytest.raises(ValueError):
        dispatcher.register_presence_callback("", None, rec.callback("x"))
    assert dispatcher.dispatch_presence(Presence(from_=NURSE_BARE)) is False


# -- the model: whatever is registered, the first present key of the order wins -------------


def record_key(called: list[Any], key: Any, stanza: Stanza) -> None:
    called.append(key)


SENDERS = [ROMEO_FULL, ROMEO_OTHER_FULL, ROMEO_BARE, NURSE_BARE, None]


def candidate_keys(type_: Any, sender: str | None) -> list[tuple[Any, JID | None]]:
    if sender is None:
        return [(type_, None), (None, None)]
    full = JID.fromstr(sender)
    bare = full.bare()
    keys = [(type_, full), (type_, bare), (None, full), (None, bare), (type_, None), (None, None)]
    unique: list[tuple[Any, JID | None]] = []
    for key in keys:
        if key not in unique:
            unique.append(key)
    return unique


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@given(
    registered=st.sets(
        st.tuples(st.sampled_from([None, "type", "other"]), st.sampled_from(SENDERS)),
        max_size=15,
    ),
    type_choice=st.sampled_from(["type", "other"]),
    sender=st.sampled_from(SENDERS),
)
def test_dispatch_matches_the_model(
    kind: Kind,
    registered: set[tuple[str | None, str | None]],
    type_choice: str,
    sender: str | None,
) -> None:
    types = {None: None, "type": kind.type_, "other": kind.other_type}
    dispatcher = Dispatcher()
    called: list[tuple[Any, JID | None]] = []
    normalised: set[tuple[Any, JID | None]] = set()
    for type_name, from_ in registered:
        key = (types[type_name], None if from_ is None else JID.fromstr(from_))
        normalised.add(key)
        kind.register(dispatcher, key[0], from_, functools.partial(record_key, called, key))
    stanza_type = types[type_choice]
    expected = next((k for k in candidate_keys(stanza_type, sender) if k in normalised), None)
    assert kind.dispatch(dispatcher, kind.make(sender, stanza_type)) is (expected is not None)
    assert called == ([] if expected is None else [expected])


# -- nothing scans the tables ---------------------------------------------------------------


class CountingDict(dict[Any, Any]):
    """A dict that counts key lookups and refuses to be iterated."""

    lookups = 0

    def get(self, key: Any, default: Any = None) -> Any:
        self.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.lookups += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)

    def _scan(self, *args: Any) -> Any:
        raise AssertionError("the dispatch table was scanned")

    __iter__ = keys = values = items = _scan


class CountingSet(frozenset[Any]):
    """A frozenset that counts membership tests and refuses to be iterated."""

    lookups = 0

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)

    def _scan(self, *args: Any) -> Any:
        raise AssertionError("the sender set was scanned")

    __iter__ = _scan


class Counted:
    """The look-ups made in all the structures of one callback table."""

    def __init__(self, *structures: CountingDict | CountingSet) -> None:
        self._structures = structures

    def __len__(self) -> int:
        return len(self._structures[0])

    @property
    def lookups(self) -> int:
        return sum(structure.lookups for structure in self._structures)


@contextlib.contextmanager
def counting_table(dispatcher: Dispatcher, kind: Kind) -> Iterator[Counted]:
    """Swap the kind's callback table and its indexes for counting ones for the duration."""
    table = getattr(dispatcher, f"_{kind.name}_callbacks")
    originals = (table._callbacks, table._senders, table._any_sender)
    assert type(table._callbacks) is dict and type(table._any_sender) is dict
    table._callbacks = CountingDict(table._callbacks)
    table._senders = CountingSet(table._senders)
    table._any_sender = CountingDict(table._any_sender)
    try:
        yield Counted(table._callbacks, table._senders, table._any_sender)
    finally:
        table._callbacks, table._senders, table._any_sender = originals


@pytest.fixture(scope="module")
def crowded() -> Iterator[dict[str, Dispatcher]]:
    """Dispatchers with 10,000 callbacks each, for 10,000 different senders."""
    result = {}
    for kind in KINDS:
        dispatcher = Dispatcher()
        for i in range(10_000):
            sender = f"user{i}@example.com" if i % 2 else f"user{i}@example.com/res"
            kind.register(dispatcher, kind.type_ if i % 3 else None, sender, lambda s: None)
        result[kind.name] = dispatcher
    yield result


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@pytest.mark.parametrize(
    ("sender", "expected_lookups", "expected_found"),
    [
        # An unknown sender: its full and bare JIDs are not in the sender set, so only the
        # (type, anyone) table is consulted (anything from anyone needs no look-up).
        ("stranger@example.com/res", 3, False),
        ("stranger@example.com", 3, False),
        (None, 1, False),  # no sender: only the sender wildcards
        # A known sender: two set look-ups (one when the full JID is known), then the keys.
        ("user1@example.com/any", 4, True),  # (type, bare) is the second key
        ("user9997@example.com/x", 4, True),
        ("user9999@example.com/x", 6, True),  # registered for any type, bare
        ("user9998@example.com/res", 2, True),  # (type, full) is the first key
        ("user3@example.com/res", 6, True),  # registered for any type, bare: fourth key
    ],
)
def test_dispatch_does_at_most_six_lookups(
    crowded: dict[str, Dispatcher],
    kind: Kind,
    sender: str | None,
    expected_lookups: int,
    expected_found: bool,
) -> None:
    dispatcher = crowded[kind.name]
    with counting_table(dispatcher, kind) as counting:
        assert len(counting) == 10_000
        found = kind.dispatch(dispatcher, kind.make(sender))
        assert found is expected_found
        assert counting.lookups == expected_lookups


def test_iq_lookup_is_one_dict_lookup_or_two_when_nothing_matches() -> None:
    dispatcher = Dispatcher()
    for i in range(10_000):
        dispatcher.register_iq_request_handler("get", f"{{urn:x:{i}}}q", handler_a)
    assert type(dispatcher._iq_handlers) is dict
    by_enum = dispatcher._iq_handlers = CountingDict(dispatcher._iq_handlers)
    by_name = dispatcher._iq_handlers_by_name = CountingDict(dispatcher._iq_handlers_by_name)
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload("{urn:x:7}q")))
    assert (by_name.lookups, by_enum.lookups) == (1, 0)
    assert dispatcher.lookup_iq_request_handler(IQ("set", payload=payload("{urn:x:7}q"))) is None
    assert (by_name.lookups, by_enum.lookups) == (2, 1)


def test_iq_lookup_still_refuses_an_invalid_type() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_a)
    iq = IQ("get", payload=payload("{urn:x}q"))
    iq.set("type", "fetch")
    with pytest.raises(ValueError, match="invalid IQ type"):
        dispatcher.lookup_iq_request_handler(iq)


def test_unregistering_removes_the_handler_from_every_index() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_iq_request_handler("get", "{urn:x}q", handler_a)
    dispatcher.unregister_iq_request_handler("get", "{urn:x}q")
    assert dispatcher.lookup_iq_request_handler(IQ("get", payload=payload("{urn:x}q"))) is None
    calls: list[str] = []
    dispatcher.register_message_callback(None, "a@example.com", lambda m: calls.append("a"))
    dispatcher.register_message_callback("chat", None, lambda m: calls.append("chat"))
    dispatcher.register_message_callback(None, None, lambda m: calls.append("any"))
    message = Message(from_="a@example.com/r", type_="chat")
    assert dispatcher.dispatch_message(message)
    dispatcher.unregister_message_callback(None, "a@example.com")
    assert dispatcher.dispatch_message(message)
    dispatcher.unregister_message_callback("chat", None)
    assert dispatcher.dispatch_message(message)
    dispatcher.unregister_message_callback(None, None)
    assert not dispatcher.dispatch_message(message)
    assert calls == ["a", "chat", "any"]
