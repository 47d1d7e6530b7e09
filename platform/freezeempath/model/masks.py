"""Masks built from lengths, in one place (adapter slice, emotion mean and pooling, LLM attention)."""

from __future__ import annotations

import torch


def length_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` lengths → ``(B, T)`` bool mask, True at valid positions."""
    t = int(lens.max()) if max_len is None else max_len
    return torch.arange(t, device=lens.device)[None, :] < lens[:, None]
