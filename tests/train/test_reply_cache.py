"""Stage 3 from cached reply states: the cache reproduces the live decoder loss, and training uses it."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from freezeempath.config import load_config, to_dict
from freezeempath.data.collate import Collator
from freezeempath.data.pipeline import AudioFeatures
from freezeempath.model.build import build_model
from freezeempath.stages import Stage
from freezeempath.train.reply_cache import ReplyStateCache, cache_reply_states
from helpers import check_fit_outputs, write_tiny_shards


def test_cached_states_give_the_live_decoder_loss(tmp_path):
    cfg = load_config("tiny")
    path = write_tiny_shards(tmp_path / "in", n_rows=4, n_shards=1, bad_rows=False)[0]
    rows = pq.read_table(path).to_pydict()
    model = build_model(cfg.model)
    cache = ReplyStateCache(to_dict(cfg))
    cached = cache(rows)
    assert len(cached["id"]) == 4 and cached["reply_hidden_shape"][0][1] == model.llm.hidden_size
    live_batch = Collator(model.llm.tokenizer, Stage.S3B, 800)(AudioFeatures(80, 800, 8.0)(rows))
    cached_batch = Collator(model.llm.tokenizer, Stage.S3B, 800)(cached)
    with torch.no_grad():
        live = model(live_batch, Stage.S3B).units.loss
        fast = model(cached_batch, Stage.S3B).units.loss
    torch.testing.assert_close(fast, live, atol=2e-3, rtol=2e-3)  # float16 cache


def test_cache_job_resumes(tmp_path):
    cfg = load_config("tiny")
    paths = write_tiny_shards(tmp_path / "in", n_rows=6, n_shards=2, bad_rows=True)
    written = cache_reply_states(cfg, paths, tmp_path / "cache")
    assert sum(pq.read_metadata(p).num_rows for p in written) == 6  # bad rows dropped
    stamps = [p.stat().st_mtime_ns for p in written]
    cache_reply_states(cfg, paths, tmp_path / "cache")
    assert [p.stat().st_mtime_ns for p in written] == stamps


@pytest.mark.ray
@pytest.mark.slow
def test_stage3_trains_from_the_cache(ray_local, tmp_path):
    """Stage 3b's Ray Train fit of the stage × ZeRO matrix (ZeRO-3 + offload; ``test_train_ray.py``)."""
    from freezeempath.train.run import run_training

    cfg = load_config("tiny")
    cache_reply_states(cfg, write_tiny_shards(tmp_path / "in", n_rows=8, bad_rows=False), tmp_path / "cache")
    train_cfg = load_config(
        "tiny",
        [
            "train.stage=s3b",
            "train.zero_stage=3",
            "train.offload_param=true",
            "train.offload_optimizer=true",
            f"data.train_shards=[{tmp_path / 'cache'}]",
            "train.max_steps=2",
            f"output_dir={tmp_path / 'out'}",
            f"train.storage_path={tmp_path / 'ray'}",
            "train.run_name=cached",
        ],
    )
    summary = run_training(train_cfg)
    assert summary.steps == 2 and summary.final_metrics["units_per_s"] > 0
    check_fit_outputs(train_cfg, tmp_path / "out", summary)
