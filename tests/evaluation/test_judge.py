"""The rubric judge: score parsing on hand-made answers, and a real local Hugging Face model as the judge
(the OpenAI-compatible endpoint is tested against our own Serve app in tests/serve/test_openai_contract.py)."""

from __future__ import annotations

import pytest
from freezeempath.evaluation.judge import Judge, parse_scores
from freezeempath.evaluation.suite import JudgeConfig


@pytest.mark.parametrize(
    ("answer", "quality", "empathy"),
    [
        ("Quality: 7; Empathy: 9", 7, 9),
        ("quality=10, EMPATHY = 3.", 10, 3),
        ("Empathy: 4\nQuality: 6", 6, 4),
        ("Quality: 11; Empathy: 0", None, None),  # outside 1..10
        ("I would say it is good.", None, None),
    ],
)
def test_scores_are_read_from_the_judges_answer(answer, quality, empathy):
    score = parse_scores(answer)
    assert (score.quality, score.empathy, score.raw) == (quality, empathy, answer)


def test_a_judge_needs_an_endpoint_or_a_model():
    with pytest.raises(ValueError, match="needs a url"):
        Judge(JudgeConfig())


def test_a_local_hugging_face_model_judges(tmp_path, tiny_cfg):
    from freezeempath.model.build import build_llm

    llm = build_llm(tiny_cfg.model.llm, load_weights=True)  # random tiny Qwen2 + byte-level chat tokenizer
    llm.model.save_pretrained(tmp_path / "judge")
    llm.tokenizer.save_pretrained(tmp_path / "judge")
    judge = Judge(JudgeConfig(path=str(tmp_path / "judge"), max_new_tokens=8))
    first = judge.score("I lost my job.", "sad", "I'm so sorry.")
    assert isinstance(first.raw, str) and first == judge.score("I lost my job.", "sad", "I'm so sorry.")
    assert first == parse_scores(first.raw)  # whatever a random model says is parsed, not guessed
