"""MelVQCodec (``kind: mel_vq``): save/load and kind checks, and a voice-conditioned decoder's voices.

Same tiny sizes and synthetic audio as the other codec tests (helpers); fitted codecs from conftest.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.vq import CODE_DIM, MelVQCodec, UnitEncoder
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip

VQ = dataclasses.replace(TINY, kind="mel_vq")


def test_unit_encoder_keeps_the_frames_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    codec = build_codec(VQ)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(codec, MelVQCodec) and isinstance(codec.encoder, UnitEncoder)
    mel, latents = codec.latents(clip(0, seconds=0.5))
    assert latents.shape == (mel.shape[0], CODE_DIM) == (TINY.unit_rate // 2, CODE_DIM)


def test_save_load_round_trip_and_kind_checks(fitted_vq: tuple[MelVQCodec, CodecFitReport], tmp_path: Path) -> None:
    codec, _ = fitted_vq
    codec.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["kind"] == "mel_vq"
    loaded = build_codec(dataclasses.replace(VQ, path=str(tmp_path)))
    wave = clip(22)
    units = codec.encode(wave)
    assert torch.equal(loaded.encode(wave), units)
    assert torch.equal(loaded.decode(units), codec.decode(units))
    with pytest.raises(ValueError, match="expected keys"):  # a mel_vq folder is not a mel_kmeans codec
        build_codec(dataclasses.replace(TINY, path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"n_units=32 \(saved 16\)"):
        build_codec(dataclasses.replace(VQ, path=str(tmp_path), n_units=32))
    kmeans_dir = tmp_path / "kmeans"
    build_codec(TINY).save(kmeans_dir)
    with pytest.raises(ValueError, match="not a mel_vq codec"):
        build_codec(dataclasses.replace(VQ, path=str(kmeans_dir)))


def test_voice_conditioned_decoder_speaks_in_the_voice_it_is_given(voiced: MelVQCodec) -> None:
    quiet, loud = clip(20) * 0.05, clip(20)  # held out
    units = voiced.encode(quiet)
    own, other = voiced.voice_of(quiet), voiced.voice_of(loud)
    assert own.shape == (TINY.n_mels,) and not torch.equal(own, other)
    synth = voiced.synthesizer
    mel = synth.log_mel(quiet)
    error_own = (synth.predict_log_mel(units[None], own[None])[0] - mel).abs().mean()
    error_other = (synth.predict_log_mel(units[None], other[None])[0] - mel).abs().mean()
    assert error_own < error_other  # the decoder reads the voice
    stream = voiced.stream(own)
    torch.testing.assert_close(torch.cat([stream.push(units), stream.flush()]), voiced.decode(units, own))
    default = synth.predict_log_mel(units[None])  # no voice: the fitting clips' mean voice
    torch.testing.assert_close(default, synth.predict_log_mel(units[None], synth.default_voice[None]))
