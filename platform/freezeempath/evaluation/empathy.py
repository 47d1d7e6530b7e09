"""Deterministic empathy check: does a reply acknowledge the emotion the speaker expressed?

In: a reply text and the speaker's emotion. Out: whether the reply carries one of the cues written for that
emotion in :data:`ACKNOWLEDGEMENT_CUES`. A cue is a whole word or phrase ("hard time" matches across any
spacing), or a stem marked ``*`` matched at a word start (``frustrat*`` matches "frustrating" and
"frustrated"). The lists are ours,
written for this check: words an assistant uses to name or answer a feeling ("I'm sorry to hear",
"congratulations", "that's frustrating"). Neutral speech expresses no emotion to acknowledge, so it has no
cues and is not scored; a reply to one emotion may of course carry cues of another, and only the
speaker's emotion counts. The check is a floor, not a judge: it sees acknowledgement, not its quality.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from freezeempath.labels import Emotion

ACKNOWLEDGEMENT_CUES: dict[Emotion, tuple[str, ...]] = {
    Emotion.SAD: (
        "sorry",
        "sad",
        "sadness",
        "heartbreak*",
        "heartbroken",
        "painful",
        "hurt",
        "difficult",
        "hard time",
        "tough",
        "loss",
        "grie*",
        "upset",
        "down",
        "disappoint*",
        "lonely",
        "here for you",
        "not alone",
        "must be hard",
        "must feel",
        "comfort",
    ),
    Emotion.ANGRY: (
        "frustrat*",
        "angry",
        "anger",
        "annoy*",
        "upset",
        "unfair",
        "infuriat*",
        "irritat*",
        "mad",
        "outrag*",
        "understandable",
        "i understand",
        "makes sense",
        "sorry",
        "calm down",
        "take a breath",
    ),
    Emotion.HAPPY: (
        "congrat*",
        "great",
        "wonderful",
        "happy",
        "glad",
        "excit*",
        "awesome",
        "fantastic",
        "thrill*",
        "delight*",
        "amazing",
        "celebrat*",
        "good news",
        "well done",
        "proud",
        "joy",
    ),
    Emotion.SURPRISED: (
        "wow",
        "surpris*",
        "unexpected",
        "amazing",
        "incredible",
        "unbelievable",
        "no way",
        "shock*",
        "astonish*",
        "out of nowhere",
        "didnt see that coming",
        "whoa",
    ),
    Emotion.NEUTRAL: (),
}
"""Cues per emotion, lower case, apostrophes dropped ("didn't" is written "didnt")."""

SCORED_EMOTIONS: tuple[Emotion, ...] = tuple(e for e, cues in ACKNOWLEDGEMENT_CUES.items() if cues)


def _cue_pattern(cue: str) -> str:
    words = r"\s+".join(map(re.escape, cue.removesuffix("*").split()))
    return rf"\b{words}" + ("" if cue.endswith("*") else r"\b")


_PATTERNS = {
    emotion: re.compile("|".join(map(_cue_pattern, cues))) for emotion, cues in ACKNOWLEDGEMENT_CUES.items() if cues
}


def acknowledges(reply: str, emotion: Emotion) -> bool:
    """True when ``reply`` carries a cue of ``emotion``; neutral speech raises (nothing to acknowledge)."""
    if emotion not in _PATTERNS:
        raise ValueError(
            f"{emotion.value} speech expresses no emotion to acknowledge; score {[e.value for e in SCORED_EMOTIONS]}"
        )
    text = reply.lower().replace("’", "'").replace("'", "")
    return _PATTERNS[emotion].search(text) is not None


def acknowledgement_rate(replies: Sequence[str], emotions: Sequence[Emotion]) -> float:
    """Share of replies to emotional speech that acknowledge it (neutral clips are left out)."""
    if len(replies) != len(emotions):
        raise ValueError(f"{len(replies)} replies but {len(emotions)} emotions")
    scored = [(r, e) for r, e in zip(replies, emotions, strict=True) if e in _PATTERNS]
    if not scored:
        raise ValueError("no emotional (non-neutral) clips to score")
    return sum(acknowledges(r, e) for r, e in scored) / len(scored)
