"""Data step 1, corpus recipes: walk a corpus's published layout and list its raw rows.

In: the root folder (or manifest file) of one corpus as its owners publish it. Out: ``RawRow`` records
(audio path, transcript, original and canonical label, speaker, language, split) gathered into a
``CorpusRows`` result. No audio is opened here; ``freezeempath.prepare.corpus`` decodes and shards.

Labels map to the five classes through the tables at the end of ``freezeempath.labels``; rows whose
label has no class (e.g. RAVDESS fearful) are dropped and counted by original label unless
``keep_unmapped`` is set. Splits are speaker-independent: RAVDESS by actor (1–18 / 19–20 / 21–24),
IEMOCAP by session (1–3 / 4 / 5), MELD by its official files (its main characters appear in every
split, so MELD is *not* speaker-independent), every other corpus by ranking its speakers, per
language, on a hash of their id and cutting at the configured fractions (deterministic for a given
speaker set; each non-zero fraction gets at least one speaker once a group has three).
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from freezeempath.config import DataConfig
from freezeempath.data.shards import Split
from freezeempath.labels import (
    COMMON_LABELS,
    CREMA_D_LABELS,
    EMODB_CODES,
    EMODB_LABELS,
    ESD_LABELS,
    IEMOCAP_LABELS,
    MELD_LABELS,
    RAVDESS_CODES,
    RAVDESS_LABELS,
    Emotion,
)

AUDIO_SUFFIXES = (".wav", ".flac")
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMODB_TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}


class Corpus(enum.Enum):
    """Corpora with a recipe; the value is the ``corpus`` column and the ``--corpus`` choice."""

    RAVDESS = "ravdess"
    CREMA_D = "crema_d"
    IEMOCAP = "iemocap"
    MELD = "meld"
    ESD = "esd"
    EMODB = "emodb"
    INSTRUCT_S2S = "instruct_s2s"
    JSONL = "jsonl"
    SAMPLE = "sample"


@dataclass(frozen=True)
class RawRow:
    """One utterance before decoding. ``split`` is set only where the corpus fixes it."""

    id: str
    audio_path: str
    speaker: str
    language: str
    corpus: str
    transcript: str | None = None
    emotion_original: str | None = None
    emotion: Emotion | None = None
    split: Split | None = None
    reply: str | None = None

    def to_item(self) -> dict[str, Any]:
        """Plain-typed dict (enums as their values) for Arrow / Ray Data."""
        item = dataclasses.asdict(self)
        item.update(
            emotion=self.emotion.value if self.emotion else None, split=self.split.value if self.split else None
        )
        return item


@dataclass(frozen=True)
class SplitFractions:
    """Speaker fractions for corpora without an official split; defaults live in ``DataConfig``."""

    validation: float
    test: float

    @classmethod
    def from_config(cls, cfg: DataConfig | None = None) -> SplitFractions:
        """``DataConfig.validation_fraction`` / ``test_fraction`` (of ``DataConfig()`` when omitted)."""
        cfg = cfg if cfg is not None else DataConfig()
        return cls(validation=cfg.validation_fraction, test=cfg.test_fraction)

    def __post_init__(self) -> None:
        """Reject negative fractions and fractions that leave no train speakers."""
        if min(self.validation, self.test) < 0 or self.validation + self.test >= 1:
            raise ValueError(f"split fractions must be >= 0 and leave some train speakers: {self}")


@dataclass(frozen=True)
class ManifestFields:
    """Field names of a generic JSONL manifest; ``audio`` is required in every line, the rest optional."""

    audio: str = "audio"
    text: str = "text"
    emotion: str = "emotion"
    speaker: str = "speaker"
    language: str = "language"
    split: str = "split"
    id: str = "id"
    reply: str = "reply"


@dataclass(frozen=True)
class CorpusRows:
    """A recipe's result: rows sorted by id, with splits, and dropped labels counted by original label."""

    rows: tuple[RawRow, ...]
    label_drops: Mapping[str, int] = field(default_factory=dict)


def ravdess_split(actor: int) -> Split:
    """RAVDESS actors 1–18 train, 19–20 validation, 21–24 test (``offline-assets.md`` §4)."""
    return Split.TRAIN if actor <= 18 else Split.VALIDATION if actor <= 20 else Split.TEST


