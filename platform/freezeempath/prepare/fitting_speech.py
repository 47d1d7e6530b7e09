"""Codec fitting speech from shards: seeded samples of clips, speed-perturbed copies, clips joined per speaker.

In: shards (any corpus; ``audio``, ``speaker`` and the other required columns). Out: shards of the same
schema, one per input shard and speed, for ``jobs.fit_codec --in``.

- Speed copies resample a clip as if it were recorded at ``speed`` times its rate (Kaldi-style speed
  perturbation): tempo, pitch and formants move together, so each real speaker gives new voices.
- Joining puts a speaker's consecutive clips (in the shard's order, 0.2 s of silence between) into rows
  of at most ``join_seconds``: an ``encoder_vq`` fit computes one speech-encoder window (30 s) per row,
  so short prompts joined cost a fraction of the encoder passes. Joined rows keep no transcript or
  emotion; with ``join_seconds=0`` rows stay one clip each and keep both.

Undecodable rows are skipped and counted; an output shard already written is kept (resume).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torchaudio

from freezeempath.audio import decode_audio, validate_waveform
from freezeempath.data.shards import REQUIRED_COLUMNS, Split, encode_flac, list_shards, read_stats, write_shard

RATE = 16_000
GAP_SECONDS = 0.2  # silence between joined clips

log = logging.getLogger(__name__)


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
                log.warning("skipped an undecodable %s clip in %s", column, shard)
    return waves


@dataclasses.dataclass
class FittingSpeechSummary:
    """What a run wrote: shards, rows and minutes of audio per speed, input rows skipped by reason."""

    shards_written: int = 0
    shards_kept: int = 0
    rows_in: int = 0
    rows_out: int = 0
    minutes: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


def speed_copy(wave: torch.Tensor, speed: float, rate: int = RATE) -> torch.Tensor:
    """Mono ``(N,)`` → ``(≈ N / speed,)``: played ``speed`` times faster, pitch and formants scaled alike."""
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    if speed == 1:
        return wave
    return torchaudio.functional.resample(wave, round(rate * speed), rate)


def join_clips(waves: Sequence[torch.Tensor], max_samples: int, gap_samples: int) -> Iterator[list[int]]:
    """Indices of consecutive clips whose joined length (gaps included) stays within ``max_samples``; a
    longer clip is a group of its own."""
    group: list[int] = []
    length = 0
    for i, wave in enumerate(waves):
        extra = wave.numel() + (gap_samples if group else 0)
        if group and length + extra > max_samples:
            yield group
            group, length, extra = [], 0, wave.numel()
        group.append(i)
        length += extra
    if group:
        yield group


def speech_rows(rows: list[dict[str, Any]], waves: list[torch.Tensor], speed: float, join_seconds: float) -> list[dict]:
    """One shard's decoded rows and clips → output rows at ``speed``: joined per speaker (speakers in order
    of first appearance), or with ``join_seconds`` 0 one per clip in the shard's order."""
    copies = [speed_copy(w, speed) for w in waves]
    if join_seconds == 0:
        return [_row([row], [copy], speed) for row, copy in zip(rows, copies, strict=True)]
    by_speaker: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_speaker.setdefault(row["speaker"], []).append(i)
    out = []
    for members in by_speaker.values():
        for group in join_clips([copies[i] for i in members], round(join_seconds * RATE), round(GAP_SECONDS * RATE)):
            out.append(_row([rows[members[k]] for k in group], [copies[members[k]] for k in group], speed))
    return out


def _row(rows: list[dict[str, Any]], waves: list[torch.Tensor], speed: float) -> dict[str, Any]:
    """Rows and their clips at ``speed`` → one output row (the first row's id, speaker, language, corpus)."""
    gap = torch.zeros(round(GAP_SECONDS * RATE))
    wave = torch.cat([part for w in waves for part in (gap, w)][1:]).numpy()
    first, single = rows[0], len(rows) == 1
    suffix = ("" if single else f"+{len(rows) - 1}") + ("" if speed == 1 else f"@x{speed:g}")
    return {
        "id": f"{first['id']}{suffix}",
        "audio": encode_flac(wave, RATE),
        "sample_rate": RATE,
        "duration": wave.shape[0] / RATE,
        "transcript": first["transcript"] if single else None,
        "emotion": first["emotion"] if single else None,
        "emotion_original": first["emotion_original"] if single else None,
        "speaker": first["speaker"],
        "language": first["language"],
        "corpus": first["corpus"],
        "split": Split.TRAIN.value,
    }


def make_fitting_speech(
    inputs: str | Sequence[str], out_dir: str | Path, speeds: Sequence[float] = (1.0,), join_seconds: float = 25.0
) -> FittingSpeechSummary:
    """Write ``<input shard>-x<speed>.parquet`` under ``out_dir`` for each input shard and speed; shards
    already there are kept. Returns the run's :class:`FittingSpeechSummary` (kept shards count their rows)."""
    if not speeds or any(s <= 0 for s in speeds):
        raise ValueError(f"speeds must be positive numbers, got {list(speeds)}")
    if join_seconds < 0:
        raise ValueError(f"join_seconds must be >= 0 (0 = no joining), got {join_seconds}")
    summary, skipped, minutes = FittingSpeechSummary(), Counter(), Counter()
    for shard in list_shards(inputs):
        todo = {s: Path(out_dir) / f"{Path(shard).stem}-x{s:g}.parquet" for s in speeds}
        for speed, path in list(todo.items()):
            if path.exists():
                stats = read_stats(path)
                summary.shards_kept += 1
                summary.rows_out += stats.get("rows", 0)
                minutes[f"x{speed:g}"] += stats.get("minutes", 0.0)
                del todo[speed]
        if not todo:
            continue
        rows, waves = _decoded(shard, skipped)
        summary.rows_in += len(rows)
        for speed, path in todo.items():
            out = speech_rows(rows, waves, speed, join_seconds)
            took = sum(r["duration"] for r in out) / 60
            write_shard(out, path, {"rows": len(out), "minutes": round(took, 3), "source": Path(shard).name})
            summary.shards_written += 1
            summary.rows_out += len(out)
            minutes[f"x{speed:g}"] += took
            log.info("%s: %d rows, %.1f min", path.name, len(out), took)
    summary.minutes = {k: round(v, 1) for k, v in sorted(minutes.items())}
    summary.skipped = dict(skipped)
    return summary


def _decoded(shard: str, skipped: Counter) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """A shard's rows (required columns) and their clips as mono 16 kHz; rows whose audio is empty, corrupt
    or otherwise invalid are counted in ``skipped`` (``bad_audio``) and left out."""
    rows, waves = [], []
    for row in pq.read_table(shard, columns=list(REQUIRED_COLUMNS)).to_pylist():
        try:
            wave = decode_clip(row["audio"])
        except ValueError:
            skipped["bad_audio"] += 1
            continue
        rows.append(row)
        waves.append(wave)
    return rows, waves
