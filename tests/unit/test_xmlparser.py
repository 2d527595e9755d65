"""Tests for txxmppnode.xmlparser: incremental parsing, detachment, hardening and limits."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from txxmppnode.errors import StreamErrorCondition
from txxmppnode.stanza import IQ, Message, Presence, Stanza
from txxmppnode.xmlparser import (
    DEFAULT_MAX_ATTRIBUTES,
    FEED_SLICE,
    ElementReceived,
    Event,
    LimitExceeded,
    NotWellFormed,
    RestrictedXML,
    StreamFooter,
    StreamHeader,
    UnsupportedEncoding,
    XMLStreamParseError,
    XMLStreamParser,
)
from txxmppnode.xmlwriter import serialize

STREAMS = "http://etherx.jabber.org/streams"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
REPO_ROOT = Path(__file__).resolve().parents[2]

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='example.com' id='s1' version='1.0' xml:lang='en'>"
)
FOOTER = b"</stream:stream>"

#: What a server sends a client after the stream restart that follows authentication.
STREAM = (
    "<?xml version='1.0'?>\n"
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    " from='example.com' id='s1' version='1.0' xml:lang='en'>"
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind>"
    "<sm xmlns='urn:xmpp:sm:3'/></stream:features>\n"
    "<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat' id='m1'>"
    "<body>héllo 😀 &amp; bye</body><active xmlns='http://jabber.org/protocol/chatstates'/>"
    "</message> "
    "<presence from='juliet@example.com/balcony'><show>away</show><status>out</status>"
    "</presence>\t"
    "<iq type='get' id='i1' from='example.com'><ping xmlns='urn:xmpp:ping'/></iq>\r\n"
    "<r xmlns='urn:xmpp:sm:3'/>"
    "</stream:stream>"
).encode()

Described = tuple[Any, ...]


def describe(events: list[Event]) -> list[Described]:
    """Events as comparable values (elements by class, tag and serialisation)."""
    out: list[Described] = []
    for event in events:
        if isinstance(event, StreamHeader):
            out.append(("header", event.tag, event.attributes, event.nsmap))
        elif isinstance(event, ElementReceived):
            element = event.element
            out.append(("element", type(element), element.tag, etree.tostring(element)))
        else:
            assert isinstance(event, StreamFooter)
            out.append(("footer",))
    return out


def split(data: bytes, points: list[int]) -> list[bytes]:
    """*data* cut at *points* (clamped, deduplicated); may include empty pieces."""
    pieces: list[bytes] = []
    start = 0
    for cut in sorted({min(point, len(data)) for point in points}):
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


def feed_all(parser: XMLStreamParser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def elements(events: list[Event]) -> list[etree._Element]:
    return [event.element for event in events if isinstance(event, ElementReceived)]


def started(**kwargs: Any) -> XMLStreamParser:
    """A parser that has already seen :data:`HEADER`."""
    parser = XMLStreamParser(**kwargs)
    assert describe(parser.feed(HEADER))[0][0] == "header"
    return parser


def refusal(data: bytes | list[bytes], **kwargs: Any) -> XMLStreamParseError:
    """The error a fresh parser raises for *data* (one chunk or a list of chunks)."""
    parser = XMLStreamParser(**kwargs)
    with pytest.raises(XMLStreamParseError) as excinfo:
        feed_all(parser, [data] if isinstance(data, bytes) else data)
    return excinfo.value


@functools.cache
def whole_stream() -> list[Described]:
    """The events of :data:`STREAM` fed in one chunk, described."""
    return describe(XMLStreamParser().feed(STREAM))


# -- a realistic stream, however it is split -----------------------------------------------------


def test_header_attributes_and_namespaces_are_reported() -> None:
    header = XMLStreamParser().feed(STREAM)[0]
    assert isinstance(header, StreamHeader)
    assert header.tag == f"{{{STREAMS}}}stream"
    assert header.attributes == {
        "from": "example.com",
        "id": "s1",
        "version": "1.0",
        XML_LANG: "en",
    }
    assert header.nsmap == {None: "jabber:client", "stream": STREAMS}


def test_whole_stream_events() -> None:
    events = XMLStreamParser().feed(STREAM)
    kinds = [type(event) for event in events]
    assert kinds == [StreamHeader] + [ElementReceived] * 5 + [StreamFooter]
    features, message, presence, iq, ack = elements(events)

    assert features.tag == f"{{{STREAMS}}}features"
    assert not isinstance(features, Stanza)
    assert [child.tag for child in features] == [
        "{urn:ietf:params:xml:ns:xmpp-bind}bind",
        "{urn:xmpp:sm:3}sm",
    ]

    assert isinstance(message, Message)
    assert message.tag == "{jabber:client}message"
    assert message.body == "héllo 😀 & bye"
    assert str(message.from_) == "juliet@example.com/balcony"
    assert message.id_ == "m1"
    assert [child.tag for child in message.payloads()] == [
        "{jabber:client}body",
        "{http://jabber.org/protocol/chatstates}active",
    ]

    assert isinstance(presence, Presence)
    assert presence.show.value == "away"
    assert presence.status == "out"

    assert isinstance(iq, IQ)
    assert iq.type_.value == "get"
    assert iq.payload is not None
    assert iq.payload.tag == "{urn:xmpp:ping}ping"

    assert ack.tag == "{urn:xmpp:sm:3}r"
    assert not isinstance(ack, Stanza)


def test_byte_by_byte_gives_the_same_events() -> None:
    parser = XMLStreamParser()
    events = feed_all(parser, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert describe(events) == whole_stream()


@settings(max_examples=150, deadline=None)
@given(points=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_random_splits_give_the_same_events(points: list[int]) -> None:
    assert describe(feed_all(XMLStreamParser(), split(STREAM, points))) == whole_stream()


def test_each_event_arrives_with_the_byte_that_completes_it() -> None:
    # No look-ahead: a client must be able to act on a stanza before the server sends more.
    parser = XMLStreamParser()
    completed_at = []
    for index in range(len(STREAM)):
        for event in parser.feed(STREAM[index : index + 1]):
            completed_at.append((index, type(event)))
    ends = [
        STREAM.index(marker) + len(marker) - 1
        for marker in (
            b"xml:lang='en'>",
            b"</stream:features>",
            b"</message>",
            b"</presence>",
            b"</iq>",
            b"<r xmlns='urn:xmpp:sm:3'/>",
            b"</stream:stream>",
        )
    ]
    assert [index for index, _ in completed_at] == ends
    assert [kind for _, kind in completed_at] == [StreamHeader] + [ElementReceived] * 5 + [
        StreamFooter
    ]


@pytest.mark.parametrize("text", ["é", "😀", "日本", "a😀é😀z"])
def test_multibyte_character_split_across_chunks_arrives_intact(text: str) -> None:
    stanza = f"<message id='{text}'><body>{text}</body></message>".encode()
    for cut in range(1, len(stanza)):
        parser = started()
        events = parser.feed(stanza[:cut]) + parser.feed(stanza[cut:])
        (message,) = elements(events)
        assert isinstance(message, Message)
        assert message.body == text
        assert message.get("id") == text


def test_bom_and_xml_declaration_variants_are_accepted() -> None:
    body = HEADER[len(b"<?xml version='1.0'?>") :]
    for prolog in (
        b"",
        b"\xef\xbb\xbf",
        b"<?xml version='1.0'?>",
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        b"<?xml version='1.0' encoding='utf-8'?>",
        b"\xef\xbb\xbf<?xml version='1.0'?>\r\n",
    ):
        data = prolog + body + b"<message/>"
        for cut in range(len(data) + 1):
            events = feed_all(XMLStreamParser(), [data[:cut], data[cut:]])
            assert [type(event) for event in events] == [StreamHeader, ElementReceived], prolog


# -- delivered elements are detached ------------------------------------------------------------


def test_delivered_elements_are_detached_without_prefixes_or_tails() -> None:
    parser = XMLStreamParser()
    received = elements(parser.feed(STREAM))
    assert parser._root is not None
    assert len(parser._root) == 0
    for element in received:
        assert element.getparent() is None
        assert element.tail is None
        assert element.getprevious() is None
        assert element.getnext() is None
        data = serialize(element)
        assert b"ns0:" not in data
        assert b"xmlns:ns" not in data
        assert data.endswith(b">")
        # On its own, the element keeps the names it had in the stream.
        alone = etree.fromstring(etree.tostring(element))
        assert [node.tag for node in alone.iter()] == [node.tag for node in element.iter()]


def test_document_does_not_grow_over_a_long_stream() -> None:
    parser = started()
    first = None
    for number in range(10_000):
        # Keepalives, a stanza, and sometimes several stanzas in one chunk.
        chunk = b" \n" + b"<message id='%d'><body>n%d</body></message>" % (number, number)
        if number % 100 == 0:
            chunk += b"\t<presence/> <presence/>"
        events = parser.feed(chunk)
        assert len(events) == (3 if number % 100 == 0 else 1)
        if first is None:
            first = events[0].element
        root = parser._root
        assert root is not None
        assert len(root) == 0
        assert root.text is None
    # The first stanza is its own document and was not disturbed by the 10,000 after it.
    assert isinstance(first, Message)
    assert first.body == "n0"
    assert first.getparent() is None


def test_keepalive_whitespace_does_not_accumulate() -> None:
    parser = started()
    root = parser._root
    assert root is not None
    for _ in range(1000):
        assert parser.feed(b" ") == []
        assert root.text is None
    (message,) = elements(parser.feed(b"\n<message/>\n"))
    assert message.tail is None
    assert root.text is None
    assert len(root) == 0


# -- reset ---------------------------------------------------------------------------------------


def test_reset_expects_a_new_stream_header() -> None:
    parser = XMLStreamParser()
    before = parser.feed(HEADER + b"<message><body>1</body></message><presence/>")
    assert [type(event) for event in before] == [StreamHeader, ElementReceived, ElementReceived]
    parser.feed(b"<iq type='get' id='half'>")  # an unfinished element is forgotten
    parser.reset()
    second = HEADER.replace(b"id='s1'", b"id='s2'") + b"<message><body>2</body></message>"
    after = parser.feed(second)
    assert [type(event) for event in after] == [StreamHeader, ElementReceived]
    header, received = after
    assert isinstance(header, StreamHeader)
    assert header.attributes["id"] == "s2"
    assert isinstance(received, ElementReceived)
    assert isinstance(received.element, Message)
    assert received.element.body == "2"
    assert describe(parser.feed(FOOTER)) == [("footer",)]


def test_reset_clears_a_failure_and_keeps_the_limits() -> None:
    parser = XMLStreamParser(max_depth=3)
    with pytest.raises(NotWellFormed):
        parser.feed(HEADER + b"<a></b>")
    parser.reset()
    assert [type(event) for event in parser.feed(HEADER)] == [StreamHeader]
    with pytest.raises(LimitExceeded):
        parser.feed(b"<a><b><c><d/></c></b></a>")
    parser.reset()
    # A restarted stream is as hardened as the first one.
    with pytest.raises(RestrictedXML):
        parser.feed(b"<?xml version='1.0'?><!DOCTYPE stream:stream>")


# -- hardening -----------------------------------------------------------------------------------


def vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


HAS_PROC = Path("/proc/self/status").exists()

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n'
        % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
        for level in range(1, 10)
    )
    + b"]>\n<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    b"<message><body>&lol9;</body></message>"
)


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/self/status")
def test_billion_laughs_is_refused_without_expansion() -> None:
    rss_before = vm_rss_kib()
    start = time.perf_counter()
    error = refusal(BILLION_LAUGHS)
    elapsed = time.perf_counter() - start
    assert isinstance(error, RestrictedXML)
    assert error.condition is StreamErrorCondition.RESTRICTED_XML
    assert error.events_before == []
    assert elapsed < 0.5
    assert vm_rss_kib() - rss_before < 16 * 1024


def test_billion_laughs_reference_inside_the_stream_is_an_undeclared_entity() -> None:
    start = time.perf_counter()
    with pytest.raises(RestrictedXML):
        started().feed(b"<message><body>&lol9;</body></message>")
    assert time.perf_counter() - start < 0.5


def test_external_entity_is_refused_and_never_read() -> None:
    probe = (
        b'<?xml version="1.0"?><!DOCTYPE stream:stream [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        b"<message><body>&xxe;</body></message>"
    )
    needles = [b"root:"]
    passwd = Path("/etc/passwd")
    if passwd.exists():
        needles.append(passwd.read_bytes().splitlines()[0])
    for chunks in ([probe], [probe[i : i + 1] for i in range(len(probe))]):
        parser = XMLStreamParser()
        seen: list[Event] = []
        with pytest.raises(RestrictedXML) as excinfo:
            for chunk in chunks:
                seen += parser.feed(chunk)
        assert seen == []
        assert excinfo.value.events_before == []
        for needle in needles:
            assert needle.decode() not in str(excinfo.value)
    # The same reference without a DOCTYPE is an undeclared entity.
    with pytest.raises(RestrictedXML) as excinfo:
        started().feed(b"<message><body>&xxe;</body></message>")
    assert all(needle.decode() not in str(excinfo.value) for needle in needles)


def test_external_dtd_is_refused_without_a_network_fetch() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        probe = (
            b'<?xml version="1.0"?>'
            b'<!DOCTYPE stream:stream SYSTEM "http://127.0.0.1:%d/evil.dtd">'
            % port
            + HEADER[len(b"<?xml version='1.0'?>") :]
            + b"<message/>"
        )
        error = refusal(probe)
        assert isinstance(error, RestrictedXML)
        assert error.events_before == []
        with pytest.raises(TimeoutError):
            server.accept()


DOCTYPE_DOCUMENT = b"<?xml version='1.0'?><!DOCTYPE stream:stream []>" + HEADER[21:]


@pytest.mark.parametrize("cut", range(1, len(b"<?xml version='1.0'?><!DOCTYPE stream:stream")))
def test_doctype_split_across_chunks_is_still_refused(cut: int) -> None:
    parser = XMLStreamParser()
    seen: list[Event] = []
    with pytest.raises(RestrictedXML):
        for chunk in (DOCTYPE_DOCUMENT[:cut], DOCTYPE_DOCUMENT[cut:]):
            seen += parser.feed(chunk)
    assert seen == []


def test_doctype_fed_a_byte_at_a_time_is_refused() -> None:
    error = refusal([b"<", b"!", b"D", b"O", b"C", b"TYPE x>"])
    assert isinstance(error, RestrictedXML)


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message><body>&foo;</body></message>",
        b"<message><body>a &nbsp; b</body></message>",
        b"<message id='&foo;'/>",
        b"<message><x xmlns='urn:x' a='x&copy;y'/></message>",
    ],
    ids=["text", "html-entity", "attribute", "nested-attribute"],
)
def test_undeclared_entity_reference_is_restricted_xml(stanza: bytes) -> None:
    error = refusal(HEADER + stanza)
    assert isinstance(error, RestrictedXML)
    assert error.condition is StreamErrorCondition.RESTRICTED_XML
    assert [type(event) for event in error.events_before] == [StreamHeader]


def test_predefined_entities_and_character_references_are_decoded() -> None:
    refs = b"&lt;&gt;&amp;&quot;&apos;&#233;&#xE9;&#x1F600;&#128512;&#10;&#9;"
    decoded = "<>&\"'éé😀😀\n\t"
    (message,) = elements(
        started().feed(b"<message id='" + refs + b"'><body>" + refs + b"</body></message>")
    )
    assert isinstance(message, Message)
    assert message.body == decoded
    assert message.get("id") == decoded


def test_cdata_section_is_plain_text() -> None:
    (message,) = elements(
        started().feed(b"<message><body><![CDATA[<b>&amp;</b>]]></body></message>")
    )
    assert isinstance(message, Message)
    assert message.body == "<b>&amp;</b>"


@pytest.mark.parametrize(
    "data",
    [
        b"<!-- hello -->" + HEADER,
        b"<?xml version='1.0'?><!-- hello -->" + HEADER[21:],
        b"<?xml version='1.0'?>\n<?xml-stylesheet href='x'?>" + HEADER[21:],
        b"<?php evil() ?>" + HEADER,
        HEADER + b"<!-- between stanzas -->",
        HEADER + b"<message><!-- inside --></message>",
        HEADER + b"<message><body>a<!---->b</body></message>",
        HEADER + b"<?pi between?>",
        HEADER + b"<message><?pi inside?></message>",
    ],
    ids=[
        "comment-prolog",
        "comment-after-decl",
        "pi-after-decl",
        "pi-prolog",
        "comment-stream",
        "comment-stanza",
        "comment-text",
        "pi-stream",
        "pi-stanza",
    ],
)
def test_comments_and_processing_instructions_are_restricted_xml(data: bytes) -> None:
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        parser = XMLStreamParser()
        seen: list[Event] = []
        with pytest.raises(RestrictedXML) as excinfo:
            for chunk in chunks:
                seen += parser.feed(chunk)
        assert not elements(seen + excinfo.value.events_before)


@pytest.mark.parametrize(
    "declaration",
    [
        b"<?xml version='1.0' encoding='ISO-8859-1'?>",
        b'<?xml version="1.0" encoding="UTF-16"?>',
        b"<?xml version='1.0' encoding = 'latin1' ?>",
        b"<?xml version='1.0' encoding='US-ASCII'?>",
    ],
)
def test_non_utf8_encoding_declaration_is_unsupported_encoding(declaration: bytes) -> None:
    data = declaration + HEADER[21:]
    for cut in range(len(declaration) + 1):
        error = refusal([data[:cut], data[cut:]])
        assert isinstance(error, UnsupportedEncoding)
        assert error.condition is StreamErrorCondition.UNSUPPORTED_ENCODING
        assert error.events_before == []


@pytest.mark.parametrize(
    "stanza",
    [
        b"<message><body>\xff\xfe</body></message>",
        b"<message><body>\xc0\xaf</body></message>",  # overlong '/'
        b"<message><body>\xed\xa0\x80</body></message>",  # encoded surrogate
        b"<message><body>\xe2\x82</body></message>",  # truncated sequence
        b"<message id='\x80'/>",
        b"<message></presence>",
        b"<message><body></message></body>",
        b"<message><body>&#0;</body></message>",
        b"<message><body>&#x0;</body></message>",
        b"<message id='&#0;'/>",
        b"<message><body>&#1;&#xFFFE;</body></message>",
        b"<message><body>\x00</body></message>",
        b"<message><body>a < b</body></message>",
        b"<message id='1' id='2'/>",
        b"<message id=1/>",
        b"<1message/>",
        b"<!doctype x>",  # not a DOCTYPE: XML keywords are case-sensitive
        b"<?xml version='1.0'?>",
    ],
)
def test_malformed_input_is_not_well_formed(stanza: bytes) -> None:
    for chunks in ([HEADER + stanza], [HEADER] + [stanza[i : i + 1] for i in range(len(stanza))]):
        error = refusal(chunks)
        assert isinstance(error, NotWellFormed)
        assert error.condition is StreamErrorCondition.NOT_WELL_FORMED


def test_unbound_namespace_prefix_on_a_top_level_element_is_not_well_formed() -> None:
    # Namespaces in XML §5: a prefix must be declared.  RFC 6120 §4.9.3.13 counts violations
    # of [XML-NAMES] as not-well-formed.
    error = refusal(HEADER + b"<x:message/>")
    assert isinstance(error, NotWellFormed)
    assert "undeclared namespace prefix" in str(error)


@pytest.mark.parametrize(
    "stanza",
    [b"<message x:id='1'/>", b"<message><y:body>hi</y:body></message>"],
    ids=["attribute", "child"],
)
def test_unbound_prefix_below_the_top_level_is_kept_as_a_plain_name(stanza: bytes) -> None:
    # The documented limit of the streaming check: only top-level names are checked, so a
    # nested prefixed name arrives as a name without namespace, which no handler matches.
    (element,) = elements(XMLStreamParser().feed(HEADER + stanza))
    names = [element.tag, *element.attrib, *(child.tag for child in element)]
    assert any(name.startswith(("x:", "y:")) for name in names)


@pytest.mark.parametrize(
    "data",
    [b"hello", b"stream:stream", b" \x00", b"\xff<stream/>", b"<>" + HEADER[21:]],
)
def test_stream_that_does_not_start_with_an_element_is_not_well_formed(data: bytes) -> None:
    assert isinstance(refusal(data), NotWellFormed)


def test_prolog_without_a_header_is_bounded() -> None:
    assert isinstance(refusal(b"<?xml version='1.0'" + b" " * 5000), NotWellFormed)


@pytest.mark.parametrize("after", [b"<message/>", b"junk", b"</stream:stream>", b" x"])
def test_data_after_the_footer_is_not_well_formed(after: bytes) -> None:
    # In the same chunk as the footer and in a later one.
    error = refusal(HEADER + FOOTER + after)
    assert isinstance(error, NotWellFormed)
    assert [type(event) for event in error.events_before] == [StreamHeader, StreamFooter]
    parser = started()
    assert describe(parser.feed(FOOTER)) == [("footer",)]
    with pytest.raises(NotWellFormed):
        parser.feed(after)


def test_whitespace_after_the_footer_is_accepted() -> None:
    parser = started()
    assert describe(parser.feed(FOOTER + b" \r\n")) == [("footer",)]
    assert parser.feed(b"\n\t ") == []


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"<message></iq>", NotWellFormed),
        (b"<message>&foo;</message>", RestrictedXML),
        (b"<message><!-- c --></message>", RestrictedXML),
        (b"<a><b><c><d><e><f/></e></d></c></b></a>", LimitExceeded),
    ],
)
def test_after_an_error_every_feed_raises_the_same_error(
    bad: bytes, kind: type[XMLStreamParseError]
) -> None:
    parser = started(max_depth=4)
    with pytest.raises(kind) as excinfo:
        parser.feed(bad)
    first = excinfo.value
    for more in (b"<message/>", b"", b" ", FOOTER, HEADER):
        with pytest.raises(kind) as again:
            parser.feed(more)
        assert again.value is first


def test_events_before_holds_what_completed_earlier_in_the_same_feed() -> None:
    parser = XMLStreamParser()
    good = (
        b"<message id='a'/> <presence id='b'/>"
        b"<iq type='get' id='c'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    with pytest.raises(NotWellFormed) as excinfo:
        parser.feed(HEADER + good + b"<message id='d'><body></message>")
    before = excinfo.value.events_before
    assert [type(event) for event in before] == [StreamHeader] + [ElementReceived] * 3
    assert [element.get("id") for element in elements(before)] == ["a", "b", "c"]
    assert all(element.getparent() is None for element in elements(before))
    # Events returned by earlier feeds are not repeated.
    parser = started()
    assert len(parser.feed(b"<message id='x'/>")) == 1
    with pytest.raises(RestrictedXML) as excinfo:
        parser.feed(good + b"&foo;")
    assert [element.get("id") for element in elements(excinfo.value.events_before)] == [
        "a",
        "b",
        "c",
    ]


def test_refusals_carry_their_stream_error_condition() -> None:
    assert NotWellFormed("x").condition is StreamErrorCondition.NOT_WELL_FORMED
    assert RestrictedXML("x").condition is StreamErrorCondition.RESTRICTED_XML
    assert UnsupportedEncoding("x").condition is StreamErrorCondition.UNSUPPORTED_ENCODING
    assert LimitExceeded("x").condition is StreamErrorCondition.POLICY_VIOLATION
    for kind in (NotWellFormed, RestrictedXML, UnsupportedEncoding, LimitExceeded):
        assert issubclass(kind, XMLStreamParseError)
        assert issubclass(kind, ValueError)
        assert kind("x").events_before == []


# -- limits --------------------------------------------------------------------------------------


DEEP = b"<a>" * 10_000


@pytest.mark.parametrize("chunk_size", [len(DEEP), FEED_SLICE, 7, 1])
def test_deep_nesting_is_a_policy_violation(chunk_size: int) -> None:
    parser = started()
    with pytest.raises(XMLStreamParseError) as excinfo:
        for offset in range(0, len(DEEP), chunk_size):
            parser.feed(DEEP[offset : offset + chunk_size])
    assert type(excinfo.value) is LimitExceeded
    assert excinfo.value.condition is StreamErrorCondition.POLICY_VIOLATION


@pytest.mark.parametrize("chunk_size", [1, 3, 1000, 100_000])
def test_deep_nesting_beyond_libxml2s_own_limit_is_still_a_policy_violation(
    chunk_size: int,
) -> None:
    data = HEADER + b"<a>" * 300
    error = refusal(
        [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)], max_depth=255
    )
    assert type(error) is LimitExceeded


def nested(depth: int) -> bytes:
    return b"<message>" + b"<x>" * (depth - 1) + b"</x>" * (depth - 1) + b"</message>"


@pytest.mark.parametrize("max_depth", [1, 5, 255])
def test_depth_exactly_max_depth_is_accepted(max_depth: int) -> None:
    data = nested(max_depth)
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        parser = started(max_depth=max_depth)
        (message,) = elements(feed_all(parser, chunks))
        assert sum(1 for _ in message.iter()) == max_depth


@pytest.mark.parametrize("max_depth", [1, 5, 254])
def test_depth_max_depth_plus_one_is_refused(max_depth: int) -> None:
    data = nested(max_depth + 1)
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        parser = started(max_depth=max_depth)
        with pytest.raises(LimitExceeded) as excinfo:
            feed_all(parser, chunks)
        assert excinfo.value.events_before == []


def test_depth_limit_counts_per_stanza() -> None:
    parser = started(max_depth=3)
    stanza = b"<message><a><b/></a></message>"
    assert len(elements(parser.feed(stanza * 50))) == 50


KIB = 1024


@pytest.mark.parametrize("chunk_size", [4 * KIB, FEED_SLICE, 1000 * KIB])
def test_oversized_element_is_refused_before_it_completes(chunk_size: int) -> None:
    limit = 100 * KIB
    parser = started(max_element_bytes=limit)
    parser.feed(b"<message><body>")
    fed = 0
    with pytest.raises(LimitExceeded) as excinfo:
        while fed < 10 * limit:
            # The closing tags are never fed.
            parser.feed(b"x" * chunk_size)
            fed += chunk_size
    assert excinfo.value.condition is StreamErrorCondition.POLICY_VIOLATION
    # Refused within one slice of the limit (or within the one chunk that crossed it).
    assert fed <= limit + max(chunk_size, FEED_SLICE)


def test_element_within_the_limit_is_accepted() -> None:
    limit = 100 * KIB
    stanza = b"<message><body>" + b"y" * (limit - 100) + b"</body></message>"
    data = stanza * 3
    for chunk_size in (1000, 4099, FEED_SLICE, len(stanza), len(data)):
        parser = started(max_element_bytes=limit)
        chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
        received = elements(feed_all(parser, chunks))
        assert len(received) == 3
        for message in received:
            assert isinstance(message, Message)
            assert message.body == "y" * (limit - 100)


@pytest.mark.parametrize("chunk_size", [4 * KIB, FEED_SLICE])
def test_oversized_start_tag_is_refused_before_it_completes(chunk_size: int) -> None:
    # lxml reports an element only once its start tag is complete, so a huge start tag must
    # be measured as it streams in like any other part of the element.
    limit = 100 * KIB
    parser = started(max_element_bytes=limit)
    parser.feed(b"<message id='")
    fed = 0
    with pytest.raises(LimitExceeded):
        while fed < 2 * 1024 * KIB:  # well below libxml2's own 10 MB buffer limit
            parser.feed(b"z" * chunk_size)
            fed += chunk_size
    assert fed <= limit + max(chunk_size, FEED_SLICE)


def test_oversized_stream_header_is_refused() -> None:
    parser = XMLStreamParser(max_element_bytes=100 * KIB)
    parser.feed(HEADER[:-1] + b" junk='")
    with pytest.raises(LimitExceeded):
        for _ in range(100):
            parser.feed(b"h" * (4 * KIB))


def test_many_small_stanzas_in_one_chunk_are_not_mistaken_for_a_large_one() -> None:
    limit = 1000
    stanza = b"<message><body>hello</body></message>"
    parser = started(max_element_bytes=limit)
    # 3.7 KB of stanzas, each far below the limit, then the start of one more.
    events = parser.feed(stanza * 100 + b"<message><body>")
    assert len(elements(events)) == 100
    assert len(elements(parser.feed(b"tail</body></message>"))) == 1


def test_keepalives_between_stanzas_do_not_count_towards_the_limit() -> None:
    parser = started(max_element_bytes=200)
    for _ in range(300):
        parser.feed(b" ")
        parser.feed(b"\n")
        assert len(elements(parser.feed(b"<presence/>"))) == 1


def test_keepalives_on_an_idle_stream_do_not_count_towards_the_limit() -> None:
    parser = started(max_element_bytes=100)
    for _ in range(5000):
        assert parser.feed(b" ") == []
    assert len(elements(parser.feed(b"\n<presence/>"))) == 1


def test_text_between_elements_counts_towards_the_limit() -> None:
    parser = started(max_element_bytes=100 * KIB)
    with pytest.raises(LimitExceeded):
        for _ in range(100):
            parser.feed(b"not a stanza " * 315)


def test_padded_start_tag_counts_towards_the_limit() -> None:
    parser = started(max_element_bytes=100 * KIB)
    parser.feed(b"<message")
    with pytest.raises(LimitExceeded):
        for _ in range(100):
            parser.feed(b" " * (4 * KIB))


@pytest.mark.parametrize("max_depth", [0, -1, 256, 1000])
def test_constructor_refuses_max_depth_outside_1_to_255(max_depth: int) -> None:
    with pytest.raises(ValueError, match="max_depth"):
        XMLStreamParser(max_depth=max_depth)


@pytest.mark.parametrize("max_element_bytes", [0, -1])
def test_constructor_refuses_max_element_bytes_below_1(max_element_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_element_bytes"):
        XMLStreamParser(max_element_bytes=max_element_bytes)


def test_constructor_accepts_the_boundaries() -> None:
    for max_depth in (1, 255):
        assert XMLStreamParser(max_depth=max_depth).max_depth == max_depth
    assert XMLStreamParser(max_element_bytes=1).max_element_bytes == 1


# -- memory, measured in a fresh process --------------------------------------------------------

_MEASURE_PRELUDE = """
import json
from txxmppnode.xmlparser import LimitExceeded, XMLStreamParser

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='example.com' id='s1' version='1.0' xml:lang='en'>"
)


