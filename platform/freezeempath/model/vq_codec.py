"""Learned speech units: a VQ-VAE over log-mel whose decoder is :class:`MelKMeansCodec`'s (``kind: mel_vq``).

In: mono float32 waveforms ``(N,)`` at ``sample_rate``. Out: units ``(ceil(N / hop),)`` int64 (``encode``),
and back to audio through the same causal units-to-mel decoder and Griffin-Lim as ``mel_kmeans``
(``decode``, ``stream``).

k-means over log-mel frames spends its codebook on loudness, pitch and noise, and the average spectrum of
a cluster loses the content (README: 71.5 % WER after a round trip). Here a non-causal conv encoder maps
log-mel to ``CODE_DIM`` latents, vector quantisation (EMA codebook, dead codes re-seeded) picks the units,
and the encoder, codebook and decoder train together on log-mel L1 (straight-through gradients), so the
units keep what the decoder needs to rebuild the spectrum. After ``fit`` the decoder's input layer is
folded into its unit embedding, so decoding is exactly :class:`MelKMeansCodec` (``synthesizer``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torch.nn import functional as F

from freezeempath.model.codec import (
    ARGS_FILE,
    CODEC_ARGS,
    WEIGHTS_FILE,
    CodecFitReport,
    MelKMeansCodec,
    UnitStreamDecoder,
    copy_strict,
)
from freezeempath.model.kmeans import nearest

CODE_DIM = 64  # latent width of a unit
ENCODER_HIDDEN = 128
ENCODER_LAYERS = 3  # residual convs after the input conv
ENCODER_KERNEL = 5  # non-causal: units are computed from whole clips (targets), never streamed
EMA_DECAY = 0.99
COMMITMENT = 0.25
CROP_FRAMES = 128  # training crops: 2.56 s at 50 Hz
BATCH = 16
FIT_STEPS = 6000  # the README's figure; fewer leave units that lose words
LOG_EVERY = 500  # steps between progress lines

log = logging.getLogger(__name__)


class UnitEncoder(nn.Module):
    """Log-mel ``(B, T, n_mels)`` → latents ``(B, T, CODE_DIM)``; input standardised per mel bin."""

    mean: torch.Tensor  # (n_mels,) buffer
    std: torch.Tensor  # (n_mels,) buffer

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        pad = ENCODER_KERNEL // 2
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.inp = nn.Conv1d(n_mels, ENCODER_HIDDEN, ENCODER_KERNEL, padding=pad)
        self.convs = nn.ModuleList(
            nn.Conv1d(ENCODER_HIDDEN, ENCODER_HIDDEN, ENCODER_KERNEL, padding=pad) for _ in range(ENCODER_LAYERS)
        )
        self.out = nn.Conv1d(ENCODER_HIDDEN, CODE_DIM, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, T, n_mels)`` → ``(B, T, CODE_DIM)``."""
        x = F.gelu(self.inp(((mel - self.mean) / self.std).transpose(1, 2)))  # (B, H, T)
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        return self.out(x).transpose(1, 2)


