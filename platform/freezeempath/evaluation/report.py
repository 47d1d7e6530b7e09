"""Evaluation report: answered rows → scores per metric and set → ``report.json``, ``report.md`` and plots.

In: the :class:`~freezeempath.evaluation.runner.ProbeRows` of a run, its frozen check and its suite.
Out: a nested dict of scores (:func:`build_report`), written by :func:`write_report` with a confusion
matrix PNG per SER set; :func:`compare` lines up two reports' numbers with their differences.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from typing import Any

from freezeempath.evaluation import empathy, spoken_qa
from freezeempath.evaluation.asr import corpus_wer
from freezeempath.evaluation.classification import ClassScores, class_scores, plot_confusion, unweighted_mean
from freezeempath.evaluation.judge import PROMPT_VERSION
from freezeempath.evaluation.probes import label_index
from freezeempath.evaluation.runner import ProbeRows
from freezeempath.evaluation.suite import Suite
from freezeempath.labels import Emotion

READINGS = ("generated", "label_word", "aux")


def _scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("error") is None]


def _class_summary(scores: ClassScores) -> dict[str, Any]:
    return {"accuracy": scores.accuracy, "uar": scores.uar, "recall": scores.recall, "unread": scores.unread}


def ser_set(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, ClassScores]]:
    """SER of one corpus, read three ways (rows without a label are left out)."""
    labelled = [r for r in _scored(rows) if r.get("emotion")]
    labels = [label_index(r["emotion"]) for r in labelled]
    scores = {k: class_scores(labels, [int(r[k]) for r in labelled]) for k in READINGS}
    summary = {"clips": len(labelled), "majority_rate": scores["aux"].majority_rate}
    return summary | {k: _class_summary(v) for k, v in scores.items()}, scores


def asr_set(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """ASR-WER through the frozen LLM: transcripts against the LLM's written-down replies."""
    scored = [r for r in _scored(rows) if r.get("transcript")]
    return {"clips": len(scored), "wer": corpus_wer([r["transcript"] for r in scored], [r["reply"] for r in scored])}


def spoken_qa_set(rows: list[dict[str, Any]], answers_file: str) -> dict[str, Any]:
    """S2T and T2T accuracy of the questions whose gold answers the suite's JSONL gives, and their ratio."""
    gold = {}
    for line in Path(answers_file).read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            gold[item["id"]] = item["answers"]
    scored = [r for r in _scored(rows) if r["id"] in gold]
    if not scored:
        raise ValueError(f"no answered question has gold answers in {answers_file}")
    answers = [gold[r["id"]] for r in scored]
    s2t = spoken_qa.accuracy([r["reply"] for r in scored], answers)
    t2t = spoken_qa.accuracy([r["text_reply"] for r in scored], answers)
    return {"questions": len(scored), "s2t": s2t, "t2t": t2t, "s2t_over_t2t": spoken_qa.speech_over_text(s2t, t2t)}


