"""Streaming input pipeline: Parquet shards → decode → resample → log-mel → length buckets (Ray Data).

In: shard paths (``freezeempath.data.shards`` schema) and the config. Out: a ``ray.data.Dataset`` whose
rows carry the cropped log-mel of each clip (``mel (n_mels, K)``, ``mel_len``, ``mel_floor``) and the
text/unit targets; :mod:`freezeempath.data.collate` turns rows into ``SpeechChatBatch`` on the workers.
Corrupt, undecodable, empty, too long or wrong-rate rows are dropped and counted by reason in a
:class:`SkipCounter` actor, never crashing the run; a missing column fails fast, naming it.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from freezeempath.config import Config
from freezeempath.stages import Stage

T = TypeVar("T")

log = logging.getLogger(__name__)

BASE_COLUMNS = ("id", "audio", "sample_rate")
STAGE_COLUMNS: dict[Stage, tuple[str, ...]] = {
    Stage.S1: ("reply",),
    Stage.S2A: ("emotion",),
    Stage.S2B: ("reply",),
    Stage.S3A: ("reply", "reply_units"),
    Stage.S3B: ("reply", "reply_units"),
}
OPTIONAL_COLUMNS = ("emotion", "transcript", "emotion_audio", "duration")
PASS_THROUGH = ("id", "emotion", "transcript", "reply", "reply_units")
BOUNDARY_FRAMES = 3  # STFT frames just past the clip still see its last samples


CACHED_STAGE3_COLUMNS = ("id", "reply_units", "reply_tokens", "reply_hidden", "reply_hidden_shape")


def is_reply_state_cache(paths: list[str]) -> bool:
    """Whether the shards are stage-3 reply-state caches (``train.reply_cache``), not audio shards."""
    import pyarrow.parquet as pq

    return (
        bool(paths)
        and "reply_hidden" in pq.read_schema(paths[0]).names
        and "audio" not in pq.read_schema(paths[0]).names
    )


def required_columns(stage: Stage) -> tuple[str, ...]:
    """Columns a shard must have for ``stage``."""
    return BASE_COLUMNS + STAGE_COLUMNS[stage]


def check_shard_columns(paths: list[str], stage: Stage) -> list[str]:
    """Fail fast when a shard lacks a needed column; returns the columns to read."""
    import pyarrow.parquet as pq

    if not paths:
        raise ValueError("no training shards given (data.train_shards is empty)")
    names = set(pq.read_schema(paths[0]).names)
    missing = [c for c in required_columns(stage) if c not in names]
    if missing:
        raise ValueError(f"shard {paths[0]} lacks column(s) {missing} needed by stage {stage.value}")
    return [c for c in dict.fromkeys((*required_columns(stage), *OPTIONAL_COLUMNS)) if c in names]


class SkipCounter:
    """Ray actor counting skipped rows by reason (one per run, looked up by name from the UDFs)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reasons: dict[str, int]) -> None:
        """Add counts."""
        self.counts.update(reasons)

    def get(self) -> dict[str, int]:
        """Counts so far."""
        return dict(self.counts)


def skip_counter(name: str) -> Any:
    """Create (or find) the named :class:`SkipCounter` actor."""
    import ray

    return ray.remote(num_cpus=0)(SkipCounter).options(name=name, get_if_exists=True).remote()


def row_clip(data: Any, declared_rate: Any, max_seconds: float) -> Any:
    """A shard row's ``audio`` bytes and ``sample_rate`` → mono float32 ``(N,)`` at 16 kHz; ``ValueError``
    names the problem (also a file whose rate is not the row's)."""
    from freezeempath.audio import decode_audio, validate_waveform

    samples, rate = decode_audio(bytes(data) if data is not None else b"")
    if int(declared_rate) != rate:
        raise ValueError(f"wrong sample rate: row says {int(declared_rate)} Hz, audio is {rate} Hz")
    return validate_waveform(samples, rate, max_seconds)


