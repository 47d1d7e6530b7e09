"""The mel codec (``kind: mel_kmeans``): units are log-mel codebook entries; audio comes back through the
units-to-mel decoder and Griffin-Lim. Every kind decodes with it (``synthesizer``).

In: mono float32 waveforms ``(N,)`` at ``sample_rate``. Out: discrete units ``(T,)`` int64 at
``unit_rate`` Hz (``encode``), and back: units ``(T,)`` → waveform ``(T · hop,)`` (``decode``, or
chunk by chunk with :class:`~freezeempath.codec.mel_decoder.UnitStreamDecoder`).

:class:`MelKMeansCodec` needs no pretrained weights: k-means over log-mel frames gives the units
(:func:`freezeempath.codec.fit.fit_mel_kmeans`), and a small causal units-to-mel decoder (trained with L1
on log-mel; ``voice_conditioned``: also reading a voice, a clip's mean log-mel frame) plus torchaudio's
``InverseMelScale`` and ``GriffinLim`` gives audio back. ``decode`` runs Griffin-Lim over the whole
utterance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from freezeempath.audio import validate_waveform
from freezeempath.codec.griffin_lim import LOG_FLOOR, fade_ramp, mel_pseudo_inverse, mel_to_linear, synthesize_chunk
from freezeempath.codec.kmeans import nearest
from freezeempath.codec.mel_decoder import UnitMelDecoder, UnitStreamDecoder
from freezeempath.codec.store import ARGS_FILE, CODEC_ARGS, copy_strict, read_record, read_tensors, write_codec

VOICE_STATE = ("voice_mean", "voice_std", "default_voice")  # voice-conditioned codecs' buffers


class MelKMeansCodec(nn.Module):
    """k-means units over log-mel frames; units → mel by a learned causal decoder; mel → audio by Griffin-Lim.

    Frames: ``hop = sample_rate // unit_rate``; a clip of ``N`` samples is zero-padded to ``T · hop`` with
    ``T = ceil(N / hop)`` and frame ``t`` is centred on sample ``t · hop``. Predicted log-mel is
    ``codebook[unit] + decoder(units)``. Decoded audio lags by one hop: output sample ``k`` reconstructs
    input sample ``k - hop`` (the causal window for unit ``t`` ends at its frame centre). Everything is
    deterministic: fixed init seed, k-means seeded by the fit, Griffin-Lim from zero phase.
    """

    codebook: torch.Tensor  # (n_units, n_mels) buffer: k-means centroids in log-mel
    fade_ramp: torch.Tensor  # (hop // 2,) buffer: raised-cosine cross-fade weights of the next chunk
    mel_pinv: torch.Tensor  # (n_freq, n_mels) buffer: least squares of the mel filterbank, derived

    def __init__(
        self,
        n_units: int,
        unit_rate: int,
        sample_rate: int,
        n_mels: int,
        n_fft: int,
        decoder_hidden: int,
        griffin_lim_iters: int,
        context_units: int,
        voice_conditioned: bool = False,
    ) -> None:
        super().__init__()
        self.n_units, self.unit_rate, self.sample_rate, self.n_mels = n_units, unit_rate, sample_rate, n_mels
        self.n_fft, self.decoder_hidden, self.griffin_lim_iters = n_fft, decoder_hidden, griffin_lim_iters
        self.context_units, self.voice_conditioned = context_units, voice_conditioned
        self.hop_length = _hop_length(self.args)
        self.fade_length = self.hop_length // 2
        hop, transforms = self.hop_length, torchaudio.transforms
        self.mel = transforms.MelSpectrogram(sample_rate, n_fft, hop_length=hop, n_mels=n_mels, pad_mode="constant")
        self.inverse_mel = transforms.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, driver="gelsd")
        self.register_buffer("mel_pinv", mel_pseudo_inverse(self.inverse_mel.fb), persistent=False)
        self.griffin_lim = transforms.GriffinLim(n_fft, griffin_lim_iters, hop_length=hop, rand_init=False)
        self.register_buffer("fade_ramp", fade_ramp(self.fade_length), persistent=False)
        with torch.random.fork_rng(devices=[]):  # same untrained codec every time, global RNG untouched
            torch.manual_seed(0)
            self.register_buffer("codebook", LOG_FLOOR / 2 + 2.0 * torch.randn(n_units, n_mels))
            self.decoder = UnitMelDecoder(n_units, n_mels, decoder_hidden, voice_conditioned)
        if voice_conditioned:  # a voice is a clip's mean log-mel frame, standardised by the fitting speech's
            self.register_buffer("voice_mean", torch.zeros(n_mels))
            self.register_buffer("voice_std", torch.ones(n_mels))
            self.register_buffer("default_voice", torch.zeros(n_mels))  # the fitting clips' mean voice

    @property
    def args(self) -> dict[str, Any]:
        """The constructor args (what ``codec.json`` holds)."""
        return {name: getattr(self, name) for name in CODEC_ARGS}

    @property
    def synthesizer(self) -> MelKMeansCodec:
        """The part that turns units into audio (what a vocoder needs): this codec itself."""
        return self

    def frame_count(self, n_samples: int) -> int:
        """Units for a clip of ``n_samples``: ``ceil(n_samples / hop)``."""
        return -(-n_samples // self.hop_length)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Checked wave ``(N,)`` → log-mel ``(ceil(N / hop), n_mels)``, floored at ``LOG_FLOOR``."""
        t = self.frame_count(wave.numel())
        padded = F.pad(wave, (0, t * self.hop_length - wave.numel()))  # (T · hop,)
        mel = self.mel(padded)[:, :t]  # (n_mels, T + 1) → (n_mels, T): drop the frame past the end
        return mel.clamp(min=math.exp(LOG_FLOOR)).log().T  # (T, n_mels)

    def check_wave(self, wave: torch.Tensor) -> torch.Tensor:
        """Validate a mono clip ``(N,)``: 1-D, non-empty, finite; returns float32 on the codec's device."""
        if not isinstance(wave, torch.Tensor) or wave.ndim != 1:
            shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
            raise ValueError(f"wave must be a 1-D tensor of mono samples (N,); got {shape}")
        checked = validate_waveform(wave, self.sample_rate, math.inf, target_rate=self.sample_rate)
        return checked.to(self.codebook.device)

    def check_units(self, units: torch.Tensor) -> torch.Tensor:
        """Validate units ``(T,)``: 1-D integer tensor in ``[0, n_units)``; returns int64."""
        if not isinstance(units, torch.Tensor) or units.ndim != 1:
            raise ValueError(f"units must be a 1-D tensor (T,); got {getattr(units, 'shape', type(units))}")
        if units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise ValueError(f"units must be an integer tensor, got {units.dtype}")
        if units.numel() and (units.min() < 0 or units.max() >= self.n_units):
            low, high = int(units.min()), int(units.max())
            raise ValueError(f"units must lie in [0, {self.n_units}); got values {low}..{high}")
        return units.to(device=self.codebook.device, dtype=torch.long)

    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """Log-mel frames ``(T, n_mels)`` → nearest codebook entries ``(T,)`` int64."""
        return nearest(frames, self.codebook)[1]

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        return self.quantize(self.log_mel(self.check_wave(wave)))

    def decode(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(T,)`` int64 [, ``voice (n_mels,)``] → waveform ``(T · hop,)`` float32; the pushes of one
        fresh stream."""
        stream = self.stream(voice)
        return torch.cat([stream.push(units), stream.flush()])

    def stream(self, voice: torch.Tensor | None = None) -> UnitStreamDecoder:
        """A fresh :class:`~freezeempath.codec.mel_decoder.UnitStreamDecoder` for this codec [speaking in
        ``voice (n_mels,)``]."""
        return UnitStreamDecoder(self, voice)

    @torch.no_grad()
    def voice_of(self, wave: torch.Tensor) -> torch.Tensor:
        """A reference clip ``(N,)`` → its voice ``(n_mels,)`` (voice-conditioned codecs only)."""
        return self.voice_of_mel(self.log_mel(self.check_wave(wave)))

    def voice_of_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(T, n_mels)`` → voice ``(n_mels,)``: its mean frame, standardised."""
        if not self.voice_conditioned:
            raise ValueError("this codec takes no voice (fit one with model.codec.voice_conditioned=true)")
        return ((mel - self.voice_mean) / self.voice_std).mean(0)

    def check_voice(self, voice: torch.Tensor) -> torch.Tensor:
        """Validate a voice ``(n_mels,)``: finite floats, and a codec that takes one."""
        if not self.voice_conditioned:
            raise ValueError("this codec takes no voice (fit one with model.codec.voice_conditioned=true)")
        if not isinstance(voice, torch.Tensor) or tuple(voice.shape) != (self.n_mels,):
            raise ValueError(f"voice must be a tensor of shape ({self.n_mels},); got {getattr(voice, 'shape', voice)}")
        if not voice.dtype.is_floating_point or not torch.isfinite(voice).all():
            raise ValueError("voice must hold finite floats")
        return voice.to(self.codebook)

    def predict_log_mel(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(B, T)`` [, voices ``(B, n_mels)``] → log-mel ``(B, T, n_mels)`` = codebook lookup +
        decoder residual. A voice-conditioned codec without ``voice`` speaks in its ``default_voice``."""
        if self.voice_conditioned and voice is None:
            voice = self.default_voice.expand(units.shape[0], -1)  # (B, n_mels)
        return self.codebook[units] + self.decoder(units, voice)

    def mel_to_linear(self, power: torch.Tensor) -> torch.Tensor:
        """Mel power ``(..., n_mels, F)`` → linear power ``(..., n_freq, F)``
        (:func:`~freezeempath.codec.griffin_lim.mel_to_linear`)."""
        return mel_to_linear(self.mel_pinv, power)

    def synthesize(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(..., C + W, n_mels)`` → the last ``W`` units' audio ``(..., W · hop)``, tail
        ``(..., hop // 2)``; leading dimensions are streams of one batch
        (:func:`~freezeempath.codec.griffin_lim.synthesize_chunk` with ``C = context_units``)."""
        return synthesize_chunk(frames, self.mel_pinv, self.griffin_lim, self.context_units, self.fade_length)

    @torch.no_grad()
    def fit_frames(self, waves: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Checked clips → their log-mels ``(T_i, n_mels)`` and all frames ``(F, n_mels)``; at least ``n_units``."""
        mels = [self.log_mel(self.check_wave(w)) for w in waves]
        frames = torch.cat(mels) if mels else torch.zeros(0, self.n_mels)
        if frames.shape[0] < self.n_units:
            raise ValueError(f"fit needs at least n_units={self.n_units} frames, got {frames.shape[0]}")
        return mels, frames

    @torch.no_grad()
    def fit_voices(self, mels: list[torch.Tensor], frames: torch.Tensor) -> torch.Tensor | None:
        """Voice-conditioned codecs: standardise by ``frames (F, n_mels)``, set the default voice to the clips'
        mean voice and return each clip's ``(n_clips, n_mels)``; None for other codecs."""
        if not self.voice_conditioned:
            return None
        self.voice_mean.copy_(frames.mean(0))
        self.voice_std.copy_(frames.std(0).clamp(min=1e-3))
        voices = torch.stack([self.voice_of_mel(m) for m in mels])
        self.default_voice.copy_(voices.mean(0))
        return voices

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """What ``save`` writes: the codebook ``(n_units, n_mels)``, the decoder's parameters and, voice-
        conditioned, the voice statistics (``VOICE_STATE``, each ``(n_mels,)``)."""
        decoder = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        voices = {k: getattr(self, k) for k in VOICE_STATE} if self.voice_conditioned else {}
        return {"codebook": self.codebook, **decoder, **voices}

    def save(self, directory: str | Path) -> Path:
        """Write ``codec.safetensors`` (fitted state) and ``codec.json`` (args); returns the directory."""
        return write_codec(directory, self.fitted_state(), self.args)

    @classmethod
    def load(cls, directory: str | Path) -> MelKMeansCodec:
        """Restore a codec written by :meth:`save`; unknown args, missing/extra tensors or shapes raise."""
        root = Path(directory)
        args: Any = read_record(root)
        expected = set(CODEC_ARGS)
        if not isinstance(args, dict) or set(args) != expected:
            keys = sorted(args) if isinstance(args, dict) else type(args).__name__
            raise ValueError(f"{root / ARGS_FILE}: expected keys {sorted(expected)}, got {keys}")
        codec = cls(**args)
        codec.load_fitted_state(read_tensors(root), str(root))
        return codec

    def load_fitted_state(self, tensors: dict[str, torch.Tensor], source: str = "state") -> None:
        """Copy ``tensors`` into the codebook and decoder strictly (same names, same shapes)."""
        copy_strict(self.fitted_state(), tensors, source)


def _hop_length(args: dict[str, Any]) -> int:
    """Reject codec shapes that the front end or Griffin-Lim cannot serve; returns ``hop``."""
    units, rate, sr, fft = args["n_units"], args["unit_rate"], args["sample_rate"], args["n_fft"]
    context, iters = args["context_units"], args["griffin_lim_iters"]
    hop = sr // rate if rate > 0 else 0
    checks = {
        f"n_units must be at least 2, got {units}": units >= 2,
        f"sample_rate {sr} is not a positive multiple of unit_rate {rate}": hop > 0 and hop * rate == sr,
        f"n_fft ({fft}) must be at least 2 × hop ({hop})": fft >= 2 * hop,
        f"context_units must be at least 1, got {context}": context >= 1,
        "context_units × hop + hop / 2 must exceed n_fft / 2": context * hop + hop // 2 > fft // 2,
        f"griffin_lim_iters must be at least 1, got {iters}": iters >= 1,
    }
    problems = [message for message, ok in checks.items() if not ok]
    if problems:
        raise ValueError(f"codec: {'; '.join(problems)}")
    return hop
