"""Prepare step: shard planning, clip loading with skip reasons, and the Ray job with resume."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from freezeempath.config import DataConfig
from freezeempath.data.shards import SCHEMA, Split
from freezeempath.prepare.corpus import SUMMARY_FILE, ClipSkip, load_clip, plan_shards, prepare_corpus
from freezeempath.prepare.recipes import Corpus, RawRow, SplitFractions, collect, load_corpus
from helpers import ROOT, speech_like

RAVDESS_DIR = Path(os.environ.get("FREEZEEMPATH_RAVDESS_DIR", ROOT.parent / "shared/data/ravdess"))
needs_ravdess = pytest.mark.skipif(not (RAVDESS_DIR / "manifest.csv").is_file(), reason="RAVDESS copy absent")


def prepare_main(argv: list[str]) -> dict:
    """``jobs.prepare.main`` loaded from its file (``jobs`` is not an installed package)."""
    spec = importlib.util.spec_from_file_location("jobs_prepare_under_test", ROOT / "jobs/prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def wav(path: Path, seed: int = 0, seconds: float = 0.2, rate: int = 16_000) -> Path:
    """Write a short synthetic clip (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, speech_like(seconds, seed=seed, rate=rate).numpy(), rate)
    return path


def _rows(n: int, split: Split) -> list[RawRow]:
    return [
        RawRow(id=f"c-{split.value}-{i:03d}", audio_path="", speaker="s", language="en", corpus="c", split=split)
        for i in range(n)
    ]


def test_plan_shards_is_stable_and_per_split():
    rows = _rows(5, Split.TRAIN) + _rows(2, Split.TEST)
    plans = plan_shards(rows, shard_rows=2)
    assert [(p.split, len(p.rows)) for p in plans] == [
        (Split.TRAIN, 2),
        (Split.TRAIN, 2),
        (Split.TRAIN, 1),
        (Split.TEST, 2),
    ]
    assert [p.name for p in plans] == [p.name for p in plan_shards(list(reversed(rows)), shard_rows=2)]
    assert plans[0].name.startswith("train-00000-") and plans[-1].name.startswith("test-00000-")
    changed = plan_shards(rows[1:], shard_rows=2)  # one train row fewer: test shard unchanged
    assert changed[-1].name == plans[-1].name
    assert {p.name for p in changed if p.split is Split.TRAIN} != {p.name for p in plans if p.split is Split.TRAIN}
    with pytest.raises(ValueError):
        plan_shards(rows, shard_rows=0)


def test_plan_shards_mixes_ids_that_encode_the_label():
    # RAVDESS-style ids: the emotion code comes before the actor, so id order groups rows by emotion.
    rows = [
        RawRow(
            id=f"r-03-01-{e:02d}-01-01-01-{a:02d}",
            audio_path="",
            speaker=f"{a}",
            language="en",
            corpus="r",
            split=Split.TRAIN,
        )
        for e in range(1, 6)
        for a in range(1, 9)
    ]
    first = plan_shards(rows, shard_rows=8)[0]
    assert len({r.id.split("-")[3] for r in first.rows}) >= 3  # id order would give a single emotion


def test_load_clip_reasons(tmp_path):
    assert load_clip(str(tmp_path / "nope.wav"), 30)[1] is ClipSkip.MISSING
    assert load_clip("", 30)[1] is ClipSkip.MISSING
    (tmp_path / "empty.wav").write_bytes(b"")
    assert load_clip(str(tmp_path / "empty.wav"), 30)[1] is ClipSkip.EMPTY
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    assert load_clip(str(tmp_path / "bad.wav"), 30)[1] is ClipSkip.UNDECODABLE
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16_000)
    assert load_clip(str(tmp_path / "zero.wav"), 30)[1] is ClipSkip.EMPTY
    sf.write(tmp_path / "nan.wav", np.full(160, np.nan, np.float32), 16_000, subtype="FLOAT")
    assert load_clip(str(tmp_path / "nan.wav"), 30)[1] is ClipSkip.INVALID
    assert load_clip(str(wav(tmp_path / "long.wav", seconds=1.5)), 1.0)[1] is ClipSkip.TOO_LONG
    stereo = np.stack([speech_like(0.5, rate=44_100).numpy()] * 2, axis=1)
    sf.write(tmp_path / "cd.wav", stereo, 44_100)
    wave, reason = load_clip(str(tmp_path / "cd.wav"), 30)
    assert reason is None and wave.dtype == np.float32 and wave.shape == (8_000,)


