"""Stanza element classes: constructors, typed accessors, validation, parser integration."""

from __future__ import annotations

import copy
import enum
import os
import pickle
import re
from collections.abc import Iterator

import pytest
from lxml import etree

from txxmppnode import (
    IQ,
    JID,
    IQType,
    Message,
    MessageType,
    Presence,
    PresenceShow,
    PresenceType,
    register_element_class,
)
from txxmppnode.errors import ErrorCondition, XMPPCancelError, XMPPModifyError
from txxmppnode.stanza import CLASS_LOOKUP, make_error_reply
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser
from txxmppnode.xmlwriter import serialize

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='example.com' id='s1' version='1.0'>"
)


def parse_one(xml: bytes) -> etree._Element:
    parser = XMLStreamParser()
    events = parser.feed(HEADER + xml)
    received = [e.element for e in events if isinstance(e, ElementReceived)]
    assert len(received) == 1
    return received[0]


def test_message_keyword_constructor_writes_xml() -> None:
    msg = Message(to="Juliet@Example.com/Balcony", type_="chat", body="hi", id_="m1", lang="en")
    assert serialize(msg) == (
        b'<message to="juliet@example.com/Balcony" id="m1"'
        b' xml:lang="en" type="chat"><body>hi</body></message>'
    )
    assert msg.to == JID.fromstr("juliet@example.com/Balcony")
    assert msg.type_ is MessageType.CHAT
    assert msg.body == "hi"
    assert msg.id_ == "m1"
    assert msg.lang == "en"


def test_message_type_normal_is_the_absent_attribute() -> None:
    msg = Message(type_=MessageType.NORMAL)
    assert msg.get("type") is None
    assert msg.type_ is MessageType.NORMAL
    msg.type_ = "headline"
    assert msg.get("type") == "headline"


def test_enums_accept_their_string_values_and_reject_others() -> None:
    assert Message(type_="groupchat").type_ is MessageType.GROUPCHAT
    with pytest.raises(ValueError, match="invalid message type 'shout'"):
        Message(type_="shout")
    with pytest.raises(ValueError, match="invalid IQ type"):
        IQ("fetch")
    with pytest.raises(ValueError, match="invalid presence show"):
        Presence(show="busy")


def test_enums_take_members_of_another_enum_by_value_and_refuse_none() -> None:
    assert Presence(show=MessageType.CHAT).show is PresenceShow.CHAT
    assert Presence(type_=None).type_ is PresenceType.AVAILABLE
    with pytest.raises(ValueError, match="invalid IQ type None"):
        _ = parse_one(b"<iq id='1'/>").type_  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="invalid message type 'Chat'"):
        Message(type_="Chat")


def test_body_prefers_the_body_without_language() -> None:
    msg = parse_one(b"<message><body xml:lang='de'>Hallo</body><body>Hello</body></message>")
    assert isinstance(msg, Message)
    assert msg.body == "Hello"
    msg.body = None
    assert msg.find("{jabber:client}body") is None
    assert msg.body is None


def test_presence_accessors_and_priority_on_the_wire() -> None:
    pres = Presence(show="dnd", status="busy", priority=-5)
    assert serialize(pres) == (
        b"<presence><show>dnd</show><status>busy</status><priority>-5</priority></presence>"
    )
    assert pres.type_ is PresenceType.AVAILABLE
    assert pres.show is PresenceShow.DND
    assert pres.priority == -5
    pres.priority = 0
    assert pres.find("{jabber:client}priority") is None
    with pytest.raises(ValueError, match=r"outside -128\.\.127"):
        pres.priority = 128


def test_unavailable_presence_has_type_attribute() -> None:
    pres = Presence(type_=PresenceType.UNAVAILABLE)
    assert serialize(pres) == b'<presence type="unavailable"/>'
    assert parse_one(b"<presence type='unavailable'/>").type_ is PresenceType.UNAVAILABLE


def test_received_presence_with_bad_priority_raises_on_access() -> None:
    pres = parse_one(b"<presence><priority>high</priority></presence>")
    with pytest.raises(ValueError):
        _ = pres.priority


def test_iq_payload_accessor_skips_the_error_child() -> None:
    ping = etree.Element("{urn:xmpp:ping}ping", nsmap={None: "urn:xmpp:ping"})
    iq = IQ(IQType.GET, to="example.com", payload=ping, id_="p1")
    assert iq.payload is not None and iq.payload.tag == "{urn:xmpp:ping}ping"
    iq.type_ = "error"
    iq.error = XMPPCancelError(ErrorCondition.SERVICE_UNAVAILABLE)
    # the error goes after the payload; the payload accessor still finds the payload
    assert [c.tag for c in iq] == ["{urn:xmpp:ping}ping", "{jabber:client}error"]
    assert iq.payload is not None and iq.payload.tag == "{urn:xmpp:ping}ping"
    error = iq.error
    assert isinstance(error, XMPPCancelError)
    assert error.condition is ErrorCondition.SERVICE_UNAVAILABLE


def test_parser_builds_stanza_classes_for_client_namespace_only() -> None:
    assert isinstance(parse_one(b"<message/>"), Message)
    assert isinstance(parse_one(b"<presence/>"), Presence)
    assert isinstance(parse_one(b"<iq type='get' id='1'><q xmlns='urn:x'/></iq>"), IQ)
    other = parse_one(b"<message xmlns='urn:not-client'/>")
    assert not isinstance(other, Message)
    features = parse_one(b"<stream:features/>")
    assert features.tag == "{http://etherx.jabber.org/streams}features"


def test_received_stanza_addresses_are_jids() -> None:
    msg = parse_one(b"<message from='Romeo@Example.net/orchard' to='juliet@example.com'/>")
    assert msg.from_ == JID("romeo", "example.net", "orchard")
    assert msg.to == JID("juliet", "example.com", None)


