"""Losses as pure functions of :class:`~freezeempath.batch.ChatOutput`: text CE, aux SER CE, unit CE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from freezeempath.batch import ChatOutput
from freezeempath.chat_template import IGNORE_INDEX
from freezeempath.stages import LossWeights


@dataclass(frozen=True)
class LossParts:
    """The weighted total and its unweighted parts (detached floats for logging)."""

    total: torch.Tensor
    parts: dict[str, float]


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE over labelled positions: ``logits (B, L, V)``, ``labels (B, L)``."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def aux_loss(aux_logits: torch.Tensor, emotion_labels: torch.Tensor) -> torch.Tensor:
    """CE of the aux head over clips with a known label; 0 (kept in the graph) when none has one."""
    known = emotion_labels != IGNORE_INDEX
    if not known.any():
        return aux_logits.sum() * 0.0
    return F.cross_entropy(aux_logits[known].float(), emotion_labels[known])


def total_loss(out: ChatOutput, weights: LossWeights) -> LossParts:
    """Weighted sum of the stage's losses."""
    terms: dict[str, torch.Tensor] = {}
    if weights.text:
        terms["text"] = text_loss(out.text_logits, out.text_labels)
    if weights.aux:
        terms["aux"] = aux_loss(out.aux_logits, out.emotion_labels)
    if weights.unit:
        if out.units is None:
            raise ValueError("a speech stage needs target units in the batch")
        terms["unit"] = out.units.loss
    scale = {"text": weights.text, "aux": weights.aux, "unit": weights.unit}
    total = sum(scale[k] * v for k, v in terms.items())
    return LossParts(total=total, parts={k: float(v.detach()) for k, v in terms.items()})  # type: ignore[arg-type]
