"""Training stages (method.md §4): which parts train and which losses count, in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import nn


class Stage(enum.Enum):
    """The five FreezeEmpath stages; the encoder and the LLM are frozen in all of them."""

    S1 = "s1"  # semantic alignment: adapter, self-distillation
    S2A = "s2a"  # SER pre-training: emotion extractor + aux head
    S2B = "s2b"  # empathetic-instruction fine-tune: emotion extractor
    S3A = "s3a"  # speech decoder pre-training
    S3B = "s3b"  # speech decoder on query → reply pairs

    @property
    def trainable(self) -> tuple[str, ...]:
        """Top-level submodule names of ``FreezeEmpathModel`` that train in this stage."""
        return _TRAINABLE[self]

    @property
    def speech_stage(self) -> bool:
        """Stage 3: the LLM runs without gradients and only the unit loss counts."""
        return self in (Stage.S3A, Stage.S3B)


_TRAINABLE = {
    Stage.S1: ("adapter",),
    Stage.S2A: ("emotion", "aux_head"),
    Stage.S2B: ("emotion",),
    Stage.S3A: ("speech_decoder",),
    Stage.S3B: ("speech_decoder",),
}
ALWAYS_FROZEN = ("encoder", "llm")


@dataclass(frozen=True)
class LossWeights:
    """Per-stage loss weights; a zero weight skips that loss's computation."""

    text: float
    aux: float
    unit: float


def loss_weights(stage: Stage, aux_weight: float) -> LossWeights:
    """Stage 2a adds ``aux_weight`` × the aux classifier CE; stage 3 trains on units only."""
    if stage.speech_stage:
        return LossWeights(text=0.0, aux=0.0, unit=1.0)
    return LossWeights(text=1.0, aux=aux_weight if stage is Stage.S2A else 0.0, unit=0.0)


def apply_stage(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trainable parameters (never empty)."""
    for name, child in model.named_children():
        child.requires_grad_(name in stage.trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage {stage.value} has no trainable parameters")
    return params


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameters of a model in one stage."""

    trainable: int
    total: int


def parameter_counts(model: nn.Module) -> dict[Stage, ParameterCount]:
    """Trainable and total parameter counts per stage (works on the meta device, no weights needed)."""
    sizes = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(sizes.values())
    return {s: ParameterCount(trainable=sum(sizes.get(n, 0) for n in s.trainable), total=total) for s in Stage}
