"""MelKMeansCodec: frame counts, streaming vs decode, fitting, save/load, input validation.

Tiny sizes (8 kHz, hop 160, 24 mels, 16 units) and synthetic audio (gliding harmonics + noise) from helpers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from freezeempath.codec.mel_codec import CodecFitReport, MelKMeansCodec, SpeechCodec, UnitStreamDecoder, build_codec
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip
from helpers import mel_distance


def make_codec() -> MelKMeansCodec:
    return build_codec(TINY)


@pytest.fixture(scope="module")
def fitted() -> tuple[MelKMeansCodec, CodecFitReport]:
    codec = make_codec()
    report = codec.fit([clip(s) for s in range(6)], kmeans_iters=10, decoder_steps=80, seed=0)
    return codec, report


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


def test_mel_to_linear_is_the_least_squares_solution_batched_or_not() -> None:
    codec = make_codec()
    power = torch.rand(3, codec.n_mels, 7) * 4 + 0.01
    assert codec.inverse_mel.driver == "gelsd"  # the minimum-norm solution, which the pseudo-inverse gives
    expected = codec.inverse_mel(power)
    assert torch.allclose(codec.mel_to_linear(power), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(codec.mel_to_linear(power[1]), expected[1], rtol=1e-4, atol=1e-5)  # (n_mels, F)
    assert "mel_pinv" not in codec.state_dict()  # derived from the filterbank: nothing new to save or load


def test_constructing_a_codec_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    make_codec()
    assert torch.equal(torch.random.get_rng_state(), state)


def test_streaming_lengths_one_push_equals_decode(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(7, seconds=0.9))
    stream = codec.stream()
    assert isinstance(stream, UnitStreamDecoder)
    whole = torch.cat([stream.push(units), stream.flush()])
    assert torch.equal(whole, codec.decode(units))
    with pytest.raises(RuntimeError, match="after flush"):
        stream.push(units[:3])


def test_streaming_in_chunks_of_five_matches_decode(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(8, seconds=1.3))  # T = 65: the last chunk is full, plus an empty push
    stream = codec.stream()
    pieces = [stream.push(chunk) for chunk in units.split(5)]
    assert all(p.numel() == c.numel() * HOP for p, c in zip(pieces, units.split(5), strict=True))
    pieces += [stream.push(units[:0]), stream.flush()]
    streamed = torch.cat(pieces)
    decoded = codec.decode(units)
    assert streamed.shape == decoded.shape == (units.numel() * HOP,)
    assert stream.units_pushed == units.numel()
    # the causal decoder's mel is chunk-invariant: the stream's context equals decode's last frames
    full_mel = codec.predict_log_mel(units[None])[0]
    torch.testing.assert_close(stream.mel_context, full_mel[-TINY.context_units :], atol=1e-5, rtol=1e-5)
    # audio: Griffin-Lim phases differ per chunk, so compare spectra against an unrelated decode
    unrelated = codec.decode(units.roll(17))
    assert mel_distance(codec, streamed, decoded) < 0.5 * mel_distance(codec, unrelated, decoded)


def test_stream_joins_have_no_clicks(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(9))
    stream = codec.stream()
    audio = torch.cat([stream.push(chunk) for chunk in units.split(5)])
    steps = audio.diff().abs()  # (N - 1,)
    joins = torch.arange(5 * HOP, audio.numel(), 5 * HOP) - 1
    assert steps[joins].max() <= torch.quantile(steps, 0.99)  # without the cross-fade: ~2x


def test_fit_improves_codebook_and_decoder(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, report = fitted
    assert report.clips == 6
    assert report.frames == 6 * codec.frame_count(TINY.sample_rate)
    assert report.inertia < report.inertia_initial
    assert report.mel_l1_after < report.mel_l1_before
    wave = clip(11)
    untrained = make_codec()
    lag = HOP  # output sample k reconstructs input sample k - hop
    fitted_error = mel_distance(codec, codec.decode(codec.encode(wave))[lag:], wave[:-lag])
    untrained_error = mel_distance(codec, untrained.decode(untrained.encode(wave))[lag:], wave[:-lag])
    assert fitted_error < untrained_error


def test_fit_is_deterministic_and_needs_enough_frames() -> None:
    waves = [clip(s, seconds=0.5) for s in range(2)]
    a, b = make_codec(), make_codec()
    assert a.fit(waves, kmeans_iters=3, decoder_steps=5, seed=3) == b.fit(
        waves, kmeans_iters=3, decoder_steps=5, seed=3
    )
    assert torch.equal(a.codebook, b.codebook)
    with pytest.raises(ValueError, match="at least n_units=16 frames"):
        make_codec().fit([clip(0, seconds=0.1)])


def test_save_load_round_trip(fitted: tuple[MelKMeansCodec, CodecFitReport], tmp_path: Path) -> None:
    codec, _ = fitted
    codec.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"codec.safetensors", "codec.json"}
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
