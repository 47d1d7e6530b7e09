"""Fitted tiny codecs shared by the codec tests (each fitted once per test run; tests only read them).

Tiny sizes (8 kHz, hop 160, 24 mels, 16 units) and synthetic audio (gliding harmonics + noise) from helpers.
"""

from __future__ import annotations

import dataclasses

import pytest
from freezeempath.codec.build import build_codec
from freezeempath.codec.fit import fit_mel_kmeans
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.vq import MelVQCodec
from freezeempath.codec.vq_fit import fit_mel_vq
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip

VQ = dataclasses.replace(TINY, kind="mel_vq")
VOICED = dataclasses.replace(VQ, voice_conditioned=True)


@pytest.fixture(scope="session")
def fitted() -> tuple[MelKMeansCodec, CodecFitReport]:
    """A ``mel_kmeans`` codec fitted on six clips, and its report."""
    codec = build_codec(TINY)
    assert isinstance(codec, MelKMeansCodec)
    report = fit_mel_kmeans(codec, [clip(s) for s in range(6)], kmeans_iters=10, decoder_steps=80, seed=0)
    return codec, report


@pytest.fixture(scope="session")
def fitted_vq() -> tuple[MelVQCodec, CodecFitReport]:
    """A ``mel_vq`` codec fitted on six clips, and its report."""
    codec = build_codec(VQ)
    assert isinstance(codec, MelVQCodec)
    report = fit_mel_vq(codec, [clip(s) for s in range(6)], decoder_steps=150, seed=0)
    return codec, report


@pytest.fixture(scope="session")
def voiced() -> MelVQCodec:
    """A voice-conditioned ``mel_vq`` codec fitted on the test clips at two levels 26 dB apart: the voice
    carries the level."""
    waves = [clip(s) * gain for s in range(4) for gain in (1.0, 0.05)]
    codec = build_codec(VOICED)
    assert isinstance(codec, MelVQCodec)
    fit_mel_vq(codec, waves, decoder_steps=150, seed=0)
    return codec
