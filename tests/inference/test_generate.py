"""Inference: waveform in → emotion, streamed tokens, W-unit chunks and audio; batches, history, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from freezeempath.inference.dialogue import AudioInput, Message
from freezeempath.inference.generate import AudioChunk, Done, EmotionEvent, TextDelta, UnitChunk, build_responder
from freezeempath.labels import LABEL_WORDS
from helpers import speech_like


@pytest.fixture(scope="module")
def responder():
    from freezeempath.config import load_config

    return build_responder(load_config("tiny", ["model.generation.max_new_tokens=10"]).model)


def spoken(seconds: float, seed: int = 0, rate: int = 16_000) -> Message:
    return Message("user", audio=AudioInput(speech_like(seconds, seed, rate), rate))


def test_event_order_and_chunk_sizes(responder):
    events = list(responder.stream([[spoken(1.5)]]))
    assert isinstance(events[0], EmotionEvent) and isinstance(events[-1], Done)
    assert set(events[0].emotion.scores) == set(LABEL_WORDS)
    assert abs(sum(events[0].emotion.scores.values()) - 1) < 1e-4
    kinds = [type(e) for e in events]
    first_unit, last_text = kinds.index(UnitChunk), len(kinds) - 1 - kinds[::-1].index(TextDelta)
    assert first_unit < last_text, "units must stream while text is still being generated"
    write, hop = responder.model.write, responder.codec.sample_rate // responder.codec.unit_rate
    units = [e for e in events if isinstance(e, UnitChunk)]
    assert all(1 <= len(e.units) <= write for e in units)
    audio = sum(e.samples.numel() for e in events if isinstance(e, AudioChunk))
    assert audio == hop * sum(len(e.units) for e in units)


def test_batch_of_two_matches_each_alone_in_emotion(responder):
    a, b = [spoken(1.2, seed=1)], [spoken(3.0, seed=2, rate=8000)]
    together = responder.respond([a, b], temperature=0.0)
    alone = responder.respond([a], temperature=0.0)
    assert len(together) == 2 and all(r.token_ids for r in together)
    for key, value in alone[0].emotion.scores.items():
        assert abs(together[0].emotion.scores[key] - value) < 1e-5
    assert together[0].token_ids == alone[0].token_ids  # greedy decoding is batch invariant


def test_multi_turn_history_and_text_turns(responder):
    history = [spoken(1.0, seed=3), Message("assistant", "I hear you."), spoken(1.4, seed=4)]
    reply = responder.respond([history])[0]
    assert reply.emotion is not None and reply.text is not None and len(reply.units) > 0
    text_only = responder.respond([[Message("user", "hello there")]])[0]
    assert text_only.emotion is None and text_only.token_ids


def test_seeded_sampling_is_reproducible(responder):
    one = responder.respond([[spoken(1.0)]])[0]
    two = responder.respond([[spoken(1.0)]])[0]
    assert one.token_ids == two.token_ids and one.units == two.units
    assert torch.equal(one.waveform, two.waveform)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "no messages"),
        ([Message("assistant", "hi")], "last message must come from the user"),
        ([Message("user", "")], "empty message"),
        ([Message("user", audio=AudioInput(np.zeros(0, np.float32), 16000))], "audio is empty"),
        ([Message("user", audio=AudioInput(np.full(800, np.nan, np.float32), 16000))], "NaN"),
        ([Message("user", audio=AudioInput(np.zeros((2, 2, 10), np.float32), 16000))], "3-D"),
        ([Message("user", audio=AudioInput(np.zeros(800, np.float32), 50))], "sample rate 50 Hz"),
        ([Message("user", audio=AudioInput(np.zeros(16000 * 9, np.float32), 16000))], "maximum is 8 s"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(responder, messages, message):
    with pytest.raises(ValueError, match=message):
        responder.respond([messages])