def speaker_splits(speakers: Iterable[str], salt: str, fractions: SplitFractions) -> dict[str, Split]:
    """Assign whole speakers: rank them by ``sha256(salt:speaker)`` and cut at the fractions.

    Each non-zero fraction gets at least one speaker once there are three or more.
    """
    ranked = sorted(set(speakers), key=lambda s: (hashlib.sha256(f"{salt}:{s}".encode()).hexdigest(), s))
    n = len(ranked)
    n_test, n_val = (_speaker_count(n, f) for f in (fractions.test, fractions.validation))
    n_test = min(n_test, max(0, n - 1))
    n_val = min(n_val, max(0, n - 1 - n_test))
    splits = {}
    for i, speaker in enumerate(ranked):
        splits[speaker] = Split.TEST if i < n_test else Split.VALIDATION if i < n_test + n_val else Split.TRAIN
    return splits


def _speaker_count(n: int, fraction: float) -> int:
    count = round(n * fraction)
    return max(1, count) if fraction > 0 and n >= 3 else count


def speakers_across_splits(rows: Iterable[RawRow]) -> dict[tuple[str, str], set[Split]]:
    """``(corpus, speaker)`` pairs found in more than one split (empty when speaker-independent)."""
    seen: dict[tuple[str, str], set[Split]] = defaultdict(set)
    for row in rows:
        if row.split is not None:
            seen[(row.corpus, row.speaker)].add(row.split)
    return {key: splits for key, splits in seen.items() if len(splits) > 1}


def collect(rows: Iterable[RawRow], fractions: SplitFractions, keep_unmapped: bool = False) -> CorpusRows:
    """Drop (and count) unmappable labels, fill missing splits by speaker, sort by id, check ids are unique."""
    kept, drops = [], Counter()
    for row in rows:
        if row.emotion_original is not None and row.emotion is None and not keep_unmapped:
            drops[row.emotion_original] += 1
        else:
            kept.append(row)
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)  # per corpus and language, e.g. ESD zh / en
    language = {}
    for row in sorted(kept, key=lambda r: r.id):
        if row.split is None:
            groups[(row.corpus, language.setdefault((row.corpus, row.speaker), row.language))].add(row.speaker)
    assigned = {
        (corpus, speaker): split
        for (corpus, lang), speakers in groups.items()
        for speaker, split in speaker_splits(speakers, f"{corpus}:{lang}", fractions).items()
    }
    final = sorted(
        (r if r.split else replace(r, split=assigned[(r.corpus, r.speaker)]) for r in kept), key=lambda r: r.id
    )
    duplicates = [a.id for a, b in zip(final, final[1:], strict=False) if a.id == b.id]
    if duplicates:
        raise ValueError(f"row ids are not unique, e.g. {duplicates[:3]}")
    return CorpusRows(rows=tuple(final), label_drops=dict(sorted(drops.items())))


def ravdess(root: Path) -> Iterator[RawRow]:
    """``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav|flac``; speech only (vocal channel 01)."""
    for path in sorted(Path(root).glob("Actor_*/*")):
        match = re.fullmatch(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)", path.stem)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not match or match[2] != "01":
            continue
        original = RAVDESS_CODES.get(match[3], match[3])
        actor = int(match[7])
        yield RawRow(
            id=f"ravdess-{path.stem}",
            audio_path=str(path),
            speaker=f"{actor:02d}",
            language="en",
            corpus="ravdess",
            transcript=RAVDESS_STATEMENTS.get(match[5]),
            emotion_original=original,
            emotion=RAVDESS_LABELS.get(original),
            split=ravdess_split(actor),
        )


def crema_d(root: Path) -> Iterator[RawRow]:
    """``AudioWAV/1001_DFA_ANG_XX.wav`` (speaker, sentence, emotion, intensity)."""
    folder = Path(root) / "AudioWAV" if (Path(root) / "AudioWAV").is_dir() else Path(root)
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})", path.stem)
        if path.suffix.lower() in AUDIO_SUFFIXES and match:
            yield RawRow(
                id=f"crema_d-{path.stem}",
                audio_path=str(path),
                speaker=match[1],
                language="en",
                corpus="crema_d",
                transcript=CREMA_D_SENTENCES.get(match[2]),
                emotion_original=match[3],
                emotion=CREMA_D_LABELS.get(match[3]),
            )


