"""TTS engines as command lines (``CommandSynthesizer``) and the multi-voice TTS corpus (``prepare/tts_corpus.py``,
``jobs/synthesize.py``): real espeak-ng subprocesses, no mocks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from freezeempath.config import load_config
from freezeempath.data.shards import encode_flac
from freezeempath.labels import Emotion
from freezeempath.prepare.recipes import jsonl_manifest
from freezeempath.prepare.synthesis import CommandSynthesizer, EspeakSynthesizer, Synthesizer
from freezeempath.prepare.targets import SpeechMaker, default_synthesizer
from freezeempath.prepare.tts_corpus import clip_id, parse_voice, read_sentences, synthesize_corpus

from jobs import synthesize as synthesize_job

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="apt-get install espeak-ng")
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
)


@needs_espeak
def test_command_synthesizer_reads_stdout_or_the_out_file_alike():
    piped = CommandSynthesizer("espeak-ng -v en-us --stdout")  # text on stdin, audio on stdout
    filed = CommandSynthesizer("espeak-ng -v en-us -w {out} {text}")  # text in argv, audio in a file
    assert isinstance(piped, Synthesizer)
    (a, rate_a), (b, rate_b) = (s.synthesize(SENTENCES[0], Emotion.NEUTRAL) for s in (piped, filed))
    assert rate_a == rate_b == 22_050 and a.shape[0] > 0.5 * rate_a and np.abs(a).max() > 0.05
    np.testing.assert_array_equal(a, b)
    shorter, _ = filed.synthesize("Hi.", Emotion.NEUTRAL)
    assert shorter.shape[0] < a.shape[0] / 2
    # writes only when the text is "write": another text must not read the last call's file
    once = CommandSynthesizer("""sh -c 'test "$0" = write && espeak-ng -w "$1" hello || true' {text} {out}""")
    assert once.synthesize("write", Emotion.NEUTRAL)[0].shape[0] > 0
    with pytest.raises(ValueError, match="wrote no audio"):
        once.synthesize("skip", Emotion.NEUTRAL)


def test_command_synthesizer_fills_placeholders_and_names_bad_commands():
    sad = CommandSynthesizer("true -w {out} {{literal}} {emotion} {text}")
    assert sad.command("hi there", Emotion.SAD, "/o.wav") == ["true", "-w", "/o.wav", "{literal}", "sad", "hi there"]
    assert sad.command("-- hi - there", Emotion.SAD, "/o.wav")[-1] == "hi - there"  # not an option
    with pytest.raises(ValueError, match=r"unknown placeholder.*'{voice}'"):
        CommandSynthesizer("true -v {voice} {text}")
    for positional in ("true {} {text}", "true {0}"):  # would need positional arguments
        with pytest.raises(ValueError, match="unknown placeholder"):
            CommandSynthesizer(positional)
    with pytest.raises(ValueError, match="literal braces"):
        CommandSynthesizer("true {text")
    with pytest.raises(ValueError, match="empty"):
        CommandSynthesizer("  ")
    with pytest.raises(FileNotFoundError, match="no-such-tts"):
        CommandSynthesizer("no-such-tts -o {out}")
    with pytest.raises(subprocess.CalledProcessError):
        CommandSynthesizer("false").synthesize("hello", Emotion.NEUTRAL)
    for silent in ("true", "true {out}"):  # nothing on stdout / no file written
        with pytest.raises(ValueError, match="wrote no audio"):
            CommandSynthesizer(silent).synthesize("hello", Emotion.NEUTRAL)


def test_speech_targets_use_the_configured_command_and_count_its_failures():
    cfg = load_config("tiny", ["targets.tts_command=false {text}"])
    synthesizer = default_synthesizer(cfg)()
    assert isinstance(synthesizer, CommandSynthesizer) and synthesizer.argv == ["false", "{text}"]
    row = {"id": "a", "reply": "I am here for you.", "emotion": "sad", "audio": encode_flac(np.zeros(160), 16_000)}
    assert SpeechMaker(synthesizer).make([row], {}) == ([], {"synthesis_failed": 1})
    if shutil.which("espeak-ng"):
        assert isinstance(default_synthesizer(load_config("tiny"))(), EspeakSynthesizer)


@needs_espeak
def test_tts_corpus_job_writes_a_manifest_per_voice_slice_and_resumes(tmp_path, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join([SENTENCES[0], "", *SENTENCES, SENTENCES[1]]) + "\n")
    assert read_sentences(text) == list(SENTENCES)
    out = tmp_path / "tts"
    header_only = "import sys, wave; w = wave.open(sys.argv[1], 'wb'); w.setnchannels(1); w.setsampwidth(2); "
    header_only += "w.setframerate(16000); w.close()"
    voices = [
        "s0",
        "cmd=espeak-ng -v en-us -w {out} {text}",
        "broken=false",
        f'hollow=python3 -c "{header_only}" {{out}}',
    ]
    summary = synthesize_job.main(["--text", str(text), "--out", str(out), "--per-voice", "2", "--voice", *voices])
    assert json.loads(capsys.readouterr().out) == summary
    assert (summary["clips"], summary["written"], summary["kept"]) == (4, 4, 0)
    assert summary["failed"] == {"broken": 2, "hollow": 2} and summary["seconds"] > 2  # hollow: 0 samples
    rows = list(jsonl_manifest(out / "manifest.jsonl"))
    assert [(r.speaker, r.transcript) for r in rows] == [  # voice k speaks sentences 2k, 2k + 1 (cycling)
        ("s0", SENTENCES[0]),
        ("s0", SENTENCES[1]),
        ("cmd", SENTENCES[2]),
        ("cmd", SENTENCES[0]),
    ]
    assert all(Path(r.audio_path).is_file() and r.split.value == "train" for r in rows)

    assert all(r.id == f"jsonl-{clip_id(r.speaker, r.transcript)}" for r in rows)

    Path(rows[3].audio_path).unlink()  # lost: spoken again; an edited sentence: spoken anew, its old clip unused
    edited = [SENTENCES[0], "Glue the sheet to the light blue background.", SENTENCES[2]]
    again = synthesize_corpus(edited, dict(map(parse_voice, voices[:2])), out, per_voice=2)
    assert (again.clips, again.written, again.kept, again.failed) == (4, 2, 2, {})
    spoken = [r.transcript for r in jsonl_manifest(out / "manifest.jsonl")]
    assert spoken == [edited[0], edited[1], edited[2], edited[0]]
    # more clips per voice than sentences: each sentence once per voice, never a repeated clip
    more = synthesize_corpus(edited, dict(map(parse_voice, voices[:2])), out, per_voice=5)
    ids = [r.id for r in jsonl_manifest(out / "manifest.jsonl")]
    assert more.clips == len(ids) == len(set(ids)) == 6 and more.written == 2


def test_parse_voice_fails_fast_on_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="voice name"):
        parse_voice("my voice=true {out}")
    with pytest.raises(FileNotFoundError, match="no-such-tts"):
        parse_voice("x=no-such-tts {text}")
    with pytest.raises(ValueError, match="no sentences"):
        (tmp_path / "empty.txt").write_text("\n \n")
        read_sentences(tmp_path / "empty.txt")
    if shutil.which("espeak-ng"):
        with pytest.raises(ValueError, match="unknown espeak voice 's99'"):
            parse_voice("s99")