def peak_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")
"""


def measure(script: str) -> dict[str, Any]:
    """Run *script* in a fresh interpreter and return the JSON it prints."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE_PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/self/status")
def test_50_mb_element_is_refused_with_bounded_memory() -> None:
    result = measure(
        """
        parser = XMLStreamParser()
        parser.feed(HEADER + b"<message to='romeo@example.net'><body>")
        chunk = b"a" * 65536
        base = peak_kib()
        fed = 0
        outcome = "accepted"
        try:
            while fed < 50 * 1024 * 1024:
                parser.feed(chunk)
                fed += len(chunk)
        except LimitExceeded as exc:
            outcome = exc.condition.value
        print(json.dumps({"outcome": outcome, "fed": fed, "growth_kib": peak_kib() - base}))
        """
    )
    assert result["outcome"] == "policy-violation"
    assert result["fed"] <= 8 * 1024 * 1024 + FEED_SLICE
    assert result["growth_kib"] < 64 * 1024


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/self/status")
def test_long_stream_of_stanzas_keeps_memory_flat() -> None:
    result = measure(
        """
        parser = XMLStreamParser()
        parser.feed(HEADER)
        template = (
            b"<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat'"
            b" id='m%d'><body>Message number %d, with some text to make it realistic.</body>"
            b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        def run(first, count):
            received = 0
            for number in range(first, first + count):
                parser.feed(b" ")
                received += len(parser.feed(template % (number, number)))
            return received
        run(0, 2000)
        base = peak_kib()
        received = run(2000, 100_000)
        root = parser._root
        print(json.dumps({
            "received": received,
            "growth_kib": peak_kib() - base,
            "children": len(root),
            "text": root.text,
        }))
        """
    )
    assert result["received"] == 100_000
    assert result["children"] == 0
    assert result["text"] is None
    assert result["growth_kib"] < 16 * 1024


