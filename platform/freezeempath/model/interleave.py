"""Read/write interleaving of speech-decoder inputs (method.md §2.6), as a pure layout.

In: the text-side length ``n_text`` (reply states plus ``<sep>``), the unit-side length ``n_units``
(units plus EOS), read size R and write size W. Out: the decoder's input order as a list of
``(Side, index)`` — R text states, then W units, and so on; the last text chunk is followed by all
remaining units. When units have fewer chunks than text, no interleaving: all text, then all units.
"""

from __future__ import annotations

import enum
import math


class Side(enum.Enum):
    """Which stream a decoder position comes from."""

    TEXT = "text"
    UNIT = "unit"


def interleave_layout(n_text: int, n_units: int, read: int, write: int) -> list[tuple[Side, int]]:
    """Decoder input order for one reply; see the module docstring.

    >>> [(s.value[0], i) for s, i in interleave_layout(4, 5, 2, 2)]
    [('t', 0), ('t', 1), ('u', 0), ('u', 1), ('t', 2), ('t', 3), ('u', 2), ('u', 3), ('u', 4)]
    """
    if n_text < 1 or n_units < 1 or read < 1 or write < 1:
        raise ValueError(f"interleave needs positive sizes, got n_text={n_text} n_units={n_units} R={read} W={write}")
    text_chunks = math.ceil(n_text / read)
    if math.ceil(n_units / write) < text_chunks:
        return [(Side.TEXT, i) for i in range(n_text)] + [(Side.UNIT, j) for j in range(n_units)]
    layout: list[tuple[Side, int]] = []
    for c in range(text_chunks):
        layout += [(Side.TEXT, i) for i in range(c * read, min((c + 1) * read, n_text))]
        stop = n_units if c == text_chunks - 1 else (c + 1) * write
        layout += [(Side.UNIT, j) for j in range(c * write, stop)]
    return layout