def empathy_set(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Acknowledgement rate with and without the emotion slot, on the emotional (non-neutral) clips."""
    scored = [r for r in _scored(rows) if r.get("emotion") and Emotion.parse(r["emotion"]) in empathy.SCORED_EMOTIONS]
    if not scored:
        return {"clips": 0}
    emotions = [Emotion.parse(r["emotion"]) for r in scored]
    with_slot = empathy.acknowledgement_rate([r["reply"] for r in scored], emotions)
    without = empathy.acknowledgement_rate([r["control_reply"] for r in scored], emotions)
    scores = {
        "clips": len(scored),
        "with_emotion": with_slot,
        "without_emotion": without,
        "points_above": 100 * (with_slot - without),
    }
    if any("judge_empathy" in r for r in scored):
        judged = [r for r in scored if r.get("judge_quality") is not None and r.get("judge_empathy") is not None]
        scores["judge"] = {
            "prompt": PROMPT_VERSION,
            "parsed": len(judged),
            "quality": fmean(r["judge_quality"] for r in judged) if judged else None,
            "empathy": fmean(r["judge_empathy"] for r in judged) if judged else None,
        }
    return scores


def speech_out_set(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spoken replies: WER of what Whisper hears against the reply text, first audio ÷ reply, and per user
    emotion what the extractor detects in the reply voice, its mean F0 and energy."""
    scored = [r for r in _scored(rows) if r.get("first_audio_ratio") is not None]
    heard = [r for r in scored if r.get("heard") is not None and r["reply"]]
    by_emotion: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in scored:
        by_emotion[r.get("emotion") or "unlabelled"].append(r)
    return {
        "clips": len(scored),
        "wer": corpus_wer([r["reply"] for r in heard], [r["heard"] for r in heard]) if heard else None,
        "first_audio_ratio": fmean(r["first_audio_ratio"] for r in scored) if scored else None,
        "voice": {
            emotion: {
                "detected": dict(Counter(r["voice_emotion"] for r in group)),
                "f0_hz": _mean(r["f0_hz"] for r in group),
                "energy_db": _mean(r["energy_db"] for r in group),
            }
            for emotion, group in sorted(by_emotion.items())
        },
    }


def _mean(values: Iterator[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def build_report(
    answered: list[ProbeRows], frozen: dict[str, Any], suite: Suite, bundle: str
) -> tuple[dict[str, Any], dict[str, ClassScores]]:
    """Scores of every set (and the SER means over corpora); also the generated-word scores per SER set."""
    report: dict[str, Any] = {"bundle": bundle, "suite": suite.name, "frozen": frozen}
    confusions: dict[str, ClassScores] = {}
    answers = {q.name: q.answers for q in suite.spoken_qa}
    for result in answered:
        skipped = sum(r.get("error") is not None for r in result.rows)
        if result.probe == "ser":
            scores, by_reading = ser_set(result.rows)
            confusions[result.name] = by_reading["generated"]
        elif result.probe == "asr":
            scores = asr_set(result.rows)
        elif result.probe == "spoken_qa":
            scores = spoken_qa_set(result.rows, answers[result.name])
        elif result.probe == "empathy":
            scores = empathy_set(result.rows)
        else:
            scores = speech_out_set(result.rows)
        report.setdefault(result.probe, {}).setdefault("sets", {})[result.name] = scores | {"skipped": skipped}
    if "ser" in report:
        sets = report["ser"]["sets"]
        report["ser"]["mean"] = {
            f"{k}_{m}": unweighted_mean({n: s[k][m] for n, s in sets.items()})
            for k in READINGS
            for m in ("accuracy", "uar")
        }
    return report, confusions


def write_report(report: dict[str, Any], confusions: dict[str, ClassScores], out_dir: str | Path) -> Path:
    """``report.json``, ``report.md`` and ``ser-<set>.png`` in ``out_dir``; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, scores in confusions.items():
        plot_confusion(scores, out / f"ser-{name}.png", f"SER {name}: label word the LLM generates")
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (out / "report.md").write_text(markdown(report))
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables, one per metric."""
    lines = [f"# Evaluation of `{report['bundle']}` on suite `{report['suite']}`", ""]
    for metric in ("ser", "asr", "spoken_qa", "empathy", "speech_out"):
        if metric not in report:
            continue
        sets = report[metric]["sets"]
        columns = [k for k, v in next(iter(sets.values())).items() if not isinstance(v, dict) or k in READINGS]
        lines += [f"## {metric}", "", "| set | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, scores in sets.items():
            lines.append(f"| {name} | " + " | ".join(_cell(scores.get(c)) for c in columns) + " |")
        if "mean" in report[metric]:
            lines += [
                "",
                "Unweighted mean over corpora: "
                + ", ".join(f"{k} {_cell(v)}" for k, v in report[metric]["mean"].items()),
            ]
        lines.append("")
    frozen = report["frozen"]
    lines += [
        "## frozen",
        "",
        f"Frozen hashes match the bundle: {frozen['hashes_match']}; text-only answers token-identical to the "
        f"untouched LLM: {frozen['token_identical']} of {frozen['prompts']}.",
        "",
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "accuracy" in value:
        return f"{value['accuracy']:.3f} (UAR {value['uar']:.3f})"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def numbers(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a report by its dotted path."""
    out: dict[str, float] = {}
    for key, value in report.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= numbers(value, path + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def compare(report: dict[str, Any], other: dict[str, Any]) -> str:
    """Markdown table of the numbers both reports hold: this run, the other, and the difference."""
    mine, theirs = numbers(report), numbers(other)
    lines = [
        f"# `{report['bundle']}` vs `{other['bundle']}`",
        "",
        "| metric | this run | other | difference |",
        "|---|---|---|---|",
    ]
    for key in sorted(set(mine) & set(theirs)):
        lines.append(f"| {key} | {mine[key]:.4g} | {theirs[key]:.4g} | {mine[key] - theirs[key]:+.4g} |")
    return "\n".join(lines) + "\n"
