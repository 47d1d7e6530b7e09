"""SpokenQA scoring by hand: normalisation, containment of a gold answer, accuracy and S2T ÷ T2T."""

from __future__ import annotations

import pytest
from freezeempath.evaluation.spoken_qa import accuracy, is_correct, normalize_answer, speech_over_text


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("  The  Eiffel Tower, in PARIS! ") == "eiffel tower in paris"
    assert normalize_answer("It's an apple.") == "its apple"


@pytest.mark.parametrize(
    ("reply", "answers", "expected"),
    [
        ("I think it's the Pacific Ocean.", ["Pacific Ocean"], True),
        ("That would be Paris, France.", ["London", "paris"], True),
        ("It is a sparrow.", ["Paris"], False),  # "paris" is no whole word of the reply
        ("The answer is 42", ["the 42"], True),  # articles go on both sides
        ("No idea.", [""], False),  # an empty gold answer never matches
    ],
)
def test_a_reply_is_correct_when_it_contains_a_gold_answer(reply, answers, expected):
    assert is_correct(reply, answers) is expected


def test_accuracy_and_the_speech_over_text_ratio():
    replies = ["Paris.", "I don't know.", "Mount Everest, of course", "blue"]
    golds = [["Paris"], ["Jupiter"], ["Everest"], ["red"]]
    assert accuracy(replies, golds) == pytest.approx(2 / 4)
    assert speech_over_text(0.4, 0.5) == pytest.approx(0.8)
    assert speech_over_text(0.3, 0.0) is None
    with pytest.raises(ValueError, match="2 replies but 1 answer lists"):
        accuracy(["a", "b"], [["a"]])
