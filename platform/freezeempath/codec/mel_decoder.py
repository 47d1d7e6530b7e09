"""Units → log-mel: the causal units-to-mel decoder, and the stream that decodes units chunk by chunk.

In: units ``(B, T)`` int64 [and a voice ``(B, n_mels)`` per sequence]. Out: a log-mel residual
``(B, T, n_mels)`` (:class:`UnitMelDecoder`, added to the codebook lookup by the codec). The stream
(:class:`UnitStreamDecoder`) takes units ``(W,)`` as they arrive and gives their audio ``(W · hop,)`` at
once, keeping the bounded context between pushes that makes its mel equal the whole utterance's.

The stream runs Griffin-Lim per chunk with ``context_units`` frames of left context and cross-fades chunk
joins, so streamed audio matches ``decode`` exactly for one push and spectrally (not sample by sample:
Griffin-Lim phases differ) for smaller chunks. Per-unit Griffin-Lim windows would make every chunking
exact, but measured a larger log-mel error than whole-utterance Griffin-Lim (jobs/BENCHMARKS.md), so
exactness was traded for quality.
"""

from __future__ import annotations

import enum
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from freezeempath.codec.griffin_lim import LOG_FLOOR, cross_fade

DECODER_LAYERS = 3
DECODER_KERNEL = 3


class UnitMelDecoder(nn.Module):
    """Causal units → log-mel residual: ``Embedding [+ Linear(voice)] → [x + GELU(causal Conv1d(x))] × L → Linear``.

    Output frame ``t`` depends on units ``t - receptive_field .. t`` (and the voice) only. The output layer
    starts at zero, so an untrained decoder adds nothing to the codebook lookup. With ``voice``, a voice
    vector ``(n_mels,)`` per sequence is added to every unit embedding: the units need not say who speaks.
    """

    def __init__(self, n_units: int, n_mels: int, hidden: int, voice: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_units, hidden)
        self.voice = nn.Linear(n_mels, hidden) if voice else None
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, DECODER_KERNEL) for _ in range(DECODER_LAYERS))
        self.out = nn.Linear(hidden, n_mels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.receptive_field = DECODER_LAYERS * (DECODER_KERNEL - 1)

    def forward(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """``units (B, T)`` int64 [, ``voice (B, n_mels)``] → log-mel residual ``(B, T, n_mels)``."""
        return self.from_embeddings(self.embed(units), voice)

    def from_embeddings(self, x: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Unit embeddings ``(B, T, H)`` [, ``voice (B, n_mels)``] → log-mel residual ``(B, T, n_mels)``
        (``forward`` after ``embed``). A voice-conditioned decoder needs ``voice``; any other refuses one."""
        if (voice is None) != (self.voice is None):
            raise ValueError("a voice-conditioned decoder needs a voice; any other takes none")
        if self.voice is not None:
            x = x + self.voice(voice)[:, None, :]  # (B, T, H): the same voice at every step
        x = x.transpose(1, 2)  # (B, H, T)
        for conv in self.convs:
            x = x + F.gelu(conv(F.pad(x, (DECODER_KERNEL - 1, 0))))  # (B, H, T), left pad = causal
        return self.out(x.transpose(1, 2))  # (B, T, n_mels)


class MelSynthesizer(Protocol):
    """What a :class:`UnitStreamDecoder` reads of its codec (a ``MelKMeansCodec``)."""

    n_mels: int
    context_units: int
    fade_length: int
    fade_ramp: torch.Tensor  # (fade,)
    codebook: torch.Tensor  # (n_units, n_mels)
    decoder: UnitMelDecoder

    def check_units(self, units: torch.Tensor) -> torch.Tensor:
        """Validated units ``(T,)`` int64 on the codec's device."""
        ...

    def check_voice(self, voice: torch.Tensor) -> torch.Tensor:
        """A validated voice ``(n_mels,)``."""
        ...

    def predict_log_mel(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(B, T)`` [, voices ``(B, n_mels)``] → log-mel ``(B, T, n_mels)``."""
        ...

    def synthesize(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(C + W, n_mels)`` → the last ``W`` frames' audio ``(W · hop,)``, tail ``(fade,)``."""
        ...


class MelStreamState(enum.Enum):
    """Lifecycle of a :class:`UnitStreamDecoder`."""

    OPEN = "open"
    FLUSHED = "flushed"


class UnitStreamDecoder:
    """Incremental decoding: ``push`` units as they arrive, get their audio at once.

    State between pushes (all bounded):
        ``unit_context``: the last ``receptive_field`` units, so the causal decoder's mel for new units
        equals the mel it predicts on the whole sequence.
        ``mel_context``: the last ``context_units`` predicted log-mel frames (``LOG_FLOOR`` silence
        before the first unit): the left context of each chunk's Griffin-Lim.
        ``tail``: the previous chunk's ``hop // 2`` samples past its last frame centre, cross-faded into
        the start of the next chunk so chunks join without a click.
        ``units_pushed`` and ``state`` (``OPEN`` until ``flush``).
    ``voice`` ``(n_mels,)``: the voice of every push (voice-conditioned codecs; None: their default voice).

    Each push returns exactly ``W · hop`` samples, so pushes + flush total ``units_pushed · hop``. One push
    of all units equals ``codec.decode``; smaller chunks lack right context at their ends, so they match
    ``decode`` in log-mel, not in waveform phase.
    """

    def __init__(self, codec: MelSynthesizer, voice: torch.Tensor | None = None) -> None:
        self.codec = codec
        self.voice = None if voice is None else codec.check_voice(voice)[None]  # (1, n_mels)
        self.state = MelStreamState.OPEN
        self.units_pushed = 0
        device = codec.codebook.device
        self.unit_context = torch.zeros(0, dtype=torch.long, device=device)
        self.mel_context = torch.full((codec.context_units, codec.n_mels), LOG_FLOOR, device=device)
        self.tail = torch.zeros(codec.fade_length, device=device)

    @torch.no_grad()
    def push(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(W,)`` int64 → their audio ``(W · hop,)`` float32 (empty for ``W = 0``)."""
        if self.state is MelStreamState.FLUSHED:
            raise RuntimeError("cannot push to a stream decoder after flush()")
        chunk = self.codec.check_units(units)
        if chunk.numel() == 0:
            return torch.zeros(0, device=self.tail.device)
        history = torch.cat([self.unit_context, chunk])  # (R' + W,)
        mel = self.codec.predict_log_mel(history[None], self.voice)[0, self.unit_context.numel() :]  # (W, n_mels)
        frames = torch.cat([self.mel_context, mel])  # (C + W, n_mels)
        audio, tail = self.codec.synthesize(frames)  # (W · hop,), (fade,)
        cross_fade(audio, self.tail, self.codec.fade_ramp)
        keep = self.codec.decoder.receptive_field
        self.unit_context = history[max(0, history.numel() - keep) :]
        self.mel_context = frames[frames.shape[0] - self.codec.context_units :]
        self.tail = tail
        self.units_pushed += chunk.numel()
        return audio

    def flush(self) -> torch.Tensor:
        """End the stream; returns the audio still held back: always empty here (no lookahead)."""
        self.state = MelStreamState.FLUSHED
        return torch.zeros(0, device=self.tail.device)
