"""Building codecs from config: the kind picks the class, encoder_vq needs the encoder, parts for vocoding."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from freezeempath.codec.build import build_codec, build_codec_part
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.protocol import SpeechCodec
from freezeempath.codec.vq import MelVQCodec
from freezeempath.config import load_config
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip

VQ = dataclasses.replace(TINY, kind="mel_vq")
ENCODER = load_config("tiny").model.encoder  # random Whisper weights, built from a fixed seed
ENC_VQ = dataclasses.replace(TINY, kind="encoder_vq", sample_rate=16_000, n_fft=1024)


def test_config_kind_builds_a_vq_codec_that_speaks_the_codec_protocol() -> None:
    codec = build_codec(VQ)
    assert isinstance(codec, MelVQCodec) and isinstance(codec, SpeechCodec)
    assert isinstance(codec.synthesizer, MelKMeansCodec)  # what vocoding uses
    units = codec.encode(clip(0, seconds=0.5))
    assert units.shape == (-(-TINY.sample_rate // 2 // HOP),) and units.dtype == torch.long
    assert int(units.min()) >= 0 and int(units.max()) < TINY.n_units
    assert codec.decode(units).shape == (units.numel() * HOP,)


def test_encoder_vq_needs_the_encoder_and_its_frame_rate() -> None:
    with pytest.raises(ValueError, match="needs the speech encoder's config"):
        build_codec(ENC_VQ)
    with pytest.raises(ValueError, match="one unit per encoder state"):
        build_codec(dataclasses.replace(ENC_VQ, sample_rate=8000, n_fft=512), ENCODER)


@pytest.mark.parametrize("kind", ["mel_kmeans", "mel_vq"])
def test_the_codec_part_is_the_synthesizer_ready_to_vocode(kind: str) -> None:
    model = dataclasses.replace(load_config("tiny").model, codec=dataclasses.replace(TINY, kind=kind))
    part = build_codec_part(model)
    assert isinstance(part, MelKMeansCodec) and not part.training
    units = torch.arange(TINY.n_units)
    assert torch.equal(part.decode(units), build_codec(model.codec).decode(units))
