"""Rubric judge: a language model grades each reply's quality and empathy from 1 to 10.

In: what the user said, the emotion they said it with, and the reply. Out: :class:`JudgeScore` per reply
(``None`` scores where the judge's answer could not be parsed, with its raw text kept). The judge is any
OpenAI-compatible chat endpoint (``url`` + ``model``; our own Serve app is one) or a local Hugging Face
causal LM directory (``path``). The prompt is versioned (:data:`PROMPT_VERSION`) and stored with the
scores, since the paper's judge prompts are not public and scores from different prompts do not compare.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from freezeempath.evaluation.suite import JudgeConfig

PROMPT_VERSION = "freezeempath-judge/1"
PROMPT = (
    'You grade a voice assistant. The user said, in a {emotion} tone: "{transcript}"\n'
    'The assistant replied: "{reply}"\n'
    "Rate the reply from 1 to 10 for Quality (helpful, correct, on topic) and from 1 to 10 for Empathy "
    "(it notices and answers the user's feelings). Answer exactly as: Quality: <number>; Empathy: <number>"
)
_SCORE = {key: re.compile(rf"{key}\s*[:=]\s*(10|[1-9])\b", re.I) for key in ("quality", "empathy")}


@dataclass(frozen=True)
class JudgeScore:
    """One graded reply: scores 1–10 (``None`` when unparsed) and the judge's raw answer."""

    quality: int | None
    empathy: int | None
    raw: str


def parse_scores(text: str) -> JudgeScore:
    """Read ``Quality: n`` and ``Empathy: n`` (any case, ``:`` or ``=``) from a judge's answer."""
    found = {key: pattern.search(text) for key, pattern in _SCORE.items()}
    quality, empathy = (int(m.group(1)) if m else None for m in found.values())
    return JudgeScore(quality, empathy, text)


class Judge:
    """Grades replies through an OpenAI-compatible endpoint (``cfg.url`` + ``cfg.model``, key from the
    environment variable ``cfg.api_key_env``) or a local Hugging Face model directory (``cfg.path``)."""

    def __init__(self, cfg: JudgeConfig) -> None:
        if not cfg.enabled:
            raise ValueError("a judge needs a url (OpenAI-compatible endpoint) or a path (local Hugging Face model)")
        self.max_new_tokens = cfg.max_new_tokens
        if cfg.path:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(cfg.path, local_files_only=True)
            self.local: Any = AutoModelForCausalLM.from_pretrained(cfg.path, local_files_only=True).eval()
        else:
            import openai

            key = os.environ.get(cfg.api_key_env, "unused")
            self.client, self.model, self.local = (
                openai.OpenAI(base_url=cfg.url, api_key=key, max_retries=2),
                cfg.model,
                None,
            )

    def score(self, transcript: str, emotion: str, reply: str) -> JudgeScore:
        """Grade one reply."""
        prompt = PROMPT.format(transcript=transcript, emotion=emotion, reply=reply)
        return parse_scores(self._local(prompt) if self.local is not None else self._remote(prompt))

    def _remote(self, prompt: str) -> str:
        answer = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_completion_tokens=self.max_new_tokens,
            temperature=0.0,
        )
        return answer.choices[0].message.content or ""

    def _local(self, prompt: str) -> str:
        import torch

        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = self.local.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
