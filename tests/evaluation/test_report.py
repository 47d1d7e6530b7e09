"""Report aggregation on hand-made answered rows: every figure below was worked out by hand."""

from __future__ import annotations

import json

import pytest
from freezeempath.evaluation.report import build_report, compare, markdown, numbers, write_report
from freezeempath.evaluation.runner import ProbeRows
from freezeempath.evaluation.suite import QuestionSet, Suite

FROZEN = {"hashes": {}, "hashes_match": True, "prompts": 2, "token_identical": 2, "examples": []}


def _row(**kw):
    return {"id": "x", "emotion": None, "transcript": None, "error": None} | kw


def test_scores_of_each_metric(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"id": "q1", "answers": ["Paris"]}\n{"id": "q2", "answers": ["four", "4"]}\n')
    ser = [
        _row(emotion="sad", generated=3, label_word=3, aux=0),
        _row(emotion="sad", generated=-1, label_word=3, aux=3),
        _row(emotion="happy", generated=2, label_word=4, aux=2),
        _row(error="audio is empty (0 bytes)"),
    ]
    asr = [
        _row(transcript="i lost my job", reply="I lost my car."),
        _row(transcript="hello there", reply="hello there"),
    ]
    qa = [
        _row(id="q1", reply="It is Paris.", text_reply="Paris"),
        _row(id="q2", reply="Three.", text_reply="A dog has 4 legs."),
        _row(id="q3", reply="unscored: no gold answer", text_reply=""),
    ]
    emp = [
        _row(emotion="sad", reply="I'm so sorry.", control_reply="Here is a plan."),
        _row(emotion="happy", reply="Okay.", control_reply="Okay."),
        _row(emotion="neutral", reply="Fine.", control_reply="Fine."),  # not scored
    ]
    out = [
        _row(emotion="sad", reply="I am sorry", heard="I am sorry", first_audio_ratio=0.2, voice_emotion="sad",
             f0_hz=100.0, energy_db=-20.0),
        _row(emotion="sad", reply="hold on", heard="hold", first_audio_ratio=0.4, voice_emotion="neutral",
             f0_hz=None, energy_db=-30.0),
    ]  # fmt: skip
    suite = Suite(name="hand", spoken_qa=(QuestionSet("qa", ("unused",), str(answers)),))
    answered = [
        ProbeRows("ser", "a", ser),
        ProbeRows("ser", "b", ser[:1]),
        ProbeRows("asr", "a", asr),
        ProbeRows("spoken_qa", "qa", qa),
        ProbeRows("empathy", "a", emp),
        ProbeRows("speech_out", "a", out),
    ]
    report, confusions = build_report(answered, FROZEN, suite, "bundle-dir")

    a = report["ser"]["sets"]["a"]
    assert a["clips"] == 3 and a["skipped"] == 1
    assert a["generated"]["accuracy"] == pytest.approx(2 / 3) and a["generated"]["unread"] == 1
    assert a["label_word"]["accuracy"] == pytest.approx(2 / 3)
    assert a["label_word"]["uar"] == pytest.approx((1.0 + 0.0) / 2)  # sad 2/2, happy 0/1
    assert a["aux"]["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["ser"]["mean"]["generated_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)  # corpora weigh alike
    assert confusions["a"].confusion[3][5] == 1  # a sad clip whose generated answer named no class

    assert report["asr"]["sets"]["a"]["wer"] == pytest.approx(1 / 6)  # "job" → "car", over 6 reference words
    qa_scores = report["spoken_qa"]["sets"]["qa"]
    assert (qa_scores["questions"], qa_scores["s2t"], qa_scores["t2t"], qa_scores["s2t_over_t2t"]) == (2, 0.5, 1.0, 0.5)
    empathy_scores = report["empathy"]["sets"]["a"]
    assert empathy_scores["with_emotion"] == 0.5 and empathy_scores["without_emotion"] == 0.0
    assert empathy_scores["points_above"] == pytest.approx(50.0) and empathy_scores["clips"] == 2
    speech = report["speech_out"]["sets"]["a"]
    assert speech["wer"] == pytest.approx(1 / 5)  # "on" missing from 5 words of reply text
    assert speech["first_audio_ratio"] == pytest.approx(0.3)
    assert speech["voice"]["sad"] == {"detected": {"sad": 1, "neutral": 1}, "f0_hz": 100.0, "energy_db": -25.0}

    folder = write_report(report, confusions, tmp_path / "report")
    assert json.loads((folder / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (folder / "ser-a.png").read_bytes()[:4] == b"\x89PNG"
    text = markdown(report)
    assert "## ser" in text and "| a | 3 |" in text and "token-identical to the untouched LLM: 2 of 2" in text


def test_compare_lines_up_the_numbers_both_reports_hold():
    mine = {"bundle": "new", "asr": {"sets": {"a": {"wer": 0.25, "clips": 4}}}, "frozen": {"hashes_match": True}}
    other = {"bundle": "old", "asr": {"sets": {"a": {"wer": 0.5, "clips": 4}}}, "ser": {"mean": {"x": 0.1}}}
    assert numbers(mine) == {"asr.sets.a.wer": 0.25, "asr.sets.a.clips": 4.0}  # booleans are no numbers
    table = compare(mine, other)
    assert "| asr.sets.a.wer | 0.25 | 0.5 | -0.25 |" in table and "ser.mean.x" not in table
