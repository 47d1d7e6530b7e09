"""Data step 2, prepare: raw corpus rows → 16 kHz mono FLAC Parquet shards, with Ray Data.

In: ``CorpusRows`` from ``freezeempath.prepare.recipes`` (audio paths, labels, splits). Out: shards in the
``freezeempath.data.shards`` schema, named ``<split>-<index>-<digest>.parquet``, plus ``summary.json``.

The shard plan is a stable split of the id-sorted rows, so shard names are deterministic and a rerun
skips shards already on disk (resume). Each pending shard is one Arrow block; one Ray task per block
reads, decodes (soundfile), resamples (torchaudio) and FLAC-encodes its rows, skips bad rows with a
``ClipSkip``, and writes the shard atomically with its statistics in the Parquet metadata. The output
folder must be visible to every Ray worker (local disk on one node, shared storage on a cluster).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from freezeempath.audio import decode_audio, validate_waveform
from freezeempath.config import DataConfig
from freezeempath.data.shards import Split, encode_flac, read_stats, write_shard
from freezeempath.prepare.recipes import CorpusRows, RawRow

logger = logging.getLogger(__name__)

TARGET_RATE = 16_000
SUMMARY_FILE = "summary.json"
_LOGGED = ("shard", "rows", "skipped")
PLAN_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("id", "audio_path", "speaker", "language", "corpus", "transcript")]
    + [(name, pa.string()) for name in ("emotion_original", "emotion", "split", "reply", "shard")]
    + [("shard_size", pa.int64())]
)


class ClipSkip(enum.Enum):
    """Why a row was left out of its shard."""

    MISSING = "missing"  # no such file, or unreadable
    EMPTY = "empty"  # 0 bytes or 0 samples
    UNDECODABLE = "undecodable"  # corrupt, or a format soundfile cannot read (e.g. mp4)
    INVALID = "invalid"  # NaN/inf samples or an unusable sample rate
    TOO_LONG = "too_long"  # longer than ``DataConfig.max_seconds``


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its file name, split and rows."""

    name: str
    split: Split
    rows: tuple[RawRow, ...]


@dataclass(frozen=True)
class PrepareSummary:
    """What a prepare run left in ``out_dir``; totals cover all planned shards, resumed ones included."""

    corpus: str
    out_dir: str
    shards_total: int
    shards_written: int
    shards_existing: int
    rows_written: int
    rows_total: int
    rows_skipped: dict[str, int]
    label_drops: dict[str, int]
    split_rows: dict[str, int]
    hours: float
    stale_shards: tuple[str, ...]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the content of ``summary.json``)."""
        return {**asdict(self), "stale_shards": list(self.stale_shards)}


def plan_shards(rows: Sequence[RawRow], shard_rows: int) -> list[ShardPlan]:
    """Cut each split's rows, in a stable pseudo-random order, into shards of ``shard_rows``; names carry a
    digest of their ids.

    The order is that of a hash of the id, not the id: corpus ids encode label and speaker (RAVDESS
    ``03-01-05-…``), so id order would hand training one emotion at a time.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    plans = []
    for split in Split:
        part = sorted((r for r in rows if r.split is split), key=_mix_key)
        for index, start in enumerate(range(0, len(part), shard_rows)):
            chunk = tuple(part[start : start + shard_rows])
            digest = hashlib.sha256("\n".join(r.id for r in chunk).encode()).hexdigest()[:8]
            plans.append(ShardPlan(f"{split.value}-{index:05d}-{digest}.parquet", split, chunk))
    return plans


def _mix_key(row: RawRow) -> str:
    return hashlib.sha256(row.id.encode()).hexdigest()


def load_clip(path: str, max_seconds: float) -> tuple[np.ndarray | None, ClipSkip | None]:
    """Read one audio file → ``(mono float32 (N,) at 16 kHz, None)`` or ``(None, reason)``."""
    file = Path(path)
    try:
        data = file.read_bytes() if path and file.is_file() else None
    except OSError:  # unreadable (permissions, vanished) counts as missing, not as a crash
        data = None
    if data is None:
        return None, ClipSkip.MISSING
    if not data:
        return None, ClipSkip.EMPTY
    try:
        samples, rate = decode_audio(data)
    except ValueError:
        return None, ClipSkip.UNDECODABLE
    if samples.size == 0:
        return None, ClipSkip.EMPTY
    if not np.isfinite(samples).all():
        return None, ClipSkip.INVALID
    if samples.shape[0] / rate > max_seconds:
        return None, ClipSkip.TOO_LONG
    try:
        wave = validate_waveform(samples, rate, max_seconds, TARGET_RATE)
    except ValueError:
        return None, ClipSkip.INVALID
    return wave.numpy(), None


def shard_row(item: Mapping[str, Any], wave: np.ndarray) -> dict[str, Any]:
    """A plan item plus its decoded 16 kHz waveform → one row of the shard schema."""
    return {
        "id": item["id"],
        "audio": encode_flac(wave, TARGET_RATE),
        "sample_rate": TARGET_RATE,
        "duration": wave.shape[0] / TARGET_RATE,
        **{key: item[key] for key in ("transcript", "emotion", "emotion_original", "speaker", "language")},
        **{key: item[key] for key in ("corpus", "split", "reply")},
    }


