"""Semantic adapter (stage 1): stacks ``k`` encoder frames and maps them to LLM width.

In: encoder frames ``(B, T, D_enc)`` with lengths. Out: speech rows S ``(B, T // k, D_llm)`` with
lengths ``L_S = L_enc // k`` (the adapter owns that formula).
"""

from __future__ import annotations

import torch
from torch import nn


class FrameStackAdapter(nn.Module):
    """``drop T % k → (B, T/k, k·D_enc) → Linear → ReLU → Linear``, as in LLaMA-Omni2."""

    def __init__(self, k: int, d_enc: int, hidden: int, d_llm: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Linear(k * d_enc, hidden), nn.ReLU(), nn.Linear(hidden, d_llm))

    def output_lengths(self, enc_lens: torch.Tensor) -> torch.Tensor:
        """``L_S = L_enc // k`` — only whole groups of ``k`` valid frames become rows."""
        return torch.div(enc_lens, self.k, rounding_mode="floor")

    def forward(self, frames: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``frames (B, T, D_enc)`` and ``lens (B,)`` to ``(S (B, T // k, D_llm), S_lens (B,))``.

        Rows past ``S_lens`` are zeroed so they never depend on what padded the batch.
        """
        b, t, d = frames.shape
        t_out = t // self.k
        stacked = frames[:, : t_out * self.k].reshape(b, t_out, self.k * d)  # (B, T/k, k·D_enc)
        out = self.mlp(stacked)  # (B, T/k, D_llm)
        out_lens = self.output_lengths(lens)
        valid = torch.arange(t_out, device=frames.device)[None, :] < out_lens[:, None]  # (B, T/k)
        return out * valid[..., None].to(out.dtype), out_lens
