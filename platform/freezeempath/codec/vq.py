"""Learned speech units: a VQ-VAE over log-mel whose decoder is :class:`MelKMeansCodec`'s (``kind: mel_vq``).

In: mono float32 waveforms ``(N,)`` at ``sample_rate``. Out: units ``(ceil(N / hop),)`` int64 (``encode``),
and back to audio through the same causal units-to-mel decoder and Griffin-Lim as ``mel_kmeans``
(``decode``, ``stream``).

k-means over log-mel frames spends its codebook on loudness, pitch and noise, and the average spectrum of
a cluster loses the content (its round-trip WER: jobs/BENCHMARKS.md). Here a non-causal conv encoder maps
log-mel to ``CODE_DIM`` latents, vector quantisation (EMA codebook, dead codes re-seeded) picks the units,
and the encoder, codebook and decoder train together on log-mel L1 (straight-through gradients;
:mod:`freezeempath.codec.vq_fit`), so the units keep what the decoder needs to rebuild the spectrum. After
the fit the decoder's input layer is folded into its unit embedding, so decoding is exactly
:class:`MelKMeansCodec` (``synthesizer``).

``kind: encoder_vq`` feeds the conv encoder the frozen speech encoder's states
(:class:`~freezeempath.codec.content_states.SpeechContent`) instead of log-mel: content units that carry over to
unseen speakers, but only to sounds the fitting speech contains (jobs/BENCHMARKS.md).

``voice_conditioned``: the decoder also reads each training clip's voice (its mean log-mel frame), so the
units need not carry who speaks; decoding without a voice speaks in the fitting clips' mean voice. Units
fitted so keep new speakers' words far better (jobs/BENCHMARKS.md, the voice-conditioned decoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from freezeempath.codec.content_states import STATE_HOP, SpeechContent
from freezeempath.codec.kmeans import nearest
from freezeempath.codec.kmeans_codec import VOICE_STATE, MelKMeansCodec
from freezeempath.codec.mel_decoder import UnitStreamDecoder
from freezeempath.codec.store import ARGS_FILE, CODEC_ARGS, copy_strict, read_record, read_tensors, write_codec

CODE_DIM = 64  # latent width of a unit
ENCODER_HIDDEN = 128
ENCODER_LAYERS = 3  # residual convs after the input conv
ENCODER_KERNEL = 5  # non-causal: units are computed from whole clips (targets), never streamed


class UnitEncoder(nn.Module):
    """Unit inputs ``(B, T, C)`` (log-mel, or content states) → latents ``(B, T, CODE_DIM)``; input
    standardised per channel."""

    mean: torch.Tensor  # (C,) buffer
    std: torch.Tensor  # (C,) buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        pad = ENCODER_KERNEL // 2
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.inp = nn.Conv1d(channels, ENCODER_HIDDEN, ENCODER_KERNEL, padding=pad)
        self.convs = nn.ModuleList(
            nn.Conv1d(ENCODER_HIDDEN, ENCODER_HIDDEN, ENCODER_KERNEL, padding=pad) for _ in range(ENCODER_LAYERS)
        )
        self.out = nn.Conv1d(ENCODER_HIDDEN, CODE_DIM, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` → ``(B, T, CODE_DIM)``."""
        x = F.gelu(self.inp(((inputs - self.mean) / self.std).transpose(1, 2)))  # (B, H, T)
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        return self.out(x).transpose(1, 2)


