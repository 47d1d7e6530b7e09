"""Audio at the API boundary: file bytes decoded and checked, codec audio resampled and encoded."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from freezeempath.inference.audio_io import StreamingResampler, decode_input_audio, encode_audio, pcm16_bytes
from helpers import speech_like


@pytest.mark.parametrize(("orig", "new"), [(16_000, 24_000), (22_050, 24_000), (24_000, 16_000)])
def test_streaming_resampler_joins_to_the_whole_signal_resample(orig, new):
    x = torch.randn(orig + 123, generator=torch.Generator().manual_seed(0))
    resampler, out, i = StreamingResampler(orig, new), [], 0
    for size in [1, 7, 320, 1600, 5000] * 10:
        out.append(resampler.push(x[i : i + size]))
        i += size
    out.append(resampler.flush())
    torch.testing.assert_close(torch.cat(out), torchaudio.functional.resample(x, orig, new), atol=1e-5, rtol=0)


def test_audio_io_decodes_checks_and_encodes():
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(0.3).numpy(), 16000, format="FLAC")
    assert decode_input_audio(buffer.getvalue(), "flac").sample_rate == 16000
    for data, declared, message in [
        (buffer.getvalue(), "wav", "declared as wav but the data is flac"),
        (b"not audio at all" * 10, "wav", "could not be decoded"),
        (b"", "mp3", "empty"),
        (b"x", "aac", "unsupported input audio format"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode_input_audio(data, declared)
    wave = np.linspace(-1.5, 1.5, 2400, dtype=np.float32)
    assert pcm16_bytes(wave)[:2] == np.int16(-32767).tobytes() and len(pcm16_bytes(wave)) == 4800
    for fmt in ("wav", "flac", "mp3"):
        samples, rate = sf.read(io.BytesIO(encode_audio(wave * 0.1, 24_000, fmt)))
        assert rate == 24_000 and samples.shape[0] > 0
