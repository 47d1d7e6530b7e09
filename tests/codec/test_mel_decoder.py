"""Units → log-mel: the causal decoder, and streaming in chunks against ``decode``."""

from __future__ import annotations

import pytest
import torch
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.mel_decoder import MelStreamState, UnitMelDecoder, UnitStreamDecoder
from freezeempath.codec.protocol import CodecFitReport
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip
from helpers import mel_distance


def test_decoder_is_causal_and_starts_at_zero() -> None:
    decoder = UnitMelDecoder(TINY.n_units, TINY.n_mels, 16)
    units = torch.randint(0, TINY.n_units, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(decoder(units)) == 0  # an untrained decoder adds nothing to the codebook
    torch.nn.init.normal_(decoder.out.weight, generator=torch.Generator().manual_seed(1))
    changed = units.clone()
    changed[:, 12] = (changed[:, 12] + 1) % TINY.n_units
    a, b = decoder(units), decoder(changed)
    assert torch.equal(a[:, :12], b[:, :12])  # frames before the change do not see it
    assert not torch.equal(a[:, 12 : 13 + decoder.receptive_field], b[:, 12 : 13 + decoder.receptive_field])
    assert torch.equal(a[:, 13 + decoder.receptive_field :], b[:, 13 + decoder.receptive_field :])


def test_streaming_lengths_one_push_equals_decode(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(7, seconds=0.9))
    stream = codec.stream()
    assert isinstance(stream, UnitStreamDecoder) and stream.state is MelStreamState.OPEN
    whole = torch.cat([stream.push(units), stream.flush()])
    assert torch.equal(whole, codec.decode(units))
    assert stream.state is MelStreamState.FLUSHED
    with pytest.raises(RuntimeError, match="after flush"):
        stream.push(units[:3])


def test_streaming_in_chunks_of_five_matches_decode(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(8, seconds=1.3))  # T = 65: the last chunk is full, plus an empty push
    stream = codec.stream()
    pieces = [stream.push(chunk) for chunk in units.split(5)]
    assert all(p.numel() == c.numel() * HOP for p, c in zip(pieces, units.split(5), strict=True))
    pieces += [stream.push(units[:0]), stream.flush()]
    streamed = torch.cat(pieces)
    decoded = codec.decode(units)
    assert streamed.shape == decoded.shape == (units.numel() * HOP,)
    assert stream.units_pushed == units.numel()
    # the causal decoder's mel is chunk-invariant: the stream's context equals decode's last frames
    full_mel = codec.predict_log_mel(units[None])[0]
    torch.testing.assert_close(stream.mel_context, full_mel[-TINY.context_units :], atol=1e-5, rtol=1e-5)
    # audio: Griffin-Lim phases differ per chunk, so compare spectra against an unrelated decode
    unrelated = codec.decode(units.roll(17))
    assert mel_distance(codec, streamed, decoded) < 0.5 * mel_distance(codec, unrelated, decoded)


def test_stream_joins_have_no_clicks(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(9))
    stream = codec.stream()
    audio = torch.cat([stream.push(chunk) for chunk in units.split(5)])
    steps = audio.diff().abs()  # (N - 1,)
    joins = torch.arange(5 * HOP, audio.numel(), 5 * HOP) - 1
    assert steps[joins].max() <= torch.quantile(steps, 0.99)  # without the cross-fade: ~2x
