"""Fitting a :class:`~freezeempath.codec.vq.MelVQCodec`: the VQ-VAE's training loop and its random crops.

In: a codec (``mel_vq`` or ``encoder_vq``) and mono clips ``(N_i,)`` at its ``sample_rate``. Out: the codec
fitted in place (unit encoder, codes, and the folded units-to-mel decoder) and a
:class:`~freezeempath.codec.protocol.CodecFitReport`.

The encoder, the EMA codebook and the decoder train together on log-mel L1 of random crops (Adam, cosine
decay, straight-through gradients); the decoder predicts standardised log-mel from a linear map of the
codes, which is folded into its unit embedding at the end, so the fitted codec decodes exactly like a
``MelKMeansCodec`` with a zero codebook.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from freezeempath.codec.kmeans import nearest
from freezeempath.codec.mel_decoder import UnitMelDecoder
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.vq import CODE_DIM, MelVQCodec, UnitEncoder

EMA_DECAY = 0.99
COMMITMENT = 0.25
CROP_FRAMES = 128  # training crops: 2.56 s at 50 Hz
BATCH = 16
FIT_STEPS = 6000  # the steps of the measured fits (jobs/BENCHMARKS.md); fewer leave units that lose words
LOG_EVERY = 500  # steps between progress lines

log = logging.getLogger(__name__)


def fit_mel_vq(
    codec: MelVQCodec,
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
        codec: The codec to fit in place (its encoder, codes and decoder start afresh, seeded).
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
    synth = codec.synthesizer
    waves = [synth.check_wave(w) for w in waves]
    mels, frames = synth.fit_frames(waves)
    if codec.content is not None:
        log.info("codec fit: speech encoder states of %d clips (the unit inputs)", len(waves))
    inputs = codec.unit_inputs(waves, mels)  # (T_i, C): log-mel, or content states
    weights = torch.tensor([float(m.shape[0]) for m in mels]) if crops == "audio" else None
    trainer = VQTrainer(codec, frames, torch.cat(inputs), seed)
    voices = synth.fit_voices(mels, frames)  # (n_clips, n_mels), or None
    before = mel_l1(codec, inputs, mels, voices)
    initial = trainer.quantisation_error(inputs)
    _train(trainer, inputs, mels, voices, weights, decoder_steps, lr, seed)
    trainer.fold()
    after = mel_l1(codec, inputs, mels, voices)
    return CodecFitReport(len(mels), frames.shape[0], initial, trainer.quantisation_error(inputs), before, after)


def _train(
    trainer: VQTrainer,
    inputs: list[torch.Tensor],
    mels: list[torch.Tensor],
    voices: torch.Tensor | None,
    weights: torch.Tensor | None,
    steps: int,
    lr: float,
    seed: int,
) -> None:
    """``steps`` Adam steps with cosine decay on crops drawn by ``weights`` (None: by clip), each crop in its
    clip's voice when ``voices (n_clips, n_mels)`` is given."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(trainer.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    for step in range(1, steps + 1):
        x, y, valid, picks = draw_crops(inputs, mels, generator, weights)
        voice = None if voices is None else voices[picks]  # (B, n_mels): each crop in its clip's voice
        loss = trainer.loss(x, y, None if weights is None else valid, voice)  # by clip: padding counts
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % LOG_EVERY == 0 or step == steps:
            used, n = int((trainer.counts > 0.01).sum()), trainer.codec.n_units
            log.info("codec fit step %d/%d: loss %.3f, %d of %d units in use", step, steps, loss.item(), used, n)


class VQTrainer(nn.Module):
    """The VQ-VAE during a fit: latents → EMA-quantised codes (straight-through) → decoder → log-mel.

    Building it re-initialises the codec's encoder, codes and decoder (seeded) and zeroes the codebook.
    """

    def __init__(self, codec: MelVQCodec, frames: torch.Tensor, inputs: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.codec, synth = codec, codec.synthesizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codec.encoder = UnitEncoder(inputs.shape[1])
            synth.decoder = UnitMelDecoder(codec.n_units, synth.n_mels, synth.decoder_hidden, synth.voice_conditioned)
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
        flat = latents.reshape(-1, CODE_DIM)  # (B · T, D)
        index = nearest(flat.detach(), self.codec.codes, exact=False)[1]  # (B · T,)
        self._update_codes(flat.detach(), index)
        quantised = self.codec.codes[index].reshape(latents.shape)  # (B, T, D)
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
        encoder, codes = self.codec.encoder, self.codec.codes
        return torch.cat([nearest(encoder(x[None])[0], codes, exact=False)[0] for x in inputs]).mean().item()


def draw_crops(
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
def mel_l1(
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
