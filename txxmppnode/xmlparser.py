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
* a DOCTYPE or other markup declaration (before the header or anywhere in the stream), an
  undeclared entity reference, comment or processing instruction: :class:`RestrictedXML`,
  ``restricted-xml``;
* an encoding declaration other than UTF-8: :class:`UnsupportedEncoding`,
  ``unsupported-encoding``;
* a top-level element larger than ``max_element_bytes``, nested deeper than ``max_depth``,
  with more than ``max_elements`` elements or ``max_total_attributes`` attributes, an element
  with more than ``max_attributes`` attributes or ``max_children`` children, a stream header
  over ``max_header_bytes`` or ``max_header_attributes``: :class:`LimitExceeded`,
  ``policy-violation``.

Hardening: the prolog (everything before the stream header) is checked by this module before
lxml sees it, so no DOCTYPE, internal subset or entity declaration ever reaches libxml2; lxml
is further configured with DTD loading, network access and entity resolution of external
entities off.  Limits are enforced while the element streams in, not after it completed: the
input is fed to lxml in slices of :data:`FEED_SLICE` bytes, so the size limit holds to within
one slice.

Every shape of input costs time linear in its bytes, and a top-level element's memory is bounded
by its limits rather than by how the peer shapes it (``benchmarks/adversarial.py`` measures both):

* libxml2 builds a start tag's attributes all at once, when its ``>`` arrives, at some 200 bytes
  of memory per attribute.  :class:`~txxmppnode.start_tags.StartTagScanner` therefore counts
  the attributes of each start tag in the raw bytes before lxml sees them, so
  ``<message a0='' a1='' ...>`` is refused before libxml2 allocates anything for it.
