"""Frozen and unforgotten: the bundle's frozen hashes hold, and text-only answers equal the untouched LLM's.

In: a bundle's model and text prompts. Out: for each prompt, whether the reply our generation path gives
(``LLMSession`` through the fusion code, no slots) is token-identical to what Hugging Face ``generate``
gives on a freshly loaded copy of the base LLM (greedy, same chat template, same stop tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freezeempath.chat_template import Turn, render
from freezeempath.config import ModelConfig
from freezeempath.evaluation.probes import spoken_request
from freezeempath.inference.generate import text_replies
from freezeempath.model.build import build_llm_part
from freezeempath.model.spoken_chat import FreezeEmpathModel


@dataclass(frozen=True)
class UnforgottenReport:
    """Per prompt: our reply, the untouched LLM's, and whether their tokens are identical."""

    prompts: tuple[str, ...]
    ours: tuple[str, ...]
    untouched: tuple[str, ...]
    identical: tuple[bool, ...]

    @property
    def all_identical(self) -> bool:
        """Every prompt got the same tokens."""
        return all(self.identical)


@torch.no_grad()
def untouched_tokens(cfg: ModelConfig, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy ``generate`` of a freshly built base LLM, cut at its first stop token."""
    llm, stop_ids = build_llm_part(cfg, device=None)
    out = []
    for prompt in prompts:
        ids = torch.tensor([render(llm.tokenizer, [Turn("user", prompt)]).input_ids])
        generated = llm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=llm.tokenizer.pad_token_id or stop_ids[0],
        )[0, ids.shape[1] :].tolist()
        stop = next((i for i, t in enumerate(generated) if t in stop_ids), len(generated))
        out.append(generated[:stop])
    return out


def unforgotten(
    model: FreezeEmpathModel, cfg: ModelConfig, prompts: list[str], max_new_tokens: int
) -> UnforgottenReport:
    """Compare the bundle model's text-only replies with the untouched base LLM's, token for token."""
    ours = text_replies(model, [spoken_request(None, p, max_new_tokens) for p in prompts])
    base = untouched_tokens(cfg, prompts, max_new_tokens)
    decode = model.llm.tokenizer.decode
    return UnforgottenReport(
        prompts=tuple(prompts),
        ours=tuple(r.text for r in ours),
        untouched=tuple(decode(t, skip_special_tokens=True) for t in base),
        identical=tuple(list(r.token_ids) == t for r, t in zip(ours, base, strict=True)),
    )
