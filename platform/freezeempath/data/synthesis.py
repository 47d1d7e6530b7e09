"""Speech synthesis for stage-3 targets: the :class:`Synthesizer` interface and the built-in espeak-ng engine.

In: reply text and the emotion whose voice style to speak it in. Out: mono float32 samples and their rate.
Other TTS engines plug in by implementing :class:`Synthesizer` (``data.targets.make_targets(...,
synthesizer=...)``); :data:`REPLY_VOICE` maps the user's emotion to the reply's voice style.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from freezeempath.data.audio import decode_audio
from freezeempath.data.sample_corpus import ESPEAK, PRESETS, SPEAKERS, install_variants
from freezeempath.labels import Emotion

REPLY_VOICE: dict[Emotion, Emotion] = {
    Emotion.SAD: Emotion.SAD,  # soft, slow and low: the closest preset to a comforting voice
    Emotion.ANGRY: Emotion.NEUTRAL,  # answer anger calmly, never in kind
    Emotion.HAPPY: Emotion.HAPPY,
    Emotion.SURPRISED: Emotion.SURPRISED,
    Emotion.NEUTRAL: Emotion.NEUTRAL,
}
"""User's emotion → preset of the reply's voice (``method.md`` §4.2 groups replies into style categories)."""


@runtime_checkable
class Synthesizer(Protocol):
    """A TTS engine: text and emotion → mono samples ``(N,)`` float32 in [-1, 1] and their rate in Hz."""

    def synthesize(self, text: str, emotion: Emotion) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the style of ``emotion``."""
        ...


class EspeakSynthesizer:
    """Built-in :class:`Synthesizer`: espeak-ng (subprocess) with the sample corpus's emotion presets.

    Args:
        voice: a pseudo-speaker of ``sample_corpus.SPEAKERS`` (its formants and pitch scale).
    """

    def __init__(self, voice: str = "s0") -> None:
        if voice not in {s.name for s in SPEAKERS}:
            raise ValueError(f"unknown espeak voice {voice!r}; expected one of {[s.name for s in SPEAKERS]}")
        self.voice = voice
        self._work = tempfile.TemporaryDirectory(prefix="freezeempath-espeak-")  # removed with the object
        self.data_path = install_variants(Path(self._work.name))

    def synthesize(self, text: str, emotion: Emotion) -> tuple[np.ndarray, int]:
        """Text (read from stdin, so a leading ``-`` is no option) → 22.05 kHz samples."""
        preset = PRESETS[emotion]
        command = [ESPEAK, f"--path={self.data_path}", "-v", f"en-us+emo_{emotion.value}_{self.voice}"]
        command += ["-a", str(preset.amplitude), *(["-g", str(preset.word_gap)] if preset.word_gap else [])]
        out = subprocess.run([*command, "--stdout"], input=text.encode(), capture_output=True, check=True)
        samples, rate = decode_audio(out.stdout)
        return samples, rate
