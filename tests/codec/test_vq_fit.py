"""Fitting a MelVQCodec: lower mel error, folding, determinism, crops by clip or by audio, the masked loss."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.vq import MelVQCodec
from freezeempath.codec.vq_fit import BATCH, CROP_FRAMES, VQTrainer, draw_crops, fit_mel_vq
from freezeempath.config import load_config
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip
from helpers import mel_distance

VQ = dataclasses.replace(TINY, kind="mel_vq")


def make_codec() -> MelVQCodec:
    codec = build_codec(VQ)
    assert isinstance(codec, MelVQCodec)
    return codec


def test_fit_lowers_mel_error_and_units_carry_information(fitted_vq: tuple[MelVQCodec, CodecFitReport]) -> None:
    codec, report = fitted_vq
    assert report.clips == 6 and report.frames == 6 * TINY.unit_rate
    assert report.mel_l1_after < 0.5 * report.mel_l1_before
    wave = clip(20)  # held out
    units = codec.encode(wave)
    assert len(set(units.tolist())) > 2  # the units carry information, not one code
    untrained = make_codec()
    trained_error = mel_distance(codec.synthesizer, codec.decode(units), wave)
    untrained_error = mel_distance(untrained.synthesizer, untrained.decode(untrained.encode(wave)), wave)
    assert trained_error < untrained_error


def test_decoder_folding_keeps_streaming_equal_to_decode(fitted_vq: tuple[MelVQCodec, CodecFitReport]) -> None:
    codec, _ = fitted_vq
    units = codec.encode(clip(21))
    stream = codec.stream()
    whole = torch.cat([stream.push(units), stream.flush()])
    torch.testing.assert_close(whole, codec.decode(units))
    assert torch.count_nonzero(codec.synthesizer.codebook) == 0  # everything lives in the folded decoder


def test_fit_is_deterministic() -> None:
    waves = [clip(s, seconds=0.5) for s in range(2)]
    a, b = make_codec(), make_codec()
    assert fit_mel_vq(a, waves, decoder_steps=5, seed=3) == fit_mel_vq(b, waves, decoder_steps=5, seed=3)
    assert torch.equal(a.codes, b.codes)
    with pytest.raises(ValueError, match="at least n_units=16 frames"):
        fit_mel_vq(make_codec(), [clip(0, seconds=0.1)])


def test_crops_drawn_by_audio_weigh_clips_by_frames_and_mark_their_padding() -> None:
    long, short = torch.randn(40 * CROP_FRAMES, 3), torch.randn(10, 3)
    inputs, mels = [long, short], [long[:, :2], short[:, :2]]
    generator = torch.Generator().manual_seed(0)
    weights = torch.tensor([float(long.shape[0]), float(short.shape[0])])
    short_rows = uniform_short = 0
    for _ in range(50):
        x, y, valid, picks = draw_crops(inputs, mels, generator, weights)
        assert x.shape == (BATCH, CROP_FRAMES, 3) and y.shape == (BATCH, CROP_FRAMES, 2)
        is_short = valid.sum(1) == 10
        assert bool((is_short == (picks == 1)).all())  # the clips drawn, for their voices
        assert bool((valid.sum(1)[~is_short] == CROP_FRAMES).all()) and bool(valid[is_short, :10].all())
        short_rows += int(is_short.sum())
        uniform_short += int((draw_crops(inputs, mels, generator)[1][:, 10:] == short[-1, :2]).all(-1).all(-1).sum())
    assert short_rows < 0.02 * 50 * BATCH  # 10 of 5130 frames: about 0.2 % of the crops
    assert 0.35 * 50 * BATCH < uniform_short < 0.65 * 50 * BATCH  # by clip: half, padded with the last frame


def test_fit_with_crops_by_audio_trains_and_unknown_ways_are_refused() -> None:
    waves = [clip(0, seconds=0.2), clip(1, seconds=1.5)]
    by_clip, by_audio = make_codec(), make_codec()
    report = fit_mel_vq(by_audio, waves, decoder_steps=60, seed=3, crops="audio")
    assert report.mel_l1_after < report.mel_l1_before
    fit_mel_vq(by_clip, waves, decoder_steps=60, seed=3)
    assert not torch.equal(by_clip.codes, by_audio.codes)
    with pytest.raises(ValueError, match="crops must be 'clip' or 'audio'"):
        fit_mel_vq(make_codec(), waves, crops="frames")
    with pytest.raises(ValueError, match="targets.codec_crops must be clip or audio"):
        load_config("tiny", ["targets.codec_crops=frames"])


def test_loss_over_valid_frames_ignores_what_the_padding_holds() -> None:
    codec = make_codec()
    frames = torch.randn(300, TINY.n_mels)
    trainer = VQTrainer(codec, frames, frames, seed=0)
    x, y = torch.randn(2, CROP_FRAMES, TINY.n_mels), torch.randn(2, CROP_FRAMES, TINY.n_mels)
    valid = torch.ones(2, CROP_FRAMES, dtype=torch.bool)
    valid[1, 10:] = False
    other = y.clone()
    other[1, 10:] += 5.0  # only padded frames differ
    same = [copy.deepcopy(trainer).loss(x, target, valid) for target in (y, other)]
    torch.testing.assert_close(same[0], same[1])
    assert not torch.allclose(copy.deepcopy(trainer).loss(x, y), copy.deepcopy(trainer).loss(x, other))
