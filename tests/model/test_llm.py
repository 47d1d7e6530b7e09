"""Frozen LLM wrapper over the real Qwen2 and Llama classes: gradients reach inputs, never weights."""

from __future__ import annotations

import pytest
import torch
from freezeempath.config import LLMConfig
from freezeempath.model.build import build_llm


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_gradients_reach_inputs_but_not_weights(arch):
    llm = build_llm(LLMConfig(arch=arch), load_weights=True)
    assert type(llm.model).__name__ == ("Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM")
    embeds = llm.embed(torch.tensor([[5, 6, 7, 8]])).clone().requires_grad_(True)
    out = llm(embeds, torch.ones(1, 4, dtype=torch.long))
    out.logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in llm.parameters())
    assert out.hidden.shape == (1, 4, llm.hidden_size)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_left_padding_and_cache_match_a_plain_pass(arch):
    llm = build_llm(LLMConfig(arch=arch), load_weights=True)
    ids = torch.tensor([[10, 11, 12, 13]])
    plain = llm(llm.embed(ids), torch.ones(1, 4, dtype=torch.long))
    padded = llm(llm.embed(torch.tensor([[0, 0, 10, 11, 12, 13]])), torch.tensor([[0, 0, 1, 1, 1, 1]]))
    torch.testing.assert_close(padded.logits[:, 2:], plain.logits, atol=1e-5, rtol=1e-4)
    first = llm(llm.embed(ids[:, :3]), torch.ones(1, 3, dtype=torch.long), use_cache=True)
    step = llm(llm.embed(ids[:, 3:]), torch.ones(1, 4, dtype=torch.long), cache=first.cache, use_cache=True)
    torch.testing.assert_close(step.logits[:, -1], plain.logits[:, -1], atol=1e-5, rtol=1e-4)


def test_train_mode_keeps_the_llm_in_eval(tiny_model):
    tiny_model.train()
    assert tiny_model.adapter.training and not tiny_model.llm.model.training and not tiny_model.encoder.training
