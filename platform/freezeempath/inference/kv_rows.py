"""Rows of a batched KV cache that join and leave between decoding steps (continuous batching).

A cache is a transformers ``DynamicCache`` whose layers hold ``keys``/``values`` ``(B, H, T, Dh)``,
paired with its attention mask ``(B, T)`` (1 = a real position). Rows are left-padded and positions
come from the mask's running count, so a row's positions and attention do not change when other rows
join, leave, or when columns that no row attends are trimmed. Functions mutate the cache they get.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _layers(cache: Any) -> list[Any]:
    layers = [layer for layer in getattr(cache, "layers", []) if layer.is_initialized]
    for layer in layers:
        if layer.is_sliding or not hasattr(layer, "keys"):
            raise ValueError(
                f"rows can join or leave full-attention dynamic cache layers only, not {type(layer).__name__}"
            )
    return layers


def pad_left(cache: Any, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Left-pad every row to ``length`` masked positions; returns the new mask ``(B, length)``."""
    extra = length - mask.shape[1]
    if extra <= 0:
        return mask
    for layer in _layers(cache):
        layer.keys = F.pad(layer.keys, (0, 0, extra, 0))
        layer.values = F.pad(layer.values, (0, 0, extra, 0))
    return F.pad(mask, (extra, 0))


def join_rows(cache: Any, mask: torch.Tensor, other: Any, other_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """``other``'s rows appended after ``cache``'s, the shorter side left-padded; ``(cache, mask (B + B', T))``."""
    mine, theirs = _layers(cache), _layers(other)
    if len(mine) != len(theirs):  # checked before either cache changes
        raise ValueError(f"caches differ in initialised layers: {len(mine)} vs {len(theirs)}")
    length = max(mask.shape[1], other_mask.shape[1])
    mask, other_mask = pad_left(cache, mask, length), pad_left(other, other_mask, length)
    for a, b in zip(mine, theirs, strict=True):
        a.keys, a.values = torch.cat([a.keys, b.keys]), torch.cat([a.values, b.values])
    return cache, torch.cat([mask, other_mask])


def add_empty_rows(cache: Any, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Append ``n`` rows that attend nothing yet (all masked); returns the mask ``(B + n, T)``."""
    for layer in _layers(cache):
        for name in ("keys", "values"):
            x = getattr(layer, name)
            setattr(layer, name, torch.cat([x, x.new_zeros(n, *x.shape[1:])]))
    return torch.cat([mask, mask.new_zeros(n, mask.shape[1])])


def keep_rows(cache: Any, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep ``rows`` (in that order) and trim leading columns no kept row attends; returns the mask."""
    index = torch.tensor(rows, dtype=torch.long, device=mask.device)
    mask = mask.index_select(0, index)
    attended = mask.any(dim=0).nonzero()
    lead = int(attended[0]) if attended.numel() else mask.shape[1]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, index)[..., lead:, :]
        layer.values = layer.values.index_select(0, index)[..., lead:, :]
    return mask[:, lead:]
