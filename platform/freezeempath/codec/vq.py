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

``kind: encoder_vq`` feeds the conv encoder the frozen speech encoder's states
(:class:`~freezeempath.codec.content_states.SpeechContent`) instead of log-mel: content units that carry over to
unseen speakers, but only to sounds the fitting speech contains (README).

``voice_conditioned``: the decoder also reads each training clip's voice (its mean log-mel frame), so the
units need not carry who speaks; decoding without a voice speaks in the fitting clips' mean voice. Units
fitted so keep new speakers' words far better (README: 473 min, other speakers +28 → +13 points).
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

from freezeempath.codec.content_states import STATE_HOP, SpeechContent
from freezeempath.codec.kmeans import nearest
from freezeempath.codec.mel_codec import (
    ARGS_FILE,
    CODEC_ARGS,
    VOICE_STATE,
    WEIGHTS_FILE,
    CodecFitReport,
    MelKMeansCodec,
    UnitStreamDecoder,
    copy_strict,
    saved_args,
)

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

    def fit(
        self,
        waves: list[torch.Tensor],
        *,
        kmeans_iters: int = 0,
        decoder_steps: int = FIT_STEPS,
        lr: float = 1e-3,
        seed: int = 0,
        crops: str = "clip",
    ) -> CodecFitReport:
        """Train encoder, codes and decoder together (Adam, cosine decay; log-mel L1 of random crops), then fold.

        Args:
            waves: Mono clips ``(N_i,)`` at ``sample_rate``; together at least ``n_units`` frames.
            kmeans_iters: Unused (the codes are seeded from encoder outputs); kept for one fit signature.
            decoder_steps: Mini-batch steps (``BATCH`` crops of ``CROP_FRAMES`` frames).
            lr: Adam learning rate.
            seed: Seeds the initialisation, the crops and the code re-seeding.
            crops: ``clip``: each clip equally often, short ones padded with their last frame; ``audio``:
                clips in proportion to their frames, padded frames left out of the loss.

        Returns:
            A :class:`CodecFitReport`; ``inertia*`` are the mean squared latent-to-code distances.
        """
        del kmeans_iters
        if crops not in ("clip", "audio"):
            raise ValueError(f"crops must be 'clip' or 'audio', not {crops!r}")
        waves = [self.synthesizer.check_wave(w) for w in waves]
        mels, frames = self.synthesizer.fit_frames(waves)
        if self.content is not None:
            log.info("codec fit: speech encoder states of %d clips (the unit inputs)", len(waves))
        inputs = self.unit_inputs(waves, mels)  # (T_i, C): log-mel, or content states
        generator = torch.Generator().manual_seed(seed)
        weights = torch.tensor([float(m.shape[0]) for m in mels]) if crops == "audio" else None
        trainer = _Trainer(self, frames, torch.cat(inputs), seed)
        voices = self.synthesizer.fit_voices(mels, frames)  # (n_clips, n_mels), or None
        before = _mel_l1(self, inputs, mels, voices)
        initial = trainer.quantisation_error(inputs)
        optimizer = torch.optim.Adam(trainer.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(decoder_steps, 1))
        for step in range(1, decoder_steps + 1):
            x, y, valid, picks = _crops(inputs, mels, generator, weights)
            voice = None if voices is None else voices[picks]  # (B, n_mels): each crop in its clip's voice
            loss = trainer.loss(x, y, None if weights is None else valid, voice)  # by clip: padding counts
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
        after = _mel_l1(self, inputs, mels, voices)
        return CodecFitReport(len(mels), frames.shape[0], initial, trainer.quantisation_error(inputs), before, after)

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """The codes and encoder (``own_state``), then the synthesizer's codebook and decoder."""
        return {**self.own_state(), **self.synthesizer.fitted_state()}

    def own_state(self) -> dict[str, torch.Tensor]:
        """What this class adds to a ``MelKMeansCodec``: ``codes`` and ``encoder.*``."""
        return {"codes": self.codes, **{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}}

    def save(self, directory: str | Path) -> Path:
        """Write ``codec.safetensors`` and ``codec.json`` (``kind``, args, and for ``encoder_vq`` the speech
        encoder's config as ``content``); returns the directory."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.fitted_state().items()}
        safetensors.torch.save_file(tensors, str(root / WEIGHTS_FILE))
        record = {"kind": self.kind, **self.args} | ({"content": self.content.identity} if self.content else {})
        (root / ARGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, directory: str | Path, content: SpeechContent | None = None) -> MelVQCodec:
        """Restore a codec written by :meth:`save`; ``content`` must be given for (and only for) an
        ``encoder_vq`` codec, with the encoder it was fitted with. Other kinds, unknown args, another
        encoder or tensor mismatches raise."""
        root = Path(directory)
        args: Any = saved_args(json.loads((root / ARGS_FILE).read_text()))
        kind = "mel_vq" if content is None else "encoder_vq"
        record = args.pop("content", None) if isinstance(args, dict) else None
        if not isinstance(args, dict) or args.pop("kind", None) != kind or set(args) != set(CODEC_ARGS):
            raise ValueError(f"{root / ARGS_FILE}: not a {kind} codec (expected kind and {sorted(CODEC_ARGS)})")
        if content is not None and record != content.identity:
            raise ValueError(f"{root / ARGS_FILE}: fitted with speech encoder {record}, not {content.identity}")
        codec = cls(content, **args)
        tensors = safetensors.torch.load_file(str(root / WEIGHTS_FILE))
        synth = {k: v for k, v in tensors.items() if k in ("codebook", *VOICE_STATE) or k.startswith("decoder.")}
        codec.synthesizer.load_fitted_state(synth, str(root))
        copy_strict(codec.own_state(), {k: v for k, v in tensors.items() if k not in synth}, str(root))
        return codec


class _Trainer(nn.Module):
    """The VQ-VAE during ``fit``: latents → EMA-quantised codes (straight-through) → decoder → log-mel.

    Building it re-initialises the codec's encoder, codes and decoder (seeded) and zeroes the codebook.
    """

    def __init__(self, codec: MelVQCodec, frames: torch.Tensor, inputs: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.codec, synth = codec, codec.synthesizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codec.encoder = UnitEncoder(inputs.shape[1])
            shape = (codec.n_units, synth.n_mels, synth.decoder_hidden, synth.voice_conditioned)
            synth.decoder = type(synth.decoder)(*shape)
            self.inp = nn.Linear(CODE_DIM, synth.decoder_hidden)  # folded into the unit embedding at the end
        codec.encoder.mean.copy_(inputs.mean(0))
        codec.encoder.std.copy_(inputs.std(0).clamp(min=1e-3))
        self.mean, self.std = frames.mean(0), frames.std(0).clamp(min=1e-3)  # the decoder predicts standardised log-mel
        synth.codebook.zero_()
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            sample = inputs[torch.randperm(inputs.shape[0], generator=self.generator)[: max(4096, codec.n_units)]]
            latents = codec.encoder(sample[None])[0]  # context-free seeds; training moves them
            codec.codes.copy_(latents[torch.randperm(latents.shape[0], generator=self.generator)[: codec.n_units]])
        self.sums, self.counts = codec.codes.clone(), torch.ones(codec.n_units)

    def loss(
        self,
        inputs: torch.Tensor,
        mels: torch.Tensor,
        valid: torch.Tensor | None = None,
        voice: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Crops of unit inputs ``(B, T, C)`` and their log-mel ``(B, T, n_mels)`` [and voices ``(B, n_mels)``]
        → log-mel L1 + commitment, over every frame, or over the ``valid`` ones ``(B, T)`` bool."""
        latents = self.codec.encoder(inputs)  # (B, T, D)
        flat = latents.reshape(-1, CODE_DIM)
        index = nearest(flat.detach(), self.codec.codes, exact=False)[1]  # (B · T,)
        self._update_codes(flat.detach(), index)
        quantised = self.codec.codes[index].reshape(latents.shape)
        straight = latents + (quantised - latents).detach()  # (B, T, D)
        decoder = self.codec.synthesizer.decoder
        predicted = decoder.from_embeddings(self.inp(straight), voice)  # (B, T, n_mels), standardised
        target = (mels - self.mean) / self.std
        if valid is None:
            return (predicted - target).abs().mean() + COMMITMENT * F.mse_loss(latents, quantised)
        keep = valid.float()  # (B, T)
        l1 = ((predicted - target).abs().mean(-1) * keep).sum() / keep.sum()
        return l1 + COMMITMENT * (((latents - quantised) ** 2).mean(-1) * keep).sum() / keep.sum()

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
    def quantisation_error(self, inputs: list[torch.Tensor]) -> float:
        """Mean squared latent-to-nearest-code distance over unit inputs ``(T_i, C)``."""
        return (
            torch.cat([nearest(self.codec.encoder(x[None])[0], self.codec.codes, exact=False)[0] for x in inputs])
            .mean()
            .item()
        )


