"""Audio at the API boundary: client file bytes → checked clips; codec audio → client rates and formats.

In: file bytes with a declared format (``wav``, ``mp3``, ``flac``), or float32 audio chunks at the
codec's rate. Out: :class:`~freezeempath.inference.dialogue.AudioInput` clips (validated later, once: by
``check_audio`` or ``prepare_dialogue``), audio resampled chunk by chunk with :class:`StreamingResampler`
(the chunks join to exactly the whole-signal resample), and encoded bytes (``wav``, ``flac``, ``mp3``,
``opus``, ``pcm16`` = headerless signed 16-bit little-endian mono). Bad input raises ``ValueError``.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
import torch
import torchaudio

from freezeempath.audio import decode_audio
from freezeempath.inference.dialogue import AudioInput
from freezeempath.inference.wire import packed_state, unpacked_state

# declared input format → soundfile's container name
INPUT_FORMATS: dict[str, str] = {"wav": "WAV", "mp3": "MP3", "flac": "FLAC"}
# output format → soundfile (container, subtype); pcm16 is written by hand
_ENCODED: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
# Input rates the API takes, decided from the header: each is a small ratio to 16 kHz, so resampling
# builds a small kernel (a rate sharing no factor with 16 kHz would build one as large as the two rates).
ACCEPTED_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
MAX_CHANNELS = 8
# torchaudio.functional.resample defaults, mirrored to size the streaming context
_LOWPASS_WIDTH = 6
_ROLLOFF = 0.99


def output_formats() -> tuple[str, ...]:
    """Output formats this machine can encode (``opus`` only when libsndfile has it)."""
    names = [name for name, (container, subtype) in _ENCODED.items() if subtype in sf.available_subtypes(container)]
    return (*names, "pcm16")


class UnsupportedRate(ValueError):
    """A clip's sample rate is not one of :data:`ACCEPTED_RATES`."""


def decode_input_audio(data: bytes, declared: str, max_seconds: float = math.inf) -> AudioInput:
    """Decode file bytes whose container must match ``declared`` (``wav``, ``mp3`` or ``flac``), at a cost
    bounded by ``max_seconds``: rate, channels and length are checked from the header first, and at most
    ``max_seconds`` of audio is ever decoded (a header that understates the length is caught while reading).

    Raises:
        UnsupportedRate: a rate outside :data:`ACCEPTED_RATES`.
        ValueError: unsupported format, empty or undecodable bytes, a container that differs from the
            declared one, too many channels, or audio longer than ``max_seconds``; the message names it.
    """
    if declared not in INPUT_FORMATS:
        raise ValueError(f"unsupported input audio format {declared!r}; supported: {', '.join(INPUT_FORMATS)}")
    if not data:
        raise ValueError("audio is empty (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # soundfile raises several types for undecodable input
        raise ValueError(f"audio could not be decoded: the data is not a {declared} file") from None
    if info.format != INPUT_FORMATS[declared]:
        raise ValueError(f"audio is declared as {declared} but the data is {info.format.lower()}")
    if info.samplerate not in ACCEPTED_RATES:
        accepted = ", ".join(map(str, ACCEPTED_RATES))
        raise UnsupportedRate(f"sample rate {info.samplerate} Hz is not supported; send one of {accepted} Hz")
    if info.channels > MAX_CHANNELS:
        raise ValueError(f"audio has {info.channels} channels; at most {MAX_CHANNELS} are accepted")
    limit = math.floor(max_seconds * info.samplerate) if math.isfinite(max_seconds) else -1
    if limit >= 0 and info.frames > limit:
        raise ValueError(f"audio is {info.frames / info.samplerate:.2f} s long; the maximum is {max_seconds:g} s")
    samples, rate = decode_audio(data, frames=limit + 1 if limit >= 0 else -1)
    if limit >= 0 and samples.shape[0] > limit:
        raise ValueError(f"audio is longer than its header says and than the maximum of {max_seconds:g} s")
    return AudioInput(samples=samples, sample_rate=rate)


def pcm16_bytes(samples: torch.Tensor | np.ndarray) -> bytes:
    """Float audio ``(N,)`` in [-1, 1] → signed 16-bit little-endian bytes (``2 N`` bytes, clipped)."""
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float32)
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode_audio(samples: torch.Tensor | np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode mono float audio ``(N,)`` as ``fmt`` (one of :func:`output_formats`)."""
    if fmt not in output_formats():
        raise ValueError(f"unsupported output audio format {fmt!r}; supported: {', '.join(output_formats())}")
    if fmt == "pcm16":
        return pcm16_bytes(samples)
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float32)
    container, subtype = _ENCODED[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


class StreamingResampler:
    """Chunk-by-chunk resampling that joins to exactly ``torchaudio.functional.resample`` of the whole.

    Input is held back until ``context`` samples of right context exist; each emitted region is
    resampled together with ``context`` samples on both sides (zeros before the start and after
    :meth:`flush`, like the whole-signal resample), so region edges see the same samples. Regions are
    multiples of the reduced input rate, which keeps the polyphase kernel aligned.

    Args:
        orig_rate: input rate in Hz. new_rate: output rate in Hz.
    """

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        g = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // g, new_rate // g
        width = math.ceil(_LOWPASS_WIDTH * self.orig / (min(self.orig, self.new) * _ROLLOFF))
        self.context = self.orig * math.ceil((width + self.orig) / self.orig)  # ≥ kernel reach, aligned
        self.history = torch.zeros(self.context)
        self.pending = torch.zeros(0)

    # its buffers cross processes with every vocoder state: tensors as arrays
    __getstate__, __setstate__ = packed_state, unpacked_state

    @property
    def identity(self) -> bool:
        """Same rate in and out: chunks pass through unchanged."""
        return self.orig == self.new

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Input ``(n,)`` → the output samples whose input support is complete (may be empty)."""
        if self.identity:
            return chunk
        self.pending = torch.cat([self.pending, chunk.to(self.pending)])
        ready = (self.pending.numel() - self.context) // self.orig * self.orig
        if ready <= 0:
            return torch.zeros(0)
        return self._emit(ready, self.pending[ready : ready + self.context])

    def flush(self) -> torch.Tensor:
        """Emit everything still held back (the signal ends here)."""
        if self.identity or self.pending.numel() == 0:
            return torch.zeros(0)
        return self._emit(self.pending.numel(), torch.zeros(self.context))

    def _emit(self, n: int, right: torch.Tensor) -> torch.Tensor:
        segment = torch.cat([self.history, self.pending[:n], right])  # (context + n + |right|,)
        out = torchaudio.functional.resample(segment, self.orig, self.new)
        start = self.context * self.new // self.orig
        region = out[start : start + math.ceil(n * self.new / self.orig)]
        self.history = torch.cat([self.history, self.pending[:n]])[-self.context :]
        self.pending = self.pending[n:]
        return region
