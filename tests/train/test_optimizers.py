"""AdamW over trainable parameters only, and the warm-up + cosine schedule (train/optimizers.py)."""

from __future__ import annotations

import math

import pytest
import torch
from freezeempath.config import TrainConfig
from freezeempath.train.optimizers import make_optimizer, make_scheduler, warmup_cosine


def test_warmup_is_linear_then_cosine_decays_to_zero():
    factor = warmup_cosine(total_steps=10, warmup_ratio=0.2)  # warm-up = ceil(2.0) = 2 steps
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0)  # progress 0
    assert factor(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))  # = 0.5
    assert factor(10) == pytest.approx(0.0, abs=1e-12) and factor(50) == pytest.approx(0.0, abs=1e-12)


def test_at_least_one_warmup_step_even_with_no_warmup_ratio():
    assert warmup_cosine(total_steps=4, warmup_ratio=0.0)(0) == 1.0


def test_optimizer_takes_the_given_params_and_the_scheduler_scales_its_lr():
    weight = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([weight], TrainConfig(lr=0.1, weight_decay=0.0))
    assert [p for group in opt.param_groups for p in group["params"]] == [weight]
    sched = make_scheduler(opt, total_steps=4, warmup_ratio=0.5)  # warm-up 2 steps: lr 0.05, then 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    weight.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert torch.all(weight < 1.0)  # the step moved the weights


def test_no_trainable_parameters_is_an_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer([], TrainConfig())
