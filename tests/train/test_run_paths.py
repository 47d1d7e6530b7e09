"""Relative paths in a training config are resolved on the driver (Ray Train workers run elsewhere)."""

from __future__ import annotations

from pathlib import Path

from freezeempath.config import load_config
from freezeempath.train.run import with_absolute_paths


def test_relative_paths_become_absolute_against_the_driver_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "tiny",
        [
            "output_dir=outputs/run",
            "train.storage_path=outputs/ray",
            "train.init_from=[outputs/s1/artefact, /abs/artefact]",
            "data.train_shards=[shards/train-*.parquet, s3://bucket/shards]",
        ],
    )
    fixed = with_absolute_paths(cfg)
    assert fixed.output_dir == str(tmp_path / "outputs" / "run")
    assert fixed.train.storage_path == str(tmp_path / "outputs" / "ray")
    assert fixed.train.init_from == (str(tmp_path / "outputs" / "s1" / "artefact"), "/abs/artefact")
    assert fixed.data.train_shards == (str(tmp_path / "shards" / "train-*.parquet"), "s3://bucket/shards")
    assert Path(fixed.output_dir).is_absolute() and fixed.model == cfg.model
