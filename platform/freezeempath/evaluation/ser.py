"""Speech emotion recognition read from the frozen LLM's label word.

In: a model (trained parts loaded) and columnar rows with ``audio``/``sample_rate``/``emotion`` (shards).
Out: :class:`SerReport` — for each clip the stage-2a prompt (spoken turn + SER instruction) is scored with
each of the five label words as the reply, and the word the frozen LLM finds most likely (reply tokens and
end of turn, summed log-probabilities) is the prediction; the aux classifier's scores come with it.
:func:`read_label_word` reads the class a generated answer names (the paper's protocol).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from freezeempath import prompts
from freezeempath.batch import SpeechChatBatch
from freezeempath.chat_template import IGNORE_INDEX, Turn, render
from freezeempath.config import EncoderConfig
from freezeempath.data.collate import pad_mels
from freezeempath.data.pipeline import AudioFeatures
from freezeempath.evaluation.classification import UNREAD, ClassScores, class_scores
from freezeempath.labels import EMOTIONS, Emotion


@dataclass(frozen=True)
class SerReport:
    """SER over ``clips`` labelled clips, read two ways: the most likely of the five label words after the
    stage-2a prompt (``label_word``), and the auxiliary head's top class (``aux``)."""

    clips: int
    label_word: ClassScores
    aux: ClassScores


_WORD_FORMS = {
    Emotion.ANGRY: ("angry", "anger", "angrily"),
    Emotion.SURPRISED: ("surprised", "surprise", "surprising"),
    Emotion.HAPPY: ("happy", "happiness", "happily"),
    Emotion.SAD: ("sad", "sadness", "sadly"),
    Emotion.NEUTRAL: ("neutral",),
}
_FORM_PATTERN = re.compile(r"\b(" + "|".join(f for forms in _WORD_FORMS.values() for f in forms) + r")\b")
_FORM_CLASS = {f: e.index for e, forms in _WORD_FORMS.items() for f in forms}


def read_label_word(text: str) -> int:
    """The class a generated answer names (the paper's protocol): the first label word or its noun or adverb
    form in ``text``, any case; ``UNREAD`` when it names none."""
    found = _FORM_PATTERN.search(text.lower())
    return _FORM_CLASS[found.group(1)] if found else UNREAD


@torch.no_grad()
def label_word_scores(model: Any, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mel (C, n_mels, F)``, ``mel_lens (C,)`` → label-word log-likelihoods ``(C, 5)`` and aux logits ``(C, 5)``.

    The prompt the five replies share runs once per clip; its KV cache is then repeated for the five label
    words, which run together (demo preset, 4 clips: 5.5 s → 2.1 s; the encoder is most of the rest).
    """
    tok = model.llm.tokenizer
    turn = Turn("user", prompts.SER_INSTRUCTION, spoken=True)
    rendered = [render(tok, [turn], reply=e.value) for e in EMOTIONS]
    p, c, k = _shared_prefix(rendered), mel.shape[0], len(EMOTIONS)
    prefix = torch.tensor(rendered[0].input_ids[:p])
    clips = torch.arange(c)
    batch = SpeechChatBatch(
        mel=mel,
        mel_lens=mel_lens,
        input_ids=[prefix] * c,
        labels=[torch.full_like(prefix, IGNORE_INDEX)] * c,
        speech_clips=clips,
        emotion_clips=clips,
        emotion_labels=torch.full((c,), IGNORE_INDEX),
    )
    und = model.understand(mel, mel_lens)
    fused = model.fuse(batch, und, padding_side="left")  # left: the words continue every row at its end
    out = model.llm(fused.embeds, fused.attention_mask, use_cache=True, last_logits_only=True)
    out.cache.batch_repeat_interleave(k)  # clip-major rows: clip 0 × 5 words, clip 1 × 5, ...
    tails = nn.utils.rnn.pad_sequence([torch.tensor(r.input_ids[p:]) for r in rendered], batch_first=True)
    known = nn.utils.rnn.pad_sequence(
        [torch.tensor(r.labels[p:]) for r in rendered], batch_first=True, padding_value=IGNORE_INDEX
    ).ne(IGNORE_INDEX)  # (5, n): reply tokens and end of turn
    rows = tails.repeat(c, 1)  # (C·5, n): the five words after every clip
    valid = torch.ones_like(rows)  # padding is never scored, and only follows real tokens
    mask = torch.cat([fused.attention_mask.repeat_interleave(k, 0), valid], dim=1)
    words = model.llm(model.llm.embed(rows), mask, cache=out.cache, use_cache=True).logits
    first = out.logits[:, -1:].repeat_interleave(k, 0)  # (C·5, 1, V): predicts each word's first token
    logp = torch.cat([first, words[:, :-1]], dim=1).float().log_softmax(-1)  # (C·5, n, V)
    picked = logp.gather(-1, rows[..., None]).squeeze(-1)  # (C·5, n)
    return (picked * known.repeat(c, 1)).sum(-1).view(c, k), und.aux_logits.float()


def _shared_prefix(rendered: list[Any]) -> int:
    """Length of the token prefix every rendering shares, cut before the first scored token."""
    ids = [r.input_ids for r in rendered]
    p = 0
    while all(len(x) > p for x in ids) and len({x[p] for x in ids}) == 1:
        p += 1
    first_label = min(next(i for i, t in enumerate(r.labels) if t != IGNORE_INDEX) for r in rendered)
    return min(p, first_label)


def evaluate_ser(model: Any, rows: dict[str, list], enc: EncoderConfig, batch_clips: int = 4) -> SerReport:
    """Score every labelled row of ``rows`` (a columnar shard table) with the training features."""
    labelled = [i for i, word in enumerate(rows["emotion"]) if word]
    rows = {key: [column[i] for i in labelled] for key, column in rows.items()}
    feats = AudioFeatures(enc.n_mels, enc.window_frames, enc.max_input_seconds)(rows)
    window_frames = enc.window_frames
    labels = [Emotion.parse(w).index for w in feats["emotion"]]
    word_pred, aux_pred = [], []
    for start in range(0, len(labels), batch_clips):
        part = slice(start, start + batch_clips)
        mel = pad_mels(list(feats["mel"][part]), list(feats["mel_floor"][part]), window_frames)
        lens = torch.tensor([int(x) for x in feats["mel_len"][part]])
        scores, aux = label_word_scores(model, mel, lens)
        word_pred += scores.argmax(-1).tolist()
        aux_pred += aux.argmax(-1).tolist()
    return _report(labels, word_pred, aux_pred)


def _report(labels: list[int], word_pred: list[int], aux_pred: list[int]) -> SerReport:
    return SerReport(clips=len(labels), label_word=class_scores(labels, word_pred), aux=class_scores(labels, aux_pred))
