"""Codec fit: a fresh codec of ``model.codec.kind`` fitted on 16 kHz clips, and the allocator setting it needs.

In: a config and mono 16 kHz waveforms (``freezeempath.prepare.fitting_speech.read_waves`` reads them from
shards). Out: a fitted codec (``MelKMeansCodec`` or ``MelVQCodec``) with its ``CodecFitReport``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from freezeempath.config import Config

logger = logging.getLogger(__name__)
MMAP_THRESHOLD = 64 * 1024  # bytes: allocations this large get memory maps of their own (glibc)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Give allocations of ``threshold`` bytes or more memory maps of their own, returned to the system when
    freed (glibc ``mallopt``; a fixed value also stops glibc raising it); False without glibc.

    An ``encoder_vq`` fit keeps every clip's states while the encoder's large temporaries come and go.
    With glibc's sliding default the temporaries land in the heap between the states, which then cannot
    shrink: on 3851 clips the process grew by 0.6 GB a minute, 0.15 with this (jobs/BENCHMARKS.md).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def fit_codec(cfg: Config, waves: Sequence[torch.Tensor]) -> tuple[Any, Any]:
    """Fit a fresh codec of ``model.codec``'s kind and shape on 16 kHz clips → ``(codec, CodecFitReport)``.

    Save it with ``codec.save(directory)`` and point ``model.codec.path`` at that directory.
    """
    from freezeempath.codec.mel_codec import build_codec

    codec = build_codec(dataclasses.replace(cfg.model.codec, path=""), cfg.model.encoder)
    t = cfg.targets
    steps = {"decoder_steps": t.codec_decoder_steps} if t.codec_decoder_steps else {}  # 0: the kind's default
    report = codec.fit(list(waves), kmeans_iters=t.codec_kmeans_iters, seed=t.seed, crops=t.codec_crops, **steps)
    return codec, report
