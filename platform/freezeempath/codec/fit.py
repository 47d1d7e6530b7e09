"""Codec fit: a fresh codec of ``model.codec.kind`` fitted on 16 kHz clips, and the allocator setting it needs.

In: a config and mono 16 kHz waveforms (``freezeempath.prepare.fitting_speech.read_waves`` reads them from
shards). Out: a fitted codec (``MelKMeansCodec`` or ``MelVQCodec``) with its ``CodecFitReport``.

``mel_kmeans`` fits here (:func:`fit_mel_kmeans`: k-means++ and Lloyd on log-mel frames, then the
units-to-mel decoder on masked log-mel L1); ``mel_vq`` and ``encoder_vq`` train their VQ-VAE in
:mod:`freezeempath.codec.vq_fit`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch import nn

from freezeempath.codec.build import build_codec
from freezeempath.codec.kmeans import kmeans, nearest
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.mel_decoder import UnitMelDecoder
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.codec.vq import MelVQCodec
from freezeempath.codec.vq_fit import fit_mel_vq
from freezeempath.config import Config
from freezeempath.model.masks import length_mask

logger = logging.getLogger(__name__)
MMAP_THRESHOLD = 64 * 1024  # bytes: allocations this large get memory maps of their own (glibc)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Give allocations of ``threshold`` bytes or more memory maps of their own, returned to the system when
    freed (glibc ``mallopt``; a fixed value also stops glibc raising it); False without glibc.

    An ``encoder_vq`` fit keeps every clip's states while the encoder's large temporaries come and go.
    With glibc's sliding default the temporaries land in the heap between the states, which then cannot
    shrink, and a long fit keeps growing (measured in jobs/BENCHMARKS.md).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def fit_codec(cfg: Config, waves: Sequence[torch.Tensor]) -> tuple[MelKMeansCodec | MelVQCodec, CodecFitReport]:
    """Fit a fresh codec of ``model.codec``'s kind and shape on 16 kHz clips → ``(codec, CodecFitReport)``.

    Save it with ``codec.save(directory)`` and point ``model.codec.path`` at that directory.
    """
    codec = build_codec(dataclasses.replace(cfg.model.codec, path=""), cfg.model.encoder)
    t = cfg.targets
    steps = {"decoder_steps": t.codec_decoder_steps} if t.codec_decoder_steps else {}  # 0: the kind's default
    options = {"kmeans_iters": t.codec_kmeans_iters, "seed": t.seed, "crops": t.codec_crops, **steps}
    if isinstance(codec, MelVQCodec):
        return codec, fit_mel_vq(codec, list(waves), **options)
    return codec, fit_mel_kmeans(codec, list(waves), **options)


def fit_mel_kmeans(
    codec: MelKMeansCodec,
    waves: list[torch.Tensor],
    *,
    kmeans_iters: int = 20,
    decoder_steps: int = 300,
    lr: float = 3e-3,
    seed: int = 0,
    crops: str = "clip",
) -> CodecFitReport:
    """Fit the codebook (k-means++ on log-mel frames) and train a fresh decoder (Adam, log-mel L1), in place.

    Args:
        codec: The codec to fit.
        waves: Mono clips ``(N_i,)`` at ``sample_rate``; together at least ``n_units`` frames.
        kmeans_iters: Lloyd iterations after k-means++ seeding.
        decoder_steps: Full-batch Adam steps for the units-to-mel decoder.
        lr: Adam learning rate.
        seed: Seeds k-means++ and the decoder's re-initialisation.
        crops: Only ``clip`` (kept for one fit signature): the decoder trains on whole clips, no crops.

    Returns:
        A :class:`CodecFitReport`.
    """
    if crops != "clip":
        raise ValueError(f"crops={crops!r} applies to mel_vq and encoder_vq fits; mel_kmeans takes no crops")
    mels, frames = codec.fit_frames(waves)
    generator = torch.Generator(device=frames.device).manual_seed(seed)
    initial = nearest(frames, codec.codebook)[0].mean().item()
    codebook, inertia = kmeans(frames, codec.n_units, kmeans_iters, generator)
    codec.codebook.copy_(codebook)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec.decoder = UnitMelDecoder(codec.n_units, codec.n_mels, codec.decoder_hidden, codec.voice_conditioned)
        codec.decoder.to(frames)
    voices = codec.fit_voices(mels, frames)
    before, after = _train_decoder(codec, mels, voices, decoder_steps, lr)
    return CodecFitReport(len(mels), frames.shape[0], initial, inertia, before, after)


def _train_decoder(
    codec: MelKMeansCodec, mels: list[torch.Tensor], voices: torch.Tensor | None, steps: int, lr: float
) -> tuple[float, float]:
    """Full-batch Adam on masked log-mel L1, each clip in its voice ``(B, n_mels)`` if the codec takes one;
    returns the loss before and after."""
    lens = torch.tensor([m.shape[0] for m in mels], device=mels[0].device)
    units = nn.utils.rnn.pad_sequence([codec.quantize(m) for m in mels], batch_first=True)  # (B, T)
    target = nn.utils.rnn.pad_sequence(mels, batch_first=True)  # (B, T, n_mels)
    valid = length_mask(lens, units.shape[1]).to(target.dtype)  # (B, T)

    def loss() -> torch.Tensor:
        error = (codec.predict_log_mel(units, voices) - target).abs().mean(-1)  # (B, T)
        return (error * valid).sum() / valid.sum()

    optimizer = torch.optim.Adam(codec.decoder.parameters(), lr=lr)
    with torch.no_grad():
        before = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    return before, after