def iemocap(root: Path) -> Iterator[RawRow]:
    """``SessionN/sentences/wav/<dialog>/<utt>.wav``; labels from ``dialog/EmoEvaluation/*.txt``.

    Speaker = session + the utterance's gender letter (``Ses01F``); sessions 1–3 train, 4 validation, 5 test.
    """
    for session in sorted(Path(root).glob("Session[1-5]")):
        texts: dict[str, str] = {}
        for file in sorted((session / "dialog" / "transcriptions").glob("*.txt")):
            for line in _read_text(file).splitlines():
                if m := re.match(r"(Ses\S+) \[[^\]]*\]:\s?(.*)$", line):
                    texts[m[1]] = m[2].strip()
        number = int(session.name[-1])
        split = Split.TRAIN if number <= 3 else Split.VALIDATION if number == 4 else Split.TEST
        for file in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in _read_text(file).splitlines():
                if not (m := re.match(r"\[[\d.]+ - [\d.]+\]\t(Ses\S+)\t(\w+)\t", line)):
                    continue
                utt, label = m[1], m[2]
                dialog, turn = utt.rsplit("_", 1)
                yield RawRow(
                    id=f"iemocap-{utt}",
                    audio_path=str(session / "sentences" / "wav" / dialog / f"{utt}.wav"),
                    speaker=f"{utt[:5]}{turn[0]}",
                    language="en",
                    corpus="iemocap",
                    transcript=texts.get(utt),
                    emotion_original=label,
                    emotion=IEMOCAP_LABELS.get(label),
                    split=split,
                )


MELD_FILES = {"train_sent_emo.csv": Split.TRAIN, "dev_sent_emo.csv": Split.VALIDATION, "test_sent_emo.csv": Split.TEST}


def meld(root: Path) -> Iterator[RawRow]:
    """MELD CSVs with audio ``dia{D}_utt{U}.wav|flac|mp4`` in folders named after the split.

    The split of an audio file comes from the first ancestor folder containing ``train``, ``dev`` or
    ``test`` (``train_splits``, ``dev_splits_complete``, ``output_repeated_splits_test``). MELD ships
    mp4: convert to wav/flac first (``prepare`` counts undecodable files). Missing audio → empty path.
    """
    audio: dict[Split, dict[str, Path]] = defaultdict(dict)
    for path in sorted(Path(root).rglob("dia*_utt*.*"), key=lambda p: (p.suffix.lower() == ".mp4", str(p))):
        split = _split_from_folders(path.relative_to(root).parts[:-1])
        if split and path.suffix.lower() in (*AUDIO_SUFFIXES, ".mp4"):
            audio[split].setdefault(path.stem, path)
    for name, split in MELD_FILES.items():
        for csv_path in sorted(Path(root).rglob(name))[:1]:
            for rec in csv.DictReader(_read_text(csv_path).splitlines()):
                stem = f"dia{rec['Dialogue_ID'].strip()}_utt{rec['Utterance_ID'].strip()}"
                label = rec["Emotion"].strip()
                yield RawRow(
                    id=f"meld-{split.value}-{stem}",
                    audio_path=str(audio[split].get(stem, "")),
                    speaker=rec["Speaker"].strip(),
                    language="en",
                    corpus="meld",
                    transcript=rec["Utterance"].strip(),
                    emotion_original=label,
                    emotion=MELD_LABELS.get(label),
                    split=split,
                )


def esd(root: Path) -> Iterator[RawRow]:
    """``[ESD/]00XX/<Emotion>/[train|evaluation|test/]00XX_000NNN.wav``, texts in ``00XX/00XX.txt``.

    Speakers 0001–0010 are Chinese, 0011–0020 English. Splits are by speaker (ESD's own split is by utterance).
    """
    base = next((d for d in (Path(root) / "ESD", Path(root) / "Emotion Speech Dataset") if d.is_dir()), Path(root))
    for speaker_dir in sorted(d for d in base.iterdir() if d.is_dir() and re.fullmatch(r"\d{4}", d.name)):
        speaker = speaker_dir.name
        texts = {}
        for line in _read_text(speaker_dir / f"{speaker}.txt").splitlines():
            parts = line.strip().split("\t")
            if len(parts) >= 2:
                texts[parts[0].strip()] = parts[1].strip()
        for label in sorted(ESD_LABELS):
            for path in sorted((speaker_dir / label).rglob("*")):
                if path.suffix.lower() in AUDIO_SUFFIXES:
                    yield RawRow(
                        id=f"esd-{path.stem}",
                        audio_path=str(path),
                        speaker=speaker,
                        language="zh" if int(speaker) <= 10 else "en",
                        corpus="esd",
                        transcript=texts.get(path.stem),
                        emotion_original=label,
                        emotion=ESD_LABELS[label],
                    )


