"""Shared fixtures: tiny configs and models of the real architectures, seeded; no downloads."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg():
    """The tiny preset."""
    from freezeempath.config import load_config

    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    """A fresh tiny FreezeEmpath model (random weights of the real classes)."""
    from freezeempath.model.build import build_model

    return build_model(tiny_cfg.model)
