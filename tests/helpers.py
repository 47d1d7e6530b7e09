"""Test helpers importable from every test module (``pythonpath = tests`` in pyproject)."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, seed: int = 0, rate: int = 16_000) -> torch.Tensor:
    """A deterministic voiced-speech-like signal: a gliding harmonic tone with noise ``(N,)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 0.7 * t + seed)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return (0.3 * wave + 0.01 * torch.randn(t.shape, generator=g)).float()
