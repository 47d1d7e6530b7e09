"""Bundled sample assets: a spoken question (synthetic speech made with espeak-ng; no licensed data) and
questions with gold answers for SpokenQA."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from freezeempath.audio import decode_audio


@dataclass(frozen=True)
class SpokenSample:
    """A bundled clip with its transcript and intended emotion."""

    samples: np.ndarray
    sample_rate: int
    transcript: str
    emotion: str


def bundled_question(name: str = "question_sad") -> SpokenSample:
    """Load the bundled spoken question ``name`` (``assets/<name>.json`` + its audio)."""
    folder = resources.files("freezeempath") / "assets"
    meta = json.loads((folder / f"{name}.json").read_text())
    samples, rate = decode_audio((folder / meta["audio"]).read_bytes())
    return SpokenSample(samples, rate, meta["transcript"], meta["emotion"])


@dataclass(frozen=True)
class Question:
    """A question with its gold answers (any of them, contained in a reply, makes the reply correct)."""

    id: str
    question: str
    answers: tuple[str, ...]


def bundled_questions(name: str = "spoken_qa") -> list[Question]:
    """The bundled questions ``assets/<name>.jsonl``: everyday facts a small LLM knows, written for SpokenQA."""
    text = (resources.files("freezeempath") / "assets" / f"{name}.jsonl").read_text()
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [Question(i["id"], i["question"], tuple(i["answers"])) for i in items]
