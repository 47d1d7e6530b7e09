"""The one emotion vocabulary: canonical classes, label words and the aux-head index order."""

from __future__ import annotations

import enum


class Emotion(enum.Enum):
    """Canonical emotion classes; definition order is the aux-head index order of the release."""

    ANGRY = "angry"
    SURPRISED = "surprised"
    HAPPY = "happy"
    SAD = "sad"
    NEUTRAL = "neutral"

    @property
    def index(self) -> int:
        """Row of this class in the auxiliary head's output."""
        return EMOTIONS.index(self)

    @classmethod
    def parse(cls, word: str) -> Emotion:
        """Map a label word (any case, surrounding punctuation ignored) to the class."""
        key = word.strip().strip(".,!?;:'\"").lower()
        for emotion in cls:
            if emotion.value == key:
                return emotion
        raise ValueError(f"unknown emotion label {word!r}; expected one of {[e.value for e in cls]}")


EMOTIONS: tuple[Emotion, ...] = tuple(Emotion)
NUM_EMOTIONS = len(EMOTIONS)
LABEL_WORDS: tuple[str, ...] = tuple(e.value for e in EMOTIONS)
