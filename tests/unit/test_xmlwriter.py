"""Tests for txxmppnode.xmlwriter: stream header, element serialisation and round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from txxmppnode.stanza import IQ, Message, Presence
from txxmppnode.xmlparser import ElementReceived, StreamFooter, StreamHeader, XMLStreamParser
from txxmppnode.xmlwriter import STREAM_FOOTER, escape_attribute, serialize, stream_header

STREAMS = "http://etherx.jabber.org/streams"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PREFIX = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams'"
)

#: Characters XML 1.0 cannot carry at all (§2.2), a sample from each range.
FORBIDDEN = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\ud800", "\udfff", "\ufffe", "\uffff"]

_XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Any text XML can carry.
XML_TEXT = st.text(
    st.characters().filter(lambda c: _XML_CHAR.fullmatch(c) is not None), max_size=40
)


def parse_back(*elements: etree._Element) -> list[etree._Element]:
    """Put serialised *elements* in a stream of ours and parse it as a peer would."""
    data = stream_header(to="example.com") + b"".join(map(serialize, elements)) + STREAM_FOOTER
    events = XMLStreamParser().feed(data)
    assert isinstance(events[0], StreamHeader)
    assert isinstance(events[-1], StreamFooter)
    received = [event.element for event in events[1:-1] if isinstance(event, ElementReceived)]
    assert len(received) == len(events) - 2
    return received


def tags(element: etree._Element) -> list[str]:
    return [str(node.tag) for node in element.iter()]


# -- stream header ------------------------------------------------------------------------------


def test_stream_header_defaults() -> None:
    assert (
        stream_header(to="example.com")
        == PREFIX + b" to='example.com' version='1.0' xml:lang='en'>"
    )


def test_stream_header_with_from_id_and_lang() -> None:
    header = stream_header(to="example.com", from_="juliet@example.com", id_="abc", lang="fr")
    assert header == PREFIX + (
        b" to='example.com' from='juliet@example.com' id='abc' version='1.0' xml:lang='fr'>"
    )


def test_stream_header_without_lang() -> None:
    assert (
        stream_header(to="example.com", lang=None) == PREFIX + b" to='example.com' version='1.0'>"
    )


def test_stream_header_with_other_version() -> None:
    header = stream_header(to="example.com", version="2.0", lang=None)
    assert header == PREFIX + b" to='example.com' version='2.0'>"


def test_stream_header_escapes_attribute_values() -> None:
    header = stream_header(to="a'b\"c&d<e>f", from_="x&amp;y", lang=None)
    assert header == PREFIX + (
        b" to='a&apos;b&quot;c&amp;d&lt;e&gt;f' from='x&amp;amp;y' version='1.0'>"
    )


def test_stream_header_is_utf8() -> None:
    header = stream_header(to="bücher.example", lang=None)
    assert header == PREFIX + " to='bücher.example' version='1.0'>".encode()


@pytest.mark.parametrize("char", FORBIDDEN)
@pytest.mark.parametrize("field", ["to", "from_", "id_", "lang", "version"])
def test_stream_header_refuses_characters_xml_cannot_carry(field: str, char: str) -> None:
    values = {"to": "example.com", field: f"a{char}b"}
    result = None
    with pytest.raises(ValueError, match="cannot be written"):
        result = stream_header(**values)  # type: ignore[arg-type]
    assert result is None


@settings(max_examples=100, deadline=None)
@given(to=XML_TEXT, from_=XML_TEXT, id_=XML_TEXT, lang=XML_TEXT)
def test_stream_header_round_trips_through_the_parser(
    to: str, from_: str, id_: str, lang: str
) -> None:
    data = stream_header(to=to, from_=from_, id_=id_, lang=lang)
    (header,) = XMLStreamParser().feed(data)
    assert isinstance(header, StreamHeader)
    assert header.tag == f"{{{STREAMS}}}stream"
    assert header.attributes == {
        "to": to,
        "from": from_,
        "id": id_,
        "version": "1.0",
        XML_LANG: lang,
    }
    assert header.nsmap == {None: "jabber:client", "stream": STREAMS}


def test_stream_footer() -> None:
    assert STREAM_FOOTER == b"</stream:stream>"


# -- escape_attribute ---------------------------------------------------------------------------


def test_escape_attribute_escapes_markup_and_quotes() -> None:
    assert escape_attribute('<a href="x">&\'</a>') == (
        "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
    )


def test_escape_attribute_keeps_whitespace_characters_as_references() -> None:
    # Attribute-value normalisation would turn literal tabs and newlines into spaces.
    escaped = escape_attribute("a\tb\nc\rd")
    assert escaped == "a&#9;b&#10;c&#13;d"
    assert etree.fromstring(f"<x v='{escaped}'/>").get("v") == "a\tb\nc\rd"


def test_escape_attribute_leaves_other_text_alone() -> None:
    assert escape_attribute("héllo 😀 ]]>") == "héllo 😀 ]]&gt;"
    assert escape_attribute("") == ""


@pytest.mark.parametrize("char", FORBIDDEN)
def test_escape_attribute_refuses_characters_xml_cannot_carry(char: str) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        escape_attribute(f"ok{char}")


# -- serialize ----------------------------------------------------------------------------------


def test_message_has_no_client_namespace_declaration() -> None:
    message = Message(to="romeo@example.net", type_="chat", id_="m1", body="hi")
    assert serialize(message) == (
        b'<message to="romeo@example.net" id="m1" type="chat"><body>hi</body></message>'
    )


def test_presence_has_no_client_namespace_declaration() -> None:
    presence = Presence(show="away", status="brb", priority=5)
    assert serialize(presence) == (
        b"<presence><show>away</show><status>brb</status><priority>5</priority></presence>"
    )


def test_iq_has_no_client_namespace_declaration() -> None:
    iq = IQ("get", id_="i1", payload=etree.Element("{urn:xmpp:ping}ping"))
    assert serialize(iq) == b'<iq id="i1" type="get"><ping xmlns="urn:xmpp:ping"/></iq>'


def test_empty_stanza_and_client_element_built_without_nsmap() -> None:
    assert serialize(Message()) == b"<message/>"
    # lxml would write this one as <ns0:message xmlns:ns0="jabber:client"/>.
    assert serialize(etree.Element("{jabber:client}message")) == b"<message/>"


def test_other_top_level_elements_keep_their_namespace() -> None:
    auth = etree.Element("{urn:ietf:params:xml:ns:xmpp-sasl}auth", mechanism="PLAIN")
    auth.text = "AGp1bGlldAByMG0zMG15cjBtMzA="
    assert serialize(auth) == (
        b'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">'
        b"AGp1bGlldAByMG0zMG15cjBtMzA=</auth>"
    )
    ack = etree.Element("{urn:xmpp:sm:3}a", h="7")
    assert serialize(ack) == b'<a xmlns="urn:xmpp:sm:3" h="7"/>'
    (auth_back, ack_back) = parse_back(auth, ack)
    assert auth_back.tag == auth.tag
    assert ack_back.tag == ack.tag


def test_stream_namespace_element_is_written_without_generated_prefix() -> None:
    error = etree.Element(f"{{{STREAMS}}}error")
    etree.SubElement(error, "{urn:ietf:params:xml:ns:xmpp-streams}conflict")
    data = serialize(error)
    assert b"ns0" not in data
    assert data == (
        b'<error xmlns="http://etherx.jabber.org/streams">'
        b'<conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></error>'
    )
    (back,) = parse_back(error)
    assert tags(back) == tags(error)


def test_payload_namespace_is_a_default_declaration() -> None:
    iq = IQ("set", id_="1")
    payload = etree.SubElement(iq, "{urn:x}foo", a="1")
    assert b"ns0:foo" in etree.tostring(iq)  # what lxml alone would write
    data = serialize(iq)
    assert data == b'<iq id="1" type="set"><foo xmlns="urn:x" a="1"/></iq>'
    (back,) = parse_back(iq)
    assert isinstance(back, IQ)
    assert back.payload is not None
    assert back.payload.tag == payload.tag
    assert back.payload.get("a") == "1"


def test_child_in_no_namespace_undeclares_the_default() -> None:
    # libxml2 alone would write <item/>, which a receiver reads in urn:x.
    iq = IQ("result", id_="1")
    query = etree.SubElement(iq, "{urn:x}query", nsmap={None: "urn:x"})
    etree.SubElement(query, "item")
    assert (
        serialize(iq)
        == b'<iq id="1" type="result"><query xmlns="urn:x"><item xmlns=""/></query></iq>'
    )


def test_comment_alone_does_not_count_as_a_child_in_no_namespace() -> None:
    iq = IQ("result", id_="1")
    query = etree.SubElement(iq, "{urn:x}query", nsmap={None: "urn:x"})
    query.append(etree.Comment("c"))
    etree.SubElement(query, "{urn:x}item")
    assert (
        serialize(iq)
        == b'<iq id="1" type="result"><query xmlns="urn:x"><!--c--><item/></query></iq>'
    )


def test_nested_namespace_changes() -> None:
    iq = IQ("set", id_="1")
    a = etree.SubElement(iq, "{urn:x}a")
    b = etree.SubElement(a, "{urn:y}b")
    etree.SubElement(b, "{urn:y}c")
    b.tail = "between"
    d = etree.SubElement(a, "{urn:x}d")
    d.text = "t"
    etree.SubElement(d, "{jabber:client}body").text = "client again"
    assert serialize(iq) == (
        b'<iq id="1" type="set"><a xmlns="urn:x"><b xmlns="urn:y"><c/></b>between'
        b'<d>t<body xmlns="jabber:client">client again</body></d></a></iq>'
    )
    (back,) = parse_back(iq)
    assert tags(back) == tags(iq)
    assert back[0][0].tail == "between"


def test_forwarded_client_stanza_keeps_its_namespace() -> None:
    # Only the top-level element's own declaration is redundant with the stream header.
    inner = Message(from_="juliet@example.com/balcony", body="inner")
    forwarded = etree.Element("{urn:xmpp:forward:0}forwarded")
    forwarded.append(inner)
    outer = Message(to="romeo@example.net", body="outer")
    outer.append(forwarded)
    data = serialize(outer)
    assert data.startswith(b"<message to=")
    assert b'<message xmlns="jabber:client" from=' in data
    (back,) = parse_back(outer)
    assert tags(back) == tags(outer)
    assert isinstance(back[1][0], Message)
    assert back[1][0].body == "inner"
    (alone,) = parse_back(forwarded)
    assert tags(alone) == tags(forwarded)


def test_prefixed_payload_keeps_its_names() -> None:
    iq = IQ("result", id_="1")
    query = etree.SubElement(iq, "{urn:x}query", nsmap={"x": "urn:x", "y": "urn:y"})
    etree.SubElement(query, "{urn:y}item", {"{urn:y}attr": "v", "plain": "p"})
    (back,) = parse_back(iq)
    assert tags(back) == tags(iq)
    assert back[0][0].get("{urn:y}attr") == "v"
    assert back[0][0].get("plain") == "p"


def test_element_without_namespace_below_a_payload_stays_without_namespace() -> None:
    iq = IQ("result", id_="1")
    query = etree.SubElement(iq, "{urn:x}query")
    etree.SubElement(query, "item")
    assert etree.QName(iq[0][0]).namespace is None
    (back,) = parse_back(iq)
    assert tags(back) == ["{jabber:client}iq", "{urn:x}query", "item"]


def test_element_without_namespace_below_a_stanza_stays_without_namespace() -> None:
    message = Message(body="hi")
    etree.SubElement(message, "x")
    (back,) = parse_back(message)
    assert tags(back) == ["{jabber:client}message", "{jabber:client}body", "x"]


def test_received_stanza_is_resent_unchanged() -> None:
    stream = (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        b"<message id='1'><body>hi</body><x xmlns=''><y/></x>"
        b"<e xmlns='urn:e'><f/><g xmlns=''/></e></message>"
    )
    (event,) = XMLStreamParser().feed(stream)[1:]
    assert isinstance(event, ElementReceived)
    received = event.element
    assert b"ns0" not in serialize(received)
    (back,) = parse_back(received)
    assert tags(back) == tags(received)
    assert tags(back) == [
        "{jabber:client}message",
        "{jabber:client}body",
        "x",
        "y",
        "{urn:e}e",
        "{urn:e}f",
        "g",
    ]


def test_text_is_escaped() -> None:
    message = Message(body="a < b && c > d ]]> e")
    assert (
        serialize(message)
        == b"<message><body>a &lt; b &amp;&amp; c &gt; d ]]&gt; e</body></message>"
    )
    (back,) = parse_back(message)
    assert isinstance(back, Message)
    assert back.body == "a < b && c > d ]]> e"


def test_attribute_values_are_escaped() -> None:
    message = Message(id_="q'\"<&>\t\n\r")
    data = serialize(message)
    assert data == b'<message id="q\'&quot;&lt;&amp;&gt;&#9;&#10;&#13;"/>'
    (back,) = parse_back(message)
    assert back.get("id") == "q'\"<&>\t\n\r"


def test_non_ascii_text_is_utf8_not_character_references() -> None:
    message = Message(id_="идентификатор", body="héllo 😀 日本 \U0010fffd")
    data = serialize(message)
    assert "héllo 😀 日本 \U0010fffd".encode() in data
    assert "идентификатор".encode() in data
    assert b"&#" not in data
    assert not data.startswith(b"<?xml")


def test_carriage_return_in_text_survives() -> None:
    message = Message(body="line\r\nnext\rlast")
    (back,) = parse_back(message)
    assert isinstance(back, Message)
    assert back.body == "line\r\nnext\rlast"


def test_tail_is_never_written() -> None:
    message = Message(body="hi")
    message.tail = "TAIL"
    assert serialize(message) == b"<message><body>hi</body></message>"
    # Also when the element needs its namespaces rewritten.
    iq = IQ("get", id_="1")
    etree.SubElement(iq, "{urn:x}q").tail = "inside, kept"
    iq.tail = "TAIL"
    data = serialize(iq)
    assert b"TAIL" not in data
    assert data.endswith(b'<q xmlns="urn:x"/>inside, kept</iq>')
    # And for the tail of a payload serialised on its own.
    payload = iq[0]
    assert serialize(payload) == b'<q xmlns="urn:x"/>'


@pytest.mark.parametrize("char", FORBIDDEN)
def test_forbidden_characters_are_refused_when_assigned(char: str) -> None:
    message = Message(id_="ok", body="fine")
    payload = etree.SubElement(message, "{urn:x}p", a="1")
    payload.text = "text"
    with pytest.raises(ValueError):
        message.set("id", f"bad{char}")
    with pytest.raises(ValueError):
        message.tail = char
    with pytest.raises(ValueError):
        payload.text = f"bad{char}"
    with pytest.raises(ValueError):
        payload.tail = char
    with pytest.raises(ValueError):
        payload.set("a", char)
    with pytest.raises(ValueError):
        Message(body=char)
    with pytest.raises(ValueError):
        Presence(status=f"away{char}")
    # Nothing of the refused values got in (lxml drops an element's old text before it checks
    # the new one, so only the attributes are sure to be unchanged).
    data = serialize(message)
    assert char.encode("utf-8", "surrogatepass") not in data
    assert data.startswith(b'<message id="ok"><body>fine</body><p xmlns="urn:x" a="1"')
    assert message.get("id") == "ok"
    assert payload.get("a") == "1"
    (back,) = parse_back(message)
    assert tags(back) == tags(message)
    # lxml attaches a new SubElement before it checks the attributes: the element stays,
    # the value does not.
    other = etree.Element("{urn:x}o")
    with pytest.raises(ValueError):
        etree.SubElement(other, "{urn:x}q", a=char)
    assert char.encode("utf-8", "surrogatepass") not in serialize(other)


def test_refused_body_leaves_the_message_unchanged() -> None:
    message = Message(body="fine")
    with pytest.raises(ValueError):
        message.body = "bad\x00"
    assert message.body == "fine"


# -- round trip through the parser --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(body=XML_TEXT, id_=XML_TEXT, value=XML_TEXT, text=XML_TEXT, tail=XML_TEXT)
def test_round_trip_text_and_attributes(
    body: str, id_: str, value: str, text: str, tail: str
) -> None:
    message = Message(to="romeo@example.net", id_=id_, body=body)
    payload = etree.SubElement(message, "{urn:x:test}payload", value=value)
    payload.text = text
    payload.tail = tail
    (back,) = parse_back(message)
    assert isinstance(back, Message)
    assert back.body == body
    assert back.get("id") == id_
    assert str(back.to) == "romeo@example.net"
    back_payload = back.find("{urn:x:test}payload")
    assert back_payload is not None
    assert back_payload.get("value") == value
    assert (back_payload.text or "") == text
    assert (back_payload.tail or "") == tail


@settings(max_examples=100, deadline=None)
@given(values=st.lists(XML_TEXT, min_size=1, max_size=5), lang=XML_TEXT)
def test_round_trip_several_elements(values: list[str], lang: str) -> None:
    sent: list[etree._Element] = []
    for number, value in enumerate(values):
        presence = Presence(status=value, lang=lang or None)
        presence.set("id", f"p{number}")
        sent.append(presence)
        element = etree.Element("{urn:x}nonza", v=value)
        element.text = value
        sent.append(element)
    received = parse_back(*sent)
    assert [tags(element) for element in received] == [tags(element) for element in sent]
    for original, back in zip(sent, received, strict=True):
        assert dict(back.attrib) == dict(original.attrib)
        assert [node.text or "" for node in back.iter()] == [
            node.text or "" for node in original.iter()
        ]
