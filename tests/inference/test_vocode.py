"""Vocoding a round of several streams at once equals each stream's own one-by-one vocoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.config import load_config
from freezeempath.inference.vocode import VocodeRequest, vocode_batch


@pytest.mark.parametrize("voiced", [False, True])
def test_vocode_batch_equals_one_stream_push_and_resamples(voiced):
    codec = build_codec(replace(load_config("tiny").model.codec, voice_conditioned=voiced))
    if voiced:  # a voice that changes the mel, so a batch that dropped it would differ from the stream
        init = torch.Generator().manual_seed(2)
        torch.nn.init.normal_(codec.decoder.voice.weight, generator=init)
        codec.default_voice.normal_(generator=torch.Generator().manual_seed(1))
        torch.nn.init.normal_(codec.decoder.out.weight, std=0.01, generator=init)
    g = torch.Generator().manual_seed(0)
    streams = [torch.randint(0, codec.n_units, (n,), generator=g) for n in (13, 17, 5)]
    refs = []
    for units in streams:
        decoder = codec.stream()
        refs.append(torch.cat([decoder.push(units[i : i + 5]) for i in range(0, units.numel(), 5)]))
    states, got = [None] * 3, [[] for _ in streams]
    for i in range(0, 17, 5):
        requests = [VocodeRequest(states[b], tuple(streams[b][i : i + 5].tolist())) for b in range(3)]
        for b, result in enumerate(vocode_batch(codec, requests)):
            got[b].append(result.audio)
            states[b] = result.state
    # Griffin-Lim magnifies the batch's float rounding where the voice makes the mel larger: up to 7e-4
    # over eight weight draws, against 1.3e-2 for a batch that drops the voice (peaks 0.02-0.07)
    atol = 2e-3 if voiced else 1e-4
    for ref, parts in zip(refs, got, strict=True):
        torch.testing.assert_close(torch.cat(parts), ref, atol=atol, rtol=0)
    final = vocode_batch(codec, [VocodeRequest(None, tuple(streams[0].tolist()), final=True)], output_rate=24_000)
    assert final[0].audio.numel() == streams[0].numel() * codec.hop_length * 3 // 2 and final[0].sample_rate == 24_000
