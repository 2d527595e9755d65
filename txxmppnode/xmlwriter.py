"""Serialisation of our side of the XML stream: header, elements and footer, as UTF-8 bytes.

Elements go out in the stream's namespace context: ``jabber:client`` is the default namespace
declared by the header, so a stanza's own redundant ``xmlns="jabber:client"`` is left out, and
payloads declare their namespace as a default namespace (no ``ns0:`` prefixes, which some
servers and many humans reading logs cope with badly).

Everything that could not be carried as XML fails with :class:`ValueError` before a byte is
produced: lxml refuses forbidden characters (NUL, most C0 controls, U+FFFE/U+FFFF, lone
surrogates) when they are put into an element, and :func:`stream_header` checks its values.
"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree

from . import namespaces

STREAM_FOOTER: Final = b"</stream:stream>"

# XML 1.0 §2.2 Char, minus nothing: anything outside it cannot be written at all.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;",
     "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)  # fmt: skip
_GENERATED_PREFIX: Final = b" xmlns:ns"
_CLIENT_DECL: Final = b' xmlns="jabber:client"'


def escape_attribute(value: str) -> str:
    """Escape *value* for a single-quoted attribute, keeping tabs and newlines intact.

    :raises ValueError: if *value* holds a character XML cannot carry.
    """
    bad = _NOT_XML_CHAR.search(value)
    if bad:
        raise ValueError(f"character {bad.group()!r} cannot be written in XML")
    return value.translate(_ATTR_ESCAPES)


def stream_header(
    *,
    to: str,
    from_: str | None = None,
    lang: str | None = "en",
    version: str = "1.0",
    id_: str | None = None,
) -> bytes:
    """Our ``<stream:stream>`` opening tag, with the XML declaration (RFC 6120 §4.7).

    :param to: the domain we connect to.
    :param from_: our bare JID, sent once the stream is secured (RFC 6120 §4.7.1).
    :raises ValueError: if a value holds a character XML cannot carry.
    """
    attributes = [("to", to), ("from", from_), ("id", id_), ("version", version)]
    if lang is not None:
        attributes.append(("xml:lang", lang))
    rendered = "".join(
        f" {name}='{escape_attribute(str(value))}'"
        for name, value in attributes
        if value is not None
    )
    return (
        f"<?xml version='1.0'?><stream:stream xmlns='{namespaces.CLIENT}'"
        f" xmlns:stream='{namespaces.STREAMS}'{rendered}>"
    ).encode()


def serialize(element: etree._Element) -> bytes:
    """The UTF-8 bytes of *element* as a child of our stream.

    The element's tail (text after it) is not written.
    """
    data: bytes = etree.tostring(element, encoding="UTF-8", with_tail=False)
    if _GENERATED_PREFIX in data or _has_unqualified_child(element):
        data = etree.tostring(_with_default_namespaces(element), encoding="UTF-8", with_tail=False)
    # Drop the stanza's own declaration of the namespace the stream header already declared.
    # libxml2 writes namespace declarations first, so it follows the name directly.
    name_end = data.find(b" ")
    if 0 < name_end < data.find(b">") and data.startswith(_CLIENT_DECL, name_end):
        end = name_end + len(_CLIENT_DECL)
        if data[end : end + 1] in (b" ", b">", b"/"):
            data = data[:name_end] + data[end:]
    return data


def _has_unqualified_child(element: etree._Element) -> bool:
    """True if an element below *element* has no namespace.

    libxml2 writes such a child of a namespaced parent without ``xmlns=""``, so the receiver
    would read it in the parent's namespace.
    """
    # lxml's "{}*" selects the elements in no namespace (and no comments or PIs), in C.
    for _ in element.iterdescendants("{}*"):
        return True
    return False


def _with_default_namespaces(element: etree._Element) -> etree._Element:
    """A copy of *element* where each namespace change is a default-namespace declaration."""

    def copy(source: etree._Element, parent: etree._Element | None) -> etree._Element:
        namespace = etree.QName(source).namespace
        parent_namespace = None if parent is None else etree.QName(parent).namespace
        nsmap: dict[None, str] | None = None
        if namespace and namespace != parent_namespace:
            nsmap = {None: namespace}
        elif not namespace and parent_namespace:
            # Undeclare the parent's default namespace, or the element would inherit it.
            nsmap = {None: ""}
        attrib = dict(source.attrib)
        if parent is None:
            target = etree.Element(source.tag, attrib, nsmap=nsmap)
        else:
            target = etree.SubElement(parent, source.tag, attrib, nsmap=nsmap)
        target.text = source.text
        target.tail = source.tail
        for child in source:
            if isinstance(child.tag, str):
                copy(child, target)
        return target

    return copy(element, None)
