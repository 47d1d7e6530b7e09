"""Codecs on disk: save/load round trips, strict tensor copies, older records, mismatches refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.store import ARGS_FILE, WEIGHTS_FILE, copy_strict, saved_args
from freezeempath.codec.vq import MelVQCodec
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip

VQ = dataclasses.replace(TINY, kind="mel_vq")
VOICED = dataclasses.replace(VQ, voice_conditioned=True)


def test_save_load_round_trip(fitted: tuple[MelKMeansCodec, CodecFitReport], tmp_path: Path) -> None:
    codec, _ = fitted
    codec.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {WEIGHTS_FILE, ARGS_FILE} == {"codec.safetensors", "codec.json"}
    loaded = build_codec(dataclasses.replace(TINY, path=str(tmp_path)))
    wave = clip(12)
    units = codec.encode(wave)
    assert torch.equal(loaded.encode(wave), units)
    assert torch.equal(loaded.decode(units), codec.decode(units))


def test_load_rejects_config_and_shape_mismatches(
    fitted: tuple[MelKMeansCodec, CodecFitReport], tmp_path: Path
) -> None:
    codec, _ = fitted
    codec.save(tmp_path)
    with pytest.raises(ValueError, match=r"n_units=32 \(saved 16\)"):
        build_codec(dataclasses.replace(TINY, path=str(tmp_path), n_units=32))
    args = json.loads((tmp_path / "codec.json").read_text())
    (tmp_path / "codec.json").write_text(json.dumps({**args, "decoder_hidden": 48}))
    with pytest.raises(ValueError, match=r"decoder\.\S+ has shape"):
        MelKMeansCodec.load(tmp_path)
    (tmp_path / "codec.json").write_text(json.dumps({**args, "extra": 1}))
    with pytest.raises(ValueError, match="expected keys"):
        MelKMeansCodec.load(tmp_path)


def test_copy_strict_copies_in_place_and_names_what_does_not_match() -> None:
    own = {"a": torch.zeros(2), "b": torch.zeros(3)}
    copy_strict(own, {"a": torch.ones(2), "b": torch.full((3,), 2.0)}, "here")
    assert torch.equal(own["a"], torch.ones(2)) and torch.equal(own["b"], torch.full((3,), 2.0))
    with pytest.raises(ValueError, match=r"here: codec tensors do not match \(missing \['b'\], unexpected \['c'\]\)"):
        copy_strict(own, {"a": torch.ones(2), "c": torch.ones(3)}, "here")
    with pytest.raises(ValueError, match=r"here: b has shape \(4,\)"):
        copy_strict(own, {"a": torch.ones(2), "b": torch.ones(4)}, "here")


def test_codecs_saved_before_voices_still_load(tmp_path: Path) -> None:
    assert saved_args({"n_units": 4}) == {"voice_conditioned": False, "n_units": 4}
    for config, codec in ((TINY, build_codec(TINY)), (VQ, build_codec(VQ))):
        folder = tmp_path / config.kind
        codec.save(folder)
        record = json.loads((folder / "codec.json").read_text())
        del record["voice_conditioned"]  # as written before the field existed
        (folder / "codec.json").write_text(json.dumps(record))
        loaded = build_codec(dataclasses.replace(config, path=str(folder)))
        assert not loaded.voice_conditioned
        units = codec.encode(clip(3))
        assert torch.equal(loaded.decode(units), codec.decode(units))


def test_voice_state_saves_and_loads_and_wrong_voices_are_refused(voiced: MelVQCodec, tmp_path: Path) -> None:
    voiced.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["voice_conditioned"] is True
    loaded = build_codec(dataclasses.replace(VOICED, path=str(tmp_path)))
    wave = clip(21)
    units, voice = voiced.encode(wave), voiced.voice_of(wave)
    assert torch.equal(loaded.voice_of(wave), voice)
    assert torch.equal(loaded.decode(units, voice), voiced.decode(units, voice))
    assert torch.equal(loaded.decode(units), voiced.decode(units))
    with pytest.raises(ValueError, match=r"voice_conditioned=False \(saved True\)"):
        build_codec(dataclasses.replace(VQ, path=str(tmp_path)))
    with pytest.raises(ValueError, match=rf"shape \({TINY.n_mels},\)"):
        voiced.decode(units, voice[:3])
    with pytest.raises(ValueError, match="finite"):
        voiced.decode(units, torch.full_like(voice, float("nan")))
    plain = build_codec(VQ)
    with pytest.raises(ValueError, match="takes no voice"):
        plain.decode(units, voice)
    with pytest.raises(ValueError, match="takes no voice"):
        plain.voice_of(wave)