* lxml's detach (``remove()``) re-points every node whose namespace is declared outside the
  element -- the stream's default ``jabber:client`` namespace, inherited by every child -- and
  its cache of re-pointed namespaces never hits for such nodes: each of them scans all earlier
  misses, which is quadratic (120,000 empty children took seconds).  Elements that may have
  more than a few hundred such nodes are copied instead (libxml2's copy is linear) and the
  original is freed without being moved; smaller ones are still detached, which is cheaper
  than a copy up to there.
* lxml's ``attrib`` and ``items()`` look each attribute's value up by its name, walking the list
  of attributes again: copying the stream header's attributes that way was quadratic in their
  number.  They are read through XPath (``@*``), one walk, and their number is bounded anyway.

After an error the parser stays failed (every further :meth:`~XMLStreamParser.feed` raises the
same error).  :meth:`~XMLStreamParser.reset` starts a new document, as the stream restarts after
STARTTLS and SASL require.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Final

from lxml import etree

from .errors import StreamErrorCondition
from .stanza import CLASS_LOOKUP, IQ, Message, Presence
from .start_tags import ATTRIBUTE_MIN_BYTES, StartTagScanner, TooManyAttributes

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
#: Default most attributes on one element, namespace declarations included (XMPP uses < 20).
DEFAULT_MAX_ATTRIBUTES: Final = 1024
#: Default most child elements of one element (a roster of 65,536 contacts still fits).
DEFAULT_MAX_CHILDREN: Final = 65_536
#: Default most elements in one top-level element, itself included.
DEFAULT_MAX_ELEMENTS: Final = 131_072
#: Default most attributes and namespace declarations in one top-level element, all its
#: elements together.
DEFAULT_MAX_TOTAL_ATTRIBUTES: Final = 65_536
#: Default largest stream header (with the XML declaration before it), in bytes.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024
#: Default most attributes and namespace declarations on the stream header (servers send < 10).
DEFAULT_MAX_HEADER_ATTRIBUTES: Final = 32
#: A top-level element is copied rather than detached once it may hold more nodes than this
#: whose namespace is declared on the stream header (see the module documentation): detaching
#: costs about n * n / 2 pointer comparisons for them, copying about 0.2 µs per node.
_COPY_ABOVE: Final = 512

_BOM: Final = b"\xef\xbb\xbf"
_WHITESPACE: Final = b" \t\r\n"
_ENCODING_DECL = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")
#: ``<!`` and a capital letter inside the document: DOCTYPE, ENTITY, ELEMENT, ATTLIST, NOTATION.
_MARKUP_DECLARATION = re.compile(rb"<![A-Z]")
#: How much of what followed the last ``<`` is kept to recognise a markup declaration.
_HISTORY: Final = 64
#: The attributes of an element, in one walk (names in Clark notation).
_ATTRIBUTE_NODES: Final = etree.XPath("@*")


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
    """The stream header or a top-level element exceeds one of the parser's limits."""

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

    Every limit is refused with :class:`LimitExceeded` (``policy-violation``):

    :param max_element_bytes: largest top-level element accepted, in bytes of input.
    :param max_depth: deepest nesting accepted below the stream root (1 to 255).
    :param max_attributes: most attributes on one element (the stream header included),
        namespace declarations included; counted in the raw input, so an over-long start tag
        is refused before lxml builds it.
    :param max_children: most child elements of one element; checked when the element ends.
    :param max_elements: most elements in one top-level element, itself included.
    :param max_total_attributes: most attributes and namespace declarations in one top-level
        element, all its elements together.  Counted once the element is larger than five
        bytes per attribute allowed, and the namespace declarations of its later slices are
        counted by the word ``xmlns``: the limit holds to within one 64 KiB slice.
    :param max_header_bytes: largest stream header, with the XML declaration before it;
        holds to within one 64 KiB slice.
    :param max_header_attributes: most attributes and namespace declarations on the stream
        header.
    :param lookup: lxml element class lookup that decides the Python class of each element;
        the default builds :class:`~txxmppnode.stanza.Message`, ``Presence`` and ``IQ``.
    """

    def __init__(
        self,
        *,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
        max_children: int = DEFAULT_MAX_CHILDREN,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        max_total_attributes: int = DEFAULT_MAX_TOTAL_ATTRIBUTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_header_attributes: int = DEFAULT_MAX_HEADER_ATTRIBUTES,
        lookup: etree.ElementClassLookup = CLASS_LOOKUP,
    ) -> None:
        if not 1 <= max_depth < _LIBXML2_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 1 and {_LIBXML2_MAX_DEPTH - 1}")
        for name, value in (
            ("max_element_bytes", max_element_bytes),
            ("max_attributes", max_attributes),
            ("max_children", max_children),
            ("max_elements", max_elements),
            ("max_total_attributes", max_total_attributes),
            ("max_header_bytes", max_header_bytes),
            ("max_header_attributes", max_header_attributes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive")
        self.max_element_bytes = max_element_bytes
        self.max_depth = max_depth
        self.max_attributes = max_attributes
        self.max_children = max_children
        self.max_elements = max_elements
        self.max_total_attributes = max_total_attributes
        self.max_header_bytes = max_header_bytes
        self.max_header_attributes = max_header_attributes
        #: Attributes are counted once the slices an element spans have room for too many.
        self._tally_from = ATTRIBUTE_MIN_BYTES * (max_total_attributes + 1)
        self._lookup = lookup
        #: Classes the lookup gives only to elements in a namespace (so without a prefix that
        #: could be undeclared): their names need no check.
        self._namespaced: frozenset[type] = (
            frozenset((Message, Presence, IQ)) if lookup is CLASS_LOOKUP else frozenset()
        )
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
        self._start_tags = StartTagScanner(self.max_attributes, self.max_header_attributes)
        #: The start of what followed the last "<" of earlier slices (see :meth:`_parse`).
        self._previous = b""
        #: ``prefix:`` of each namespace the header declares with a prefix.
        self._header_prefixes: tuple[bytes, ...] = ()
        # The top-level element being parsed: its elements, its attributes (counted only while
        # ``_tallying``), and how often the header's prefixes occurred in earlier slices.
        self._elements = 0
        self._attributes = 0
        self._tallying = False
        self._prefixed_before = 0

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
            self._start_tags.scan(chunk)
        except TooManyAttributes as over:
            # What precedes the offending tag is valid: parse it, for ``events_before``.
            if over.start > 0:
                self._parse(chunk[: over.start], events)
            if over.header:
                raise LimitExceeded(
                    f"stream header has more than {self.max_header_attributes} attributes"
                    " and namespace declarations"
                ) from None
            raise LimitExceeded(
                f"an element has more than {self.max_attributes} attributes"
            ) from None
        self._parse(chunk, events)

    def _parse(self, chunk: bytes, events: list[Event]) -> None:
        """Hand *chunk* to lxml and turn what it completed into events."""
        if self._depth >= 2:  # a top-level element continues
            if not self._tallying and (
                # Its bytes so far (its first slice, uncharged, is at most FEED_SLICE), these:
                self._open_element_bytes + FEED_SLICE + len(chunk) >= self._tally_from
            ):
                self._start_tally()
            if self._tallying:
                # lxml reports no namespace declaration without an event for each, which
                # would cost every stanza: those in these bytes are counted here, by the word.
                self._attributes += chunk.count(b"xmlns")
                self._check_total()
        try:
            self._lxml.feed(chunk)
        except etree.XMLSyntaxError as exc:
            # Events parsed before the error come first: a depth limit that libxml2
            # enforced on its own must still be reported as our policy violation.
            self._take_events(chunk, events)
            raise _classify(exc, self._previous + chunk) from None
        # libxml2 takes ``<!DOCTYPE ...`` in the document for a start tag, and fails on it only
        # once its ">" arrives: keep what followed the last "<", to tell which it was then.
        last = chunk.rfind(b"<")
        if last >= 0:
            self._previous = chunk[last : last + _HISTORY]
        elif len(self._previous) < _HISTORY:
            self._previous = (self._previous + chunk)[:_HISTORY]
        if self._take_events(chunk, events):
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
            if self._root is None and self._open_element_bytes > self.max_header_bytes:
                raise LimitExceeded(f"stream header exceeds {self.max_header_bytes} bytes")
            if self._open_element_bytes > self.max_element_bytes:
                raise LimitExceeded(f"top-level element exceeds {self.max_element_bytes} bytes")

    def _start_tally(self) -> None:
        """Count the attributes of the top-level element in progress from now on.

        Called once the bytes it may have could hold more attributes than allowed (each takes
        five bytes at least): below that, counting would only cost time.  What lxml built of
        the element so far is counted once, here, namespace declarations included.
        """
        assert self._root is not None
        self._tallying = True
        self._attributes = _count_attributes(self._root[-1])
        self._check_total()

    def _take_events(self, chunk: bytes, events: list[Event]) -> bool:
        """Turn lxml's events into ours; true if the header or a top-level element completed."""
        # The hot loop of the parser: locals instead of attribute look-ups, and the rare checks
        # behind one comparison (``gate``), on purpose.  A nested start tag takes the slow way
        # once its top-level element has more elements than the gate: ``max_depth`` (an
        # element that deep has that many ancestors in it), ``max_elements`` if smaller, or
        # at once (-1) while attributes are being counted.
        depth = self._depth
        elements = self._elements
        most_children = self.max_children
        namespaced = self._namespaced
        normal_gate = min(self.max_depth, self.max_elements)
        start_gate = -1 if len(chunk) >= self._tally_from else normal_gate
        gate = -1 if self._tallying else normal_gate
        # A top-level element is detached if its elements and the header's prefixes in the
        # slices it spans (bounding its nodes whose namespace is declared on the header) stay
        # within _COPY_ABOVE: that is its budget for elements.  An element within it has fewer
        # than max_children children, too.
        cap = min(_COPY_ABOVE, most_children)
        base = cap - self._count_prefixed(chunk)
        budget = base - self._prefixed_before  # for an element that began in an earlier slice
        root = self._root
        boundary = False
        copied = 0
        element = None
        try:
            for action, element in self._lxml.read_events():
                if action == "start":
                    depth += 1
                    if depth > 2:
                        elements += 1
                        if elements > gate:
                            self._nested_start(element, depth, elements, gate < 0)
                    elif depth == 2:  # a top-level element starts
                        elements = 1
                        budget = base
                        gate = start_gate
                        if gate < 0:
                            self._attributes = 0
                            self._tally(element)
                    else:
                        boundary = True
                        root = self._root = element
                        events.append(self._header(element))
                elif action == "end":
                    depth -= 1
                    if depth > 1:
                        # An element can have more children than its top-level element has
                        # elements only if it has none: len() (a walk) is rarely needed.
                        if elements > most_children and len(element) > most_children:
                            raise self._too_many_children()
                    elif depth == 1:
                        # libxml2 reports an undeclared prefix only when a document is closed,
                        # which a stream never is.  Checked on top-level names only: walking
                        # every nested name would halve the throughput.  A stanza class means
                        # a namespace, and reading the tag builds a string: skipped for those.
                        if type(element) not in namespaced:
                            tag = element.tag
                            if tag[0] != "{" and ":" in tag:  # type: ignore[index,operator]
                                raise NotWellFormed(f"undeclared namespace prefix in {tag!r}")
                        if gate < 0:  # its attributes were counted: the exact count decides
                            self._attributes = _count_attributes(element)
                            self._check_total()
                        if element.tail is not None:  # whitespace after it, not part of it
                            element.tail = None
                        if elements <= budget:
                            # Detached, so memory stays flat.  lxml declares the inherited
                            # default namespace on it with a generated prefix (``ns0:``): the
                            # same XML names, and :func:`~txxmppnode.xmlwriter.serialize`
                            # writes it plainly.
                            root.remove(element)  # type: ignore[union-attr]
                            events.append(ElementReceived(element))
                        else:
                            events.append(self._copy(element, elements))
                            copied += 1
                        boundary = True
                    else:
                        self._ended = True
                        events.append(StreamFooter())
                elif action == "comment":
                    raise RestrictedXML("comments are not allowed on an XML stream")
                else:
                    raise RestrictedXML("processing instructions are not allowed on an XML stream")
        finally:
            self._depth = depth
            self._elements = elements
            self._tallying = depth >= 2 and gate < 0
            # Whitespace between top-level elements lands in the root's text once the
            # element before it is gone: drop it, so the document never grows.
            if root is not None and root.text is not None:
                root.text = None
        if depth >= 2:  # a top-level element continues in the next slice
            self._prefixed_before = cap - budget
        if copied:
            # The copied originals are the root's first children (any element still in
            # progress comes after them).  With no Python proxy left on them, lxml frees them
            # outright instead of moving them out of the document.
            element = None
            assert root is not None
            del root[:copied]
        return boundary

    def _copy(self, element: etree._Element, elements: int) -> ElementReceived:
        """Check a large top-level element's own children; copy it (in linear time: the
        original is freed, not detached, by :meth:`_take_events`)."""
        if elements > self.max_children and len(element) > self.max_children:
            raise self._too_many_children()
        return ElementReceived(copy.copy(element))

    def _nested_start(
        self, element: etree._Element, depth: int, elements: int, tallying: bool
    ) -> None:
        """The slow way for a nested start tag (see :meth:`_take_events`)."""
        if depth > self.max_depth + 1:
            raise LimitExceeded(f"elements nested deeper than {self.max_depth}")
        if elements > self.max_elements:
            raise LimitExceeded(f"top-level element has more than {self.max_elements} elements")
        if tallying:
            self._tally(element)

    def _tally(self, element: etree._Element) -> None:
        self._attributes += len(element.attrib)
        self._check_total()

    def _check_total(self) -> None:
        if self._attributes > self.max_total_attributes:
            raise LimitExceeded(
                f"top-level element has more than {self.max_total_attributes} attributes"
                " and namespace declarations"
            )

    def _too_many_children(self) -> LimitExceeded:
        return LimitExceeded(f"an element has more than {self.max_children} children")

    def _header(self, element: etree._Element) -> StreamHeader:
        """The header event for the root *element*."""
        # Not dict(attrib) nor items(): lxml looks each value up by its name in the list of
        # attributes, a quadratic walk.  XPath hands over the attribute nodes themselves.
        # (Their number was checked in the raw input, with the namespace declarations.)
        attributes = {str(node.attrname): str(node) for node in _ATTRIBUTE_NODES(element)}
        nsmap = element.nsmap
        self._header_prefixes = tuple(prefix.encode() + b":" for prefix in nsmap if prefix)
        return StreamHeader(str(element.tag), attributes, nsmap)

    def _count_prefixed(self, chunk: bytes) -> int:
        """How often the header's namespace prefixes occur in *chunk* (an upper bound of the
        names in *chunk* whose namespace is declared on the header, apart from the default)."""
        found = 0
        for prefix in self._header_prefixes:
            if chunk.find(prefix) >= 0:  # a miss skips through the chunk, count() does not
                found += chunk.count(prefix)
        return found

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


def _count_attributes(element: etree._Element) -> int:
    """The attributes and namespace declarations of *element* and all below it, exactly."""
    count = 0
    for event, item in etree.iterwalk(element, events=("start", "start-ns")):
        count += len(item.attrib) if event == "start" else 1  # type: ignore[union-attr]
    return count


def _classify(exc: etree.XMLSyntaxError, data: bytes) -> XMLStreamParseError:
    """Map a libxml2 error about *data* (the slice it failed on) to the refusal it stands for."""
    if exc.code in (etree.ErrorTypes.ERR_UNDECLARED_ENTITY, etree.ErrorTypes.WAR_UNDECLARED_ENTITY):
        return RestrictedXML(f"entity references other than the predefined ones: {exc.msg}")
    if exc.code == etree.ErrorTypes.ERR_NAME_REQUIRED and _MARKUP_DECLARATION.search(data):
        # libxml2 sees ``<!DOCTYPE`` inside the document as a start tag without a name.
        return RestrictedXML("DOCTYPE and other markup declarations are not allowed")
    return NotWellFormed(f"not well-formed XML: {exc.msg}")
