"""Ray Train + DeepSpeed (gloo, 2 workers, tiny preset): every stage under ZeRO-2 and ZeRO-3 + offload."""

from __future__ import annotations

import json

import pytest
from helpers import write_tiny_shards

from freezeempath.config import load_config
from freezeempath.train.run import run_training

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return str(tmp_path_factory.mktemp("shards"))


def tiny_train_cfg(tmp_path, shards, stage, zero, **extra):
    overrides = [
        f"train.stage={stage}",
        f"train.zero_stage={zero}",
        f"data.train_shards=[{shards}]",
        "train.max_steps=2",
        "train.global_batch=4",
        "train.micro_batch=1",
        "train.grad_accum=2",
        f"train.run_name=test-{stage}-z{zero}",
        f"train.storage_path={tmp_path / 'ray'}",
        f"output_dir={tmp_path / 'out'}",
        "data.feature_batch=4",
    ]
    if zero == 3:
        overrides += ["train.offload_param=true", "train.offload_optimizer=true"]
    return load_config("tiny", overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize(("stage", "zero"), [("s1", 2), ("s2a", 3)])
def test_stage_trains_with_frozen_parts_unchanged(ray_local, tmp_path, shards, stage, zero):
    write_tiny_shards(shards, n_rows=12)
    cfg = tiny_train_cfg(tmp_path, shards, stage, zero)
    summary = run_training(cfg)
    assert summary.steps == 2
    assert summary.skipped == {"undecodable": 1, "empty": 1, "wrong_rate": 1}
    frozen = json.loads((tmp_path / "out" / "frozen_check.json").read_text())
    assert frozen["unchanged"] and frozen["before"] == frozen["after"]
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["data_wait_fraction"] <= 1.0 and r["tokens_per_s"] > 0 for r in rows)
    if stage == "s2a":
        assert "ser_accuracy" in rows[-1] and "aux" in rows[-1]
    assert (tmp_path / "out" / "metrics.csv").is_file()
    assert (tmp_path / "out" / "artefact" / "trained.safetensors").is_file()
