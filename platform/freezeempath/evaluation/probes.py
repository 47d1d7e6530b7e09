"""Evaluation probes: shard rows in → the model's answers to each protocol's prompt, one row out per clip.

In: columnar shard rows (``id``, ``audio``, ``sample_rate``, ``speaker``, ``transcript``, ``emotion``) and a
bundle's model. Out: plain columns the report aggregates. Every probe decodes greedily.

- ``asr``: spoken turn + "write down what the speaker said" under a plain system prompt → ``reply``.
- ``ser``: the stage-2a prompt; the label word the LLM generates (``generated``), the most likely of the
  five label words (``label_word``) and the aux head's class (``aux``).
- ``spoken_qa``: the question spoken (``reply``) and typed (``text_reply``), both under the plain prompt.
- ``empathy``: the spoken turn under the empathetic prompt (``reply``), and the same turn without the
  emotion slot (``control_reply``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from freezeempath import prompts
from freezeempath.chat_template import Turn
from freezeempath.data.pipeline import row_clip
from freezeempath.evaluation.classification import UNREAD
from freezeempath.evaluation.ser import label_word_scores, read_label_word
from freezeempath.inference.generate import text_replies
from freezeempath.inference.llm_session import GenerationRequest
from freezeempath.inference.understanding import ClipFeatures, understand_clips
from freezeempath.labels import Emotion
from freezeempath.model.spoken_chat import FreezeEmpathModel, SpeechUnderstander

RATE = 16_000
KEPT_COLUMNS = ("id", "speaker", "corpus", "transcript", "emotion")


def decode_clips(batch: dict[str, Any], max_seconds: float) -> tuple[list[torch.Tensor | None], list[str | None]]:
    """Rows' audio → a mono 16 kHz clip per row, or ``None`` and the error that names the problem."""
    clips: list[torch.Tensor | None] = []
    errors: list[str | None] = []
    for data, rate in zip(batch["audio"], batch["sample_rate"], strict=True):
        try:
            clips.append(row_clip(data, rate, max_seconds))
            errors.append(None)
        except ValueError as err:
            clips.append(None)
            errors.append(str(err))
    return clips, errors


def spoken_request(
    features: ClipFeatures | None,
    text: str,
    max_new_tokens: int,
    system: str | None = None,
    emotion_slot: bool = True,
) -> GenerationRequest:
    """One user turn (spoken when ``features`` is given, with ``text`` after the slots) → a greedy request."""
    turns = [Turn("system", system)] if system is not None else []
    turns.append(Turn("user", text, spoken=features is not None, emotion_slot=emotion_slot))
    speech = (features.speech,) if features is not None else ()
    emotion = (features.emotion,) if features is not None and emotion_slot else ()
    return GenerationRequest(tuple(turns), speech, emotion, max_new_tokens, temperature=0.0, speech_output=False)


class Prober:
    """Runs one probe over columnar rows with a built model (one per Ray Data actor)."""

    def __init__(self, model: FreezeEmpathModel, max_input_seconds: float, max_new_tokens: int) -> None:
        self.model = model.eval()
        self.understander = SpeechUnderstander.of(model)
        self.max_input_seconds, self.max_new_tokens = max_input_seconds, max_new_tokens
        self.probes: dict[str, Callable[[list[torch.Tensor], dict[str, list[Any]]], dict[str, list[Any]]]] = {
            "asr": self._asr,
            "ser": self._ser,
            "spoken_qa": self._spoken_qa,
            "empathy": self._empathy,
        }

    def run(self, probe: str, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """One output row per input row: the kept columns, ``error`` (None, or why the row's audio was
        skipped) and the probe's answers (None on skipped rows)."""
        clips, errors = decode_clips(batch, self.max_input_seconds)
        rows = {k: [_plain(v) for v in batch[k]] for k in KEPT_COLUMNS if k in batch}
        good = [i for i, c in enumerate(clips) if c is not None]
        answers = self.probes[probe]([clips[i] for i in good], {k: [v[i] for i in good] for k, v in rows.items()})
        spread = {k: [None] * len(clips) for k in answers}
        for k, values in answers.items():
            for i, value in zip(good, values, strict=True):
                spread[k][i] = value
        return rows | spread | {"error": errors}

    def _replies(self, requests: list[GenerationRequest]) -> list[str]:
        return [r.text.strip() for r in text_replies(self.model, requests)] if requests else []

    def _asr(self, clips: list[torch.Tensor], rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        feats = understand_clips(self.understander, clips)
        n = self.max_new_tokens
        asks = [spoken_request(f, prompts.ASR_INSTRUCTION, n, prompts.PLAIN_SYSTEM_PROMPT) for f in feats]
        return {"reply": self._replies(asks)}

    def _ser(self, clips: list[torch.Tensor], rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not clips:
            return {"label_word": [], "aux": [], "generated": [], "generated_text": []}
        feats = self.model.frontend([c.cpu() for c in clips])
        device = next(self.model.adapter.parameters()).device
        scores, aux = label_word_scores(self.model, feats.mel.to(device), feats.lens.to(device))
        asks = [spoken_request(f, prompts.SER_INSTRUCTION, 8) for f in understand_clips(self.understander, clips)]
        generated = self._replies(asks)
        return {
            "label_word": scores.argmax(-1).tolist(),
            "aux": aux.argmax(-1).tolist(),
            "generated": [read_label_word(g) for g in generated],
            "generated_text": generated,
        }

    def _spoken_qa(self, clips: list[torch.Tensor], rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        feats = understand_clips(self.understander, clips)
        n, plain = self.max_new_tokens, prompts.PLAIN_SYSTEM_PROMPT
        spoken = self._replies([spoken_request(f, "", n, plain) for f in feats])
        typed = self._replies([spoken_request(None, q or "", n, plain) for q in rows["transcript"]])
        return {"reply": spoken, "text_reply": typed}

    def _empathy(self, clips: list[torch.Tensor], rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        feats = understand_clips(self.understander, clips)
        n = self.max_new_tokens
        with_slot = self._replies([spoken_request(f, "", n) for f in feats])
        without = self._replies([spoken_request(f, "", n, emotion_slot=False) for f in feats])
        return {"reply": with_slot, "control_reply": without, "detected": [f.emotion_result.label.value for f in feats]}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def label_index(word: str | None) -> int:
    """A shard's ``emotion`` value → class index (``UNREAD`` for an unlabelled row)."""
    return Emotion.parse(word).index if word else UNREAD
