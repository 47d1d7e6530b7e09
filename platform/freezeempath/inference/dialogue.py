"""Dialogue state for inference: typed messages (text or audio) and what a reply produced.

In: client messages. Out: validated clips and template turns for :mod:`freezeempath.inference.generate`.
A clip is validated once: :func:`prepare_dialogue` checks each :class:`AudioInput`, and takes a
:class:`CheckedAudio` (from :func:`check_audio`, which a caller runs earlier to report a bad clip its own
way) as it is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from freezeempath.audio import validate_waveform
from freezeempath.chat_template import Turn
from freezeempath.labels import EMOTIONS, Emotion


@dataclass(frozen=True)
class AudioInput:
    """A clip as received: samples ``(N,)`` or ``(N, C)`` / ``(C, N)`` at ``sample_rate`` Hz."""

    samples: torch.Tensor | np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class CheckedAudio:
    """A clip that passed :func:`check_audio`: mono float32 ``(N,)`` at ``sample_rate`` Hz, no longer than
    the limit it was checked against."""

    samples: torch.Tensor
    sample_rate: int


def check_audio(audio: AudioInput | CheckedAudio, max_seconds: float, sample_rate: int = 16_000) -> CheckedAudio:
    """Validate one clip (:func:`~freezeempath.audio.validate_waveform`): mono, finite, non-empty, a sane
    rate, at most ``max_seconds``; resampled to ``sample_rate``. Raises ``ValueError`` naming the problem."""
    return CheckedAudio(validate_waveform(audio.samples, audio.sample_rate, max_seconds, sample_rate), sample_rate)


@dataclass(frozen=True)
class Message:
    """One dialogue message: user text and/or audio, or an assistant's earlier reply text."""

    role: Literal["user", "assistant"]
    text: str = ""
    audio: AudioInput | CheckedAudio | None = None


@dataclass(frozen=True)
class PreparedDialogue:
    """A dialogue ready for the model: template turns and its clips (mono 16 kHz) in slot order."""

    turns: list[Turn]
    clips: list[torch.Tensor]


def prepare_dialogue(messages: list[Message], max_seconds: float, sample_rate: int = 16_000) -> PreparedDialogue:
    """Validate a dialogue and its audio; raises ``ValueError`` naming the problem.

    An :class:`AudioInput` is checked here (:func:`check_audio`); a :class:`CheckedAudio` at
    ``sample_rate`` was checked already and is taken as it is.
    """
    if not messages:
        raise ValueError("dialogue has no messages")
    if messages[-1].role != "user":
        raise ValueError("the last message must come from the user")
    turns, clips = [], []
    for i, msg in enumerate(messages):
        if msg.role not in ("user", "assistant"):
            raise ValueError(f"message {i}: unknown role {msg.role!r}")
        if msg.audio is not None and msg.role != "user":
            raise ValueError(f"message {i}: only user messages may carry input audio")
        if msg.audio is None and not msg.text.strip():
            raise ValueError(f"message {i}: empty message (no text and no audio)")
        if isinstance(msg.audio, CheckedAudio) and msg.audio.sample_rate == sample_rate:
            clips.append(msg.audio.samples)
        elif msg.audio is not None:
            try:
                clips.append(check_audio(msg.audio, max_seconds, sample_rate).samples)
            except ValueError as err:
                raise ValueError(f"message {i}: {err}") from None
        turns.append(Turn(role=msg.role, text=msg.text, spoken=msg.audio is not None))
    return PreparedDialogue(turns=turns, clips=clips)


@dataclass(frozen=True)
class EmotionResult:
    """Detected emotion of a clip: the top label and a probability per canonical class."""

    label: Emotion
    scores: dict[str, float]

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> EmotionResult:
        """Aux-head logits ``(5,)`` → label and probabilities."""
        probs = torch.softmax(logits.float(), dim=-1).tolist()
        scores = {e.value: round(p, 6) for e, p in zip(EMOTIONS, probs, strict=True)}
        return cls(label=EMOTIONS[int(torch.tensor(probs).argmax())], scores=scores)


class FinishReason(enum.Enum):
    """Why a reply ended."""

    STOP = "stop"
    LENGTH = "length"


@dataclass
class Reply:
    """Everything one stream produced (collected from the events)."""

    emotion: EmotionResult | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    audio: list[torch.Tensor] = field(default_factory=list)
    finish_reason: FinishReason = FinishReason.STOP

    @property
    def waveform(self) -> torch.Tensor:
        """All audio chunks joined ``(N,)``."""
        return torch.cat(self.audio) if self.audio else torch.zeros(0)
