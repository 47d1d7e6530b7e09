"""SpokenQA scoring (method.md §5): a reply is correct when it contains a gold answer after normalisation.

In: replies and their gold answers. Out: per-reply correctness and accuracy; :func:`speech_over_text` is
the S2T ÷ T2T ratio, which keeps a small frozen LLM's own knowledge from hiding what the adapter adds:
the same questions asked as text (T2T) bound what asking them as speech (S2T) can reach.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation + "‘’“”", " "))


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation and the articles a/an/the removed, whitespace collapsed to single spaces."""
    text = text.lower().replace("’", "'").replace("'", "").translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def is_correct(reply: str, answers: Sequence[str]) -> bool:
    """True when some non-empty normalised gold answer stands in the normalised reply as whole words."""
    padded = f" {normalize_answer(reply)} "
    return any(gold and f" {gold} " in padded for gold in map(normalize_answer, answers))


def accuracy(replies: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Share of replies that contain one of their question's gold answers."""
    if len(replies) != len(answers):
        raise ValueError(f"{len(replies)} replies but {len(answers)} answer lists")
    if not replies:
        raise ValueError("no questions to score")
    return sum(is_correct(r, a) for r, a in zip(replies, answers, strict=True)) / len(replies)


def speech_over_text(speech_accuracy: float, text_accuracy: float) -> float | None:
    """S2T ÷ T2T; ``None`` when the text questions got nothing right (no ceiling to compare with)."""
    return speech_accuracy / text_accuracy if text_accuracy > 0 else None
