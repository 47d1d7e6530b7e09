"""The DeepSpeed dict is generated from ``TrainConfig`` in one place (train/ds_config.py)."""

from __future__ import annotations

import pytest
from freezeempath.config import TrainConfig
from freezeempath.train.ds_config import STAGE3_MAX_LIVE_PARAMETERS, deepspeed_config


def test_zero2_fp32_on_cpu_uses_the_client_optimizer_and_offloads_nothing():
    cfg = TrainConfig(global_batch=8, micro_batch=2, grad_accum=2, num_workers=2, grad_clip=0.5)
    ds = deepspeed_config(cfg, world_size=2)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        8,
        2,
        2,
    )
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": False}
    assert ds["zero_optimization"] == {"stage": 2}
    assert ds["zero_force_ds_cpu_optimizer"] is False


def test_zero3_partitions_every_frozen_param_and_offloads_them_pinned_on_gpus():
    cfg = TrainConfig(
        zero_stage=3, offload_param=True, offload_optimizer=True, use_gpu=True, precision="bf16", num_workers=2
    )
    zero = deepspeed_config(cfg, world_size=2)["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_param_persistence_threshold"] == 0
    assert zero["stage3_max_live_parameters"] == STAGE3_MAX_LIVE_PARAMETERS
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert deepspeed_config(cfg, world_size=2)["bf16"] == {"enabled": True}


def test_a_world_size_that_breaks_the_global_batch_is_refused_with_the_arithmetic():
    cfg = TrainConfig(global_batch=4, micro_batch=1, grad_accum=2, num_workers=2)
    with pytest.raises(ValueError, match=r"global batch 4 != micro 1 × accumulation 2 × world size 3"):
        deepspeed_config(cfg, world_size=3)
