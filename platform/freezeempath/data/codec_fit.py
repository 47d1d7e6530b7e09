"""Codec fitting data: seeded samples of clips from shards, and a fresh codec fitted on them.

In: shards (folders, files or globs) and a config. Out: mono 16 kHz waveforms, and a fitted codec of
``model.codec.kind`` (``MelKMeansCodec`` or ``MelVQCodec``) with its ``CodecFitReport``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import random
from collections.abc import Sequence
from typing import Any

import pyarrow.parquet as pq
import torch

from freezeempath.config import Config
from freezeempath.data.audio import decode_audio, validate_waveform
from freezeempath.data.shards import list_shards

logger = logging.getLogger(__name__)
RATE = 16_000
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


def decode_clip(data: bytes | None) -> torch.Tensor:
    """A row's audio bytes → mono float32 ``(N,)`` at 16 kHz, any length; ``ValueError`` names the problem."""
    return validate_waveform(*decode_audio(data or b""), float("inf"), RATE)


def read_waves(shards: str | Sequence[str], column: str = "audio", limit: int = 0, seed: int = 0) -> list[torch.Tensor]:
    """Mono 16 kHz clips of ``column``: a seeded sample of ``limit`` rows (0 = all); bad rows left out."""
    keys = [(s, i) for s in list_shards(shards) for i in range(pq.read_metadata(s).num_rows)]
    if 0 < limit < len(keys):
        keys = sorted(random.Random(seed).sample(keys, limit))
    waves = []
    for shard in dict.fromkeys(s for s, _ in keys):
        table = pq.read_table(shard, columns=[column]).take([i for s, i in keys if s == shard])
        for data in table.column(column).to_pylist():
            try:
                waves.append(decode_clip(data))
            except ValueError:
                logger.warning("skipped an undecodable %s clip in %s", column, shard)
    return waves


def fit_codec(cfg: Config, waves: Sequence[torch.Tensor]) -> tuple[Any, Any]:
    """Fit a fresh codec of ``model.codec``'s kind and shape on 16 kHz clips → ``(codec, CodecFitReport)``.

    Save it with ``codec.save(directory)`` and point ``model.codec.path`` at that directory.
    """
    from freezeempath.model.codec import build_codec

    codec = build_codec(dataclasses.replace(cfg.model.codec, path=""), cfg.model.encoder)
    t = cfg.targets
    steps = {"decoder_steps": t.codec_decoder_steps} if t.codec_decoder_steps else {}  # 0: the kind's default
    report = codec.fit(list(waves), kmeans_iters=t.codec_kmeans_iters, seed=t.seed, crops=t.codec_crops, **steps)
    return codec, report
