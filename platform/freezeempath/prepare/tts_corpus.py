"""Fitting speech from TTS voices: sentences spoken by several engines → audio files and a JSONL manifest.

In: sentences and named voices (:class:`~freezeempath.prepare.synthesis.Synthesizer`s). Out:
``out/audio/<voice>-<text hash>.flac`` and ``out/manifest.jsonl`` (``audio``, ``text``, ``speaker``, ``split``,
``id``), the generic manifest that ``jobs.prepare --corpus jsonl`` turns into shards. A codec fitted on
many voices and sentences carries over to new speakers better than one fitted on a single corpus (README,
codec round trip). Each voice speaks its own slice of the sentences, so more voices bring more sentences
too. Reruns keep the clips already written (named by voice and sentence, so an edited sentence is spoken
anew).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from freezeempath.audio import validate_waveform
from freezeempath.data.shards import encode_flac
from freezeempath.labels import Emotion
from freezeempath.prepare.synthesis import CommandSynthesizer, EspeakSynthesizer, Synthesizer

logger = logging.getLogger(__name__)
VOICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
LOG_EVERY = 50  # clips between progress lines of a voice


@dataclasses.dataclass
class TTSCorpusSummary:
    """What a run left in ``out``: clips in the manifest (written now or kept), failures per voice."""

    clips: int
    written: int
    kept: int
    failed: dict[str, int]
    seconds: float
    manifest: str


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per line; blank lines and repeats dropped (first kept)."""
    sentences = list(dict.fromkeys(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()))
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError(f"{path} holds no sentences (one per line)")
    return sentences


def parse_voice(spec: str) -> tuple[str, Callable[[], Synthesizer]]:
    """``NAME=COMMAND`` (a :class:`CommandSynthesizer`) or an espeak-ng pseudo-speaker (``s0`` …) →
    (name, factory). The command is checked here, so a missing program fails before any clip."""
    name, _, command = spec.partition("=")
    if not VOICE_NAME.fullmatch(name):
        raise ValueError(f"voice name {name!r} (of {spec!r}) must be letters, digits, '_', '.' or '-'")
    if command:
        CommandSynthesizer(command)  # fail fast: unknown placeholder or program not installed
        return name, lambda: CommandSynthesizer(command)
    EspeakSynthesizer(name)  # fail fast: unknown pseudo-speaker
    return name, lambda: EspeakSynthesizer(name)


def synthesize_corpus(
    sentences: Sequence[str],
    voices: Mapping[str, Callable[[], Synthesizer]],
    out: str | Path,
    per_voice: int,
    workers: int = 2,
) -> TTSCorpusSummary:
    """Voice ``k`` speaks sentences ``k·per_voice …`` (cycling; each at most once, so at most
    ``len(sentences)`` clips per voice) in the neutral style; voices run in
    ``workers`` threads (the engines are subprocesses). Writes the clips, then the manifest of every clip
    present; a failed clip is logged, counted and left out."""
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    spoken = min(per_voice, len(sentences))
    slices = {
        name: [sentences[(k * per_voice + j) % len(sentences)] for j in range(spoken)] for k, name in enumerate(voices)
    }
    plans = {name: [(clip_id(name, text), text) for text in texts] for name, texts in slices.items()}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = dict(zip(voices, pool.map(lambda v: _speak(voices[v], v, plans[v], out), voices), strict=True))
    lines = [line for name in voices for line in results[name][0]]
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    written = sum(r[1] for r in results.values())
    return TTSCorpusSummary(
        clips=len(lines),
        written=written,
        kept=len(lines) - written,
        failed={name: r[2] for name, r in results.items() if r[2]},
        seconds=round(sum(sf.info(out / line["audio"]).duration for line in lines), 1),
        manifest=str(manifest),
    )


def clip_id(voice: str, text: str) -> str:
    """``<voice>-<hash of the text>``: a rerun keeps a clip only if it still says the same sentence."""
    return f"{voice}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _speak(factory: Callable[[], Synthesizer], voice: str, plan: list[tuple[str, str]], out: Path) -> tuple:
    """One voice's clips → (manifest lines, clips written, clips failed)."""
    synthesizer, lines, written, failed = None, [], 0, 0
    for n, (uid, text) in enumerate(plan, 1):
        path = out / "audio" / f"{uid}.flac"
        if not path.exists():
            synthesizer = synthesizer or factory()  # loads only when a clip is missing
            try:
                samples, rate = synthesizer.synthesize(text, Emotion.NEUTRAL)
                wave = validate_waveform(samples, rate, float("inf"), rate)  # mono, finite, not empty
                _write_atomic(path, encode_flac(wave.numpy(), rate))
                written += 1
            except (subprocess.SubprocessError, ValueError, OSError) as err:  # the engine failed: count, go on
                logger.warning("voice %s failed on %s: %s", voice, uid, err)
                failed += 1
                continue
        lines.append({"audio": f"audio/{path.name}", "text": text, "speaker": voice, "split": "train", "id": uid})
        if n % LOG_EVERY == 0 or n == len(plan):
            logger.info("voice %s: %d/%d clips (%d written now, %d failed)", voice, n, len(plan), written, failed)
    return lines, written, failed


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