class MelVQCodec(nn.Module):
    """Units from :class:`UnitEncoder` + nearest ``codes`` row; audio from ``synthesizer`` (a MelKMeansCodec).

    The unit encoder reads log-mel (``kind: mel_vq``), or, given ``content``, the frozen speech encoder's
    states (``kind: encoder_vq``; needs 50 Hz units, one per encoder state). Decoding never needs them.
    """

    codes: torch.Tensor  # (n_units, CODE_DIM) buffer: the unit latents

    def __init__(self, content: SpeechContent | None = None, **args: int) -> None:
        super().__init__()
        self.synthesizer = MelKMeansCodec(**args)
        self.n_units, self.unit_rate, self.sample_rate = args["n_units"], args["unit_rate"], args["sample_rate"]
        if content is not None and self.synthesizer.hop_length != STATE_HOP:
            hop = self.synthesizer.hop_length
            raise ValueError(f"encoder_vq needs one unit per encoder state ({STATE_HOP} samples), not per {hop}")
        self.content = content
        with torch.random.fork_rng(devices=[]):  # same untrained codec every time, global RNG untouched
            torch.manual_seed(0)
            self.encoder = UnitEncoder(content.width if content else args["n_mels"])
            self.register_buffer("codes", torch.randn(args["n_units"], CODE_DIM))

    @property
    def kind(self) -> str:
        """``encoder_vq`` with content states as unit inputs, else ``mel_vq``."""
        return "mel_vq" if self.content is None else "encoder_vq"

    @property
    def args(self) -> dict[str, Any]:
        """The constructor args (what ``codec.json`` holds, with ``kind``)."""
        return self.synthesizer.args

    @property
    def voice_conditioned(self) -> bool:
        """Whether the decoder reads a voice (``voice_of``; ``synthesizer.predict_log_mel``)."""
        return self.synthesizer.voice_conditioned

    def unit_inputs(self, waves: list[torch.Tensor], mels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Checked clips and their log-mels ``(T_i, n_mels)`` → the unit encoder's inputs ``(T_i, C)``."""
        if self.content is None:
            return mels
        return [s.to(m) for s, m in zip(self.content(waves, [m.shape[0] for m in mels]), mels, strict=True)]

    def latents(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked wave ``(N,)`` → its log-mel ``(T, n_mels)`` and latents ``(T, CODE_DIM)``."""
        wave = self.synthesizer.check_wave(wave)
        mel = self.synthesizer.log_mel(wave)
        return mel, self.encoder(self.unit_inputs([wave], [mel])[0][None])[0]

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        return nearest(self.latents(wave)[1], self.codes)[1]

    def decode(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(T,)`` int64 [, ``voice (n_mels,)``] → waveform ``(T · hop,)`` float32 (``synthesizer.decode``)."""
        return self.synthesizer.decode(units, voice)

    def stream(self, voice: torch.Tensor | None = None) -> UnitStreamDecoder:
        """A fresh incremental decoder (``synthesizer.stream``)."""
        return self.synthesizer.stream(voice)

    def voice_of(self, wave: torch.Tensor) -> torch.Tensor:
        """A reference clip ``(N,)`` → its voice ``(n_mels,)`` (``synthesizer.voice_of``)."""
        return self.synthesizer.voice_of(wave)

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """The codes and encoder (``own_state``), then the synthesizer's codebook and decoder."""
        return {**self.own_state(), **self.synthesizer.fitted_state()}

    def own_state(self) -> dict[str, torch.Tensor]:
        """What this class adds to a ``MelKMeansCodec``: ``codes`` and ``encoder.*``."""
        return {"codes": self.codes, **{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}}

    def save(self, directory: str | Path) -> Path:
        """Write ``codec.safetensors`` and ``codec.json`` (``kind``, args, and for ``encoder_vq`` the speech
        encoder's config as ``content``); returns the directory."""
        record = {"kind": self.kind, **self.args} | ({"content": self.content.identity} if self.content else {})
        return write_codec(directory, self.fitted_state(), record)

    @classmethod
    def load(cls, directory: str | Path, content: SpeechContent | None = None) -> MelVQCodec:
        """Restore a codec written by :meth:`save`; ``content`` must be given for (and only for) an
        ``encoder_vq`` codec, with the encoder it was fitted with. Other kinds, unknown args, another
        encoder or tensor mismatches raise."""
        root = Path(directory)
        args: Any = read_record(root)
        kind = "mel_vq" if content is None else "encoder_vq"
        record = args.pop("content", None) if isinstance(args, dict) else None
        if not isinstance(args, dict) or args.pop("kind", None) != kind or set(args) != set(CODEC_ARGS):
            raise ValueError(f"{root / ARGS_FILE}: not a {kind} codec (expected kind and {sorted(CODEC_ARGS)})")
        if content is not None and record != content.identity:
            raise ValueError(f"{root / ARGS_FILE}: fitted with speech encoder {record}, not {content.identity}")
        codec = cls(content, **args)
        tensors = read_tensors(root)
        synth = {k: v for k, v in tensors.items() if k in ("codebook", *VOICE_STATE) or k.startswith("decoder.")}
        codec.synthesizer.load_fitted_state(synth, str(root))
        copy_strict(codec.own_state(), {k: v for k, v in tensors.items() if k not in synth}, str(root))
        return codec
