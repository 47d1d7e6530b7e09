"""The other half of the stage × ZeRO matrix: ``test_train_ray`` runs each stage once through Ray Train
(ZeRO-2 and ZeRO-3 + offload alternating); here two gloo processes run each stage under the other mode
through the same ``build_engine``, so every stage is trained under both ZeRO-2 and ZeRO-3 + offload with
the encoder and LLM hashes unchanged and only the stage's parts moving."""

from __future__ import annotations

import json

import pytest
import torch.multiprocessing as mp
from helpers import STAGE_ZERO_DIRECT as OTHER_HALF
from helpers import write_tiny_shards
from zero_matrix_worker import run_rank

pytestmark = pytest.mark.slow


def test_every_stage_under_the_other_zero_mode_keeps_frozen_parts(tmp_path):
    shard = write_tiny_shards(tmp_path / "shards", n_rows=8, n_shards=1, bad_rows=False)[0]
    out = tmp_path / "results.json"
    mp.spawn(run_rank, args=(str(shard), OTHER_HALF, str(out), 29583), nprocs=2, join=True)
    results = json.loads(out.read_text())
    assert [(r["stage"], r["zero"]) for r in results] == OTHER_HALF
    for r in results:
        assert r["before"] == r["after"], r["stage"]  # frozen encoder + LLM unchanged
        assert r["changed"] == r["expected"], r["stage"]  # every trainable part moved
        assert r["loss"] == r["loss"] and r["loss"] > 0  # finite
