"""SER scores computed by hand: accuracy, per-class recall, UAR, confusion, majority rate, the mean over
corpora, and the confusion plot."""

from __future__ import annotations

import pytest
from freezeempath.evaluation.classification import UNREAD, class_scores, plot_confusion, unweighted_mean

ANGRY, SURPRISED, HAPPY, SAD, NEUTRAL = range(5)


def test_scores_of_a_hand_made_set():
    # 3 angry (2 right, 1 read as sad), 1 happy (right), 2 sad (1 right, 1 unread); no surprised or neutral
    labels = [ANGRY, ANGRY, ANGRY, HAPPY, SAD, SAD]
    preds = [ANGRY, ANGRY, SAD, HAPPY, SAD, UNREAD]
    s = class_scores(labels, preds)
    assert s.clips == 6 and s.accuracy == pytest.approx(4 / 6)
    assert s.recall == {"angry": pytest.approx(2 / 3), "surprised": None, "happy": 1.0, "sad": 0.5, "neutral": None}
    assert s.uar == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)  # 0.7222: classes without clips are left out
    assert s.majority_rate == pytest.approx(3 / 6) and s.unread == 1
    assert s.confusion[ANGRY] == [2, 0, 0, 1, 0, 0] and s.confusion[SAD] == [0, 0, 0, 1, 0, 1]


def test_uar_differs_from_accuracy_on_an_unbalanced_set():
    s = class_scores([NEUTRAL] * 9 + [SAD], [NEUTRAL] * 10)  # always "neutral"
    assert s.accuracy == pytest.approx(0.9) and s.uar == pytest.approx(0.5)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        class_scores([0, 1], [0])
    with pytest.raises(ValueError, match="prediction index 7 is outside 0..4"):
        class_scores([0], [7])
    with pytest.raises(ValueError, match="no labelled clips"):
        class_scores([], [])


def test_unweighted_mean_weighs_each_corpus_the_same():
    assert unweighted_mean({"ravdess": 0.9, "crema_d": 0.5}) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no corpora"):
        unweighted_mean({})


def test_confusion_plot_is_a_png(tmp_path):
    path = plot_confusion(class_scores([0, 1, 2], [0, 1, 1]), tmp_path / "plots" / "ser.png", "tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
