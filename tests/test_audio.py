"""Audio front end: Whisper log-mel parity, validation errors, decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from freezeempath.audio import WhisperLogMel, decode_audio, validate_waveform
from helpers import speech_like
from transformers import WhisperFeatureExtractor


@pytest.mark.parametrize(("n_mels", "seconds", "clip_seconds"), [(80, 30, 3.3), (128, 30, 1.0), (80, 4, 2.5)])
def test_log_mel_matches_whisper_feature_extractor(n_mels, seconds, clip_seconds):
    wave = speech_like(clip_seconds, seed=3)
    ours = WhisperLogMel(n_mels, seconds * 100)([wave])
    ref = WhisperFeatureExtractor(feature_size=n_mels, chunk_length=seconds)(
        wave.numpy(), sampling_rate=16_000, return_tensors="pt", return_attention_mask=True
    )
    assert ours.mel.shape == ref.input_features.shape
    torch.testing.assert_close(ours.mel, ref.input_features, atol=1e-4, rtol=0)
    assert int(ours.lens[0]) == int(ref.attention_mask.sum())


def test_batch_features_equal_single_features():
    a, b = speech_like(1.0, seed=1), speech_like(2.5, seed=2)
    frontend = WhisperLogMel(80, 400)
    both = frontend([a, b])
    torch.testing.assert_close(both.mel[0], frontend([a]).mel[0])
    assert both.lens.tolist() == [100, 250]


@pytest.mark.parametrize("window", [400, 3000])
@pytest.mark.parametrize("clip_seconds", [(2.5, 0.3), (0.01,), (1.0, 3.997), (4.0,), (0.0,)])
def test_cropped_stft_equals_the_whole_window_exactly(window, clip_seconds):
    """Only the clips' span is transformed; the frames after it must equal the whole window's, bit for bit."""
    frontend = WhisperLogMel(80, window)
    waves = [speech_like(s, seed=i) if s else torch.zeros(1600) for i, s in enumerate(clip_seconds)]
    whole, _ = frontend.log_mel(waves, frontend.window_samples)
    assert torch.equal(frontend(waves).mel, whole)


@pytest.mark.parametrize(
    ("wave", "rate", "message"),
    [
        (np.zeros(0, np.float32), 16000, "audio is empty"),
        (np.full(100, np.nan, np.float32), 16000, "NaN or infinite"),
        (np.array([0.0, np.inf], np.float32), 16000, "NaN or infinite"),
        (np.zeros((2, 2, 2), np.float32), 16000, "got 3-D"),
        (np.float32(0.5), 16000, "got 0-D"),
        (np.zeros(1600, np.float32), 0, "outside the accepted range"),
        (np.zeros(1600, np.float32), 10_000_000, "outside the accepted range"),
        (np.zeros(1600, np.float32), 16000.5, "must be an integer"),
        (np.zeros(16000 * 5, np.float32), 16000, "5.00 s long; the maximum is 4 s"),
    ],
)
def test_bad_waveforms_raise_clear_errors(wave, rate, message):
    with pytest.raises(ValueError, match=message):
        validate_waveform(wave, rate, max_seconds=4.0)


def test_resample_and_channels():
    stereo = np.stack([np.ones(8000), np.zeros(8000)], axis=1).astype(np.float32)  # (N, C) as soundfile gives
    out = validate_waveform(stereo, 8000, max_seconds=4.0)
    assert out.shape == (16000,)
    assert abs(float(out[4000:12000].mean()) - 0.5) < 1e-3


def test_decode_audio_reads_flac_and_rejects_garbage():
    buf = io.BytesIO()
    sf.write(buf, speech_like(0.5).numpy(), 22050, format="FLAC")
    samples, rate = decode_audio(buf.getvalue())
    assert rate == 22050 and samples.shape == (8000,)
    with pytest.raises(ValueError, match="could not be decoded"):
        decode_audio(b"RIFF\x00\x00not really audio")
    with pytest.raises(ValueError, match="empty"):
        decode_audio(b"")


def test_samples_far_beyond_full_scale_are_refused_but_headroom_passes():
    assert validate_waveform(torch.full((1600,), 1.5), 16_000, 1.0).abs().max() == pytest.approx(1.5)
    with pytest.raises(ValueError, match=r"audio samples reach 2e\+05; float audio must lie within ±10000"):
        validate_waveform(torch.full((1600,), 2e5), 16_000, 1.0)
