"""Frozen LLM wrapper for any Hugging Face decoder-only LM (tested with Qwen2 and Llama classes).

In: ``inputs_embeds (B, L, D)`` with an attention mask (and optional KV cache). Out: :class:`LLMOutput`
with logits, the last layer's hidden states (speech decoder input) and the updated cache.
The model is held as an attribute, kept in eval mode and never receives gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LLMOutput:
    """One LLM pass: ``logits (B, L, V)``, ``hidden (B, L, D)`` (last layer) and ``cache``."""

    logits: torch.Tensor
    hidden: torch.Tensor
    cache: Any = None


class FrozenLLM(nn.Module):
    """A frozen causal LM with its tokenizer; only its inputs (embeddings) carry gradients."""

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> FrozenLLM:
        """Frozen: stays in eval mode (no dropout) whatever the parent asks."""
        super().train(False)
        return self

    @property
    def hidden_size(self) -> int:
        """Width of the LLM's embeddings and hidden states."""
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding table."""
        return int(self.model.get_input_embeddings().num_embeddings)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(...,)`` → embeddings ``(..., D)`` from the LLM's own table."""
        return self.model.get_input_embeddings()(ids)

    def forward(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        last_logits_only: bool = False,
    ) -> LLMOutput:
        """``embeds (B, L, D)``, ``attention_mask (B, L_total)`` → :class:`LLMOutput`.

        ``position_ids`` default to the running count of attended positions, so left padding works.
        ``last_logits_only`` computes logits for the last position only (generation prefill).
        """
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1] :]
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=True,
            return_dict=True,
            logits_to_keep=1 if last_logits_only else 0,
        )
        return LLMOutput(logits=out.logits, hidden=out.hidden_states[-1], cache=out.cache)
