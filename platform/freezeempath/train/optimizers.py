"""Optimizer over trainable parameters only, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from freezeempath.config import TrainConfig


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``params`` (the stage's trainable parameters; never an empty group).

    ``fused``: one kernel per step instead of a Python loop over tensors, a loop that weighs on a
    small model's step on CPU.
    """
    if not params:
        raise ValueError("no trainable parameters for the optimizer")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """LR multiplier: linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to 0."""
    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """``LambdaLR`` with :func:`warmup_cosine`; stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_ratio))