def _fixture_ravdess(root: Path) -> None:
    """Three actors (one per split), 8 emotions each; one corrupt, one empty, one 44.1 kHz, one too long."""
    for actor in (1, 19, 21):
        for code in range(1, 9):
            wav(root / f"Actor_{actor:02d}/03-01-{code:02d}-01-01-01-{actor:02d}.wav", seed=code, seconds=0.3)
    (root / "Actor_01/03-01-03-01-01-01-01.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (root / "Actor_19/03-01-04-01-01-01-19.wav").write_bytes(b"")
    wav(root / "Actor_21/03-01-05-01-01-01-21.wav", seconds=0.3, rate=44_100)
    wav(root / "Actor_21/03-01-08-01-01-01-21.wav", seconds=1.5)


@pytest.mark.ray
def test_prepare_job_skips_bad_rows_resamples_and_resumes(ray_local, tmp_path, capsys):
    _fixture_ravdess(tmp_path / "raw")
    out = tmp_path / "shards"
    argv = ["--corpus", "ravdess", "--root", str(tmp_path / "raw"), "--out", str(out), "--shard-rows", "3"]
    summary = prepare_main([*argv, "--max-seconds", "1.0"])
    assert json.loads(capsys.readouterr().out) == summary == json.loads((out / SUMMARY_FILE).read_text())
    assert summary["rows_skipped"] == {"empty": 1, "too_long": 1, "undecodable": 1}
    assert summary["label_drops"] == {"disgust": 3, "fearful": 3}
    assert summary["rows_total"] == summary["rows_written"] == 15
    assert summary["split_rows"] == {"train": 5, "validation": 5, "test": 5}
    assert summary["shards_total"] == summary["shards_written"] == 6  # 2 per split
    assert summary["hours"] == pytest.approx(15 * 0.3 / 3600, rel=1e-3)

    shards = sorted(out.glob("*.parquet"))
    table = pq.read_table(shards)
    assert table.schema.remove_metadata() == SCHEMA
    assert set(table.column("sample_rate").to_pylist()) == {16_000}
    by_id = {r["id"]: r for r in table.to_pylist()}
    resampled = by_id["ravdess-03-01-05-01-01-01-21"]  # the 44.1 kHz file
    samples, rate = sf.read(io.BytesIO(resampled["audio"]))
    assert rate == 16_000 and samples.shape == (4_800,) and resampled["duration"] == pytest.approx(0.3)
    assert resampled["emotion"] == "angry" and resampled["split"] == "test"
    assert by_id["ravdess-03-01-02-01-01-01-01"]["emotion"] == "neutral"  # calm

    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    again = prepare_main([*argv, "--max-seconds", "1.0"])
    assert again["shards_written"] == 0 and again["shards_existing"] == 6 and again["rows_written"] == 0
    assert {k: again[k] for k in ("rows_total", "rows_skipped", "split_rows")} == {
        k: summary[k] for k in ("rows_total", "rows_skipped", "split_rows")
    }
    assert {p: p.stat().st_mtime_ns for p in shards} == mtimes
    shards[0].unlink()
    third = prepare_main([*argv, "--max-seconds", "1.0"])
    assert third["shards_written"] == 1 and third["rows_total"] == 15


@pytest.mark.ray
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_sample_corpus_job(ray_local, tmp_path, capsys):
    summary = prepare_main(["--corpus", "sample", "--out", str(tmp_path)])
    capsys.readouterr()
    assert summary["rows_total"] == 120 and summary["rows_skipped"] == {}
    assert summary["split_rows"] == {"train": 96, "validation": 12, "test": 12}
    assert not (tmp_path / ".sample_sources").exists()
    rows = pq.read_table(sorted(tmp_path.glob("*.parquet")), columns=["emotion", "speaker", "split", "duration"])
    rows = rows.to_pylist()
    for split in ("train", "validation", "test"):
        assert {r["emotion"] for r in rows if r["split"] == split} == {"neutral", "happy", "sad", "angry", "surprised"}
    speaker_splits = {}
    for r in rows:
        speaker_splits.setdefault(r["speaker"], set()).add(r["split"])
    assert len(speaker_splits) == 8 and all(len(s) == 1 for s in speaker_splits.values())
    assert min(r["duration"] for r in rows) > 0.5
    sad = np.mean([r["duration"] for r in rows if r["emotion"] == "sad"])
    happy = np.mean([r["duration"] for r in rows if r["emotion"] == "happy"])
    assert sad > 1.3 * happy  # the sad preset is slower, with longer word gaps


@pytest.mark.ray
@pytest.mark.data
@needs_ravdess
def test_real_ravdess_subset_prepares(ray_local, tmp_path):
    with open(RAVDESS_DIR / "manifest.csv", newline="") as f:
        seconds = {Path(rec["path"]).stem: float(rec["duration_s"]) for rec in csv.DictReader(f)}
    rows = [r for r in load_corpus(Corpus.RAVDESS, RAVDESS_DIR).rows if r.speaker in ("18", "19", "24")][::20]
    summary = prepare_corpus("ravdess", collect(rows, SplitFractions.from_config()), tmp_path, DataConfig(shard_rows=8))
    assert summary.rows_total == len(rows) and summary.rows_skipped == {}
    table = pq.read_table(sorted(tmp_path.glob("*.parquet")), columns=["id", "duration", "split"]).to_pylist()
    assert Counter(r["split"] for r in table) == Counter(r.split.value for r in rows)
    for r in table:
        assert r["duration"] == pytest.approx(seconds[r["id"].removeprefix("ravdess-")], abs=2e-3)
