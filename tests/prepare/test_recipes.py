"""Corpus recipes on tiny fixture trees in each corpus's published layout; splits; the real RAVDESS copy."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
from freezeempath.data.shards import Split
from freezeempath.labels import Emotion
from freezeempath.prepare.recipes import (
    Corpus,
    ManifestFields,
    RawRow,
    SplitFractions,
    collect,
    jsonl_manifest,
    load_corpus,
    speaker_splits,
    speakers_across_splits,
)
from helpers import ROOT, speech_like

RAVDESS_DIR = Path(os.environ.get("FREEZEEMPATH_RAVDESS_DIR", ROOT.parent / "shared/data/ravdess"))
needs_ravdess = pytest.mark.skipif(not (RAVDESS_DIR / "manifest.csv").is_file(), reason="RAVDESS copy absent")


def wav(path: Path, seed: int = 0, seconds: float = 0.05, rate: int = 16_000) -> Path:
    """Write a short synthetic clip (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, speech_like(seconds, seed=seed, rate=rate).numpy(), rate)
    return path


def splits_of(rows) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row.split.value, set()).add(row.speaker)
    return out


def test_ravdess_layout_labels_and_actor_splits(tmp_path):
    for actor in (1, 19, 21):
        for code in range(1, 9):
            wav(tmp_path / f"Actor_{actor:02d}/03-01-{code:02d}-01-02-01-{actor:02d}.wav", seed=code)
    wav(tmp_path / "Actor_01/03-02-03-01-01-01-01.wav")  # song (vocal channel 02): not speech
    wav(tmp_path / "Actor_01/notes.wav")
    result = load_corpus(Corpus.RAVDESS, tmp_path)
    assert len(result.rows) == 3 * 6
    assert result.label_drops == {"disgust": 3, "fearful": 3}
    calm = next(r for r in result.rows if r.emotion_original == "calm")
    assert calm.emotion is Emotion.NEUTRAL and calm.transcript == "Dogs are sitting by the door"
    assert {r.speaker: r.split for r in result.rows} == {"01": Split.TRAIN, "19": Split.VALIDATION, "21": Split.TEST}
    kept = load_corpus(Corpus.RAVDESS, tmp_path, keep_unmapped=True)
    assert len(kept.rows) == 24 and kept.label_drops == {}


