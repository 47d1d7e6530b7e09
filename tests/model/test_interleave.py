"""R/W interleaving: hand-computed layouts."""

from __future__ import annotations

import pytest
from freezeempath.model.interleave import Side, interleave_layout


def _code(layout):
    return "".join(("t" if s is Side.TEXT else "u") + str(i) for s, i in layout)


def test_interleaves_r_then_w_and_last_text_chunk_takes_all_remaining_units():
    # text 7 (6 states + <sep>), units 12 (11 + EOS), R=3, W=4: x-chunks 3, u-chunks 3 → interleave
    assert _code(interleave_layout(7, 12, 3, 4)) == ("t0t1t2u0u1u2u3t3t4t5u4u5u6u7t6u8u9u10u11")


def test_no_interleaving_when_units_have_fewer_chunks_than_text():
    assert _code(interleave_layout(7, 4, 3, 4)) == "t0t1t2t3t4t5t6u0u1u2u3"


def test_every_position_appears_once():
    layout = interleave_layout(10, 100, 3, 15)
    assert sorted(i for s, i in layout if s is Side.TEXT) == list(range(10))
    assert sorted(i for s, i in layout if s is Side.UNIT) == list(range(100))


def test_rejects_empty_sides():
    with pytest.raises(ValueError, match="positive"):
        interleave_layout(0, 3, 3, 15)
