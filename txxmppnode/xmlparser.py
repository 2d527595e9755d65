"""An incremental, hardened parser for the XML stream of RFC 6120.

The parser is a plain object with no I/O: :meth:`XMLStreamParser.feed` takes whatever bytes the
network delivered (any split, a multi-byte UTF-8 character may straddle two chunks) and returns
the events they complete:

* :class:`StreamHeader` -- the peer's ``<stream:stream>`` opening tag, once per stream;
* :class:`ElementReceived` -- each complete top-level element (stanzas and nonzas), already
  detached from the document so memory stays flat however long the stream lives;
* :class:`StreamFooter` -- the peer's ``</stream:stream>``.

Input that a stream must refuse raises a subclass of :class:`XMLStreamParseError` carrying the
stream error condition to send (RFC 6120 §4.9.3, §11):

* malformed XML, bad UTF-8, data after the footer: :class:`NotWellFormed`, ``not-well-formed``;
* a DOCTYPE, entity declaration, undeclared entity reference, comment or processing
  instruction: :class:`RestrictedXML`, ``restricted-xml``;
* an encoding declaration other than UTF-8: :class:`UnsupportedEncoding`,
  ``unsupported-encoding``;
* a top-level element larger than ``max_element_bytes`` or nested deeper than ``max_depth``:
  :class:`LimitExceeded`, ``policy-violation``.

Hardening: the prolog (everything before the stream header) is checked by this module before
lxml sees it, so no DOCTYPE, internal subset or entity declaration ever reaches libxml2; lxml
is further configured with DTD loading, network access and entity resolution of external
entities off.  Limits are enforced while the element streams in, not after it completed: the
input is fed to lxml in slices of :data:`FEED_SLICE` bytes, so the size limit holds to within
one slice.

After an error the parser stays failed (every further :meth:`~XMLStreamParser.feed` raises the
same error).  :meth:`~XMLStreamParser.reset` starts a new document, as the stream restarts after
STARTTLS and SASL require.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lxml import etree

from .errors import StreamErrorCondition
from .stanza import CLASS_LOOKUP

#: Default largest top-level element accepted, in bytes of input.
DEFAULT_MAX_ELEMENT_BYTES: Final = 8 * 1024 * 1024
#: Default deepest nesting accepted below the stream root (a stanza is at depth 1).
DEFAULT_MAX_DEPTH: Final = 64
#: libxml2 refuses nesting deeper than this on its own; ``max_depth`` must stay below it.
_LIBXML2_MAX_DEPTH: Final = 256
#: Input is handed to lxml in slices of this size, so limits trip within one slice.
FEED_SLICE: Final = 64 * 1024
#: The prolog (XML declaration and whitespace before the stream header) may not exceed this.
_MAX_PROLOG_BYTES: Final = 4096

_BOM: Final = b"\xef\xbb\xbf"
_WHITESPACE: Final = b" \t\r\n"
_ENCODING_DECL = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")


class XMLStreamParseError(ValueError):
    """The peer sent input the stream must refuse.

    :ivar condition: the stream error condition to send before closing the stream.
    :ivar events_before: events completed by the same input before the offending part; they are
        valid and may still be processed.
    """

    condition: StreamErrorCondition = StreamErrorCondition.NOT_WELL_FORMED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events_before: list[Event] = []


class NotWellFormed(XMLStreamParseError):
    """The input is not well-formed XML (or not UTF-8, or continues after the footer)."""

    condition = StreamErrorCondition.NOT_WELL_FORMED


class RestrictedXML(XMLStreamParseError):
    """The input uses XML features RFC 6120 §11.1 forbids on a stream."""

    condition = StreamErrorCondition.RESTRICTED_XML


class UnsupportedEncoding(XMLStreamParseError):
    """The XML declaration names an encoding other than UTF-8."""

    condition = StreamErrorCondition.UNSUPPORTED_ENCODING


class LimitExceeded(XMLStreamParseError):
    """A top-level element is too large or too deeply nested."""

    condition = StreamErrorCondition.POLICY_VIOLATION


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """The peer opened its stream.

    :ivar tag: the root element's name in Clark notation (``{namespace}localname``).
    :ivar attributes: its attributes, keys in Clark notation (``xml:lang`` is
        ``{http://www.w3.org/XML/1998/namespace}lang``).
    :ivar nsmap: the namespace declarations in scope (``None`` is the default namespace).
    """

    tag: str
    attributes: dict[str, str]
    nsmap: dict[str | None, str]


@dataclass(slots=True)  # not frozen: this is created per stanza, and frozen costs 80 ns each
class ElementReceived:
    """A complete top-level element, detached from the stream document."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class StreamFooter:
    """The peer closed its stream with ``</stream:stream>``."""


Event = StreamHeader | ElementReceived | StreamFooter


class XMLStreamParser:
    """Parse one side of an XML stream incrementally; see the module documentation.

    :param max_element_bytes: largest top-level element accepted, in bytes of input.
    :param max_depth: deepest nesting accepted below the stream root (1 to 255).
    :param lookup: lxml element class lookup that decides the Python class of each element;
        the default builds :class:`~txxmppnode.stanza.Message`, ``Presence`` and ``IQ``.
    """

    def __init__(
        self,
        *,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        lookup: etree.ElementClassLookup = CLASS_LOOKUP,
    ) -> None:
        if max_element_bytes < 1:
            raise ValueError("max_element_bytes must be positive")
        if not 1 <= max_depth < _LIBXML2_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 1 and {_LIBXML2_MAX_DEPTH - 1}")
        self.max_element_bytes = max_element_bytes
        self.max_depth = max_depth
        self._lookup = lookup
        self.reset()

    def reset(self) -> None:
        """Forget the current document and expect a new stream header (a stream restart)."""
        self._lxml = etree.XMLPullParser(
            events=("start", "end", "comment", "pi"),
            encoding="utf-8",
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            collect_ids=False,
        )
        self._lxml.set_element_class_lookup(self._lookup)
        self._prolog: bytearray | None = bytearray()
        self._root: etree._Element | None = None
        self._depth = 0
        self._open_element_bytes = 0
        self._ended = False
        self._failure: XMLStreamParseError | None = None

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next bytes of the stream and return the events they complete.

        :raises XMLStreamParseError: if the input must be refused; the parser stays failed.
        """
        if self._failure is not None:
            raise self._failure
        events: list[Event] = []
        try:
            if self._prolog is not None or self._ended:
                data = self._outside_document(data)
            if len(data) <= FEED_SLICE:
                self._feed_slice(data, events)
            else:
                for offset in range(0, len(data), FEED_SLICE):
                    self._feed_slice(data[offset : offset + FEED_SLICE], events)
        except XMLStreamParseError as failure:
            failure.events_before = events
            self._failure = failure
            raise
        return events

    def _outside_document(self, data: bytes) -> bytes:
        """Check input before the stream header or after the footer; return what lxml gets."""
        if self._ended:
            if data.strip(_WHITESPACE):
                raise NotWellFormed("data after the end of the stream")
            return b""
        assert self._prolog is not None
        self._prolog += data
        if not self._prolog_complete(self._prolog):
            if len(self._prolog) > _MAX_PROLOG_BYTES:
                raise NotWellFormed("no stream header within the first 4 KiB")
            return b""
        data = bytes(self._prolog)
        self._prolog = None
        return data

    def _feed_slice(self, chunk: bytes, events: list[Event]) -> None:
        if self._ended:
            self._outside_document(chunk)
            return
        try:
            self._lxml.feed(chunk)
        except etree.XMLSyntaxError as exc:
            # Events parsed before the error come first: a depth limit that libxml2
            # enforced on its own must still be reported as our policy violation.
            self._take_events(events)
            raise _classify(exc) from None
        if self._take_events(events):
            # The stream header or a top-level element was completed in this slice.  How much
            # of the rest of the slice the next element has is unknown: it is not charged, so
            # the size limit holds to within one slice and never refuses a smaller element.
            self._open_element_bytes = 0
        elif not self._ended and (
            self._open_element_bytes or self._depth >= 2 or chunk.strip(_WHITESPACE)
        ):
            # Charged even when no element has started yet: lxml reports an element only once
            # its start tag is complete, and a start tag (the stream header's too) is as long
            # as the peer makes it.  Only whitespace keepalives between elements are free.
            self._open_element_bytes += len(chunk)
            if self._open_element_bytes > self.max_element_bytes:
                raise LimitExceeded(f"top-level element exceeds {self.max_element_bytes} bytes")

    def _take_events(self, events: list[Event]) -> bool:
        """Turn lxml's events into ours; true if the header or a top-level element completed."""
        # The hot loop of the parser: locals instead of attribute look-ups on purpose.
        depth = self._depth
        deepest = self.max_depth + 1
        root = self._root
        boundary = False
        try:
            for action, element in self._lxml.read_events():
                if action == "start":
                    depth += 1
                    if depth > deepest:
                        raise LimitExceeded(f"elements nested deeper than {self.max_depth}")
                    if depth == 1:
                        boundary = True
                        root = self._root = element
                        events.append(
                            StreamHeader(str(element.tag), dict(element.attrib), element.nsmap)
                        )
                elif action == "end":
                    depth -= 1
                    if depth == 1:
                        tag = element.tag
                        if tag[0] != "{" and ":" in tag:  # type: ignore[index,operator]
                            # libxml2 reports an undeclared prefix only when a document is
                            # closed, which a stream never is.  Checked on top-level names
                            # only: walking every nested name would halve the throughput.
                            raise NotWellFormed(f"undeclared namespace prefix in {tag!r}")
                        # Detached, so memory stays flat.  lxml declares the inherited default
                        # namespace on it with a generated prefix (``ns0:``): the same XML
                        # names, and :func:`~txxmppnode.xmlwriter.serialize` writes it plainly.
                        root.remove(element)  # type: ignore[union-attr]
                        if element.tail is not None:  # whitespace after it, not part of it
                            element.tail = None
                        events.append(ElementReceived(element))
                        boundary = True
                    elif depth == 0:
                        self._ended = True
                        events.append(StreamFooter())
                elif action == "comment":
                    raise RestrictedXML("comments are not allowed on an XML stream")
                else:
                    raise RestrictedXML("processing instructions are not allowed on an XML stream")
        finally:
            self._depth = depth
            # Whitespace between top-level elements lands in the root's text once the
            # element before it is gone: drop it, so the document never grows.
            if root is not None and root.text is not None:
                root.text = None
        return boundary

    @staticmethod
    def _prolog_complete(prolog: bytearray) -> bool:
        """Check the bytes before the stream header; true once the header's ``<`` is reached.

        Raises on a DOCTYPE, comment or processing instruction, so none reaches libxml2.
        """
        buf = bytes(prolog)
        if buf.startswith(_BOM):
            buf = buf[len(_BOM) :]
        elif _BOM.startswith(buf):
            return False
        buf = buf.lstrip(_WHITESPACE)
        if buf.startswith(b"<?xml") and len(buf) > 5 and buf[5:6] in (b" ", b"\t", b"\r", b"\n"):
            end = buf.find(b"?>")
            if end < 0:
                return False
            match = _ENCODING_DECL.search(buf, 0, end)
            if match and match.group(1).lower() not in (b"utf-8", b"utf8"):
                raise UnsupportedEncoding(
                    f"encoding {match.group(1).decode('ascii', 'replace')!r} declared; "
                    "XMPP streams are UTF-8"
                )
            buf = buf[end + 2 :].lstrip(_WHITESPACE)
        elif b"<?xml ".startswith(buf[:6]) and len(buf) < 6:
            return False
        if len(buf) < 2:
            if buf and buf != b"<":
                raise NotWellFormed("the stream does not start with an XML element")
            return False
        if buf[:1] != b"<":
            raise NotWellFormed("the stream does not start with an XML element")
        if buf[1:2] == b"!":
            raise RestrictedXML("DOCTYPE declarations and comments are not allowed")
        if buf[1:2] == b"?":
            raise RestrictedXML("processing instructions are not allowed")
        return True


def _classify(exc: etree.XMLSyntaxError) -> XMLStreamParseError:
    """Map a libxml2 error to the refusal it stands for."""
    if exc.code in (etree.ErrorTypes.ERR_UNDECLARED_ENTITY, etree.ErrorTypes.WAR_UNDECLARED_ENTITY):
        return RestrictedXML(f"entity references other than the predefined ones: {exc.msg}")
    return NotWellFormed(f"not well-formed XML: {exc.msg}")
