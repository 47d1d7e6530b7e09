"""Padding never changes results: S and E of a clip alone equal those of the clip batched beside a longer one."""

from __future__ import annotations

import torch
from helpers import speech_like


def test_adapter_and_emotion_are_batch_invariant(tiny_model):
    short, long = speech_like(1.3, seed=1), speech_like(6.0, seed=2)
    fe = tiny_model.frontend
    with torch.no_grad():
        alone = tiny_model.understand(*_features(fe, [short]))
        batched = tiny_model.understand(*_features(fe, [short, long]))
    n = int(alone.speech_lens[0])
    assert n == int(batched.speech_lens[0]) and n < int(batched.speech_lens[1])
    torch.testing.assert_close(batched.speech[0, :n], alone.speech[0, :n], atol=1e-5, rtol=0)
    assert torch.count_nonzero(batched.speech[0, n:]) == 0
    torch.testing.assert_close(batched.emotion[0], alone.emotion[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.aux_logits[0], alone.aux_logits[0], atol=1e-5, rtol=0)


def test_pooling_over_padding_would_change_e(tiny_model):
    """The release's unmasked pooling is not batch invariant: treating padding as frames moves E."""
    enc = tiny_model.encoder(*_features(tiny_model.frontend, [speech_like(1.3), speech_like(6.0)]))
    with torch.no_grad():
        masked = tiny_model.emotion(enc.layers, enc.lens)
        unmasked = tiny_model.emotion(enc.layers, torch.full_like(enc.lens, enc.layers.shape[2]))
    assert (masked[0] - unmasked[0]).abs().max() > 1e-3


def _features(frontend, waves):
    f = frontend(waves)
    return f.mel, f.lens
