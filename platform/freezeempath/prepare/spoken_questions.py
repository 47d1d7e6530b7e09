"""Spoken questions for SpokenQA: questions with gold answers → espeak-ng speech → test shards + answers.

In: :class:`~freezeempath.assets.Question` items (the bundled set by default) and an espeak-ng voice of
the sample corpus. Out: shards in ``out_dir`` (``transcript`` = the question, split ``test``) and
``answers.jsonl`` (``{"id", "answers"}``) beside them, as an evaluation suite's ``spoken_qa`` set reads.
The speaker column names the voice as ``voice:espeak:<name>``: TTS voices keep that name in every corpus,
so the suite's speaker check sees a voice reused across corpora.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import soundfile as sf

from freezeempath.assets import Question, bundled_questions
from freezeempath.config import DataConfig
from freezeempath.data.shards import Split
from freezeempath.labels import Emotion
from freezeempath.prepare.corpus import PrepareSummary, prepare_corpus
from freezeempath.prepare.recipes import CorpusRows, RawRow
from freezeempath.prepare.synthesis import EspeakSynthesizer

ANSWERS_FILE = "answers.jsonl"


def question_rows(questions: list[Question], audio_dir: Path, voice: str) -> CorpusRows:
    """Speak every question (neutral preset) into ``audio_dir``; one test row each."""
    synthesizer = EspeakSynthesizer(voice)
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for q in questions:
        samples, rate = synthesizer.synthesize(q.question, Emotion.NEUTRAL)
        path = audio_dir / f"{q.id}.wav"
        sf.write(path, samples, rate)
        rows.append(
            RawRow(
                id=q.id,
                audio_path=str(path),
                speaker=f"voice:espeak:{voice}",
                language="en",
                corpus="spoken_qa",
                transcript=q.question,
                split=Split.TEST,
            )
        )
    return CorpusRows(rows=tuple(sorted(rows, key=lambda r: r.id)))


def speak_questions(
    out_dir: str | Path, questions: list[Question] | None = None, voice: str = "s7", cfg: DataConfig | None = None
) -> PrepareSummary:
    """Write the spoken questions as shards and their gold answers to ``out_dir`` (needs Ray; resumes)."""
    out = Path(out_dir)
    questions = questions if questions is not None else bundled_questions()
    work = out / ".question_audio"  # hidden: Parquet readers skip it; removed afterwards
    try:
        summary = prepare_corpus("spoken_qa", question_rows(questions, work, voice), out, cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [json.dumps({"id": q.id, "answers": list(q.answers)}) for q in questions]
    (out / ANSWERS_FILE).write_text("\n".join(lines) + "\n")
    return summary