class AudioFeatures:
    """Ray Data UDF: decode, validate, resample and log-mel each row; drops bad rows with a reason."""

    def __init__(self, n_mels: int, window_frames: int, max_seconds: float, counter_name: str = "") -> None:
        import torch

        from freezeempath.audio import WhisperLogMel

        torch.set_num_threads(1)
        self.frontend = WhisperLogMel(n_mels, window_frames)
        self.max_seconds = min(max_seconds, window_frames / 100)
        self.counter_name = counter_name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Columnar batch in → the rows that survived, with features."""
        keep, clips, reasons = [], [], Counter()
        for i in range(len(batch["audio"])):
            try:
                clips.append(self._clip(batch["audio"][i], batch["sample_rate"][i]))
                keep.append(i)
            except ValueError as err:
                reasons[_reason(str(err))] += 1
        if reasons:
            self._count(reasons)
        out: dict[str, Any] = {k: [batch[k][i] for i in keep] for k in PASS_THROUGH if k in batch}
        out.update(self._features(clips, "mel"))
        if "emotion_audio" in batch:
            out.update(self._features([self._clip(batch["emotion_audio"][i], 16_000) for i in keep], "emotion_mel"))
        return sort_by_length(out)

    def _clip(self, data: Any, declared_rate: Any) -> Any:
        return row_clip(data, declared_rate, self.max_seconds)

    def _features(self, clips: list[Any], prefix: str) -> dict[str, list[Any]]:
        if not clips:
            return {prefix: [], f"{prefix}_len": [], f"{prefix}_floor": []}
        feats = self.frontend.span(clips)  # the window's floor-filled rest is never built: rows are cropped
        window, frames = self.frontend.window_frames, feats.mel.shape[-1]
        mels, lens, floors = [], [], []
        for mel, floor, n in zip(feats.mel, feats.floor.tolist(), feats.lens.tolist(), strict=True):
            keep = min(window, n + BOUNDARY_FRAMES)
            row = mel[:, :keep].numpy()
            if keep > frames:  # the longest clip's last boundary frame lies in the floor-filled rest
                row = np.concatenate([row, np.full((row.shape[0], keep - frames), floor, row.dtype)], axis=1)
            mels.append(row)
            lens.append(n)
            # the padded window's last frame, which re-padding repeats: the floor, or a computed frame when the
            # span fills the window
            floors.append(floor if frames < window else float(mel[:, -1].min()))
        return {prefix: mels, f"{prefix}_len": lens, f"{prefix}_floor": floors}

    def _count(self, reasons: Counter[str]) -> None:
        log.warning("skipped rows: %s", dict(reasons))
        if self.counter_name:
            import ray

            try:
                ray.get_actor(self.counter_name).add.remote(dict(reasons))
            except ValueError:
                log.warning("skip counter %s not found", self.counter_name)


_REASONS = (
    ("empty", "empty"),
    ("could not be decoded", "undecodable"),
    ("NaN", "non_finite"),
    ("samples reach", "too_loud"),
    ("wrong sample rate", "wrong_rate"),
    ("outside the accepted range", "bad_rate"),
    ("long", "too_long"),
)


def _reason(message: str) -> str:
    """Short key of a skip reason for the metric."""
    return next((key for text, key in _REASONS if text in message), "invalid")


class BlockFeatures:
    """Ray Data UDF over whole read blocks: length buckets of ``window`` rows through :class:`AudioFeatures`.

    The Parquet read runs fused into the same actor (one task per shard), so a block's audio never
    crosses the object store and each actor call covers a shard, not ``window`` rows. The block's rows
    are bucketed by their ``duration`` column before the features (:func:`length_windows`): a feature
    call pads every clip to its window's longest, which in read order cost a third more than each clip
    alone. Each window is one feature call of similar lengths, so the micro-batches cut from it pad little.
    """

    def __init__(self, window: int, seed: int, *features_args: Any) -> None:
        self.window = window
        self.seed = seed
        self.features = AudioFeatures(*features_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
        """A block in → its windows out, as they finish (rows ``(window,)`` or fewer: bad ones dropped)."""
        n = len(batch["audio"])
        if "duration" in batch and n:
            windows = length_windows(np.asarray(batch["duration"], dtype=np.float64), self.window, self._rng(batch))
        else:  # no durations to bucket by
            windows = read_windows(n, self.window)
        for rows in windows:
            out = self.features({k: v[rows] for k, v in batch.items()})
            if out["mel_len"]:
                yield out

    def _rng(self, batch: dict[str, np.ndarray]) -> np.random.Generator | None:
        """The window order's generator: the run's seed and the block's first id (the same every epoch)."""
        return np.random.default_rng([self.seed, zlib.crc32(str(batch["id"][0]).encode())]) if self.seed >= 0 else None


def read_windows(rows: int, window: int) -> list[np.ndarray]:
    """Row indices ``(≤ window,)`` per window, in read order."""
    return [np.arange(s, min(s + window, rows)) for s in range(0, rows, window)]


