"""Model builders: each part built alone (as a Serve replica builds it) equals that part of the full model."""

from __future__ import annotations

import torch
from freezeempath.config import load_config
from freezeempath.model.build import build_decoder_part, build_model, build_understander


def test_parts_built_alone_equal_the_full_model():
    cfg = load_config("tiny").model
    model = build_model(cfg)
    alone, full = build_decoder_part(cfg).state_dict(), model.speech_decoder.state_dict()
    assert alone.keys() == full.keys() and all(torch.equal(alone[k], full[k]) for k in alone)
    understander = build_understander(cfg)
    assert torch.equal(understander.emotion.query, model.emotion.query)
