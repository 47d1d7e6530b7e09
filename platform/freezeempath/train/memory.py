"""Per-GPU memory estimate for any preset, stage, ZeRO stage and world size (no weights needed).

In: a :class:`~freezeempath.config.Config` and a world size. Out: :class:`MemoryEstimate` in GiB — frozen
weights, trainable weights, gradients, optimizer state, a coarse activation term, the LLM's logits, the
encoder's layer stack and the parameters ZeRO-3 gathers at once. Model states follow the ZeRO paper's
accounting (bf16 weights and grads, fp32 master + Adam m and v = 12 bytes per trainable parameter);
activations use 34·s·b·h bytes per transformer layer (Korthikanti et al., no recomputation), counted only
for the parts gradients flow through. Allocator slack and framework temporaries are not modelled, so a
measured peak sits above the estimate (README, Performance, compares the two).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from freezeempath.config import Config
from freezeempath.stages import Stage
from freezeempath.train.ds_config import STAGE3_MAX_LIVE_PARAMETERS

GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per GPU."""

    frozen_weights: float
    trainable_weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float = 0.0
    encoder_states: float = 0.0
    gathered: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the parts."""
        return sum(asdict(self).values())


def estimate_memory(cfg: Config, world_size: int, seq_len: int = 512) -> MemoryEstimate:
    """Estimate for ``cfg.train`` (stage, ZeRO stage, offload, micro-batch) on ``world_size`` GPUs."""
    from freezeempath.model.build import parameter_report

    stage = Stage(cfg.train.stage)
    count = parameter_report(cfg.model)[stage]
    frozen, trainable = count.total - count.trainable, count.trainable
    weight_bytes = 2 if cfg.train.precision == "bf16" else 4
    shard = world_size if cfg.train.zero_stage == 3 else 1
    frozen_gib = 0.0 if cfg.train.offload_param else frozen * weight_bytes / shard / GIB
    trainable_gib = 0.0 if cfg.train.offload_param else trainable * weight_bytes / shard / GIB
    grads_gib = trainable * weight_bytes / world_size / GIB  # ZeRO-2 and -3 shard gradients
    optimizer_gib = 0.0 if cfg.train.offload_optimizer else trainable * 12 / world_size / GIB
    return MemoryEstimate(
        frozen_gib,
        trainable_gib,
        grads_gib,
        optimizer_gib,
        _activations(cfg, stage, seq_len),
        _logits(cfg, stage, seq_len),
        _encoder_states(cfg, stage, weight_bytes),
        _gathered(cfg, count.total, weight_bytes),
    )


def _logits(cfg: Config, stage: Stage, seq_len: int) -> float:
    """Stages 1–2: (B, L, V) logits in bf16, their fp32 upcast for the loss and its fp32 gradient."""
    return 0.0 if stage.speech_stage else cfg.train.micro_batch * seq_len * cfg.model.llm.vocab * 10 / GIB


def _encoder_states(cfg: Config, stage: Stage, weight_bytes: int) -> float:
    """The frozen encoder's every-layer stack (B, N, T, D) over the padded window, kept for the emotion extractor."""
    if stage.speech_stage:
        return 0.0
    enc = cfg.model.encoder
    return cfg.train.micro_batch * enc.layers * (enc.window_frames // 2) * enc.d_model * weight_bytes / GIB


def _gathered(cfg: Config, total_params: int, weight_bytes: int) -> float:
    """ZeRO-3 keeps up to ``stage3_max_live_parameters`` gathered full-size at once."""
    if cfg.train.zero_stage != 3:
        return 0.0
    return min(STAGE3_MAX_LIVE_PARAMETERS, total_params) * weight_bytes / GIB


def _activations(cfg: Config, stage: Stage, seq_len: int) -> float:
    """Stages 1–2 back-propagate through the frozen LLM to its inputs; stage 3 only through the decoder."""
    b, m = cfg.train.micro_batch, cfg.model
    if stage.speech_stage:
        per_layer = 34 * seq_len * 2 * b * m.speech_decoder.hidden  # interleaved text + unit positions
        return per_layer * m.speech_decoder.layers / GIB
    return 34 * seq_len * b * m.llm.hidden * m.llm.layers / GIB
