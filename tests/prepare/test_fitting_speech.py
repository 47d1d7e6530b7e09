"""Codec fitting speech (``prepare/fitting_speech.py``, ``jobs/fitting_speech.py``): speed copies, joining, resume."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from freezeempath.data.shards import encode_flac, write_shard
from freezeempath.prepare.fitting_speech import join_clips, make_fitting_speech, read_waves, speed_copy

from jobs import fitting_speech as job

RATE = 16_000


def tone(seconds: float, hz: float = 200.0) -> torch.Tensor:
    t = torch.arange(round(seconds * RATE)) / RATE
    return 0.5 * torch.sin(2 * torch.pi * hz * t)


def peak_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return float(spectrum.argmax()) * RATE / wave.numel()


def test_speed_copy_moves_length_and_pitch_together() -> None:
    wave = tone(1.0)
    faster, slower = speed_copy(wave, 1.1), speed_copy(wave, 0.9)
    assert abs(faster.numel() - RATE / 1.1) <= 2 and abs(slower.numel() - RATE / 0.9) <= 2
    assert peak_hz(faster) == pytest.approx(220, abs=2) and peak_hz(slower) == pytest.approx(180, abs=2)
    assert speed_copy(wave, 1.0) is wave
    with pytest.raises(ValueError, match="speed must be > 0"):
        speed_copy(wave, 0)


def test_join_clips_fills_groups_up_to_the_limit_with_gaps() -> None:
    waves = [torch.zeros(n) for n in (10, 10, 10, 30, 5)]
    # 10 + 2 + 10 = 22 fits 25, a third would not; 30 alone exceeds the limit and stays alone
    assert list(join_clips(waves, 25, 2)) == [[0, 1], [2], [3], [4]]
    assert list(join_clips([], 25, 2)) == []


def write_rows(path: Path) -> None:
    """Speaker a: three 1 s clips; speaker b: two; one corrupt row."""
    rows = []
    for i, speaker in enumerate("aabab"):
        rows.append(
            {
                "id": f"c-{i}",
                "audio": encode_flac(tone(1.0, 150 + 20 * i).numpy(), RATE),
                "sample_rate": RATE,
                "duration": 1.0,
                "transcript": f"clip {i}",
                "emotion": "sad",
                "emotion_original": "sad",
                "speaker": speaker,
                "language": "en",
                "corpus": "jsonl",
                "split": "test",
            }
        )
    rows.append({**rows[0], "id": "c-bad", "audio": b"fLaC not really"})
    write_shard(rows, path)


def test_job_writes_joined_speed_copies_skips_bad_rows_and_resumes(tmp_path: Path) -> None:
    write_rows(tmp_path / "in" / "part-0.parquet")
    out = tmp_path / "out"
    summary = make_fitting_speech(str(tmp_path / "in"), out, speeds=(1.0, 0.9), join_seconds=2.5)
    assert summary.shards_written == 2 and summary.rows_in == 5 and summary.skipped == {"bad_audio": 1}
    plain = pq.read_table(out / "part-0-x1.parquet").to_pylist()
    slow = pq.read_table(out / "part-0-x0.9.parquet").to_pylist()
    # a: 1 + 0.2 + 1 = 2.2 s fits 2.5, the third clip does not; b: both clips
    assert [r["id"] for r in plain] == ["c-0+1", "c-3", "c-2+1"]
    assert [r["id"] for r in slow] == ["c-0+1@x0.9", "c-3@x0.9", "c-2+1@x0.9"]
    assert [r["speaker"] for r in plain] == ["a", "a", "b"] and {r["split"] for r in plain} == {"train"}
    assert plain[0]["transcript"] is None and plain[1]["transcript"] == "clip 3"  # joined rows lose the text
    assert plain[0]["duration"] == pytest.approx(2.2) and slow[0]["duration"] == pytest.approx(2 / 0.9 + 0.2, abs=0.01)
    waves = read_waves([str(out)])
    assert len(waves) == 6 and sum(w.numel() for w in waves) == pytest.approx(RATE * (5 + 5 / 0.9 + 0.2 * 4), rel=0.01)
    again = make_fitting_speech(str(tmp_path / "in"), out, speeds=(1.0, 0.9), join_seconds=2.5)
    assert (again.shards_written, again.shards_kept, again.rows_out) == (0, 2, 6)
    assert again.minutes == summary.minutes


def test_job_without_joining_keeps_rows_and_names_bad_options(tmp_path: Path) -> None:
    write_rows(tmp_path / "in" / "part-0.parquet")
    summary = job.main(["--in", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--join-seconds", "0"])
    rows = pq.read_table(tmp_path / "out" / "part-0-x1.parquet").to_pylist()
    assert summary["rows_out"] == 5 and [r["transcript"] for r in rows] == [f"clip {i}" for i in range(5)]
    with pytest.raises(SystemExit, match="speeds must be positive"):
        job.main(["--in", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--speeds", "0"])
    with pytest.raises(SystemExit, match="join_seconds must be >= 0"):
        job.main(["--in", str(tmp_path / "in"), "--out", str(tmp_path / "o3"), "--join-seconds", "-1"])
