"""What every speech codec offers (units ↔ waveform), and what fitting one reports.

In: nothing (types only). Out: the :class:`SpeechCodec` and :class:`AudioStream` protocols that the
inference and evaluation steps code against, and :class:`CodecFitReport`, the result of a fit.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class AudioStream(Protocol):
    """Incremental decoding: ``push`` units as they arrive, ``flush`` at the end."""

    def push(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(W,)`` int64 → their audio ``(W · hop,)`` float32."""
        ...

    def flush(self) -> torch.Tensor:
        """End the stream; returns the audio still held back."""
        ...


@runtime_checkable
class SpeechCodec(Protocol):
    """Waveform ↔ discrete units at a fixed rate; ``hop = sample_rate // unit_rate`` samples per unit."""

    n_units: int
    unit_rate: int
    sample_rate: int

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        ...

    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(T,)`` int64 → waveform ``(T · hop,)`` float32 at ``sample_rate``."""
        ...

    def stream(self) -> AudioStream:
        """A fresh incremental decoder: pushes + flush give ``T · hop`` samples, like ``decode``."""
        ...


@dataclasses.dataclass(frozen=True)
class CodecFitReport:
    """What fitting a codec did (:mod:`freezeempath.codec.fit`).

    Attributes:
        clips: Number of clips fitted on.
        frames: Log-mel frames (= units) over all clips.
        inertia_initial: Mean squared quantisation error of the codebook before fitting.
        inertia: Mean squared quantisation error after fitting.
        mel_l1_before: Mean log-mel L1 of the decoder before training.
        mel_l1_after: Mean log-mel L1 after training.
    """

    clips: int
    frames: int
    inertia_initial: float
    inertia: float
    mel_l1_before: float
    mel_l1_after: float
