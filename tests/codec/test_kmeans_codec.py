"""MelKMeansCodec: frame counts, an untrained codec end to end, input validation, constructor checks."""

from __future__ import annotations

import math

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.protocol import SpeechCodec
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip


def make_codec() -> MelKMeansCodec:
    codec = build_codec(TINY)
    assert isinstance(codec, MelKMeansCodec)
    return codec


@pytest.mark.parametrize("n", [1, HOP - 1, HOP, HOP + 1, 7 * HOP + 3, TINY.sample_rate])
def test_encode_frame_count_and_range(n: int) -> None:
    codec = make_codec()
    units = codec.encode(clip(0)[:n])
    assert units.dtype == torch.int64
    assert units.shape == (math.ceil(n / HOP),) == (codec.frame_count(n),)
    assert int(units.min()) >= 0 and int(units.max()) < TINY.n_units


def test_untrained_codec_runs_end_to_end_and_is_deterministic() -> None:
    codec = make_codec()
    assert isinstance(codec, SpeechCodec)
    wave = clip(1)
    units = codec.encode(wave)
    audio = codec.decode(units)
    assert audio.dtype == torch.float32
    assert audio.shape == (units.numel() * HOP,)
    assert torch.isfinite(audio).all()
    other = make_codec()
    assert torch.equal(other.encode(wave), units)
    assert torch.equal(other.decode(units), audio)
    assert codec.decode(torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_constructing_a_codec_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    make_codec()
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (torch.zeros(0), "empty"),
        (torch.tensor([0.0, float("nan"), 0.1]), "NaN"),
        (torch.zeros(2, 400), "1-D"),
        (torch.tensor(0.5), "1-D"),
    ],
)
def test_encode_rejects_bad_waves(wave: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_codec().encode(wave)


@pytest.mark.parametrize(
    ("units", "message"),
    [
        (torch.tensor([0, 16]), r"\[0, 16\)"),
        (torch.tensor([-1, 2]), r"\[0, 16\)"),
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.zeros(2, 3, dtype=torch.long), "1-D"),
    ],
)
def test_decode_rejects_bad_units(units: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_codec().decode(units)


def test_constructor_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="not a positive multiple of unit_rate"):
        MelKMeansCodec(16, 48, 8000, 24, 512, 32, 8, 4)
    with pytest.raises(ValueError, match="n_fft"):
        MelKMeansCodec(16, 50, 8000, 24, 256, 32, 8, 4)
