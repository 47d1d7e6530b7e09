"""Emotion extractor (stage 2): every encoder layer → one emotion vector E of LLM width.

In: stacked block outputs ``(B, N, T, D_enc)`` (before the final LayerNorm) with lengths.
Out: E ``(B, 1, D_llm)``; :class:`AuxEmotionHead` maps E to 5 class logits for the auxiliary loss.
Unlike the release, the layer mean and the attention pooling ignore padded frames, so an utterance's
E does not depend on what it was batched with.
"""

from __future__ import annotations

import torch
from torch import nn

from freezeempath.labels import NUM_EMOTIONS
from freezeempath.model.masks import length_mask


class EmotionExtractor(nn.Module):
    """Layer gate → LayerNorm → single-query multi-head attention pooling → FFN."""

    def __init__(self, n_layers: int, d_enc: int, d_llm: int, gate_hidden: int, heads: int, ffn_hidden: int):
        super().__init__()
        self.n_layers = n_layers
        self.gate = nn.Sequential(nn.Linear(d_enc, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, 1))
        self.norm = nn.LayerNorm(d_enc)
        self.query = nn.Parameter(torch.randn(1, 1, d_enc))
        self.attention = nn.MultiheadAttention(d_enc, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_enc, ffn_hidden), nn.ReLU(), nn.Linear(ffn_hidden, d_llm))

    def layer_weights(self, layers: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Softmax weights over layers ``(B, N)`` from each layer's masked time-mean."""
        valid = length_mask(lens, layers.shape[2]).to(layers.dtype)  # (B, T)
        summed = torch.einsum("bntd,bt->bnd", layers, valid)  # (B, N, D)
        mean = summed / lens.clamp(min=1).to(layers.dtype)[:, None, None]
        return torch.softmax(self.gate(mean).squeeze(-1), dim=-1)  # (B, N)

    def forward(self, layers: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``layers (B, N, T, D_enc)``, ``lens (B,)`` → E ``(B, 1, D_llm)``."""
        if (lens < 1).any():
            raise ValueError("emotion extractor needs at least one valid frame per item")
        weights = self.layer_weights(layers, lens)
        mixed = self.norm(torch.einsum("bntd,bn->btd", layers, weights))  # (B, T, D)
        query = self.query.expand(layers.shape[0], -1, -1)  # (B, 1, D)
        pad = ~length_mask(lens, layers.shape[2])  # (B, T) True = ignore
        pooled, _ = self.attention(query, mixed, mixed, key_padding_mask=pad, need_weights=False)
        return self.ffn(pooled)  # (B, 1, D_llm)


class AuxEmotionHead(nn.Module):
    """``Linear(D_llm → 5, bias=False)`` on E; index order is :data:`freezeempath.labels.EMOTIONS`."""

    def __init__(self, d_llm: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_llm, NUM_EMOTIONS, bias=False)

    def forward(self, emotion: torch.Tensor) -> torch.Tensor:
        """E ``(B, 1, D_llm)`` → logits ``(B, 5)``."""
        return self.proj(emotion.squeeze(1))
