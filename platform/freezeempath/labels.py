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


# Corpus label maps: each corpus's own label (as stored in ``emotion_original``) → canonical class,
# ``None`` where the label has no place among the five classes (excluded from 5-class data).
RAVDESS_CODES: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_LABELS: dict[str, Emotion | None] = {
    "neutral": Emotion.NEUTRAL,
    "calm": Emotion.NEUTRAL,
    "happy": Emotion.HAPPY,
    "sad": Emotion.SAD,
    "angry": Emotion.ANGRY,
    "fearful": None,
    "disgust": None,
    "surprised": Emotion.SURPRISED,
}
CREMA_D_LABELS: dict[str, Emotion | None] = {
    "ANG": Emotion.ANGRY,
    "DIS": None,
    "FEA": None,
    "HAP": Emotion.HAPPY,
    "NEU": Emotion.NEUTRAL,
    "SAD": Emotion.SAD,
}
IEMOCAP_LABELS: dict[str, Emotion | None] = {
    "neu": Emotion.NEUTRAL,
    "hap": Emotion.HAPPY,
    "exc": Emotion.HAPPY,  # the common IEMOCAP merge: excited counts as happy
    "sad": Emotion.SAD,
    "ang": Emotion.ANGRY,
    "sur": Emotion.SURPRISED,
    "fru": None,
    "fea": None,
    "dis": None,
    "oth": None,
    "xxx": None,
}
MELD_LABELS: dict[str, Emotion | None] = {
    "neutral": Emotion.NEUTRAL,
    "joy": Emotion.HAPPY,
    "sadness": Emotion.SAD,
    "anger": Emotion.ANGRY,
    "surprise": Emotion.SURPRISED,
    "fear": None,
    "disgust": None,
}
ESD_LABELS: dict[str, Emotion | None] = {
    "Neutral": Emotion.NEUTRAL,
    "Happy": Emotion.HAPPY,
    "Sad": Emotion.SAD,
    "Angry": Emotion.ANGRY,
    "Surprise": Emotion.SURPRISED,
}
EMODB_CODES: dict[str, str] = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
EMODB_LABELS: dict[str, Emotion | None] = {
    "anger": Emotion.ANGRY,
    "boredom": None,
    "disgust": None,
    "fear": None,
    "happiness": Emotion.HAPPY,
    "sadness": Emotion.SAD,
    "neutral": Emotion.NEUTRAL,
}
COMMON_LABELS: dict[str, Emotion | None] = {
    **{e.value: e for e in Emotion},
    "calm": Emotion.NEUTRAL,
    "joy": Emotion.HAPPY,
    "happiness": Emotion.HAPPY,
    "excited": Emotion.HAPPY,
    "sadness": Emotion.SAD,
    "anger": Emotion.ANGRY,
    "surprise": Emotion.SURPRISED,
    "fear": None,
    "fearful": None,
    "disgust": None,
    "contempt": None,
    "boredom": None,
}
"""Lower-case words of generic manifests (e.g. JSONL) → canonical class; keys are matched lower-cased."""
