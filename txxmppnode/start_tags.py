"""Counting the attributes of start tags in raw XML bytes, before libxml2 builds them.

libxml2 waits for a start tag's ``>`` and then builds all its attributes at once, at some 200
bytes of memory per attribute: a limit checked on lxml's events would come after the memory
was spent (a 7 MB ``<message a0='' a1='' ...>`` grew the process by 180 MB).
:class:`StartTagScanner` looks at the bytes first, at a cost linear in them and mostly spent in
C, and raises :class:`TooManyAttributes` so that the parser in :mod:`txxmppnode.xmlparser`
refuses such a tag before lxml sees it.

This module is protocol logic only (bytes in, a count or an exception out); it knows nothing of
lxml or of the stream.
"""

from __future__ import annotations

import re
from typing import Final

#: The fewest bytes an attribute takes (a space and ``a=''``): n bytes hold at most n / 5.
ATTRIBUTE_MIN_BYTES: Final = 5

# The scanner's grammar is a superset of XML's for a start tag: a name is anything up to
# whitespace or markup, ``\s`` includes every XML space, a value is anything but its quote and
# ``<``.  Whatever XML accepts it therefore counts exactly; where it sees something XML refuses it
# stops counting, and libxml2 refuses the tag at that point or earlier.
_NAME_RE = re.compile(rb"[^\s<>=/'\"]*+")
_SPACE_RE = re.compile(rb"\s*+")
_ATTRIBUTE = rb"[^\s<>=/'\"]++\s*+=\s*+(?:'[^'<]*+'|\"[^\"<]*+\")"
#: Complete attributes, each followed by whitespace (the last one of a tag is stepped through).
_ATTRIBUTES_RE = re.compile(rb"\s*+(?:" + _ATTRIBUTE + rb"\s++)*+")
#: One empty group per attribute: ``findall`` then counts without copying values.
_COUNT_RE = re.compile(rb"()" + _ATTRIBUTE)
_SPACES: Final = frozenset(b" \t\r\n\x0b\x0c")  # what ``\s`` matches in a bytes pattern

# Where the scanner is, between two calls, inside a start tag.
_OUTSIDE, _OPEN, _TAG_NAME, _NEED_SPACE, _BETWEEN, _ATTR_NAME, _EQUALS, _VALUE, _IN_VALUE = range(9)


class TooManyAttributes(Exception):
    """A start tag has more attributes than allowed; *start* is where its ``<`` is in the chunk
    (0 when it began in an earlier chunk)."""

    def __init__(self, start: int, header: bool = False) -> None:
        super().__init__(start)
        self.start = start
        self.header = header


def _scan_tag(
    data: bytes, pos: int, end: int, phase: int, count: int, quote: int, limit: int
) -> tuple[int, int, int, int]:
    """Follow a start tag through ``data[pos:end]``; return ``(pos, phase, count, quote)``.

    *phase* comes back as ``_OUTSIDE`` once the tag ended (*pos* is then just after it) or
    turned out not to be one.  The number of Python steps is bounded per call, not per
    attribute: runs of complete attributes are counted by the regular expression engine.

    :raises TooManyAttributes: (with start 0) once *count* exceeds *limit*.
    """
    while pos < end:
        if phase == _BETWEEN:
            after = _ATTRIBUTES_RE.match(data, pos, end).end()  # type: ignore[union-attr]
            if after > pos:
                count += len(_COUNT_RE.findall(data, pos, after))
                if count > limit:
                    raise TooManyAttributes(0)
                pos = after
                if pos == end:
                    break
            char = data[pos]
            if char == 62 or char == 47:  # ">" or "/": the tag ends
                return pos + 1, _OUTSIDE, count, quote
            if char in b"<='\"":
                return pos, _OUTSIDE, count, quote
            phase = _ATTR_NAME
        elif phase == _IN_VALUE:
            close = data.find(quote, pos, end)
            if data.find(b"<", pos, end if close < 0 else close) >= 0:
                return pos, _OUTSIDE, count, quote  # not well-formed: libxml2 stops there
            if close < 0:
                return end, phase, count, quote
            count += 1
            if count > limit:
                raise TooManyAttributes(0)
            pos = close + 1
            phase = _NEED_SPACE
        elif phase == _NEED_SPACE:
            char = data[pos]
            if char not in _SPACES:
                return (pos + 1 if char == 62 or char == 47 else pos), _OUTSIDE, count, quote
            phase = _BETWEEN
        elif phase in (_ATTR_NAME, _TAG_NAME):
            pos = _NAME_RE.match(data, pos, end).end()  # type: ignore[union-attr]
            if pos < end:
                phase = _EQUALS if phase == _ATTR_NAME else _NEED_SPACE
        elif phase in (_EQUALS, _VALUE):
            pos = _SPACE_RE.match(data, pos, end).end()  # type: ignore[union-attr]
            if pos == end:
                break
            char = data[pos]
            if phase == _EQUALS:
                if char != 61:  # "="
                    return pos, _OUTSIDE, count, quote
                phase = _VALUE
            elif char == 39 or char == 34:  # a quote
                quote = char
                phase = _IN_VALUE
            else:
                return pos, _OUTSIDE, count, quote
            pos += 1
        else:  # _OPEN: just after "<"
            if data[pos] in b"/!?":  # end tag, comment, CDATA, declaration, PI
                return pos, _OUTSIDE, count, quote
            phase = _TAG_NAME
    return pos, phase, count, quote


