"""The acknowledgement check on hand-made replies: each emotion's cues, whole words vs stems, neutral."""

from __future__ import annotations

import pytest
from freezeempath.evaluation.empathy import SCORED_EMOTIONS, acknowledgement_rate, acknowledges
from freezeempath.labels import Emotion


@pytest.mark.parametrize(
    ("reply", "emotion", "expected"),
    [
        ("I'm so sorry to hear you lost your job. That must be hard.", Emotion.SAD, True),
        ("That sounds really tough; I'm here for you.", Emotion.SAD, True),
        ("Here is a list of job boards you can check.", Emotion.SAD, False),
        ("That's so frustrating, anyone would be upset.", Emotion.ANGRY, True),
        ("It’s understandable to feel that way.", Emotion.ANGRY, True),  # typographic apostrophe
        ("I made a plan for your week.", Emotion.ANGRY, False),  # "made" is not "mad"
        ("Congratulations on the new job!", Emotion.HAPPY, True),
        ("You should update your résumé.", Emotion.HAPPY, False),
        ("Wow, I didn't see that coming!", Emotion.SURPRISED, True),
        ("What a surprising turn of events.", Emotion.SURPRISED, True),
        ("Please download the form.", Emotion.SAD, False),  # "download" is not "down"
    ],
)
def test_replies_that_name_or_answer_the_feeling_acknowledge_it(reply, emotion, expected):
    assert acknowledges(reply, emotion) is expected


def test_only_the_speakers_emotion_counts():
    assert acknowledges("Congratulations!", Emotion.HAPPY) and not acknowledges("Congratulations!", Emotion.SAD)


def test_rate_leaves_neutral_clips_out():
    replies = ["I'm sorry.", "Great news!", "The weather is mild.", "Okay."]
    emotions = [Emotion.SAD, Emotion.HAPPY, Emotion.ANGRY, Emotion.NEUTRAL]
    assert acknowledgement_rate(replies, emotions) == pytest.approx(2 / 3)
    assert Emotion.NEUTRAL not in SCORED_EMOTIONS
    with pytest.raises(ValueError, match="neutral speech expresses no emotion"):
        acknowledges("fine", Emotion.NEUTRAL)
    with pytest.raises(ValueError, match="no emotional"):
        acknowledgement_rate(["ok"], [Emotion.NEUTRAL])
