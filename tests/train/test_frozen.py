"""Frozen means frozen: optimizer steps change only the stage's parts; encoder and LLM stay bit-identical."""

from __future__ import annotations

import hashlib

import pytest
import torch
from freezeempath.batch import SpeechChatBatch
from freezeempath.chat_template import Turn, render
from freezeempath.config import load_config
from freezeempath.model.build import build_model, parameter_report
from freezeempath.stages import Stage, apply_stage, loss_weights
from freezeempath.train.losses import total_loss
from helpers import speech_like


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_batch(model) -> SpeechChatBatch:
    tok = model.llm.tokenizer
    prompts = [render(tok, [Turn("user", spoken=True)], reply=r) for r in ("I'm sorry.", "How lovely!")]
    feats = model.frontend([speech_like(1.5, seed=1), speech_like(2.5, seed=2), speech_like(1.0, seed=3)])
    return SpeechChatBatch(
        mel=feats.mel,
        mel_lens=feats.lens,
        input_ids=[torch.tensor(p.input_ids) for p in prompts],
        labels=[torch.tensor(p.labels) for p in prompts],
        speech_clips=torch.tensor([0, 1]),
        emotion_clips=torch.tensor([2, 1]),  # 2b-style: E from another clip
        emotion_labels=torch.tensor([3, 2, 0]),
        units=torch.randint(0, 32, (2, 12)),
        unit_lens=torch.tensor([12, 7]),
    )


@pytest.mark.parametrize("stage", list(Stage))
def test_only_the_stage_parts_change(tiny_model, stage):
    model, batch = tiny_model, make_batch(tiny_model)
    before = {name: weights_hash(child) for name, child in model.named_children()}
    params = apply_stage(model, stage)
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(2):
        loss = total_loss(model(batch, stage), loss_weights(stage, 0.8))
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    after = {name: weights_hash(child) for name, child in model.named_children()}
    for name in ("encoder", "llm"):
        assert after[name] == before[name], f"{name} changed in stage {stage.value}"
        assert all(p.grad is None for p in getattr(model, name).parameters())
    for name in before:
        assert (after[name] != before[name]) == (name in stage.trainable), name


def test_paper_parameter_counts_without_weights():
    cfg = load_config("paper").model
    counts = parameter_report(cfg)
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False)
    sizes = {n: sum(p.numel() for p in c.parameters()) for n, c in model.named_children()}
    assert 20.0e6 < sizes["adapter"] < 21.0e6  # method.md §2.2: ≈ 20.5 M
    assert 16.4e6 < sizes["emotion"] < 17.0e6  # §2.3: ≈ 16.7 M
    assert sizes["aux_head"] == 3584 * 5
    assert 7.5e9 < sizes["llm"] < 7.7e9 and 0.6e9 < sizes["encoder"] < 0.66e9
    assert counts[Stage.S1].trainable == sizes["adapter"]
    assert counts[Stage.S2A].trainable == sizes["emotion"] + sizes["aux_head"]
    assert 8.7e9 < counts[Stage.S3B].total < 9.0e9
    assert 0.45e9 < counts[Stage.S3A].trainable < 0.65e9