class StartTagScanner:
    """Count the attributes of every start tag in the raw input, across chunks.

    libxml2 waits for a start tag's ``>`` and then builds all its attributes at once, so a
    limit checked on lxml's events would come after the memory was spent.  This looks at the
    bytes first, at a cost linear in them and mostly spent in C.  It rests on three facts: a
    start tag holds no ``<``, each attribute has one ``=`` outside its value, and each takes at
    least five bytes (a space and ``a=''``).

    * Between the first and the last ``<`` of a chunk every tag is complete, and one with too
      many attributes is a stretch of at least ``5 * (limit + 1)`` bytes without ``<``.  Such a
      stretch contains a whole window of half that size; windows are probed with ``find``,
      which in ordinary XML stops after a few bytes.  Only the tag around a window without
      ``<`` is looked at: counted exactly if it has more ``=`` than the limit.
    * The run after the last ``<`` may go on in later chunks.  Its bytes are kept while it is
      short and has few ``=`` (the common case: a tag cut by the chunk boundary); once it has
      many or grows long, it is counted exactly and from then on followed through the next
      chunks by :func:`_scan_tag`, until its tag ends.

    The first start tag of a document is the stream header, followed exactly with its own
    limit.  Namespace declarations are attributes here, as they are in the bytes.
    """

    __slots__ = (
        "count",
        "header",
        "header_limit",
        "in_header",
        "limit",
        "pending",
        "pending_equals",
        "phase",
        "quote",
        "step",
    )

    #: A run after the last ``<`` is kept, unexamined, up to this many bytes.
    KEEP: Final = 4096

    def __init__(self, limit: int, header_limit: int) -> None:
        self.limit = limit
        self.header_limit = header_limit
        self.header = True  # the next start tag is the stream header
        self.in_header = False  # the tag being followed exactly is the header
        #: Half the shortest start tag over the limit, less one: such a tag covers a whole window.
        self.step = max(1, ATTRIBUTE_MIN_BYTES * (limit + 1) // 2 - 1)
        self.phase = _OUTSIDE  # of the tag being followed exactly
        self.count = 0
        self.quote = 0
        self.pending = b""  # the unexamined run since the last "<" (b"": none)
        self.pending_equals = 0

    def scan(self, data: bytes) -> None:
        """Account for *data*, the next bytes of the document.

        :raises TooManyAttributes: if a start tag has more than ``limit`` attributes.
        """
        limit = self.limit
        end = len(data)
        pos = 0
        if self.header:
            # The document begins with what the prolog check let through: an XML declaration
            # (no "<" in it) and whitespace, then the header's "<".
            start = data.find(b"<")
            if data[start + 1 : start + 2] == b"?":
                start = data.find(b"<", start + 1)
            if start < 0:
                return  # the prolog is still being collected
            self.header = False
            self.phase, self.count, self.quote = _OPEN, 0, 0
            self.in_header = True
            pos = start + 1
        if self.pending:
            first = data.find(b"<")
            upto = end if first < 0 else first
            self.pending_equals += data.count(b"=", 0, upto)
            if self.pending_equals <= limit and len(self.pending) + upto <= self.KEEP:
                if first < 0:
                    self.pending += data
                    return
                pos = first
            else:
                pending = self.pending
                self.pending = b""
                self._follow(pending, 1, _OPEN, 0, 0, 0)
                if self.phase == _OUTSIDE:
                    pos = upto
            self.pending = b""
        if self.phase != _OUTSIDE:
            pos = self._follow(data, pos, self.phase, self.count, self.quote, 0)
            if self.phase != _OUTSIDE:
                return
            self.in_header = False
        last = data.rfind(b"<", pos)
        if last < 0:
            return
        step = self.step
        probe = pos
        while probe + step <= last:
            if data.find(b"<", probe, probe + step) >= 0:
                probe += step
                continue
            # A window without "<": the run it belongs to may be a long start tag.
            begin = data.rfind(b"<", pos, probe)
            stop = data.find(b"<", probe + step, last + 1)
            if begin >= 0 and data.count(b"=", begin, stop) > limit:
                try:
                    _scan_tag(data, begin + 1, stop, _OPEN, 0, 0, limit)
                except TooManyAttributes:
                    raise TooManyAttributes(begin) from None
            probe = stop
        equals = data.count(b"=", last)
        if equals <= limit and end - last <= self.KEEP:
            self.pending = data[last:]
            self.pending_equals = equals
        else:
            self._follow(data, last + 1, _OPEN, 0, 0, last)

    def _follow(self, data: bytes, pos: int, phase: int, count: int, quote: int, at: int) -> int:
        """Follow the tag from *pos* to the end of *data*; *at* is where its ``<`` is."""
        try:
            pos, self.phase, self.count, self.quote = _scan_tag(
                data,
                pos,
                len(data),
                phase,
                count,
                quote,
                self.header_limit if self.in_header else self.limit,
            )
        except TooManyAttributes:
            raise TooManyAttributes(at, self.in_header) from None
        return pos
