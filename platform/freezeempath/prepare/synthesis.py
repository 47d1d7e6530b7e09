"""Speech synthesis for stage-3 targets: the :class:`Synthesizer` interface and the built-in espeak-ng engine.

In: reply text and the emotion whose voice style to speak it in. Out: mono float32 samples and their rate.
Other TTS engines plug in by implementing :class:`Synthesizer` (``data.targets.make_targets(...,
synthesizer=...)``), or, with no code, as a command line (:class:`CommandSynthesizer`,
``targets.tts_command``); :data:`REPLY_VOICE` maps the user's emotion to the reply's voice style.
"""

from __future__ import annotations

import shlex
import shutil
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from freezeempath.audio import decode_audio
from freezeempath.labels import Emotion
from freezeempath.prepare.sample_corpus import ESPEAK, PRESETS, SPEAKERS, install_variants

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


PLACEHOLDERS = frozenset({"text", "out", "emotion"})


class CommandSynthesizer:
    """Any installed TTS program as a :class:`Synthesizer`, from a command line (no shell).

    ``command`` may name ``{text}`` (else the text goes to the program's stdin), ``{out}`` (a WAV path
    the program writes; else its stdout is read as audio) and ``{emotion}`` (the style's name, e.g.
    ``sad``); ``{{`` and ``}}`` are literal braces. E.g. ``flite -voice slt -t {text} -o {out}``,
    ``text2wave -eval (voice_kal_diphone) -o {out}``, ``piper -m en_US-joe-medium.onnx -f {out}``.

    Raises:
        ValueError: an unknown placeholder, or an empty command.
        FileNotFoundError: the program is not installed.
    """

    def __init__(self, command: str, timeout: float = 120.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("the TTS command is empty")
        try:
            self.fields = {
                name for arg in self.argv for _, name, _, _ in string.Formatter().parse(arg) if name is not None
            }
        except ValueError as err:  # an unmatched brace
            raise ValueError(f"TTS command {command!r}: {err} (write literal braces as {{{{ and }}}})") from None
        if unknown := self.fields - PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder(s) {sorted('{' + n + '}' for n in unknown)} in TTS command {command!r}; "
                f"use {sorted('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if shutil.which(self.argv[0]) is None:
            raise FileNotFoundError(f"TTS program {self.argv[0]!r} (of {command!r}) is not installed or not on PATH")
        self.timeout = timeout
        self._work = tempfile.TemporaryDirectory(prefix="freezeempath-tts-")  # removed with the object

    def command(self, text: str, emotion: Emotion, out: str) -> list[str]:
        """The argv that speaks ``text`` into ``out`` (where the command names ``{out}``).

        Leading dashes leave ``{text}`` (they are not spoken): in argv they would read as an option.
        """
        spoken = text.lstrip("-\u2013\u2014 \t")
        return [arg.format(text=spoken, out=out, emotion=emotion.value) for arg in self.argv]

    def synthesize(self, text: str, emotion: Emotion) -> tuple[np.ndarray, int]:
        """Run the program once → its audio, decoded (any format soundfile reads).

        Raises:
            subprocess.CalledProcessError / TimeoutExpired: the program failed or hung.
            ValueError: it wrote no audio, or audio that does not decode.
        """
        out = Path(self._work.name) / "out.wav"
        out.unlink(missing_ok=True)
        stdin = b"" if "text" in self.fields else text.encode()  # b"": stdin closed, nothing to wait for
        run = subprocess.run(
            self.command(text, emotion, str(out)), input=stdin, capture_output=True, check=True, timeout=self.timeout
        )
        data = (out.read_bytes() if out.exists() else b"") if "out" in self.fields else run.stdout
        if not data:
            raise ValueError(f"TTS program {self.argv[0]!r} wrote no audio for {text[:60]!r}")
        return decode_audio(data)