def length_windows(durations: np.ndarray, window: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Row indices ``(≤ window,)`` per window: rows sorted by duration (stable), cut into windows of
    ``window``, the windows in ``rng``'s order (ascending length without one). Deterministic for a seed,
    as a restart's skip count needs."""
    order = np.argsort(durations, kind="stable")
    windows = [order[rows] for rows in read_windows(len(order), window)]
    if rng is not None:
        windows = [windows[i] for i in rng.permutation(len(windows))]
    return windows


def epoch_order(items: Iterable[T], size: int, seed: int, epoch: int, rank: int) -> Iterator[T]:
    """One worker's micro-batches of one epoch, reordered through a buffer of ``size`` (``buffer_shuffle``)
    seeded by (``seed``, ``epoch``, ``rank``); ``seed`` < 0 or ``size`` ≤ 1 keeps the stream's order.

    Not Ray's ``local_shuffle_buffer_size``: that mixes rows, which would undo the length buckets the
    micro-batches are cut from; this moves whole micro-batches."""
    if seed < 0 or size <= 1:
        return iter(items)
    return buffer_shuffle(items, size, np.random.default_rng([seed, epoch, rank]))


def buffer_shuffle(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """``items`` reordered through a buffer of ``size``: once it is full, each arrival takes the place of a
    random held item, which leaves; the last ``size`` leave in random order. The order depends only on the
    number of items and ``rng``'s state, so one seed replays one order over the same stream."""
    held: list[T] = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        i = int(rng.integers(size))
        yield held[i]
        held[i] = item
    for i in rng.permutation(len(held)):
        yield held[i]


def sort_by_length(batch: dict[str, Any]) -> dict[str, Any]:
    """Length bucketing: order the rows of one feature batch by valid frames so micro-batches pad little."""
    order = np.argsort(np.asarray(batch["mel_len"], dtype=np.int64), kind="stable")
    return {k: [v[i] for i in order] for k, v in batch.items()}


def read_shards(cfg: Config, paths: list[str], columns: list[str], num_cpus: float) -> Any:
    """``read_parquet``, one task per shard, with seeded file shuffling and ``num_cpus`` per read task.

    The seeded file order is the same in every epoch: Ray would reseed per execution, and a worker group
    restarted mid-epoch starts a new execution count, so its epoch would stream other rows than the
    checkpoint's skip count refers to (with ``preserve_order`` at ingest, the row order is fixed too).
    Epochs differ downstream: each Train worker reorders its micro-batches per epoch (:func:`epoch_order`).
    """
    import ray

    seed = cfg.data.shuffle_seed
    shuffle = ray.data.FileShuffleConfig(seed=seed, reseed_after_execution=False) if seed >= 0 else None
    context = ray.data.DataContext.get_current()
    v2, context.use_datasource_v2 = context.use_datasource_v2, False
    try:  # the V2 reader's file-listing task always asks for a whole CPU and starves next to Train workers
        return ray.data.read_parquet(
            list(paths), columns=columns, shuffle=shuffle, num_cpus=num_cpus, override_num_blocks=len(paths)
        )
    finally:
        context.use_datasource_v2 = v2


def build_dataset(cfg: Config, paths: list[str], stage: Stage, counter_name: str = "") -> Any:
    """The streaming dataset for ``stage``: read + length buckets + features, fused in one actor pool.

    Read and features ask for the same CPUs and the read is not split, so Ray Data fuses them
    (Read->MapBatches) and no block crosses the object store between them. CPU fractions stay small: Ray
    Train reserves its workers' CPUs and Ray Data must fit in the rest.
    """
    import ray

    if stage.speech_stage and is_reply_state_cache(paths):  # no audio to decode: the LLM states are cached
        return read_shards(cfg, paths, list(CACHED_STAGE3_COLUMNS), cfg.data.read_cpus)
    enc = cfg.model.encoder
    ds = read_shards(cfg, paths, check_shard_columns(paths, stage), cfg.data.feature_cpus)
    return ds.map_batches(
        BlockFeatures,
        fn_constructor_args=(
            cfg.data.feature_batch,
            cfg.data.shuffle_seed,
            enc.n_mels,
            enc.window_frames,
            min(cfg.data.max_seconds, enc.max_input_seconds),
            counter_name,
        ),
        batch_size=None,  # whole blocks: a batch size would keep the read from fusing
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=cfg.data.feature_workers, max_tasks_in_flight_per_actor=cfg.data.feature_prefetch
        ),
        num_cpus=cfg.data.feature_cpus,
    )
