"""Ray Train + DeepSpeed (gloo, 2 workers, tiny preset): every stage trains with frozen weights unchanged and
artefacts that reload; ZeRO-2 and ZeRO-3 + offload alternate across stages so both cover the frozen-LLM paths
(one Ray Train fit each keeps the suite short on 2 cores: stage 1's is the killed-worker run, which resumes
with no repeated or lost step or row, and stage 3b's trains from cached LLM states in test_reply_cache.py)."""

from __future__ import annotations

import pytest
from freezeempath.config import load_config
from freezeempath.data.pipeline import epoch_order
from freezeempath.stages import Stage
from freezeempath.train.run import run_training
from helpers import STAGE_ZERO_RAY, check_fit_outputs, read_jsonl, write_tiny_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards")
    write_tiny_shards(directory, n_rows=12)
    return str(directory)


def tiny_train_cfg(tmp_path, shards, stage, zero, *extra):
    overrides = [
        f"train.stage={stage}",
        f"train.zero_stage={zero}",
        f"data.train_shards=[{shards}]",
        "train.max_steps=2",
        f"train.run_name=test-{stage}-z{zero}",
        f"train.storage_path={tmp_path / 'ray'}",
        f"output_dir={tmp_path / 'out'}",
        "data.feature_batch=4",
    ]
    if zero == 3:
        overrides += ["train.offload_param=true", "train.offload_optimizer=true"]
    return load_config("tiny", overrides + list(extra))


def test_stage_matrix_covers_every_stage_under_both_zero_modes():
    from helpers import STAGE_ZERO_DIRECT

    assert sorted(STAGE_ZERO + STAGE_ZERO_DIRECT) == sorted((s.value, z) for s in Stage for z in (2, 3))


STAGE_ZERO = STAGE_ZERO_RAY  # the other mode of each stage: test_zero_matrix.py
RESUMED = ("s1", 3)  # trained by the killed-worker test below
CACHED = ("s3b", 3)  # trained from cached LLM reply states by test_reply_cache.py
# (both check the same outputs as the stage test, with check_fit_outputs)


@pytest.mark.parametrize(("stage", "zero"), [x for x in STAGE_ZERO if x not in (RESUMED, CACHED)])
def test_stage_trains_with_frozen_parts_unchanged(ray_local, tmp_path, shards, stage, zero, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output paths, as in the shipped configs: the driver resolves them
    cfg = tiny_train_cfg(tmp_path, shards, stage, zero, "output_dir=out", "train.storage_path=ray")
    summary = run_training(cfg)
    out = tmp_path / "out"
    assert summary.steps == 2
    assert summary.skipped == {"undecodable": 1, "empty": 1, "wrong_rate": 1}
    rows = check_fit_outputs(cfg, out, summary)
    trained = [read_jsonl(out / "rows" / f"rank{r}.jsonl") for r in (0, 1)]  # 2 steps of grad_accum micro-batches
    assert all([x["micro"] for x in log] == list(range(1, 2 * cfg.train.grad_accum + 1)) for log in trained)
    ids = [i for log in trained for x in log for i in x["ids"]]
    assert len(ids) == len(set(ids)) == 2 * cfg.train.global_batch and all(i.startswith("u") for i in ids)
    if stage == "s2a":
        assert "ser_accuracy" in rows[-1] and "aux" in rows[-1]


def test_killed_worker_resumes_without_repeating_or_losing_steps_or_rows(ray_local, tmp_path, shards, monkeypatch):
    # an epoch is 3 steps of 2 × 2 rows (12 good rows); rank 0 dies after step 4, one step into epoch 2;
    # under ZeRO-3 + offload, so the resume reloads partitioned and offloaded state
    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_cfg(
        tmp_path,
        shards,
        *RESUMED,
        "output_dir=out",
        "train.storage_path=ray",
        "train.epochs=2",
        "train.max_steps=5",
        "train.checkpoint_every=1",
        "train.crash_after_step=4",
        "train.max_failures=1",
        "train.global_batch=4",
        "train.micro_batch=2",
        "train.grad_accum=1",
    )
    summary = run_training(cfg)
    rows = check_fit_outputs(cfg, tmp_path / "out", summary)
    assert set(summary.skipped) == {"undecodable", "empty", "wrong_rate"}  # once per pass over the shards
    steps = [r["step"] for r in rows]
    events = read_jsonl(tmp_path / "out" / "events.jsonl")
    assert summary.steps == 5
    assert steps == [1, 2, 3, 4, 5], steps
    assert len(events) == 1 and 3 <= events[0]["step"] <= 4  # resumed from a checkpoint at or before the crash
    # each rank trained on each of its micro-batches once; epoch 1 took every good row once
    logs = [read_jsonl(tmp_path / "out" / "rows" / f"rank{r}.jsonl") for r in (0, 1)]
    for log in logs:
        assert [(x["epoch"], x["micro"]) for x in log] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]
    assert sorted(i for log in logs for x in log[:3] for i in x["ids"]) == [f"u{i:03d}" for i in range(12)]
    # every epoch streams the same micro-batches, each rank reorders them with a generator seeded by the
    # epoch and its rank: after the restart (a new Ray Data execution) each rank skipped exactly the
    # micro-batches it had consumed, in its epoch 2's own order
    data = cfg.data
    for rank, log in enumerate(logs):
        first, second = (list(epoch_order(range(3), data.batch_shuffle, data.shuffle_seed, e, rank)) for e in (0, 1))
        stream = [log[first.index(i)]["ids"] for i in range(3)]  # the order the shard streamed them in
        assert [x["ids"] for x in log[3:]] == [stream[i] for i in second[:2]]
    assert any([x["ids"] for x in log[3:]] != [x["ids"] for x in log[:2]] for log in logs)  # epochs differ
