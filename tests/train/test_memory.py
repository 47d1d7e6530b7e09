"""Memory estimate (ZeRO accounting) per preset, stage, ZeRO stage and world size."""

from __future__ import annotations

import pytest
from freezeempath.config import load_config
from freezeempath.train.memory import estimate_memory
from helpers import ROOT

PAPER_S1 = ROOT / "jobs" / "configs" / "train" / "paper" / "stage1_semantic.yaml"


def test_zero3_offload_removes_frozen_weights_from_the_gpu():
    z2 = estimate_memory(load_config(PAPER_S1, ["train.zero_stage=2", "train.offload_param=false"]), 8)
    z3 = estimate_memory(load_config(PAPER_S1), 8)
    assert 15.5 < z2.frozen_weights < 17.0  # ≈ 8.2 B frozen params in bf16, replicated
    assert z3.frozen_weights == 0.0 and z3.total < z2.total
    adapter = 20.5e6
    assert z2.optimizer == pytest.approx(adapter * 12 / 8 / 1024**3, rel=0.05)  # sharded over 8 ranks
    assert z2.total < 80


def test_stage3_activations_only_count_the_decoder():
    s3 = estimate_memory(load_config(PAPER_S1, ["train.stage=s3b"]), 8)
    s1 = estimate_memory(load_config(PAPER_S1), 8)
    assert s3.activations < s1.activations
    assert s3.optimizer > 10 * s1.optimizer  # the 0.5 B decoder trains in stage 3


def test_estimate_counts_logits_encoder_stack_and_zero3_live_parameters():
    z3 = estimate_memory(load_config(PAPER_S1), 8, seq_len=512)
    z2 = estimate_memory(load_config(PAPER_S1, ["train.zero_stage=2", "train.offload_param=false"]), 8, seq_len=512)
    s3 = estimate_memory(load_config(PAPER_S1, ["train.stage=s3b"]), 8, seq_len=512)
    micro = load_config(PAPER_S1).train.micro_batch
    assert z3.logits == pytest.approx(micro * 512 * 152064 * 10 / 1024**3)  # bf16 + fp32 upcast + fp32 grad
    assert z3.gathered == pytest.approx(1e9 * 2 / 1024**3) and z2.gathered == 0.0  # DeepSpeed's live-param cap
    assert z3.encoder_states == pytest.approx(micro * 32 * 1500 * 1280 * 2 / 1024**3)
    assert s3.logits == 0.0 and s3.encoder_states == 0.0  # stage 3 trains from the LLM's states only