def _crops(
    inputs: list[torch.Tensor],
    mels: list[torch.Tensor],
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``BATCH`` random crops of ``CROP_FRAMES``, the same frames of unit inputs and log-mel (shorter clips
    padded by edge repetition) → ``(B, T, C)``, ``(B, T, n_mels)``, ``(B, T)`` bool, the frames not padded,
    and ``(B,)`` int64, the clips drawn: uniformly, or in proportion to ``weights`` ``(n_clips,)``."""
    if weights is None:
        picks = torch.randint(len(mels), (BATCH,), generator=generator).tolist()
    else:
        picks = torch.multinomial(weights, BATCH, replacement=True, generator=generator).tolist()
    xs, ys, valid = [], [], torch.zeros(BATCH, CROP_FRAMES, dtype=torch.bool)
    for row, i in enumerate(picks):
        start = int(torch.randint(max(1, mels[i].shape[0] - CROP_FRAMES + 1), (1,), generator=generator))
        for out, full in ((xs, inputs[i]), (ys, mels[i])):
            crop = full[start : start + CROP_FRAMES]
            out.append(F.pad(crop.T, (0, CROP_FRAMES - crop.shape[0]), mode="replicate").T)
        valid[row, : min(CROP_FRAMES, mels[i].shape[0] - start)] = True
    return torch.stack(xs), torch.stack(ys), valid, torch.tensor(picks)


@torch.no_grad()
def _mel_l1(
    codec: MelVQCodec, inputs: list[torch.Tensor], mels: list[torch.Tensor], voices: torch.Tensor | None
) -> float:
    """Mean log-mel L1 of encode → predicted log-mel over ``mels`` (the decoder's reconstruction), each clip
    in its voice ``(n_clips, n_mels)`` if the codec takes one."""
    total, frames = 0.0, 0
    for i, (x, mel) in enumerate(zip(inputs, mels, strict=True)):
        units = nearest(codec.encoder(x[None])[0], codec.codes, exact=False)[1]
        voice = None if voices is None else voices[i : i + 1]  # (1, n_mels)
        total += (codec.synthesizer.predict_log_mel(units[None], voice)[0] - mel).abs().mean(-1).sum().item()
        frames += mel.shape[0]
    return total / max(frames, 1)
