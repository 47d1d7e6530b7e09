"""Placeholder merge on hand-drawn tensors."""

from __future__ import annotations

import pytest
import torch
from freezeempath.chat_template import EMOTION_TOKEN_ID as E
from freezeempath.chat_template import IGNORE_INDEX as X
from freezeempath.chat_template import SPEECH_TOKEN_ID as S
from freezeempath.model.fusion import merge_placeholders


def embed(ids: torch.Tensor) -> torch.Tensor:
    """Token id t → the row [t, t] so positions are readable."""
    return ids.float()[:, None].repeat(1, 2)


def test_merge_fills_slots_in_reading_order_with_valid_rows_only():
    ids = [torch.tensor([1, S, 2, E, 3]), torch.tensor([4, S, E])]
    labels = [torch.tensor([X, X, X, X, 3]), torch.tensor([X, X, X])]
    speech = torch.tensor([[[10.0, 10], [11, 11], [99, 99]], [[20.0, 20], [99, 99], [99, 99]]])  # (2, 3, 2)
    emotion = torch.tensor([[[30.0, 30]], [[40.0, 40]]])  # (2, 1, 2)
    out = merge_placeholders(ids, embed, speech, torch.tensor([2, 1]), emotion, labels)
    assert out.lens.tolist() == [6, 3]
    assert out.embeds[0, :, 0].tolist() == [1, 10, 11, 2, 30, 3]
    assert out.embeds[1, :, 0].tolist() == [4, 20, 40, 0, 0, 0]
    assert out.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert out.labels[0].tolist() == [X, X, X, X, X, 3]


def test_left_padding_for_generation():
    ids = [torch.tensor([1, 2, 3]), torch.tensor([S, 5])]
    out = merge_placeholders(
        ids, embed, torch.tensor([[[7.0, 7]]]), torch.tensor([1]), torch.zeros(0, 1, 2), padding_side="left"
    )
    assert out.embeds[1, :, 0].tolist() == [0, 7, 5]
    assert out.attention_mask[1].tolist() == [0, 1, 1]


def test_count_mismatch_raises():
    with pytest.raises(ValueError, match="1 <speech> slots for 2 speech features"):
        merge_placeholders([torch.tensor([S])], embed, torch.zeros(2, 1, 2), torch.tensor([1, 1]), torch.zeros(0, 1, 2))
    with pytest.raises(ValueError, match="1 <emotion> slots for 0 emotion vectors"):
        merge_placeholders([torch.tensor([E])], embed, torch.zeros(0, 1, 2), torch.zeros(0), torch.zeros(0, 1, 2))
