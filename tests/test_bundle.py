"""Model bundles: a round trip rebuilds the same model, stages extend a bundle, and a bundle trained against
other frozen weights is refused, naming both hashes."""

from __future__ import annotations

import json

import pytest
import torch
from freezeempath.bundle import (
    BundleError,
    StepRecord,
    build_bundle_model,
    bundle_config,
    frozen_hashes,
    read_manifest,
    write_bundle,
)
from freezeempath.codec.build import build_codec


def _nudge(module: torch.nn.Module, amount: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(amount)


def test_round_trip_rebuilds_every_part_and_records_provenance(tiny_cfg, tiny_model, tmp_path):
    _nudge(tiny_model.emotion, 0.25)  # "trained" in stage 2a
    record = StepRecord("s2a", ("emotion", "aux_head"), steps=7, shards={"a.parquet": "ab" * 32}, metrics={"acc": 0.5})
    manifest = write_bundle(tmp_path / "b", tiny_model, tiny_cfg, record)
    cfg, model = build_bundle_model(tmp_path / "b")
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert manifest.parts == ("aux_head", "emotion") and manifest.codec is None
    assert manifest.frozen == frozen_hashes(tiny_model) and len(manifest.frozen["llm"]) == 64
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk["history"][0] == {
        "step": "s2a",
        "parts": ["emotion", "aux_head"],
        "steps": 7,
        "shards": {"a.parquet": "ab" * 32},
        "metrics": {"acc": 0.5},
    }
    assert cfg.model == tiny_cfg.model and not (tmp_path / "b.tmp").exists()


def test_a_stage_extends_the_bundle_it_started_from_and_keeps_its_codec(tiny_cfg, tiny_model, tmp_path):
    codec_dir = build_codec(tiny_cfg.model.codec, tiny_cfg.model.encoder).save(tmp_path / "codec")
    write_bundle(tmp_path / "base", tiny_model, tiny_cfg, StepRecord("s1", ("adapter",)), codec_dir=codec_dir)
    cfg, model = build_bundle_model(tmp_path / "base")
    assert cfg.model.codec.path == str((tmp_path / "base" / "codec").resolve())
    _nudge(model.speech_decoder, 0.1)  # "trained" in stage 3
    manifest = write_bundle(
        tmp_path / "next", model, cfg, StepRecord("s3b", ("speech_decoder",)), base=tmp_path / "base"
    )
    assert manifest.parts == ("adapter", "speech_decoder") and [r.step for r in manifest.history] == ["s1", "s3b"]
    assert manifest.codec == "codec" and (tmp_path / "next" / "codec" / "codec.json").is_file()
    _, again = build_bundle_model(tmp_path / "next")
    assert torch.equal(
        again.speech_decoder.lm.get_input_embeddings().weight, model.speech_decoder.lm.get_input_embeddings().weight
    )
    assert bundle_config(tmp_path / "next").model.codec.path.endswith("next/codec")


def test_a_bundle_of_other_frozen_weights_is_refused_naming_both_hashes(tiny_cfg, tiny_model, tmp_path):
    write_bundle(tmp_path / "b", tiny_model, tiny_cfg, StepRecord("s1", ("adapter",)))
    trained_against = read_manifest(tmp_path / "b").frozen["llm"]
    with pytest.raises(BundleError, match=rf"llm: bundle {trained_against} vs configured [0-9a-f]{{64}}") as err:
        build_bundle_model(tmp_path / "b", ["model.seed=1"])  # another seed: other random frozen weights
    assert "encoder: bundle" in str(err.value)
    base = frozen_hashes(tiny_model)
    with pytest.raises(BundleError, match="other frozen weights"):
        other_cfg = bundle_config(tmp_path / "b", ["model.seed=1"])
        from freezeempath.model.build import build_model

        write_bundle(tmp_path / "c", build_model(other_cfg.model), other_cfg, StepRecord("s2a"), base=tmp_path / "b")
    assert read_manifest(tmp_path / "b").frozen == base  # the refused write left the base alone


def test_what_is_not_a_bundle_says_so(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle: no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="format 'something-else'"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "freezeempath-bundle/1"}')
    with pytest.raises(BundleError, match="not a bundle manifest"):
        read_manifest(tmp_path)
