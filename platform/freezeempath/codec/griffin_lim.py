"""Log-mel → audio, chunk by chunk: the codec's one batched Griffin-Lim, and the cross-fade of chunk joins.

In: predicted log-mel frames ``(..., C + W, n_mels)``: ``C`` frames of left context, then ``W`` new ones
(frame ``i`` centred on sample ``i · hop``). Out: the new frames' audio ``(..., W · hop)`` and the tail
``(..., hop // 2)`` past the last frame centre, which :func:`cross_fade` blends into the next chunk.

The codec (:meth:`~freezeempath.codec.kmeans_codec.MelKMeansCodec.synthesize`) and the batched vocoder
(:mod:`freezeempath.inference.vocode`) both run :func:`synthesize_chunk`; the leading dimensions are
batch dimensions, so several streams' chunks of one shape share one Griffin-Lim.
"""

from __future__ import annotations

import math

import torch
import torchaudio

LOG_FLOOR = math.log(1e-5)  # log-mel floor: silence, and the context before the first unit


def mel_pseudo_inverse(filterbank: torch.Tensor) -> torch.Tensor:
    """Mel filterbank ``(n_freq, n_mels)`` → the pseudo-inverse of its transpose ``(n_freq, n_mels)``.

    Least squares of ``fb^T x = mel`` is one matmul with it (the minimum-norm solution, as torchaudio's
    ``gelsd`` driver gives); CUDA's lstsq has only ``gels``, and batched it takes paths the CPU never does.
    """
    return torch.linalg.pinv(filterbank.T.double()).float()


def mel_to_linear(mel_pinv: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """Mel power ``(..., n_mels, F)`` → linear power ``(..., n_freq, F)``: torchaudio's ``InverseMelScale``
    (least squares, clamped at 0) as one matmul with ``mel_pinv (n_freq, n_mels)``, the same on every device."""
    return torch.relu(mel_pinv @ power)


def fade_ramp(length: int) -> torch.Tensor:
    """Raised-cosine weights ``(length,)`` rising from 0 to 1: how much of the next chunk each sample keeps."""
    steps = (torch.arange(length) + 0.5) / length  # (length,)
    return 0.5 - 0.5 * torch.cos(math.pi * steps)


def synthesize_chunk(
    frames: torch.Tensor,
    mel_pinv: torch.Tensor,
    griffin_lim: torchaudio.transforms.GriffinLim,
    context_units: int,
    fade_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel ``(..., C + W, n_mels)`` → the last ``W`` frames' audio ``(..., W · hop)``, tail ``(..., fade)``.

    One Griffin-Lim (``griffin_lim``'s settings, from zero phase) over all ``C + W`` frames, with
    ``C = context_units``. Frame ``w``'s audio is the hop ending at its centre; the tail is the
    ``fade_length`` samples after the last centre.
    """
    power = frames.clamp(min=LOG_FLOOR).exp().transpose(-1, -2)  # (..., n_mels, C + W)
    linear = mel_to_linear(mel_pinv, power)  # (..., n_freq, C + W)
    gl, end = griffin_lim, (frames.shape[-2] - 1) * griffin_lim.hop_length
    # the transform fixes its output length; the functional form takes this chunk's (< (C + W) · hop)
    wave = torchaudio.functional.griffinlim(
        linear, gl.window, gl.n_fft, gl.hop_length, gl.win_length, gl.power, gl.n_iter, gl.momentum,
        end + fade_length, gl.rand_init,
    )  # fmt: skip
    start = (context_units - 1) * gl.hop_length
    return wave[..., start:end].clone(), wave[..., end:]


def cross_fade(audio: torch.Tensor, tail: torch.Tensor, ramp: torch.Tensor) -> torch.Tensor:
    """Blend the previous chunk's ``tail (fade,)`` into the start of ``audio (W · hop,)`` in place, weighted
    by ``ramp (fade,)``, so chunks join without a click; returns ``audio``."""
    audio[: ramp.numel()] = (1 - ramp) * tail + ramp * audio[: ramp.numel()]
    return audio