# -- markup declarations inside the stream --------------------------------------------------------


@pytest.mark.parametrize(
    "declaration",
    [
        b"<!DOCTYPE x>",
        b"<!DOCTYPE stream:stream [<!ENTITY a 'b'>]>",
        b"<!ENTITY lol 'lol'>",
        b"<!ELEMENT message ANY>",
        b"<!ATTLIST message id ID #IMPLIED>",
    ],
)
@pytest.mark.parametrize("where", ["between stanzas", "inside a stanza"])
def test_markup_declaration_inside_the_stream_is_restricted_xml(
    declaration: bytes, where: str
) -> None:
    # RFC 6120 §11.1: a DTD subset or entity declaration anywhere on the stream is
    # restricted-xml, as it is before the stream header.
    before = b"<message id='ok'/>"
    if where == "between stanzas":
        data = before + declaration + b"<message/>"
    else:
        data = before + b"<message><body>" + declaration + b"</body></message>"
    for chunks in ([HEADER + data], [HEADER] + [data[i : i + 1] for i in range(len(data))]):
        error = refusal(chunks)
        assert type(error) is RestrictedXML
        assert error.condition is StreamErrorCondition.RESTRICTED_XML
    # What came before in the same chunk is delivered with the refusal.
    error = refusal(HEADER + data)
    assert [element.get("id") for element in elements(error.events_before)] == ["ok"]