def emodb(root: Path) -> Iterator[RawRow]:
    """``wav/03a01Fa.wav``: speaker (2), text code (3), emotion letter (1), version (1); German."""
    folder = Path(root) / "wav" if (Path(root) / "wav").is_dir() else Path(root)
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(r"(\d\d)([ab]\d\d)([WLEAFTN])([a-z])", path.stem)
        if path.suffix.lower() in AUDIO_SUFFIXES and match:
            original = EMODB_CODES[match[3]]
            yield RawRow(
                id=f"emodb-{path.stem}",
                audio_path=str(path),
                speaker=match[1],
                language="de",
                corpus="emodb",
                transcript=EMODB_TEXTS.get(match[2]),
                emotion_original=original,
                emotion=EMODB_LABELS[original],
            )


def instruct_s2s(path: Path, language: str = "en", transcript_key: str = "transcript") -> Iterator[RawRow]:
    r"""InstructS2S-style JSON list: ``{"id", "speech", "conversations": [human "<speech>\n…", gpt reply]}``.

    The reply is the first ``gpt`` turn; the transcript is ``transcript_key`` when present. Each
    conversation is its own pseudo-speaker (the corpus is synthesised with varied voices).
    """
    path = Path(path)
    for item in json.loads(path.read_text(encoding="utf-8")):
        reply = next((t["value"] for t in item.get("conversations", []) if t.get("from") == "gpt"), None)
        conv_id = str(item["id"])
        yield RawRow(
            id=f"instruct_s2s-{conv_id}",
            audio_path=str(_resolve(path.parent, item["speech"])),
            speaker=str(item.get("speaker", conv_id)),
            language=language,
            corpus="instruct_s2s",
            transcript=item.get(transcript_key),
            reply=reply,
        )


def jsonl_manifest(
    path: Path, fields: ManifestFields = ManifestFields(), corpus: str = "jsonl", language: str = "en"
) -> Iterator[RawRow]:
    """Generic JSONL, one object per line; audio paths relative to the manifest's folder.

    Emotion words map through ``labels.COMMON_LABELS`` (lower-cased); without a speaker field each
    line is its own speaker; a ``split`` value of train / validation / test is kept.
    """
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        rec = json.loads(line)
        row_id = str(rec.get(fields.id, f"{number:08d}"))
        label = rec.get(fields.emotion)
        split = rec.get(fields.split)
        yield RawRow(
            id=f"{corpus}-{row_id}",
            audio_path=str(_resolve(path.parent, rec[fields.audio])),
            speaker=str(rec.get(fields.speaker, row_id)),
            language=str(rec.get(fields.language, language)),
            corpus=corpus,
            transcript=rec.get(fields.text),
            emotion_original=label,
            emotion=COMMON_LABELS.get(str(label).lower()) if label is not None else None,
            split=Split(split) if split in {s.value for s in Split} else None,
            reply=rec.get(fields.reply),
        )


RECIPES: dict[Corpus, Callable[[Path], Iterator[RawRow]]] = {
    Corpus.RAVDESS: ravdess,
    Corpus.CREMA_D: crema_d,
    Corpus.IEMOCAP: iemocap,
    Corpus.MELD: meld,
    Corpus.ESD: esd,
    Corpus.EMODB: emodb,
    Corpus.INSTRUCT_S2S: instruct_s2s,
    Corpus.JSONL: jsonl_manifest,
}


def load_corpus(
    corpus: Corpus, root: Path, fractions: SplitFractions | None = None, keep_unmapped: bool = False
) -> CorpusRows:
    """Run one recipe with its defaults and :func:`collect` the rows (fractions default to ``DataConfig``'s)."""
    if corpus not in RECIPES:
        raise ValueError(f"corpus {corpus.value!r} has no directory recipe; choose one of {[c.value for c in RECIPES]}")
    if not Path(root).exists():
        raise FileNotFoundError(f"{corpus.value} root {root} does not exist")
    return collect(RECIPES[corpus](Path(root)), fractions or SplitFractions.from_config(), keep_unmapped)


def _read_text(path: Path, encodings: tuple[str, ...] = ("utf-8-sig", "utf-16", "gb18030", "cp1252")) -> str:
    """Read a corpus text file whose encoding varies by release (UTF-8, UTF-16, GBK, Windows-1252)."""
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    for encoding in encodings:
        if encoding == "utf-16" and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def _split_from_folders(parts: Iterable[str]) -> Split | None:
    for part in parts:
        name = part.lower()
        for hint, split in (("train", Split.TRAIN), ("dev", Split.VALIDATION), ("test", Split.TEST)):
            if hint in name:
                return split
    return None


def _resolve(base: Path, audio: str) -> Path:
    return Path(audio) if Path(audio).is_absolute() else base / audio
