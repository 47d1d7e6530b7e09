"""Dialogues for the model: each clip is validated once, by ``check_audio`` or by ``prepare_dialogue``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from freezeempath.inference.dialogue import AudioInput, CheckedAudio, Message, check_audio, prepare_dialogue
from helpers import speech_like


def test_check_audio_gives_a_mono_clip_at_the_model_rate():
    stereo = np.stack([speech_like(0.5, rate=8000).numpy()] * 2, axis=1)  # (N, 2) at 8 kHz
    checked = check_audio(AudioInput(stereo, 8000), 8.0)
    assert checked.sample_rate == 16_000 and checked.samples.shape == (8000,)
    assert checked.samples.dtype == torch.float32
    with pytest.raises(ValueError, match="maximum is 1 s"):
        check_audio(AudioInput(np.zeros(16000 * 2, np.float32), 16000), 1.0)


def test_prepare_dialogue_takes_a_checked_clip_as_it_is_and_checks_the_others():
    checked = check_audio(AudioInput(speech_like(0.5), 16000), 8.0)
    raw = AudioInput(speech_like(0.5, seed=1, rate=8000).numpy(), 8000)
    dialogue = [Message("user", audio=checked), Message("assistant", "ok"), Message("user", audio=raw)]
    prepared = prepare_dialogue(dialogue, 8.0)
    assert prepared.clips[0] is checked.samples and prepared.clips[1].shape == (8000,)  # raw: resampled
    assert [t.spoken for t in prepared.turns] == [True, False, True]
    # what its checker let through is not checked again (a clip the check would refuse shows it)
    unchecked = CheckedAudio(torch.full((800,), float("nan")), 16_000)
    assert prepare_dialogue([Message("user", audio=unchecked)], 8.0).clips[0] is unchecked.samples


def test_prepare_dialogue_still_rejects_bad_audio_for_in_process_callers():
    with pytest.raises(ValueError, match="message 0: audio contains NaN"):
        prepare_dialogue([Message("user", audio=AudioInput(np.full(800, np.nan, np.float32), 16000))], 8.0)


def test_a_clip_checked_at_another_rate_is_checked_again_at_the_dialogues():
    at_8k = CheckedAudio(speech_like(0.5, rate=8000), 8000)
    assert prepare_dialogue([Message("user", audio=at_8k)], 8.0).clips[0].shape == (8000,)