def test_declaration_text_in_cdata_is_only_text() -> None:
    (message,) = elements(
        XMLStreamParser().feed(
            HEADER + b"<message><body><![CDATA[<!DOCTYPE html>]]></body></message>"
        )
    )
    assert isinstance(message, Message)
    assert message.body == "<!DOCTYPE html>"


# -- shapes of input: limits, and a cost linear in the bytes ------------------------------------


def attributes(count: int, prefix: bytes = b"a") -> bytes:
    return b"".join(b" %s%d=''" % (prefix, number) for number in range(count))


def chunkings(data: bytes) -> list[list[bytes]]:
    """*data* whole, in 7-byte pieces, and cut around every 1,000th byte."""
    return [
        [data],
        [data[i : i + 7] for i in range(0, len(data), 7)],
        split(data, list(range(1, len(data), 997))),
    ]


@pytest.mark.parametrize("limit", [1, 5, 300])
def test_attributes_up_to_max_attributes_are_accepted(limit: int) -> None:
    stanza = b"<message" + attributes(limit) + b"><body" + attributes(limit) + b"/></message>"
    for chunks in chunkings(stanza):
        (message,) = elements(feed_all(started(max_attributes=limit), chunks))
        assert len(message.attrib) == limit
        assert len(message[0].attrib) == limit