def test_autoset_id_is_unpredictable_and_kept_when_present() -> None:
    ids = {Message().autoset_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 16 for i in ids)
    assert all(re.fullmatch("[A-Za-z0-9_-]+", i) for i in ids)  # URL-safe, no padding
    msg = Message(id_="fixed")
    assert msg.autoset_id() == "fixed"


def test_autoset_ids_are_never_repeated_and_a_forked_child_draws_its_own() -> None:
    ids = [Message().autoset_id() for _ in range(2000)]  # several batches of random bytes
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[A-Za-z0-9_-]{16}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the ids it would hand out next, and leave at once
        try:
            os.write(write, " ".join(Message().autoset_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = pipe.read().split()
    os.waitpid(pid, 0)
    parent_ids = [Message().autoset_id() for _ in range(5)]
    assert len(child_ids) == 5
    assert not set(child_ids) & set(parent_ids)


def test_a_jid_is_written_as_it_is_and_a_string_is_checked() -> None:
    # A JID was prepared when it was made, leniently too (an address from a legacy
    # server): a reply to it must not fail on a second, strict parse.
    legacy = JID.fromstr("Juliet Capulet@example.com/balcony", strict=False)
    for stanza in (Message(to=legacy), Presence(to=legacy), IQ(IQType.GET, to=legacy)):
        assert stanza.get("to") == "juliet capulet@example.com/balcony"
    reply = Message(from_=legacy)
    assert reply.get("from") == str(legacy)
    with pytest.raises(ValueError, match="invalid JID"):
        Message(to="juliet capulet@example.com")
    with pytest.raises(ValueError):
        Message(body="\x00")  # lxml refuses what XML cannot carry
    with pytest.raises(ValueError):
        Presence(id_="a\x01b")


def test_constructors_write_every_attribute_and_child_in_order() -> None:
    iq = IQ("set", to="a@b.example", from_="c@d.example/r", id_="i1", lang="de",
            payload=etree.Element("{urn:x}q", nsmap={None: "urn:x"}))  # fmt: skip
    assert serialize(iq) == (
        b'<iq to="a@b.example" from="c@d.example/r" id="i1" xml:lang="de" type="set">'
        b'<q xmlns="urn:x"/></iq>'
    )
    pres = Presence(type_="subscribe", to="a@b.example", status="", priority=3)
    assert serialize(pres) == (
        b'<presence to="a@b.example" type="subscribe"><status></status>'
        b"<priority>3</priority></presence>"
    )
    with pytest.raises(ValueError, match="outside"):
        Presence(priority=200)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<iq type='get' id='1'/>", "exactly one payload, not 0"),
        (b"<iq type='set' id='1'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>", "exactly one"),
        (b"<iq type='result' id='1'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>", "at most one"),
        (b"<iq type='get'><a xmlns='urn:x'/></iq>", "needs an id"),
        (b"<iq type='error' id='1'/>", "error iq needs an <error/>"),
        (b"<message type='error'/>", "error message needs an <error/>"),
    ],
)
def test_validate_names_the_broken_rule(xml: bytes, message: str) -> None:
    stanza = parse_one(xml)
    with pytest.raises(ValueError, match=message):
        stanza.validate()


def test_validate_accepts_valid_stanzas() -> None:
    for xml in (
        b"<iq type='result' id='1'/>",
        b"<iq type='get' id='1'><a xmlns='urn:x'/></iq>",
        b"<message type='chat'><body>x</body></message>",
    ):
        stanza = parse_one(xml)
        stanza.validate()
        assert stanza.get("type") in ("result", "get", "chat")


def test_make_error_reply_swaps_addresses_and_keeps_id() -> None:
    request = parse_one(
        b"<iq type='get' id='q1' from='romeo@example.net/a' to='juliet@example.com/b'>"
        b"<query xmlns='urn:x'/></iq>"
    )
    reply = make_error_reply(request, XMPPModifyError(ErrorCondition.BAD_REQUEST, "no"))
    assert isinstance(reply, IQ)
    assert reply.type_ is IQType.ERROR
    assert reply.id_ == "q1"
    assert str(reply.to) == "romeo@example.net/a"
    assert str(reply.from_) == "juliet@example.com/b"
    error = reply.error
    assert isinstance(error, XMPPModifyError)
    assert error.text == "no"
    reply.validate()


class Ping(etree.ElementBase):
    TAG = "{urn:xmpp:ping}ping"

    @property
    def is_ping(self) -> bool:
        return True


@pytest.fixture
def ping_registered() -> Iterator[None]:
    register_element_class(Ping)
    yield
    del CLASS_LOOKUP.get_namespace("urn:xmpp:ping")["ping"]


@pytest.mark.usefixtures("ping_registered")
def test_registered_payload_classes_are_built_by_the_parser() -> None:
    iq = parse_one(b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert isinstance(iq.payload, Ping)
    assert iq.payload.is_ping
    register_element_class(Ping)  # registering the same class again is fine

    class OtherPing(etree.ElementBase):
        TAG = "{urn:xmpp:ping}ping"

    with pytest.raises(ValueError, match="already registered to Ping"):
        register_element_class(OtherPing)


@pytest.mark.parametrize("member", [*MessageType, *PresenceType, *PresenceShow, *IQType])
def test_enum_members_hash_consistently_after_pickling_and_copying(member: enum.Enum) -> None:
    # The members hash by identity; pickling and copying give back the same member.
    table = {member: "found"}
    assert table[pickle.loads(pickle.dumps(member))] == "found"
    assert table[copy.deepcopy(member)] == "found"
    assert table[type(member)(member.value)] == "found"
