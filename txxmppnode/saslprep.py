"""SASLprep (RFC 4013): the stringprep profile SASL applies to user names and passwords.

The steps: map non-ASCII spaces to U+0020 and delete the characters "commonly mapped to
nothing" (stringprep B.1), normalise with NFKC (Unicode 3.2), refuse the prohibited characters
(C.1.2, C.2.1, C.2.2, C.3 to C.9), apply the bidirectional rule (RFC 3454 §6) and, for stored
strings only, refuse code points unassigned in Unicode 3.2 (A.1).  :mod:`stringprep` and
:mod:`unicodedata` provide the tables.
"""

from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable
from typing import Final

__all__ = ["saslprep"]

_PROHIBITED: Final[tuple[tuple[Callable[[str], bool], str], ...]] = (
    (stringprep.in_table_c12, "a non-ASCII space"),
    (stringprep.in_table_c21_c22, "a control character"),
    (stringprep.in_table_c3, "a private-use character"),
    (stringprep.in_table_c4, "a non-character code point"),
    (stringprep.in_table_c5, "a surrogate code point"),
    (stringprep.in_table_c6, "a character inappropriate for plain text"),
    (stringprep.in_table_c7, "a character inappropriate for canonical representation"),
    (stringprep.in_table_c8, "a display-changing or deprecated character"),
    (stringprep.in_table_c9, "a tagging character"),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare *text* with the SASLprep profile of stringprep (RFC 4013).

    :param allow_unassigned: ``True`` for a "query" string (RFC 5802 prepares the username so),
        ``False`` for a "stored string" (the SCRAM password).
    :raises ValueError: naming the offending code point, not the string (it may be a password).
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in prepared:
        for check, description in _PROHIBITED:
            if check(ch):
                raise ValueError(f"SASLprep: U+{ord(ch):04X} is {description}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise ValueError(f"SASLprep: U+{ord(ch):04X} is unassigned in Unicode 3.2")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ValueError("SASLprep: mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("SASLprep: right-to-left text must start and end with such a letter")
    return prepared
