"""Exported artefacts: strict round trip of trained parts only, tied weights, partial (serving) loads."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from freezeempath.config import load_config
from freezeempath.model.build import build_model
from freezeempath.model.checkpoint import TRAINED_FILE, artefact_config, export_trained, load_trained, trained_prefixes
from torch import nn


def _model(seed: int, *overrides: str):
    cfg = load_config("tiny", [f"model.seed={seed}", *overrides])
    return cfg, build_model(cfg.model)


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_loads_trained_parts_and_leaves_the_rest(tmp_path):
    cfg, source = _model(1)
    export_trained(source, ("adapter", "speech_decoder"), tmp_path, cfg)
    assert trained_prefixes(tmp_path) == ("adapter", "speech_decoder")
    assert artefact_config(tmp_path) == cfg
    _, target = _model(2)
    emotion_before = {k: v.clone() for k, v in target.emotion.state_dict().items()}
    assert load_trained(target, tmp_path) == ("adapter", "speech_decoder")
    assert _equal(source.adapter, target.adapter) and _equal(source.speech_decoder, target.speech_decoder)
    assert all(torch.equal(v, target.emotion.state_dict()[k]) for k, v in emotion_before.items())
    stored = safetensors.torch.load_file(str(tmp_path / TRAINED_FILE))
    assert all(k.split(".")[0] in ("adapter", "speech_decoder") for k in stored)


def test_tied_weights_are_written_once_and_stay_tied(tmp_path):
    cfg, source = _model(1)
    export_trained(source, ("speech_decoder",), tmp_path, cfg)
    stored = safetensors.torch.load_file(str(tmp_path / TRAINED_FILE))
    lm = source.speech_decoder.lm
    assert lm.get_input_embeddings().weight.data_ptr() == lm.get_output_embeddings().weight.data_ptr()
    assert len(stored) == len(source.speech_decoder.state_dict()) - 1  # the tied output matrix is an alias
    _, target = _model(3)
    load_trained(target, tmp_path)
    tlm = target.speech_decoder.lm
    assert torch.equal(tlm.get_output_embeddings().weight, lm.get_output_embeddings().weight)


def test_partial_module_loads_only_its_parts(tmp_path):
    cfg, source = _model(1)
    export_trained(source, ("adapter", "emotion", "aux_head", "speech_decoder"), tmp_path, cfg)
    _, target = _model(4)
    part = nn.ModuleDict({"speech_decoder": target.speech_decoder})
    assert load_trained(part, tmp_path) == ("speech_decoder",)
    assert _equal(part.speech_decoder, source.speech_decoder)
    assert not _equal(target.adapter, source.adapter)


def test_strictness_names_the_problem(tmp_path):
    cfg, source = _model(1)
    with pytest.raises(ValueError, match="cannot export prefixes \\['llm'\\]"):
        export_trained(source, ("llm",), tmp_path / "frozen", cfg)
    with pytest.raises(ValueError, match="cannot export prefixes"):
        export_trained(source, ("nonexistent",), tmp_path / "unknown", cfg)
    with pytest.raises(FileNotFoundError, match="no trained.safetensors"):
        load_trained(source, tmp_path / "empty")
    export_trained(source, ("adapter",), tmp_path / "a", cfg)
    _, wider = _model(1, "model.adapter.hidden=48")
    with pytest.raises(ValueError, match="wrong shapes \\['adapter"):
        load_trained(wider, tmp_path / "a")
    stored = safetensors.torch.load_file(str(tmp_path / "a" / TRAINED_FILE))
    dropped = sorted(stored)[0]
    del stored[dropped]
    stored["adapter.extra.weight"] = torch.zeros(1)
    metadata = {"format": "freezeempath-trained/1", "prefixes": '["adapter"]', "aliases": "{}"}
    safetensors.torch.save_file(stored, str(tmp_path / "a" / TRAINED_FILE), metadata=metadata)
    with pytest.raises(ValueError, match=f"missing \\['{dropped}'\\], unexpected \\['adapter.extra.weight'\\]"):
        load_trained(source, tmp_path / "a")


def test_files_that_are_not_artefacts_are_rejected(tmp_path):
    safetensors.torch.save_file({"adapter.x": torch.zeros(1)}, str(tmp_path / TRAINED_FILE))
    _, model = _model(1)
    with pytest.raises(ValueError, match="not a FreezeEmpathModel artefact"):
        load_trained(model, tmp_path)
    metadata = {"format": "freezeempath-trained/1", "prefixes": '["llm"]', "aliases": "{}"}
    safetensors.torch.save_file({"llm.x": torch.zeros(1)}, str(tmp_path / TRAINED_FILE), metadata=metadata)
    with pytest.raises(ValueError, match="holds frozen parts \\['llm'\\]"):
        load_trained(model, tmp_path)
