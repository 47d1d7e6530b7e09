"""Understanding clips and assembling generation requests: the step between a dialogue and the LLM.

In: mono 16 kHz clips ``(N,)`` (from :func:`~freezeempath.inference.dialogue.prepare_dialogue`). Out: per
clip a :class:`ClipFeatures` — S rows ``(L_S, D_llm)``, E ``(1, D_llm)`` and the detected emotion — never
the encoder's layer stack; and :func:`generation_request`, which pairs a prepared dialogue with the
features of its clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from freezeempath.audio import WhisperLogMel
from freezeempath.batch import Understanding
from freezeempath.chat_template import Turn
from freezeempath.inference.dialogue import EmotionResult, PreparedDialogue
from freezeempath.inference.llm_session import GenerationRequest
from freezeempath.inference.wire import reduce_fields


class Understands(Protocol):
    """Anything with the speech side: a front end and ``understand`` (full model or serving part)."""

    frontend: WhisperLogMel

    def understand(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> Understanding:
        """Log-mel and lengths → S, lengths, E and aux logits."""
        ...


@dataclass(frozen=True)
class ClipFeatures:
    """What the LLM needs from one clip: S rows ``(L_S, D)``, E ``(1, D)``; and its emotion."""

    speech: torch.Tensor
    emotion: torch.Tensor
    emotion_result: EmotionResult

    __reduce__ = reduce_fields  # its tensors cross processes as arrays


@torch.no_grad()
def understand_clips(
    model: Understands, clips: list[torch.Tensor], output_device: str | torch.device | None = None
) -> list[ClipFeatures]:
    """Encode a batch of clips (each at most one encoder window) → one :class:`ClipFeatures` per clip."""
    if not clips:
        return []
    feats = model.frontend([c.cpu() for c in clips])
    device = next(model.adapter.parameters()).device  # type: ignore[attr-defined]
    und = model.understand(feats.mel.to(device), feats.lens.to(device))
    out = []
    for i in range(len(clips)):
        n = int(und.speech_lens[i])
        speech, emotion = und.speech[i, :n], und.emotion[i]
        if output_device is not None:
            speech, emotion = speech.to(output_device), emotion.to(output_device)
        out.append(ClipFeatures(speech.clone(), emotion.clone(), EmotionResult.from_logits(und.aux_logits[i])))
    return out


def generation_request(
    prepared: PreparedDialogue,
    features: list[ClipFeatures],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    speech_output: bool = True,
    system_prompt: str | None = None,
    max_prompt_tokens: int = 0,
) -> GenerationRequest:
    """A dialogue's turns and its clips' features (in slot order) → a :class:`GenerationRequest`."""
    if len(features) != len(prepared.clips):
        raise ValueError(f"dialogue has {len(prepared.clips)} clips but {len(features)} clip features were given")
    turns = list(prepared.turns)
    if system_prompt is not None:
        turns.insert(0, Turn(role="system", text=system_prompt))
    return GenerationRequest(
        turns=tuple(turns),
        speech=tuple(f.speech for f in features),
        emotion=tuple(f.emotion for f in features),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        speech_output=speech_output,
        max_prompt_tokens=max_prompt_tokens,
    )
