"""Stage-1 benchmark: the LLM frozen (adapter trains) vs the same model with the LLM fine-tuned too.

In: a config (``tiny`` or ``demo``). Out: :class:`VariantResult` per variant — optimizer steps/s, labelled
tokens/s and the exact bytes held by gradients + AdamW state after the steps, measured side by side in one
process on the same batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from freezeempath.batch import SpeechChatBatch
from freezeempath.chat_template import IGNORE_INDEX, Turn, render
from freezeempath.config import Config
from freezeempath.stages import Stage, apply_stage, loss_weights
from freezeempath.train.losses import total_loss


@dataclass(frozen=True)
class VariantResult:
    """One variant's measurements."""

    name: str
    trainable_params: int
    steps_per_s: float
    tokens_per_s: float
    grad_optimizer_bytes: int


def stage1_batch(model, waves: list[torch.Tensor], reply: str, frontend=None) -> SpeechChatBatch:
    """A stage-1 batch: each clip as a spoken turn answered by ``reply``.

    ``frontend`` defaults to ``model.frontend``; pass a CPU one once an engine has moved the model's.
    """
    prompts = [render(model.llm.tokenizer, [Turn("user", spoken=True)], reply=reply) for _ in waves]
    feats = (frontend or model.frontend)(waves)
    clips = torch.arange(len(waves))
    return SpeechChatBatch(
        mel=feats.mel,
        mel_lens=feats.lens,
        input_ids=[torch.tensor(p.input_ids) for p in prompts],
        labels=[torch.tensor(p.labels) for p in prompts],
        speech_clips=clips,
        emotion_clips=clips,
        emotion_labels=torch.full((len(waves),), IGNORE_INDEX),
    )


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all gradients plus all optimizer state tensors."""
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    states = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return grads + states


def run_variant(cfg: Config, batch_waves: list[torch.Tensor], full: bool, steps: int) -> VariantResult:
    """Train ``steps`` AdamW steps of stage 1; ``full`` also trains the LLM (the encoder stays frozen in both)."""
    from freezeempath.model.build import build_model

    model = build_model(cfg.model)
    params = apply_stage(model, Stage.S1)
    if full:
        model.llm.requires_grad_(True)
        params = params + list(model.llm.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    batch = stage1_batch(model, batch_waves, "I'm sorry to hear that. I'm here for you.")
    weights = loss_weights(Stage.S1, 0.0)
    model.train()
    tokens, start = 0, 0.0
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            start = time.perf_counter()
        out = model(batch, Stage.S1)
        loss = total_loss(out, weights)
        optimizer.zero_grad(set_to_none=False)
        loss.total.backward()
        optimizer.step()
        tokens += int((out.text_labels != IGNORE_INDEX).sum()) if step else 0
    elapsed = time.perf_counter() - start
    return VariantResult(
        name="LLM fine-tuned (adapter + LLM)" if full else "LLM frozen (adapter only)",
        trainable_params=sum(p.numel() for p in params),
        steps_per_s=steps / elapsed,
        tokens_per_s=tokens / elapsed,
        grad_optimizer_bytes=state_bytes(model, optimizer),
    )
