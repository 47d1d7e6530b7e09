"""Content states (``kind: encoder_vq``): units from the frozen speech encoder, recorded with the codec, and
states that hold no padded batch alive."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchaudio
from freezeempath.codec.build import build_codec
from freezeempath.codec.content_states import STATE_HOP, fit_length, own_states
from freezeempath.codec.vq import MelVQCodec
from freezeempath.codec.vq_fit import fit_mel_vq
from freezeempath.config import load_config
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip

ENCODER = load_config("tiny").model.encoder  # random Whisper weights, built from a fixed seed
ENC_VQ = dataclasses.replace(TINY, kind="encoder_vq", sample_rate=16_000, n_fft=1024)


def speech16k(seed: int, seconds: float = 1.0) -> torch.Tensor:
    """The test clip at the speech encoder's 16 kHz."""
    return torchaudio.functional.resample(clip(seed, seconds), TINY.sample_rate, 16_000)


def test_encoder_vq_takes_units_from_the_speech_encoder_and_records_it(tmp_path: Path) -> None:
    codec = build_codec(ENC_VQ, ENCODER)
    assert isinstance(codec, MelVQCodec) and codec.kind == "encoder_vq"
    report = fit_mel_vq(codec, [speech16k(s) for s in range(6)], decoder_steps=60, seed=0)
    assert report.mel_l1_after < report.mel_l1_before
    long = speech16k(7, seconds=ENCODER.window_seconds + 1.5)  # two encoder windows
    units = codec.encode(long)
    assert units.shape == (-(-long.numel() // STATE_HOP),) and len(set(units.tolist())) > 1
    codec.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["content"] == dataclasses.asdict(ENCODER)
    loaded = build_codec(dataclasses.replace(ENC_VQ, path=str(tmp_path)), ENCODER)
    assert torch.equal(loaded.encode(long), units)
    assert torch.equal(loaded.decode(units), codec.decode(units))
    with pytest.raises(ValueError, match="fitted with speech encoder"):
        build_codec(dataclasses.replace(ENC_VQ, path=str(tmp_path)), dataclasses.replace(ENCODER, layers=3))
    with pytest.raises(ValueError, match="not a mel_vq codec"):
        build_codec(dataclasses.replace(ENC_VQ, kind="mel_vq", path=str(tmp_path)))


def test_content_states_own_their_storage_so_padded_batches_are_freed() -> None:
    padded = torch.randn(1500, 8)  # one row of an encoder batch, padded to the window
    states = own_states(padded, 10, 11)  # 10 valid states, 11 codec frames: the last repeated
    assert states.shape == (11, 8) and torch.equal(states[:10], padded[:10]) and torch.equal(states[10], padded[9])
    cut = own_states(padded, 10, 9)  # one state more than codec frames: cut
    assert torch.equal(cut, padded[:9])
    for own in (states, cut):  # not the 1500-row batch
        assert own.untyped_storage().nbytes() == own.numel() * own.element_size()


def test_fit_length_cuts_or_repeats_the_last_state() -> None:
    states = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(fit_length(states, 2), states[:2])
    assert torch.equal(fit_length(states, 5), torch.cat([states, states[-1:], states[-1:]]))
