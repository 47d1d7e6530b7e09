"""The codec's one Griffin-Lim: mel → linear by least squares, batched chunks equal single ones, cross-fades."""

from __future__ import annotations

import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.griffin_lim import LOG_FLOOR, cross_fade, fade_ramp, synthesize_chunk
from helpers import TINY_CODEC as TINY


def test_mel_to_linear_is_the_least_squares_solution_batched_or_not() -> None:
    codec = build_codec(TINY)
    power = torch.rand(3, codec.n_mels, 7) * 4 + 0.01
    assert codec.inverse_mel.driver == "gelsd"  # the minimum-norm solution, which the pseudo-inverse gives
    expected = codec.inverse_mel(power)
    assert torch.allclose(codec.mel_to_linear(power), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(codec.mel_to_linear(power[1]), expected[1], rtol=1e-4, atol=1e-5)  # (n_mels, F)
    assert "mel_pinv" not in codec.state_dict()  # derived from the filterbank: nothing new to save or load


def test_a_batch_of_chunks_sounds_like_each_chunk_alone() -> None:
    codec = build_codec(TINY)
    g = torch.Generator().manual_seed(0)
    frames = LOG_FLOOR / 2 + 2.0 * torch.randn(3, TINY.context_units + 5, TINY.n_mels, generator=g)
    waves, tails = codec.synthesize(frames)
    hop = TINY.sample_rate // TINY.unit_rate
    assert waves.shape == (3, 5 * hop) and tails.shape == (3, hop // 2)
    for b in range(3):
        wave, tail = synthesize_chunk(frames[b], codec.mel_pinv, codec.griffin_lim, TINY.context_units, hop // 2)
        torch.testing.assert_close(waves[b], wave, atol=1e-5, rtol=0)
        torch.testing.assert_close(tails[b], tail, atol=1e-5, rtol=0)


def test_cross_fade_runs_from_the_tail_into_the_chunk() -> None:
    ramp = fade_ramp(80)
    assert ramp.shape == (80,) and 0 < ramp[0] < 0.01 and 0.99 < ramp[-1] < 1
    torch.testing.assert_close(ramp + ramp.flip(0), torch.ones(80))  # the two weights always sum to one
    audio, tail = torch.ones(200), torch.zeros(80)
    joined = cross_fade(audio, tail, ramp)
    assert joined is audio  # in place
    torch.testing.assert_close(joined[:80], ramp)
    assert bool((joined[80:] == 1).all())
