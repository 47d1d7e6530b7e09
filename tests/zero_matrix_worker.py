"""Worker of ``tests/train/test_zero_matrix.py``: one rank of a 2-process gloo group that trains each
(stage, ZeRO mode) for two DeepSpeed steps and records the frozen digest before and after and which
top-level parts changed. Kept out of test modules so ``torch.multiprocessing.spawn`` can import it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq


def run_rank(rank: int, shard: str, combos: list[tuple[str, int]], out: str, port: int) -> None:
    """Train every combo in turn on this rank's half of ``shard``; rank 0 writes ``out`` (JSON)."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
        | {"MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    )
    import deepspeed
    import torch
    from freezeempath.config import load_config
    from freezeempath.data.collate import Collator
    from freezeempath.data.pipeline import AudioFeatures
    from freezeempath.stages import Stage, loss_weights
    from freezeempath.train.loop import build_engine, frozen_digest, skip_deepspeed_shm_build
    from freezeempath.train.losses import total_loss

    skip_deepspeed_shm_build()
    deepspeed.init_distributed(dist_backend="gloo")
    rows = pq.read_table(shard).to_pydict()
    mine = {k: v[rank::2] for k, v in rows.items()}
    results = []
    for stage_name, zero in combos:
        overrides = [f"train.stage={stage_name}", f"train.zero_stage={zero}", "train.num_workers=2"]
        overrides += ["train.micro_batch=2", "train.grad_accum=1", "train.global_batch=4"]
        if zero == 3:
            overrides += ["train.offload_param=true", "train.offload_optimizer=true"]
        cfg = load_config("tiny", overrides)
        torch.manual_seed(cfg.train.seed)
        engine, model, stage = build_engine(cfg, total_steps=2)
        enc = cfg.model.encoder
        features = AudioFeatures(enc.n_mels, enc.window_frames, enc.max_input_seconds)(mine)
        batch = Collator(model.llm.tokenizer, stage, enc.window_frames)(features)
        before = frozen_digest(model, cfg)
        trained_before = _trained_snapshot(model, stage, zero)
        for _ in range(2):
            loss = total_loss(engine(batch, stage), loss_weights(stage, cfg.model.emotion.aux_weight))
            engine.backward(loss.total)
            engine.step()
        trained_after = _trained_snapshot(model, stage, zero)
        changed = sorted(p for p in trained_before if not torch.equal(trained_before[p], trained_after[p]))
        after = frozen_digest(model, cfg)
        results.append({"stage": stage_name, "zero": zero, "before": before, "after": after, "changed": changed})
        results[-1]["loss"] = float(loss.total.detach())
        results[-1]["expected"] = sorted(Stage(stage_name).trainable)
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def _trained_snapshot(model, stage, zero: int) -> dict:
    """Full copies of each trainable part's parameters (gathered under ZeRO-3), keyed by part."""
    import deepspeed
    import torch

    snapshot = {}
    for part in stage.trainable:
        params = list(getattr(model, part).parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero == 3):
            snapshot[part] = torch.cat([p.detach().reshape(-1).clone() for p in params])
    return snapshot