@pytest.mark.parametrize("limit", [1, 5, 300])
@pytest.mark.parametrize("on", ["top-level element", "child"])
def test_one_attribute_more_than_max_attributes_is_refused(limit: int, on: str) -> None:
    if on == "child":
        stanza = b"<message><body" + attributes(limit + 1) + b"/></message>"
    else:
        stanza = b"<message" + attributes(limit + 1) + b"/>"
    for chunks in chunkings(stanza):
        parser = started(max_attributes=limit)
        with pytest.raises(LimitExceeded, match=f"more than {limit} attributes") as excinfo:
            feed_all(parser, chunks)
        assert excinfo.value.condition is StreamErrorCondition.POLICY_VIOLATION


def test_namespace_declarations_count_as_attributes() -> None:
    declarations = b"".join(b" xmlns:p%d='urn:%d'" % (n, n) for n in range(3))
    (message,) = elements(
        started(max_attributes=4).feed(b"<message xmlns='jabber:client'" + declarations + b"/>")
    )
    assert len(message.nsmap) == 4
    with pytest.raises(LimitExceeded):
        started(max_attributes=4).feed(
            b"<message id='x'" + declarations + b" xmlns='jabber:client'/>"
        )


@pytest.mark.parametrize(
    "value",
    [b"a>b", b"x=y=z", b'"double"', b"&gt;&amp;", b"  spaced  ", b"\xc3\xa9\xf0\x9f\x98\x80", b""],
)
def test_attribute_values_with_markup_characters_are_counted_once(value: bytes) -> None:
    # '>' and '=' inside values, the other quote, references and any spacing around '='.
    one = b" a%d = '" + value.replace(b"'", b"&apos;") + b"'\n"
    stanza = b"<message" + b"".join(one % n for n in range(6)) + b"/>"
    for chunks in chunkings(stanza):
        assert len(elements(feed_all(started(max_attributes=6), chunks))) == 1
        with pytest.raises(LimitExceeded):
            feed_all(started(max_attributes=5), chunks)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
    limit=st.integers(min_value=1, max_value=30),
    quote=st.sampled_from([b"'", b'"']),
    space=st.sampled_from([b" ", b"\n", b"\t ", b"  \r\n"]),
    value=st.sampled_from([b"", b"v", b"a>b=c", b"x" * 50]),
    points=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_attribute_limit_holds_for_any_split(
    counts: list[int],
    limit: int,
    quote: bytes,
    space: bytes,
    value: bytes,
    points: list[int],
) -> None:
    # Elements with the given numbers of attributes, nested and side by side, in any split:
    # refused exactly when one of them has more than the limit.
    def element(count: int, inner: bytes) -> bytes:
        attrs = b"".join(
            space + b"n%d" % n + space[:1] + b"=" + quote + value + quote for n in range(count)
        )
        return b"<x" + attrs + space + b">" + inner + b"</x>"

    inner = b""
    for count in counts[1:]:
        inner = element(count, inner) + b"<y/>"
    data = b"<message>" + element(counts[0], inner) + b"</message>"
    parser = started(max_attributes=limit)
    if max(counts) > limit:
        with pytest.raises(LimitExceeded):
            feed_all(parser, split(data, points))
    else:
        assert len(elements(feed_all(parser, split(data, points)))) == 1


