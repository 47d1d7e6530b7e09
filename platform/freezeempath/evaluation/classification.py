"""Classification scores for speech emotion recognition: accuracy, per-class recall, UAR and confusion.

In: true class indices and predicted ones (``-1`` where no class could be read, e.g. a generated reply
that names no label word). Out: :class:`ClassScores`; :func:`unweighted_mean` averages a score over
corpora (each corpus weighs the same, as the paper's SER mean does); :func:`plot_confusion` draws one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from freezeempath.labels import LABEL_WORDS

UNREAD = -1
"""Prediction index for "no class could be read": always wrong, counted in ``ClassScores.unread``."""


@dataclass(frozen=True)
class ClassScores:
    """Scores over ``clips`` labelled clips.

    Attributes:
        accuracy: correct / clips.
        recall: per class name, correct / clips of that class; ``None`` for a class with no clip.
        uar: unweighted average recall, the mean of ``recall`` over the classes that have clips.
        confusion: ``confusion[true][pred]`` counts; a last column counts unread predictions.
        majority_rate: the accuracy of always answering the commonest true class.
        unread: predictions that named no class.
    """

    clips: int
    accuracy: float
    recall: dict[str, float | None]
    uar: float
    confusion: list[list[int]]
    majority_rate: float
    unread: int


def class_scores(
    labels: Sequence[int], predictions: Sequence[int], classes: Sequence[str] = LABEL_WORDS
) -> ClassScores:
    """Score ``predictions`` against ``labels`` (indices into ``classes``; predictions may be ``UNREAD``)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("no labelled clips to score")
    k = len(classes)
    for name, values, low in (("label", labels, 0), ("prediction", predictions, UNREAD)):
        bad = [v for v in values if not low <= v < k]
        if bad:
            raise ValueError(f"{name} index {bad[0]} is outside 0..{k - 1}")
    confusion = [[0] * (k + 1) for _ in range(k)]
    for t, p in zip(labels, predictions, strict=True):
        confusion[t][p if p != UNREAD else k] += 1
    support = [sum(row) for row in confusion]
    recall = {c: (confusion[i][i] / support[i] if support[i] else None) for i, c in enumerate(classes)}
    present = [r for r in recall.values() if r is not None]
    return ClassScores(
        clips=len(labels),
        accuracy=sum(confusion[i][i] for i in range(k)) / len(labels),
        recall=recall,
        uar=sum(present) / len(present),
        confusion=confusion,
        majority_rate=max(support) / len(labels),
        unread=sum(row[k] for row in confusion),
    )


def unweighted_mean(per_corpus: Mapping[str, float]) -> float:
    """Mean of one score over corpora, each corpus weighing the same whatever its size."""
    if not per_corpus:
        raise ValueError("no corpora to average")
    return sum(per_corpus.values()) / len(per_corpus)


def plot_confusion(scores: ClassScores, path: str | Path, title: str, classes: Sequence[str] = LABEL_WORDS) -> Path:
    """Draw the confusion matrix (rows: true class, columns: prediction, last column: unread) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = [*classes, "unread"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(columns), 1.2 + 0.8 * len(classes)))
    ax.imshow(scores.confusion, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(scores.confusion):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    ax.set_title(f"{title}\naccuracy {scores.accuracy:.1%}, UAR {scores.uar:.1%}, {scores.clips} clips")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