def test_crema_d_sentences_labels_and_hash_splits(tmp_path):
    for speaker in range(1001, 1011):
        for i, label in enumerate(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")):
            wav(tmp_path / f"AudioWAV/{speaker}_{'DFA' if i % 2 else 'IEO'}_{label}_XX.wav", seed=i)
    result = load_corpus(Corpus.CREMA_D, tmp_path)
    assert len(result.rows) == 40 and result.label_drops == {"DIS": 10, "FEA": 10}
    texts = {r.transcript for r in result.rows}
    assert texts == {"Don't forget a jacket", "It's eleven o'clock"}
    assert Counter(r.emotion for r in result.rows)[Emotion.ANGRY] == 10
    by_split = splits_of(result.rows)
    assert [len(by_split[s.value]) for s in Split] == [8, 1, 1]
    assert speakers_across_splits(result.rows) == {}


def _iemocap_session(root: Path, n: int) -> None:
    session = root / f"Session{n}"
    dialog = f"Ses0{n}F_impro01"
    labels = {"F000": "neu", "M000": "exc", "F001": "fru", "M001": "ang"}
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    texts = []
    for i, (turn, label) in enumerate(labels.items()):
        utt = f"{dialog}_{turn}"
        wav(session / f"sentences/wav/{dialog}/{utt}.wav", seed=i)
        lines += [f"[{i}.5000 - {i + 1}.2500]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]", "C-E1:\tNeutral;\t()", ""]
        texts.append(f"{utt} [00{i}.5000-00{i + 1}.2500]: Words number {i}.")
    (session / "dialog/EmoEvaluation").mkdir(parents=True)
    (session / "dialog/EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines))
    (session / "dialog/EmoEvaluation/Categorical").mkdir()  # sub-folders are not label files
    (session / "dialog/transcriptions").mkdir(parents=True)
    (session / "dialog/transcriptions" / f"{dialog}.txt").write_text("\n".join(texts) + "\n")


def test_iemocap_labels_transcripts_and_session_splits(tmp_path):
    for n in (1, 4, 5):
        _iemocap_session(tmp_path, n)
    result = load_corpus(Corpus.IEMOCAP, tmp_path)
    assert result.label_drops == {"fru": 3}
    row = next(r for r in result.rows if r.id == "iemocap-Ses01F_impro01_M000")
    assert row.emotion is Emotion.HAPPY and row.emotion_original == "exc"  # exc merged into happy
    assert row.speaker == "Ses01M" and row.transcript == "Words number 1."
    assert Path(row.audio_path).is_file()
    assert {r.speaker: r.split.value for r in result.rows if r.speaker.endswith("F")} == {
        "Ses01F": "train",
        "Ses04F": "validation",
        "Ses05F": "test",
    }
    assert speakers_across_splits(result.rows) == {}


def test_meld_csvs_and_official_splits(tmp_path):
    header = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season"]
    files = {
        "train_sent_emo.csv": (
            "train_splits",
            [("Oh my God!", "Ross", "surprise", 0, 0), ("No.", "Joey", "fear", 0, 1)],
        ),
        "dev_sent_emo.csv": ("dev_splits_complete", [("Hi.", "Monica", "joy", 3, 0)]),
        "test_sent_emo.csv": (
            "output_repeated_splits_test",
            [("Fine.", "Ross", "neutral", 0, 0), ("Go!", "Rachel", "anger", 5, 2)],
        ),
    }
    for name, (folder, records) in files.items():
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i, (text, speaker, emotion, dia, utt) in enumerate(records):
                writer.writerow([i + 1, text, speaker, emotion, "neutral", dia, utt, 1])
                if (dia, utt) != (5, 2):  # one utterance has no audio
                    wav(tmp_path / "MELD.Raw" / folder / f"dia{dia}_utt{utt}.wav", seed=i)
    (tmp_path / "MELD.Raw/train_splits/dia0_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")  # wav preferred
    result = load_corpus(Corpus.MELD, tmp_path)
    assert result.label_drops == {"fear": 1}
    rows = {r.id: r for r in result.rows}
    assert set(rows) == {
        "meld-train-dia0_utt0",
        "meld-validation-dia3_utt0",
        "meld-test-dia0_utt0",
        "meld-test-dia5_utt2",
    }
    assert rows["meld-train-dia0_utt0"].emotion is Emotion.SURPRISED
    assert rows["meld-train-dia0_utt0"].audio_path.endswith("train_splits/dia0_utt0.wav")
    assert rows["meld-test-dia0_utt0"].audio_path.endswith("output_repeated_splits_test/dia0_utt0.wav")
    assert rows["meld-validation-dia3_utt0"].emotion is Emotion.HAPPY
    assert rows["meld-test-dia5_utt2"].audio_path == ""  # prepare counts it as missing
    # MELD keeps its official split, so its main characters (Ross) appear in several splits
    assert ("meld", "Ross") in speakers_across_splits(result.rows)


def test_esd_folders_transcripts_languages(tmp_path):
    for number in (1, 2, 3, 11, 12, 13):
        speaker = f"{number:04d}"
        lines = []
        for i, label in enumerate(("Angry", "Happy", "Neutral", "Sad", "Surprise")):
            utt = f"{speaker}_{i * 350 + 1:06d}"
            subfolder = "train/" if number % 2 else ""  # the release has train/evaluation/test sub-folders
            wav(tmp_path / "ESD" / speaker / label / f"{subfolder}{utt}.wav", seed=i)
            lines.append(f"{utt}\tsentence {i}\t{label}")
        (tmp_path / "ESD" / speaker / f"{speaker}.txt").write_text("\n".join(lines) + "\n", encoding="utf-16")
    result = load_corpus(Corpus.ESD, tmp_path, SplitFractions(validation=0.34, test=0.34))
    assert len(result.rows) == 30 and result.label_drops == {}
    row = next(r for r in result.rows if r.id == "esd-0011_000351")
    assert row.language == "en" and row.emotion is Emotion.HAPPY and row.transcript == "sentence 1"
    assert next(r for r in result.rows if r.speaker == "0002").language == "zh"
    assert Counter(r.emotion for r in result.rows)[Emotion.SURPRISED] == 6
    for language in ("zh", "en"):  # each language gets its own speaker-level split
        by_split = splits_of(r for r in result.rows if r.language == language)
        assert all(len(by_split[s.value]) == 1 for s in Split)
    assert speakers_across_splits(result.rows) == {}


def test_emodb_names_and_labels(tmp_path):
    for speaker in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"):
        for letter in "WLEAFTN":
            wav(tmp_path / f"wav/{speaker}a01{letter}a.wav")
    result = load_corpus(Corpus.EMODB, tmp_path)
    assert len(result.rows) == 40
    assert result.label_drops == {"boredom": 10, "disgust": 10, "fear": 10}
    row = next(r for r in result.rows if r.id == "emodb-03a01Fa")
    assert row.emotion is Emotion.HAPPY and row.language == "de"
    assert row.transcript == "Der Lappen liegt auf dem Eisschrank."
    assert [len(splits_of(result.rows)[s.value]) for s in Split] == [8, 1, 1]
    assert speakers_across_splits(result.rows) == {}


def test_instruct_s2s_json(tmp_path):
    conversations = [
        {
            "id": f"conv{i}",
            "speech": f"speech/{i}.wav",
            **({"transcript": "How do I boil an egg?"} if i == 0 else {}),
            "conversations": [
                {"from": "human", "value": "<speech>\nPlease answer."},
                {"from": "gpt", "value": f"Reply {i}."},
            ],
        }
        for i in range(12)
    ]
    (tmp_path / "instruct.json").write_text(json.dumps(conversations))
    result = load_corpus(Corpus.INSTRUCT_S2S, tmp_path / "instruct.json")
    assert len(result.rows) == 12 and result.label_drops == {}
    first = result.rows[0]
    assert (
        first.id == "instruct_s2s-conv0" and first.reply == "Reply 0." and first.transcript == "How do I boil an egg?"
    )
    assert first.audio_path == str(tmp_path / "speech/0.wav") and first.emotion is None
    assert result.rows[1].transcript is None
    assert {r.split for r in result.rows} == set(Split)


def test_jsonl_manifest_with_custom_fields(tmp_path):
    lines = [
        {"file": "a.wav", "sentence": "I am so glad.", "label": "Joy", "who": "s1"},
        {"file": "b.wav", "sentence": "Whatever.", "label": "contempt", "who": "s1"},
        {"file": "/abs/c.wav", "sentence": "Oh no.", "label": "sad", "who": "s2", "split": "test"},
        {"file": "d.wav"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    fields = ManifestFields(audio="file", text="sentence", emotion="label", speaker="who")
    result = collect(jsonl_manifest(path, fields, corpus="mine"), SplitFractions.from_config())
    assert result.label_drops == {"contempt": 1}
    rows = {r.audio_path: r for r in result.rows}
    assert rows[str(tmp_path / "a.wav")].emotion is Emotion.HAPPY
    assert rows["/abs/c.wav"].split is Split.TEST and rows["/abs/c.wav"].emotion is Emotion.SAD
    no_label = rows[str(tmp_path / "d.wav")]
    assert no_label.emotion is None and no_label.transcript is None and no_label.corpus == "mine"


def test_speaker_splits_are_deterministic_and_exact():
    speakers = [f"spk{i}" for i in range(50)]
    first = speaker_splits(speakers, "x", SplitFractions(validation=0.2, test=0.1))
    assert first == speaker_splits(reversed(speakers), "x", SplitFractions(validation=0.2, test=0.1))
    assert Counter(first.values()) == {Split.TRAIN: 35, Split.VALIDATION: 10, Split.TEST: 5}
    assert Counter(speaker_splits(["a", "b", "c"], "x", SplitFractions.from_config()).values()) == dict.fromkeys(
        Split, 1
    )
    assert set(speaker_splits(["a", "b"], "x", SplitFractions.from_config()).values()) <= {Split.TRAIN, Split.TEST}
    assert speaker_splits(["a"], "x", SplitFractions.from_config()) == {"a": Split.TRAIN}
    with pytest.raises(ValueError):
        SplitFractions(validation=0.5, test=0.5)


def test_duplicate_ids_are_rejected():
    row = RawRow(id="x", audio_path="a.wav", speaker="s", language="en", corpus="c")
    with pytest.raises(ValueError, match="not unique"):
        collect([row, row], SplitFractions.from_config())


def test_missing_root_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(Corpus.CREMA_D, tmp_path / "nope")
    with pytest.raises(ValueError, match="no directory recipe"):
        load_corpus(Corpus.SAMPLE, tmp_path)


@pytest.mark.data
@needs_ravdess
def test_real_ravdess_counts_and_manifest_splits():
    with open(RAVDESS_DIR / "manifest.csv", newline="") as f:
        manifest = {Path(rec["path"]).stem: rec for rec in csv.DictReader(f)}
    everything = load_corpus(Corpus.RAVDESS, RAVDESS_DIR, keep_unmapped=True)
    assert len(everything.rows) == 1440 == len(manifest)
    assert len({r.speaker for r in everything.rows}) == 24
    for row in everything.rows:
        rec = manifest[row.id.removeprefix("ravdess-")]
        assert row.split.value == rec["split"] and int(row.speaker) == int(rec["actor"])
        assert row.emotion_original == rec["emotion"] and row.transcript == rec["statement"]
    five = load_corpus(Corpus.RAVDESS, RAVDESS_DIR)
    assert Counter(r.split.value for r in five.rows) == {"train": 792, "validation": 88, "test": 176}
    assert five.label_drops == {"disgust": 192, "fearful": 192}
    per_actor = Counter((r.speaker, r.emotion) for r in five.rows)
    assert all(n == (12 if emotion is Emotion.NEUTRAL else 8) for (_, emotion), n in per_actor.items())
    assert speakers_across_splits(five.rows) == {}