def test_over_long_start_tag_in_a_large_chunk_keeps_what_came_before() -> None:
    # The tag is found in the middle of a 64 KiB slice; everything before it is delivered.
    before = b"<message id='m%d'><body>hello there</body></message>"
    data = b"".join(before % n for n in range(1000))
    data += b"<message" + attributes(DEFAULT_MAX_ATTRIBUTES + 1) + b"/>" + data
    assert len(data) > FEED_SLICE
    error = refusal(HEADER + data)
    assert type(error) is LimitExceeded
    ids = [element.get("id") for element in elements(error.events_before)]
    assert ids == [f"m{n}" for n in range(1000)]


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/self/status")
def test_600k_attributes_are_refused_before_they_are_built() -> None:
    # 6.5 MB of attributes, under the size limit: libxml2 would build them all at once, at some
    # 200 bytes each, when the start tag's ">" arrived.
    result = measure(
        """
        data = b"<message" + b"".join(b" a%d=''" % n for n in range(600_000)) + b"/>"
        parser = XMLStreamParser()
        parser.feed(HEADER)
        base = peak_kib()
        outcome = "accepted"
        try:
            for offset in range(0, len(data), 65536):
                parser.feed(data[offset : offset + 65536])
        except LimitExceeded as exc:
            outcome = exc.condition.value
        print(json.dumps({"outcome": outcome, "size": len(data), "growth_kib": peak_kib() - base}))
        """
    )
    assert result["size"] > 6_000_000
    assert result["outcome"] == "policy-violation"
    assert result["growth_kib"] < 16 * 1024


