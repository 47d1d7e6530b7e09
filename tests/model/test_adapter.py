"""Semantic adapter: length formula and stacking, with hand-computed values."""

from __future__ import annotations

import torch
from freezeempath.model.adapter import FrameStackAdapter


def test_length_formula_and_shapes():
    adapter = FrameStackAdapter(k=5, d_enc=4, hidden=8, d_llm=6)
    frames = torch.randn(2, 23, 4)
    out, lens = adapter(frames, torch.tensor([23, 9]))
    assert out.shape == (2, 4, 6)
    assert lens.tolist() == [4, 1]  # 23 // 5, 9 // 5
    assert torch.count_nonzero(out[1, 1:]) == 0  # rows past L_S are zero


def test_stacks_consecutive_frames_in_order():
    adapter = FrameStackAdapter(k=2, d_enc=1, hidden=2, d_llm=1)
    with torch.no_grad():
        adapter.mlp[0].weight.copy_(torch.tensor([[1.0, 10.0], [0.0, 0.0]]))
        adapter.mlp[0].bias.zero_()
        adapter.mlp[2].weight.copy_(torch.tensor([[1.0, 0.0]]))
        adapter.mlp[2].bias.zero_()
    frames = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [5.0]]])  # (1, 5, 1)
    out, lens = adapter(frames, torch.tensor([5]))
    assert lens.tolist() == [2]
    assert out.squeeze().tolist() == [1 + 20, 3 + 40]  # frame 5 (T % k) is dropped
