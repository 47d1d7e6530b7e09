"""The DeepSpeed config, generated from :class:`~freezeempath.config.TrainConfig` in one place.

ZeRO stage, offload, precision, batch sizes and clipping are set here and nowhere else. On CPU the
client torch AdamW is used (``zero_force_ds_cpu_optimizer: false``), so nothing is JIT-compiled.
"""

from __future__ import annotations

from typing import Any

from freezeempath.config import TrainConfig

# DeepSpeed's default, set explicitly because the memory estimate (train/memory.py) counts on it.
STAGE3_MAX_LIVE_PARAMETERS = 10**9


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """DeepSpeed dict for ``cfg`` on ``world_size`` workers; the global batch is checked, not derived."""
    if cfg.micro_batch * cfg.grad_accum * world_size != cfg.global_batch:
        raise ValueError(
            f"global batch {cfg.global_batch} != micro {cfg.micro_batch} × accumulation {cfg.grad_accum} "
            f"× world size {world_size}"
        )
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        zero["stage3_param_persistence_threshold"] = 0  # partition even small frozen params
        zero["stage3_max_live_parameters"] = STAGE3_MAX_LIVE_PARAMETERS
    if cfg.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    return {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