@pytest.mark.parametrize("limit", [1, 3, 1000])
@pytest.mark.parametrize("of", ["top-level element", "child"])
def test_children_up_to_max_children_accepted_one_more_refused(limit: int, of: str) -> None:
    def stanza(children: int) -> bytes:
        kids = b"<a/>" * children
        return (
            b"<message>"
            + (kids if of == "top-level element" else b"<x>" + kids + b"</x>")
            + b"</message>"
        )

    for chunks in chunkings(stanza(limit)):
        (message,) = elements(feed_all(started(max_children=limit, max_elements=5000), chunks))
        parent = message if of == "top-level element" else message[0]
        assert len(parent) == limit
    for chunks in chunkings(stanza(limit + 1)):
        parser = started(max_children=limit, max_elements=5000)
        with pytest.raises(LimitExceeded, match=f"more than {limit} children") as excinfo:
            feed_all(parser, chunks)
        assert excinfo.value.condition is StreamErrorCondition.POLICY_VIOLATION


@pytest.mark.parametrize("limit", [1, 2, 5000])
def test_elements_up_to_max_elements_accepted_one_more_refused(limit: int) -> None:
    # The top-level element counts; spread over several levels.
    def stanza(total: int) -> bytes:
        rest = total - 1
        return b"<message>" + b"<x><y/></x>" * (rest // 2) + b"<z/>" * (rest % 2) + b"</message>"

    for chunks in chunkings(stanza(limit)):
        (message,) = elements(feed_all(started(max_elements=limit), chunks))
        assert sum(1 for _ in message.iter()) == limit
    for chunks in chunkings(stanza(limit + 1)):
        with pytest.raises(LimitExceeded, match=f"more than {limit} elements"):
            feed_all(started(max_elements=limit), chunks)


def test_element_limit_counts_per_top_level_element() -> None:
    parser = started(max_elements=3)
    assert len(elements(parser.feed(b"<message><a/><b/></message>" * 100))) == 100


@pytest.mark.parametrize("limit", [1, 10, 1000])
def test_total_attributes_up_to_the_limit_accepted_one_more_refused(limit: int) -> None:
    # Spread over elements, each within max_attributes, over several slices.
    def stanza(total: int) -> bytes:
        parts = [b"<a" + attributes(min(7, total - n)) + b"/>" for n in range(0, total, 7)]
        return b"<message>" + b"".join(parts) + b"</message>"

    for chunks in chunkings(stanza(limit)):
        (message,) = elements(feed_all(started(max_total_attributes=limit), chunks))
        assert sum(len(element.attrib) for element in message.iter()) == limit
    for chunks in chunkings(stanza(limit + 1)):
        with pytest.raises(LimitExceeded, match=f"more than {limit} attributes"):
            feed_all(started(max_total_attributes=limit), chunks)


def test_total_attributes_are_counted_across_slices_from_where_the_element_began() -> None:
    # The element starts in a slice too small to count in, then grows past the limit.
    parser = started(max_total_attributes=20_000)
    parser.feed(b"<message" + attributes(900) + b">")
    with pytest.raises(LimitExceeded, match="more than 20000 attributes"):
        for _ in range(40):
            parser.feed(b"<a" + attributes(600) + b"/>")


@pytest.mark.parametrize(("more", "refused"), [(10, False), (11, True)])
def test_namespace_declarations_count_towards_the_total(more: int, refused: bool) -> None:
    # 1,500 declarations, then 500 more (the limit exactly) or 550.
    declaring = b"<a" + b"".join(b" xmlns:p%d='urn:%d'" % (n, n) for n in range(50)) + b"/>"
    for first in (30, 3):  # in a slice large enough to count in, and in a small one
        parser = started(max_total_attributes=2000)
        rest = declaring * (30 - first + more) + b"</message>"
        if refused:
            with pytest.raises(LimitExceeded, match="attributes and namespace declarations"):
                feed_all(parser, [b"<message>" + declaring * first, rest])
        else:
            (message,) = elements(feed_all(parser, [b"<message>" + declaring * first, rest]))
            assert len(message) == 30 + more


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc/self/status")
def test_many_attributes_spread_over_elements_are_refused_with_bounded_memory() -> None:
    # Each element within max_attributes; 1.3 million attributes in 8 MB in all.
    result = measure(
        """
        element = b"<a" + b"".join(b" a%d=''" % n for n in range(1000)) + b"/>"
        parser = XMLStreamParser()
        parser.feed(HEADER + b"<message>")
        base = peak_kib()
        outcome = "accepted"
        try:
            for _ in range(1300):
                parser.feed(element)
        except LimitExceeded as exc:
            outcome = str(exc)
        print(json.dumps({"outcome": outcome, "growth_kib": peak_kib() - base}))
        """
    )
    assert "attributes" in result["outcome"]
    assert result["growth_kib"] < 64 * 1024


# The detach: lxml re-points each node whose namespace is declared on the stream header, and the
# cache it keeps for that grows by one entry per such node and is scanned for each: quadratic.
# The cache is allocated with PyMem, so tracemalloc sees it; the copy that replaces the detach
# for large elements allocates nothing of the kind.


def detach_peak(parser: XMLStreamParser, opening: bytes, body: bytes, closing: bytes) -> int:
    """Peak traced memory of the feed that completes an element (its body fed beforehand)."""
    parser.feed(opening)
    for offset in range(0, len(body), FEED_SLICE):
        parser.feed(body[offset : offset + FEED_SLICE])
    tracemalloc.start()
    try:
        (element,) = elements(parser.feed(closing))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert element.getparent() is None
    return peak


SHAPES_TO_DETACH = {
    "children in the default namespace": b"<a/>" * 20_000,
    "nested in the default namespace": b"<a><b/><c>x</c></a>" * 7_000,
    "attributes with the header's prefix": (b"<a" + attributes(500, b"stream:a") + b"/>") * 40,
}


@pytest.mark.parametrize("shape", SHAPES_TO_DETACH)
def test_detaching_a_large_element_does_no_work_per_node_and_earlier_node(shape: str) -> None:
    peak = detach_peak(started(), b"<message>", SHAPES_TO_DETACH[shape], b"</message>")
    # The quadratic path allocates its cache: 16 bytes per re-pointed node, 20,000 of them.
    assert peak < 64 * 1024, shape


def test_large_element_arrives_like_a_small_one() -> None:
    small = b"<message id='s'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
    large = small.replace(b"</message>", b"<a/>" * 1000 + b"</message>").replace(b"'s'", b"'l'")
    parser = started()
    first, second = elements(parser.feed(small + large))
    for element in (first, second):
        assert isinstance(element, Message)
        assert element.getparent() is None
        assert element.tail is None
        assert element.body == "hi"
        assert element[1].tag == "{urn:x}x"
        assert serialize(element).startswith(b'<message id="')
        assert b"ns0" not in serialize(element)
    assert len(second) == 1002
    # The small one was detached (lxml's ns0 prefix), the large one copied (a default namespace).
    assert first.nsmap == {"ns0": "jabber:client"}
    assert second.nsmap == {None: "jabber:client"}
    assert serialize(second) == serialize(first).replace(b'"s"', b'"l"').replace(
        b"</message>", b"<a/>" * 1000 + b"</message>"
    )
    root = parser._root
    assert root is not None
    assert len(root) == 0  # the original of the copy was freed, not kept


def test_large_elements_do_not_accumulate_in_the_document() -> None:
    parser = started()
    stanza = b"<message>" + b"<a/>" * 600 + b"</message>"
    for _ in range(50):
        assert len(elements(parser.feed(stanza * 3 + b"<message><a/>"))) == 3
        assert len(elements(parser.feed(b"</message>"))) == 1
        root = parser._root
        assert root is not None
        assert len(root) == 0


# -- the stream header ---------------------------------------------------------------------------


def test_header_attributes_are_read_in_one_walk() -> None:
    # attrib, items(), values() and get() look each value up by its name in the list of
    # attributes: copying them that way is quadratic in their number, before TLS and without
    # a timer able to stop it.
    reads: list[str] = []

    class Header(etree.ElementBase):
        @property
        def attrib(self) -> Any:
            reads.append("attrib")
            return super().attrib

        def items(self) -> Any:
            reads.append("items")
            return super().items()

        def values(self) -> Any:
            reads.append("values")
            return super().values()

        def get(self, key: Any, default: Any = None) -> Any:
            reads.append("get")
            return super().get(key, default)

    lookup = etree.ElementNamespaceClassLookup()
    lookup.get_namespace(STREAMS)["stream"] = Header
    parser = XMLStreamParser(lookup=lookup, max_header_attributes=1000)
    header = HEADER[:-1] + attributes(500) + b">"
    (event,) = parser.feed(header)
    assert isinstance(event, StreamHeader)
    assert len(event.attributes) == 504
    assert event.attributes[XML_LANG] == "en"
    assert event.attributes["a499"] == ""
    assert reads == []


@pytest.mark.parametrize("limit", [6, 10])
def test_header_attributes_up_to_the_limit_accepted_one_more_refused(limit: int) -> None:
    # HEADER has four attributes and two namespace declarations.
    accepted = HEADER[:-1] + attributes(limit - 6) + b">"
    for chunks in chunkings(accepted):
        (header,) = feed_all(XMLStreamParser(max_header_attributes=limit), chunks)
        assert isinstance(header, StreamHeader)
    refused = HEADER[:-1] + attributes(limit - 5) + b">"
    for chunks in chunkings(refused):
        error = refusal(chunks, max_header_attributes=limit)
        assert type(error) is LimitExceeded
        assert error.condition is StreamErrorCondition.POLICY_VIOLATION
        assert "stream header" in str(error)


def test_header_with_thousands_of_attributes_is_refused_early() -> None:
    header = HEADER[:-1] + attributes(30_000) + b">"
    parser = XMLStreamParser()
    fed = 0
    with pytest.raises(LimitExceeded):
        for offset in range(0, len(header), 4096):
            parser.feed(header[offset : offset + 4096])
            fed += 4096
    assert fed < 16 * 1024


def test_header_over_max_header_bytes_is_refused() -> None:
    padded = HEADER[:-1] + b" " * (20 * KIB)
    error = refusal([padded[i : i + 4096] for i in range(0, len(padded), 4096)])
    assert type(error) is LimitExceeded
    assert "stream header exceeds 16384 bytes" in str(error)
    # Below the limit (the XML declaration counts), it is accepted.
    header = HEADER[:-1] + b" " * (16 * KIB - len(HEADER) - 100) + b">"
    assert [type(event) for event in XMLStreamParser().feed(header)] == [StreamHeader]


@pytest.mark.parametrize(
    "option",
    [
        "max_attributes",
        "max_children",
        "max_elements",
        "max_total_attributes",
        "max_header_bytes",
        "max_header_attributes",
    ],
)
def test_constructor_refuses_limits_below_1(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        XMLStreamParser(**{option: 0})
    assert getattr(XMLStreamParser(**{option: 1}), option) == 1


# -- fuzzing -------------------------------------------------------------------------------------

TOKENS = [
    b"<",
    b">",
    b"/>",
    b"</",
    b"message",
    b"x:message",
    b"body",
    b" id='1'",
    b"'",
    b'"',
    b"=",
    b" ",
    b"\n",
    b"&",
    b";",
    b"&amp;",
    b"&#0;",
    b"&#233;",
    b"&foo;",
    b"<!--",
    b"-->",
    b"<?",
    b"?>",
    b"<![CDATA[",
    b"]]>",
    b"<!DOCTYPE",
    b"<!ENTITY",
    b"xmlns='urn:x'",
    b"xmlns:x='urn:x'",
    b"\xc3",
    b"\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b"\x00",
    b"</stream:stream>",
    b"<message><body>hi</body></message>",
    b"<a><a><a><a><a>",
]


def check_only_typed_refusals(parser: XMLStreamParser, chunks: list[bytes]) -> None:
    """Feed *chunks*; anything but a typed refusal fails the test."""
    received: list[Event] = []
    try:
        for chunk in chunks:
            received += parser.feed(chunk)
    except XMLStreamParseError as exc:
        assert isinstance(exc.condition, StreamErrorCondition)
        received += exc.events_before
        with pytest.raises(type(exc)) as again:
            parser.feed(b"<message/>")
        assert again.value is exc
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} escaped the parser: {exc!r}")
    for element in elements(received):
        assert element.getparent() is None
        assert element.tail is None
    assert received.count(StreamFooter()) <= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=400),
    points=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_fuzz_random_bytes_after_a_header(data: bytes, points: list[int]) -> None:
    check_only_typed_refusals(started(max_depth=8, max_element_bytes=512), split(data, points))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=60),
    points=st.lists(st.integers(min_value=0, max_value=600), max_size=10),
)
def test_fuzz_xml_like_tokens_after_a_header(tokens: list[bytes], points: list[int]) -> None:
    data = b"".join(tokens)
    check_only_typed_refusals(started(max_depth=8, max_element_bytes=512), split(data, points))


_MUTATION = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "duplicate"]),
    st.integers(min_value=0, max_value=len(STREAM) - 1),
    st.binary(min_size=1, max_size=4) | st.sampled_from(TOKENS),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(_MUTATION, min_size=1, max_size=5),
    points=st.lists(st.integers(min_value=0, max_value=len(STREAM) + 100), max_size=10),
)
def test_fuzz_mutated_stream(mutations: list[tuple[str, int, bytes]], points: list[int]) -> None:
    data = bytearray(STREAM)
    for operation, position, payload in mutations:
        position = min(position, len(data))
        if operation == "delete":
            del data[position : position + len(payload)]
        elif operation == "insert":
            data[position:position] = payload
        elif operation == "replace":
            data[position : position + len(payload)] = payload
        else:
            data[position:position] = data[position : position + 8]
    check_only_typed_refusals(XMLStreamParser(max_depth=8), split(bytes(data), points))
