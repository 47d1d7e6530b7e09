"""Audio front end: decode (soundfile), validate, resample and Whisper log-mel (torchaudio).

Pure functions on arrays and tensors; no Ray. Waveforms are mono float32 at 16 kHz internally.
Bad input raises ``ValueError`` naming the problem, never a failure deep inside torch.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# Float audio is ±1 at full scale; a little headroom passes, values this far beyond are no audio (and
# overflow float32 in the power spectrum).
MAX_AMPLITUDE = 1e4
HOP_LENGTH = 160  # 10 ms at 16 kHz: Whisper's 100 mel frames per second
N_FFT = 400


def decode_audio(data: bytes, frames: int = -1) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 bytes to ``(samples (N,) or (N, C) float32, sample_rate)``; at most ``frames``
    frames when it is not negative (the rest is never decoded)."""
    if not data:
        raise ValueError("audio is empty (0 bytes)")
    try:
        samples, rate = sf.read(io.BytesIO(data), frames=frames, dtype="float32", always_2d=False)
    except Exception as err:  # soundfile raises several types for undecodable input
        raise ValueError(f"audio could not be decoded (corrupt or unsupported format): {err}") from None
    return samples, int(rate)


def to_mono(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(N,)``, ``(N, C)`` (soundfile) or ``(C, N)`` (torch) → mono ``(N,)``; fewer channels than samples."""
    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
    if x.ndim == 0 or x.ndim > 2:
        raise ValueError(f"audio must be 1-D (samples) or 2-D (samples × channels); got {x.ndim}-D {tuple(x.shape)}")
    if x.ndim == 2:
        channel_dim = 0 if x.shape[0] < x.shape[1] else 1
        if x.shape[channel_dim] > 16:
            raise ValueError(f"audio has {x.shape[channel_dim]} channels; at most 16 are accepted")
        x = x.mean(dim=channel_dim)
    return x.to(torch.float32)


def validate_waveform(
    wave: torch.Tensor | np.ndarray, sample_rate: int, max_seconds: float, target_rate: int = 16_000
) -> torch.Tensor:
    """Check and normalise one clip: mono, finite, non-empty, sane rate, within ``max_seconds``.

    Returns a mono float32 tensor ``(N,)`` at ``target_rate``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample rate must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample rate {sample_rate} Hz is outside the accepted range {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    x = to_mono(wave)
    if x.numel() == 0:
        raise ValueError("audio is empty (0 samples)")
    if not torch.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    peak = float(x.abs().max())
    if peak > MAX_AMPLITUDE:
        raise ValueError(
            f"audio samples reach {peak:.3g}; float audio must lie within ±{MAX_AMPLITUDE:g} (±1 is full scale)"
        )
    seconds = x.numel() / sample_rate
    if seconds > max_seconds:
        raise ValueError(f"audio is {seconds:.2f} s long; the maximum is {max_seconds:g} s")
    if sample_rate != target_rate:
        x = _resampler(int(sample_rate), target_rate)(x)
    return x


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """A resampler per rate pair: its sinc kernel is built once, not per clip (a third of a 3 s clip's cost)."""
    return torchaudio.transforms.Resample(orig, new)


@dataclass(frozen=True)
class Features:
    """Log-mel features of a batch: ``mel (B, n_mels, frames)`` and valid frame counts ``lens (B,)``."""

    mel: torch.Tensor
    lens: torch.Tensor


@dataclass(frozen=True)
class SpanFeatures:
    """Log-mel of a batch over its clips' span only: ``mel (B, n_mels, F)``, ``F`` ≤ the window; ``floor (B,)``,
    each row's value in every frame from ``F`` to the window's end; valid frame counts ``lens (B,)``."""

    mel: torch.Tensor
    floor: torch.Tensor
    lens: torch.Tensor


class WhisperLogMel(torch.nn.Module):
    """Whisper's log-mel (n_fft 400, hop 160, Slaney mel, log10, 8-decade floor, ``(x + 4) / 4``).

    Matches ``transformers.WhisperFeatureExtractor`` within 1e-4 on the same padded window.
    """

    def __init__(self, n_mels: int, window_frames: int, sample_rate: int = 16_000) -> None:
        super().__init__()
        self.window_frames = window_frames
        self.window_samples = window_frames * HOP_LENGTH
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            n_mels=n_mels,
            f_min=0.0,
            f_max=sample_rate / 2,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="reflect",
        )

    def frame_count(self, n_samples: int) -> int:
        """Valid mel frames of a clip of ``n_samples``: ``ceil(n / hop)``."""
        return max(1, math.ceil(n_samples / HOP_LENGTH))

    def forward(self, waves: list[torch.Tensor]) -> Features:
        """Mono 16 kHz clips (each at most one window) → padded features of one window each.

        The STFT runs only over the longest clip plus ``N_FFT`` zero samples (:meth:`span`): every later
        frame of the zero-padded window sees only zeros, so its value is the row's floor, filled in
        directly. The result equals the whole-window computation exactly, at a fraction of its cost for
        short clips.
        """
        feats = self.span(waves)
        pad = self.window_frames - feats.mel.shape[-1]
        mel = feats.mel
        if pad > 0:
            mel = torch.cat([mel, feats.floor[:, None, None].expand(-1, mel.shape[1], pad)], dim=-1)
        return Features(mel=mel, lens=feats.lens)

    def span(self, waves: list[torch.Tensor]) -> SpanFeatures:
        """Mono 16 kHz clips (each at most one window) → their log-mel over the clips' span, and each row's
        floor: :meth:`forward` without the floor-filled rest of the window (which a cropping caller drops)."""
        if not waves:
            raise ValueError("no audio clips given")
        too_long = [w.numel() for w in waves if w.numel() > self.window_samples]
        if too_long:
            raise ValueError(f"a clip has {too_long[0]} samples; one encoder window holds {self.window_samples}")
        # zeros past the clips cover the last clip-touching frame's reach (N_FFT / 2) and the reflect padding
        span = HOP_LENGTH * math.ceil((max(w.numel() for w in waves) + N_FFT) / HOP_LENGTH)
        mel, floor = self.log_mel(waves, min(span, self.window_samples))
        lens = torch.tensor([self.frame_count(w.numel()) for w in waves], dtype=torch.long)
        return SpanFeatures(mel=mel, floor=floor, lens=lens)

    def log_mel(self, waves: list[torch.Tensor], samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips zero-padded to ``samples`` → normalised log-mel ``(B, n_mels, samples / hop)`` and each row's
        normalised floor ``(B,)``: the value of a frame that sees only zeros (frames past ``samples / hop``,
        when ``samples`` clears the clips)."""
        batch = torch.zeros(len(waves), samples)
        for i, w in enumerate(waves):
            batch[i, : w.numel()] = w
        spec = self.mel(batch)[..., :-1]  # (B, n_mels, frames): Whisper drops the last STFT frame
        log_spec = spec.clamp(min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2))
        floor = torch.maximum(torch.full_like(peak, -10.0), peak - 8.0)  # an all-zero frame: log10(1e-10) → floor
        log_spec = torch.maximum(log_spec, (peak - 8.0)[:, None, None])
        return (log_spec + 4.0) / 4.0, (floor + 4.0) / 4.0
