"""The codec protocols: every codec kind is a ``SpeechCodec`` whose ``stream`` is a ``AudioStream``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.protocol import AudioStream, CodecFitReport, SpeechCodec
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip


@pytest.mark.parametrize("kind", ["mel_kmeans", "mel_vq"])
def test_every_kind_speaks_the_codec_protocol(kind: str) -> None:
    codec = build_codec(dataclasses.replace(TINY, kind=kind))
    assert isinstance(codec, SpeechCodec)
    stream = codec.stream()
    assert isinstance(stream, AudioStream)
    units = codec.encode(clip(0, seconds=0.3))
    assert torch.equal(torch.cat([stream.push(units), stream.flush()]), codec.decode(units))


def test_fit_report_is_a_frozen_record() -> None:
    report = CodecFitReport(clips=2, frames=100, inertia_initial=2.0, inertia=1.0, mel_l1_before=3.0, mel_l1_after=1.5)
    assert dataclasses.asdict(report)["frames"] == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.clips = 3  # type: ignore[misc]