class MelVQCodec(nn.Module):
    """Units from :class:`UnitEncoder` + nearest ``codes`` row; audio from ``synthesizer`` (a MelKMeansCodec)."""

    codes: torch.Tensor  # (n_units, CODE_DIM) buffer: the unit latents

    def __init__(self, **args: int) -> None:
        super().__init__()
        self.synthesizer = MelKMeansCodec(**args)
        self.n_units, self.unit_rate, self.sample_rate = args["n_units"], args["unit_rate"], args["sample_rate"]
        with torch.random.fork_rng(devices=[]):  # same untrained codec every time, global RNG untouched
            torch.manual_seed(0)
            self.encoder = UnitEncoder(args["n_mels"])
            self.register_buffer("codes", torch.randn(args["n_units"], CODE_DIM))

    @property
    def args(self) -> dict[str, int]:
        """The constructor args (what ``codec.json`` holds, with ``kind``)."""
        return self.synthesizer.args

    def latents(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked wave ``(N,)`` → its log-mel ``(T, n_mels)`` and latents ``(T, CODE_DIM)``."""
        mel = self.synthesizer.log_mel(self.synthesizer.check_wave(wave))
        return mel, self.encoder(mel[None])[0]

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        return nearest(self.latents(wave)[1], self.codes)[1]

    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(T,)`` int64 → waveform ``(T · hop,)`` float32 (``synthesizer.decode``)."""
        return self.synthesizer.decode(units)

    def stream(self) -> UnitStreamDecoder:
        """A fresh incremental decoder (``synthesizer.stream``)."""
        return self.synthesizer.stream()

    def fit(
        self,
        waves: list[torch.Tensor],
        *,
        kmeans_iters: int = 0,
        decoder_steps: int = FIT_STEPS,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> CodecFitReport:
        """Train encoder, codes and decoder together (Adam, cosine decay; log-mel L1 of random crops), then fold.

        Args:
            waves: Mono clips ``(N_i,)`` at ``sample_rate``; together at least ``n_units`` frames.
            kmeans_iters: Unused (the codes are seeded from encoder outputs); kept for one fit signature.
            decoder_steps: Mini-batch steps (``BATCH`` crops of ``CROP_FRAMES`` frames).
            lr: Adam learning rate.
            seed: Seeds the initialisation, the crops and the code re-seeding.

        Returns:
            A :class:`CodecFitReport`; ``inertia*`` are the mean squared latent-to-code distances.
        """
        del kmeans_iters
        mels, frames = self.synthesizer.fit_frames(waves)
        generator = torch.Generator().manual_seed(seed)
        trainer = _Trainer(self, frames, seed)
        before = _mel_l1(self, mels)
        initial = trainer.quantisation_error(mels)
        optimizer = torch.optim.Adam(trainer.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(decoder_steps, 1))
        for step in range(1, decoder_steps + 1):
            loss = trainer.loss(_crops(mels, generator))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % LOG_EVERY == 0 or step == decoder_steps:
                used, n = int((trainer.counts > 0.01).sum()), self.n_units
                log.info(
                    "codec fit step %d/%d: loss %.3f, %d of %d units in use", step, decoder_steps, loss.item(), used, n
                )
        trainer.fold()
        return CodecFitReport(
            len(mels), frames.shape[0], initial, trainer.quantisation_error(mels), before, _mel_l1(self, mels)
        )

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """The codes and encoder (``own_state``), then the synthesizer's codebook and decoder."""
        return {**self.own_state(), **self.synthesizer.fitted_state()}

    def own_state(self) -> dict[str, torch.Tensor]:
        """What this class adds to a ``MelKMeansCodec``: ``codes`` and ``encoder.*``."""
        return {"codes": self.codes, **{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}}

    def save(self, directory: str | Path) -> Path:
        """Write ``codec.safetensors`` and ``codec.json`` (args and ``kind``); returns the directory."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.fitted_state().items()}
        safetensors.torch.save_file(tensors, str(root / WEIGHTS_FILE))
        (root / ARGS_FILE).write_text(json.dumps({"kind": "mel_vq", **self.args}, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, directory: str | Path) -> MelVQCodec:
        """Restore a codec written by :meth:`save`; other kinds, unknown args or tensor mismatches raise."""
        root = Path(directory)
        args: Any = json.loads((root / ARGS_FILE).read_text())
        if not isinstance(args, dict) or args.pop("kind", None) != "mel_vq" or set(args) != set(CODEC_ARGS):
            raise ValueError(f"{root / ARGS_FILE}: not a mel_vq codec (expected kind and {sorted(CODEC_ARGS)})")
        codec = cls(**args)
        tensors = safetensors.torch.load_file(str(root / WEIGHTS_FILE))
        synth = {k: v for k, v in tensors.items() if k == "codebook" or k.startswith("decoder.")}
        codec.synthesizer.load_fitted_state(synth, str(root))
        copy_strict(codec.own_state(), {k: v for k, v in tensors.items() if k not in synth}, str(root))
        return codec


class _Trainer(nn.Module):
    """The VQ-VAE during ``fit``: latents → EMA-quantised codes (straight-through) → decoder → log-mel.

    Building it re-initialises the codec's encoder, codes and decoder (seeded) and zeroes the codebook.
    """

    def __init__(self, codec: MelVQCodec, frames: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.codec, synth = codec, codec.synthesizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codec.encoder = UnitEncoder(synth.n_mels)
            synth.decoder = type(synth.decoder)(codec.n_units, synth.n_mels, synth.decoder_hidden)
            self.inp = nn.Linear(CODE_DIM, synth.decoder_hidden)  # folded into the unit embedding at the end
        codec.encoder.mean.copy_(frames.mean(0))
        codec.encoder.std.copy_(frames.std(0).clamp(min=1e-3))
        self.mean, self.std = codec.encoder.mean, codec.encoder.std  # the decoder predicts standardised log-mel
        synth.codebook.zero_()
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            sample = frames[torch.randperm(frames.shape[0], generator=self.generator)[: max(4096, codec.n_units)]]
            latents = codec.encoder(sample[None])[0]  # context-free seeds; training moves them
            codec.codes.copy_(latents[torch.randperm(latents.shape[0], generator=self.generator)[: codec.n_units]])
        self.sums, self.counts = codec.codes.clone(), torch.ones(codec.n_units)

    def loss(self, crops: torch.Tensor) -> torch.Tensor:
        """``crops (B, T, n_mels)`` → log-mel L1 + commitment."""
        latents = self.codec.encoder(crops)  # (B, T, D)
        flat = latents.reshape(-1, CODE_DIM)
        index = nearest(flat.detach(), self.codec.codes, exact=False)[1]  # (B · T,)
        self._update_codes(flat.detach(), index)
        quantised = self.codec.codes[index].reshape(latents.shape)
        straight = latents + (quantised - latents).detach()  # (B, T, D)
        predicted = self.codec.synthesizer.decoder.from_embeddings(self.inp(straight))  # (B, T, n_mels), standardised
        target = (crops - self.mean) / self.std
        return (predicted - target).abs().mean() + COMMITMENT * F.mse_loss(latents, quantised)

    @torch.no_grad()
    def _update_codes(self, latents: torch.Tensor, index: torch.Tensor) -> None:
        """EMA codebook; codes unused for a while restart at random latents of this batch."""
        counts = torch.bincount(index, minlength=self.codec.n_units).float()
        sums = torch.zeros_like(self.sums).index_add_(0, index, latents)
        self.counts.mul_(EMA_DECAY).add_(counts, alpha=1 - EMA_DECAY)
        self.sums.mul_(EMA_DECAY).add_(sums, alpha=1 - EMA_DECAY)
        self.codec.codes.copy_(self.sums / self.counts.clamp(min=1e-5)[:, None])
        dead = self.counts < 1e-3
        if dead.any():
            pick = torch.randint(latents.shape[0], (int(dead.sum()),), generator=self.generator)
            self.codec.codes[dead] = latents[pick]
            self.sums[dead], self.counts[dead] = latents[pick], 1.0

    @torch.no_grad()
    def fold(self) -> None:
        """Unit embedding := inp(codes); output layer de-standardised; the codebook stays zero."""
        decoder = self.codec.synthesizer.decoder
        decoder.embed.weight.copy_(self.inp(self.codec.codes))
        decoder.out.bias.copy_(decoder.out.bias * self.std + self.mean)
        decoder.out.weight.mul_(self.std[:, None])

    @torch.no_grad()
    def quantisation_error(self, mels: list[torch.Tensor]) -> float:
        """Mean squared latent-to-nearest-code distance over ``mels``."""
        return (
            torch.cat([nearest(self.codec.encoder(m[None])[0], self.codec.codes, exact=False)[0] for m in mels])
            .mean()
            .item()
        )


def _crops(mels: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """``BATCH`` random crops of ``CROP_FRAMES`` (shorter clips padded by edge repetition) → ``(B, T, n_mels)``."""
    out = []
    for i in torch.randint(len(mels), (BATCH,), generator=generator).tolist():
        mel = mels[i]
        start = int(torch.randint(max(1, mel.shape[0] - CROP_FRAMES + 1), (1,), generator=generator))
        crop = mel[start : start + CROP_FRAMES]
        out.append(F.pad(crop.T, (0, CROP_FRAMES - crop.shape[0]), mode="replicate").T)
    return torch.stack(out)


@torch.no_grad()
def _mel_l1(codec: MelVQCodec, mels: list[torch.Tensor]) -> float:
    """Mean log-mel L1 of encode → predicted log-mel over ``mels`` (the decoder's reconstruction)."""
    total, frames = 0.0, 0
    for mel in mels:
        units = nearest(codec.encoder(mel[None])[0], codec.codes, exact=False)[1]
        total += (codec.synthesizer.predict_log_mel(units[None])[0] - mel).abs().mean(-1).sum().item()
        frames += mel.shape[0]
    return total / max(frames, 1)