def write_planned_shards(batch: pa.Table, out_dir: str, max_seconds: float) -> pa.Table:
    """Ray Data UDF: decode and write every shard in ``batch`` (whole shards only) → one stats row each."""
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for item in batch.to_pylist():
        by_shard.setdefault(item["shard"], []).append(item)
    return pa.Table.from_pylist(
        [_write_one(Path(out_dir) / name, items, max_seconds) for name, items in by_shard.items()]
    )


def _write_one(path: Path, items: list[dict[str, Any]], max_seconds: float) -> dict[str, Any]:
    if len(items) != items[0]["shard_size"]:  # a split block would let two tasks write one file
        raise RuntimeError(f"shard {path.name} arrived as {len(items)} of {items[0]['shard_size']} rows")
    rows, skipped = [], Counter()
    for item in items:
        wave, reason = load_clip(item["audio_path"], max_seconds)
        if reason is None:
            rows.append(shard_row(item, wave))
        else:
            skipped[reason.value] += 1
            logger.warning("skipped %s (%s): %s", item["id"], reason.value, item["audio_path"])
    seconds = sum(row["duration"] for row in rows)
    write_shard(rows, path, stats={"rows": len(rows), "skipped": dict(skipped), "seconds": seconds})
    return {"shard": path.name, "rows": len(rows), "skipped": json.dumps(dict(skipped)), "seconds": seconds}


def prepare_corpus(corpus: str, rows: CorpusRows, out_dir: str | Path, cfg: DataConfig | None = None) -> PrepareSummary:
    """Write every pending shard of ``rows`` to ``out_dir`` with Ray Data; write ``summary.json``.

    Args:
        corpus: corpus name for the summary.
        rows: the recipe's rows (splits assigned) and label drops.
        out_dir: shard folder; shards already there are kept (resume).
        cfg: ``shard_rows`` and ``max_seconds`` are used (``DataConfig()`` when omitted).

    Returns:
        The summary also written to ``out_dir/summary.json``.
    """
    import ray  # heavy: only the job path needs it

    cfg = cfg if cfg is not None else DataConfig()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_shards(rows.rows, cfg.shard_rows)
    existing = {p.name for p in out.glob("*.parquet")}
    pending = [plan for plan in plans if plan.name not in existing]
    stale = tuple(sorted(existing - {plan.name for plan in plans}))
    if stale:
        logger.warning("%d shard(s) in %s are not in the current plan (old run?): %s", len(stale), out, stale[:3])
    logger.info(
        "%d shards planned, %d already written, %d to write", len(plans), len(plans) - len(pending), len(pending)
    )
    rows_written = 0
    if pending:
        blocks = [_plan_table(plan) for plan in pending]
        dataset = ray.data.from_arrow(blocks).map_batches(
            write_planned_shards,
            batch_size=None,  # one block = one shard
            batch_format="pyarrow",
            fn_kwargs={"out_dir": str(out), "max_seconds": cfg.max_seconds},
            num_cpus=1,
        )
        for done, result in enumerate(dataset.iter_rows(), start=1):
            rows_written += result["rows"]
            logger.info("shard %d/%d %s: %d rows, skipped %s", done, len(pending), *(result[k] for k in _LOGGED))
    summary = _summarize(corpus, out, plans, len(pending), rows_written, rows.label_drops, stale, start)
    write_json(out / SUMMARY_FILE, summary.to_dict())
    return summary


def _plan_table(plan: ShardPlan) -> pa.Table:
    items = [{**row.to_item(), "shard": plan.name, "shard_size": len(plan.rows)} for row in plan.rows]
    return pa.Table.from_pylist(items, schema=PLAN_SCHEMA)


def _summarize(
    corpus: str,
    out: Path,
    plans: Sequence[ShardPlan],
    written: int,
    rows_written: int,
    label_drops: Mapping[str, int],
    stale: tuple[str, ...],
    start: float,
) -> PrepareSummary:
    skipped: Counter[str] = Counter()
    split_rows: Counter[str] = Counter()
    seconds = 0.0
    for plan in plans:
        stats = read_stats(out / plan.name)
        skipped.update(stats.get("skipped", {}))
        split_rows[plan.split.value] += stats.get("rows", 0)
        seconds += stats.get("seconds", 0.0)
    return PrepareSummary(
        corpus=corpus,
        out_dir=str(out),
        shards_total=len(plans),
        shards_written=written,
        shards_existing=len(plans) - written,
        rows_written=rows_written,
        rows_total=sum(split_rows.values()),
        rows_skipped=dict(sorted(skipped.items())),
        label_drops=dict(label_drops),
        split_rows={s.value: split_rows[s.value] for s in Split},
        hours=round(seconds / 3600, 6),
        stale_shards=stale,
        wall_seconds=round(time.perf_counter() - start, 2),
    )


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON summary atomically (temp file, then rename)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)
