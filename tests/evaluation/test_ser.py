"""SER read from the frozen LLM's label word: scores are the stage-2a training likelihoods, and the report
counts what it should."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from freezeempath.chat_template import IGNORE_INDEX
from freezeempath.data.collate import Collator
from freezeempath.data.pipeline import AudioFeatures
from freezeempath.evaluation.classification import UNREAD
from freezeempath.evaluation.ser import evaluate_ser, label_word_scores, read_label_word
from freezeempath.labels import EMOTIONS, Emotion
from freezeempath.stages import Stage
from helpers import write_tiny_shards


def test_label_word_score_is_the_stage2a_log_likelihood(tiny_cfg, tiny_model, tmp_path):
    path = write_tiny_shards(tmp_path, n_rows=2, n_shards=1, bad_rows=False)[0]
    enc = tiny_cfg.model.encoder
    feats = AudioFeatures(enc.n_mels, enc.window_frames, enc.max_input_seconds)(pq.read_table(path).to_pydict())
    batch = Collator(tiny_model.llm.tokenizer, Stage.S2A, enc.window_frames)(feats)
    scores, aux = label_word_scores(tiny_model, batch.mel, batch.mel_lens)
    assert scores.shape == (2, len(EMOTIONS)) and aux.shape == (2, len(EMOTIONS))
    with torch.no_grad():
        out = tiny_model(batch, Stage.S2A)
    logp = out.text_logits[:, :-1].float().log_softmax(-1)
    targets = out.text_labels[:, 1:]
    for i, word in enumerate(feats["emotion"]):
        known = targets[i] != IGNORE_INDEX
        expected = logp[i, known].gather(-1, targets[i, known][:, None]).sum()
        torch.testing.assert_close(scores[i, Emotion.parse(word).index], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(aux, out.aux_logits.float())


def test_evaluate_reports_every_labelled_clip(tiny_cfg, tiny_model, tmp_path):
    path = write_tiny_shards(tmp_path, n_rows=6, n_shards=1, bad_rows=False)[0]
    rows = pq.read_table(path).to_pydict()
    rows["emotion"][0] = None  # unlabelled rows are left out
    report = evaluate_ser(tiny_model, rows, tiny_cfg.model.encoder, batch_clips=4)
    assert report.clips == 5 and sum(map(sum, report.label_word.confusion)) == 5
    assert 0.0 <= report.label_word.accuracy <= 1.0 and 0.0 <= report.aux.accuracy <= 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sad.", Emotion.SAD.index),
        ("The speaker sounds ANGRY, maybe a little surprised.", Emotion.ANGRY.index),  # the first one named
        ("I hear sadness in your voice.", Emotion.SAD.index),
        ("Their tone is neutral", Emotion.NEUTRAL.index),
        ("a surprise!", Emotion.SURPRISED.index),
        ("I cannot tell.", UNREAD),
        ("unhappy", UNREAD),  # whole words only: "unhappy" is not "happy"
    ],
)
def test_read_label_word_takes_the_first_class_named(text, expected):
    assert read_label_word(text) == expected
