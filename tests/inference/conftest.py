"""Fixtures of the inference tests: the tiny preset's config and a model built from it, once per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_parts():
    """``(ModelConfig, FreezeEmpathModel)`` of the tiny preset (random weights of the real classes)."""
    from freezeempath.config import load_config
    from freezeempath.model.build import build_model

    cfg = load_config("tiny").model
    return cfg, build_model(cfg)
