"""Input an adversarial client sends gets a 400 that names the problem, at a cost bounded by the limits:
odd sample rates are refused from the header, long audio before it is decoded, absurd samples and seeds
by value, and error messages name the field and the reason."""

from __future__ import annotations

import base64
import io
import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from freezeempath.inference.audio_io import ACCEPTED_RATES
from freezeempath.inference.llm_session import LLMSession
from helpers import speech_like, text_request

from serve.api import ApiError, ChatCompletionRequest, InputAudio, audio_input
from serve.gateway import parse


def _part(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> InputAudio:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    declared = {"WAV": "wav", "FLAC": "flac"}[fmt]
    return InputAudio(data=base64.b64encode(buffer.getvalue()).decode(), format=declared)


def test_a_rate_outside_the_accepted_set_is_refused_from_the_header():
    with pytest.raises(ApiError) as err:
        audio_input(_part(speech_like(1.0, rate=4001).numpy(), 4001), "messages.0.content.0.input_audio", 30)
    assert err.value.status == 400 and err.value.code == "unsupported_sample_rate"
    assert "4001 Hz" in err.value.message and "16000" in err.value.message
    assert 16_000 in ACCEPTED_RATES and 44_100 in ACCEPTED_RATES and 4001 not in ACCEPTED_RATES


def test_a_long_clip_is_refused_before_it_is_decoded():
    silence = np.zeros(60 * 60 * 8000, dtype=np.int16)  # 60 min at 8 kHz: a few hundred KB of FLAC
    part = _part(silence, 8000, fmt="FLAC", subtype="PCM_16")
    assert len(part.data) < 2_000_000
    tracemalloc.start()
    with pytest.raises(ApiError, match=r"audio is 3600.00 s long; the maximum is 30 s") as err:
        audio_input(part, "input_audio", 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.value.code == "invalid_audio" and peak < 20 * 2**20  # decoding it whole: 115 MB of float32


def test_samples_far_outside_full_scale_are_refused():
    loud = (speech_like(1.0).numpy() * 1e20).astype(np.float32)
    with pytest.raises(ApiError, match=r"samples reach [0-9.]+e\+19; float audio must lie within ±10000") as err:
        audio_input(_part(loud, 16000, subtype="FLOAT"), "input_audio", 30)
    assert err.value.code == "invalid_audio"


@pytest.mark.parametrize(
    ("patch", "param", "message"),
    [
        ({"seed": 2**70}, "seed", "seed: Input should be less than or equal to 9223372036854775807"),
        ({"seed": -1}, "seed", "seed: Input should be greater than or equal to 0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content.0.text",
            "messages.0.content.0.text: Input should be a valid string",
        ),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
            "messages.0.content: Input should be a valid string, or Input should be a valid array",
        ),
    ],
)
def test_a_body_error_names_the_field_and_the_reason(patch, param, message):
    body = {"model": "freezeempath", "messages": [{"role": "user", "content": "hi"}]} | patch
    with pytest.raises(ApiError) as err:
        parse(ChatCompletionRequest, json.dumps(body).encode())
    assert (err.value.status, err.value.param, err.value.message) == (400, param, message)


def test_a_vanishing_temperature_samples_the_top_token_instead_of_nan(tiny_model):
    llm, stop = tiny_model.llm, tiny_model.stop_ids
    greedy = LLMSession(llm, stop, [text_request("hello", 5, temperature=0.0)], read=3)
    tiny = LLMSession(llm, stop, [text_request("hello", 5, temperature=1e-38)], read=3)
    for a, b in zip(iter(greedy.step, None), iter(tiny.step, None), strict=True):
        assert [g.token_ids if g else None for g in a] == [g.token_ids if g else None for g in b]
    assert torch.isfinite(tiny.logits).all()
