"""The evaluation job end to end on the tiny preset: a bundle of untrained parts, a suite of tiny shards,
Ray Data batch inference, the report folder, a baseline run with a comparison, and the speaker check
refusing overlap."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import write_tiny_shards

from jobs import bundle as bundle_job
from jobs import evaluate as evaluate_job


def _shards_with_speakers(directory, speakers: list[str], n_rows: int) -> list[str]:
    """Tiny shards whose rows carry ``speaker`` and ``corpus`` columns (one bad row included)."""
    paths = write_tiny_shards(directory, n_rows=n_rows, n_shards=1, bad_rows=True)
    table = pq.read_table(paths[0])
    table = table.append_column("speaker", pa.array([speakers[i % len(speakers)] for i in range(table.num_rows)]))
    table = table.append_column("corpus", pa.array(["tiny"] * table.num_rows))
    pq.write_table(table, paths[0])
    return paths


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_a_bundle_of_untrained_parts(ray_local, tmp_path):
    bundle = tmp_path / "bundle"
    bundle_job.main(["--config", "tiny", "--out", str(bundle)])  # what --baseline tiny writes to OUT/bundle
    held = _shards_with_speakers(tmp_path / "held", ["spk-a", "spk-b"], n_rows=5)
    train = _shards_with_speakers(tmp_path / "train", ["spk-c"], n_rows=2)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": f"u{i:03d}", "answers": ["sentence"]}) + "\n" for i in range(5)))
    sets = [{"name": "tiny", "shards": held}]
    suite = {
        "name": "tiny",
        "train_shards": train,
        "ser": sets,
        "asr": sets,
        "spoken_qa": [{"name": "tiny", "shards": held, "answers": str(answers)}],
        "empathy": sets,
        "speech_out": sets,
        "frozen_prompts": ["Say hello."],
        "max_new_tokens": 6,
        "whisper": "none",
    }
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(suite))
    report = evaluate_job.main(["--bundle", str(bundle), "--suite", str(suite_file), "--out", str(tmp_path / "r")])

    ser = report["ser"]["sets"]["tiny"]
    assert ser["clips"] == 5 and ser["skipped"] == 3  # corrupt, empty and wrong-rate rows
    assert 0.0 <= ser["label_word"]["accuracy"] <= 1.0 and 0.0 <= report["ser"]["mean"]["aux_uar"] <= 1.0
    assert report["asr"]["sets"]["tiny"]["clips"] == 5 and report["asr"]["sets"]["tiny"]["wer"] >= 0.0
    assert report["spoken_qa"]["sets"]["tiny"]["questions"] == 5
    assert report["empathy"]["sets"]["tiny"]["clips"] == 4  # the neutral clip is not scored
    speech = report["speech_out"]["sets"]["tiny"]
    assert speech["clips"] == 5 and 0.0 < speech["first_audio_ratio"] <= 1.0 and speech["wer"] is None
    assert report["frozen"] | {"hashes": None, "examples": None} == {
        "hashes": None,
        "examples": None,
        "hashes_match": True,
        "prompts": 1,
        "token_identical": 1,
    }
    folder = tmp_path / "r"
    assert json.loads((folder / "report.json").read_text())["suite"] == "tiny"
    assert (folder / "ser-tiny.png").is_file() and "## empathy" in (folder / "report.md").read_text()

    only_ser = {"asr": [], "spoken_qa": [], "empathy": [], "speech_out": [], "frozen_prompts": []}
    suite_file.write_text(yaml.safe_dump(suite | only_ser))
    out = tmp_path / "baseline"
    argv = [
        "--baseline",
        "tiny",
        "--suite",
        str(suite_file),
        "--out",
        str(out),
        "--compare",
        str(folder / "report.json"),
    ]
    again = evaluate_job.main(argv)
    assert (out / "bundle" / "manifest.json").is_file()  # the untrained tiny bundle, written first
    assert again["ser"] == report["ser"]  # the same seeded untrained parts: the same answers
    assert "| ser.sets.tiny.label_word.accuracy |" in (out / "comparison.md").read_text()

    suite_file.write_text(yaml.safe_dump(suite | {"train_shards": held[:1], "asr": [], "speech_out": []}))
    with pytest.raises(ValueError, match="share speakers with the training shards — ser/tiny: tiny/spk-a, tiny/spk-b"):
        evaluate_job.main(["--bundle", str(bundle), "--suite", str(suite_file), "--out", str(tmp_path / "x")])


def test_suite_names_resolve_and_the_shipped_suites_load():
    from freezeempath.evaluation.suite import load_suite

    for name in ("demo", "paper"):
        suite = load_suite(evaluate_job.suite_path(name))
        assert suite.name == name and suite.ser and suite.spoken_qa and suite.frozen_prompts
    with pytest.raises(ValueError, match="unknown config key limits"):
        load_suite(evaluate_job.suite_path("demo"), ["limits=3"])
