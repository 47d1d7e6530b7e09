"""The frozen-vs-fine-tuned stage-1 benchmark's exact state bytes (jobs/bench/stage1_variants.py)."""

from __future__ import annotations

import pytest
from freezeempath.config import load_config
from helpers import speech_like

from jobs.bench.stage1_variants import run_variant


def test_frozen_llm_needs_a_fraction_of_gradient_and_optimizer_memory():
    cfg = load_config("tiny")
    waves = [speech_like(1.0, seed=1), speech_like(0.7, seed=2)]
    frozen = run_variant(cfg, waves, full=False, steps=1)
    full = run_variant(cfg, waves, full=True, steps=1)
    # grad + Adam m + v in fp32 (plus AdamW's scalar step counters)
    assert frozen.grad_optimizer_bytes == pytest.approx(frozen.trainable_params * 12, rel=1e-3)
    assert full.grad_optimizer_bytes == pytest.approx(full.trainable_params * 12, rel=1e-3)
    assert frozen.grad_optimizer_bytes < 0.5 * full.grad_optimizer_bytes
