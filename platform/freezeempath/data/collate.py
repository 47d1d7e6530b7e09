"""Collate pipeline rows into a :class:`~freezeempath.batch.SpeechChatBatch` (runs on the train workers).

In: a columnar batch from :func:`freezeempath.data.pipeline.build_dataset` (cropped mels with lengths and
floor values, text and unit targets). Out: padded mels of one encoder window, the stage's chat template
with reply-only labels, slot → clip indices, emotion labels and padded units with lengths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from freezeempath import prompts
from freezeempath.batch import SpeechChatBatch
from freezeempath.chat_template import IGNORE_INDEX, Turn, render
from freezeempath.data.shards import cached_batch_arrays
from freezeempath.labels import Emotion
from freezeempath.stages import Stage


def pad_mels(mels: list[np.ndarray], floors: list[float], window_frames: int) -> torch.Tensor:
    """Cropped ``(n_mels, K)`` mels → ``(C, n_mels, window_frames)`` padded with each clip's floor value."""
    n_mels = mels[0].shape[0]
    out = torch.empty(len(mels), n_mels, window_frames)
    for i, (mel, floor) in enumerate(zip(mels, floors, strict=True)):
        out[i] = float(floor)
        out[i, :, : mel.shape[1]] = torch.from_numpy(np.array(mel, dtype=np.float32))  # a writable copy
    return out


class Collator(NumpyBatchCollateFn):
    """Builds the stage's prompts and targets; holds the LLM tokenizer (no model weights).

    Per stage: 1 — spoken turn → the frozen LLM's reply; 2a — spoken turn + SER instruction → the label
    word; 2b — content speech with E from the emotion clip → the pseudo-empathetic reply; 3a — the
    transcript as text → reply and its units; 3b — spoken turn → reply and its units.
    """

    def __init__(self, tokenizer: Any, stage: Stage, window_frames: int) -> None:
        self.tokenizer = tokenizer
        self.stage = stage
        self.window_frames = window_frames

    def __call__(self, batch: dict[str, Any]) -> SpeechChatBatch:
        """Columnar batch → :class:`SpeechChatBatch`."""
        if self.stage.speech_stage and "reply_hidden" in batch and batch["reply_hidden"][0] is not None:
            return self._cached(batch)
        n = len(batch["mel_len"])
        paired = "emotion_mel" in batch and self.stage is Stage.S2B
        mels, lens, floors = list(batch["mel"]), list(batch["mel_len"]), list(batch["mel_floor"])
        if paired:  # stage 2b: E from a second clip per row, stored after the content clips
            mels += list(batch["emotion_mel"])
            lens += list(batch["emotion_mel_len"])
            floors += list(batch["emotion_mel_floor"])
        ids, labels = [], []
        for i in range(n):
            p = render(self.tokenizer, [self._turn(batch, i)], reply=self._reply(batch, i))
            ids.append(torch.tensor(p.input_ids))
            labels.append(torch.tensor(p.labels))
        spoken = self.stage is not Stage.S3A
        clips = torch.arange(n) if spoken else torch.zeros(0, dtype=torch.long)
        emotion_labels = torch.tensor([_label(batch, i) for i in range(n)] + ([IGNORE_INDEX] * n if paired else []))
        units, unit_lens = self._units(batch) if self.stage.speech_stage else (None, None)
        return SpeechChatBatch(
            mel=pad_mels(mels, floors, self.window_frames),
            mel_lens=torch.tensor([int(x) for x in lens]),
            input_ids=ids,
            labels=labels,
            speech_clips=clips,
            emotion_clips=clips + n if paired else clips,
            emotion_labels=emotion_labels,
            units=units,
            unit_lens=unit_lens,
            row_ids=_row_ids(batch),
        )

    def _cached(self, batch: dict[str, Any]) -> SpeechChatBatch:
        """Stage 3 from the reply-state cache: no audio, no prompt; the decoder reads the cached states."""
        hidden, tokens, lens = cached_batch_arrays(batch)
        units, unit_lens = self._units(batch)
        none = torch.zeros(0, dtype=torch.long)
        return SpeechChatBatch(
            mel=torch.zeros(0, 0, self.window_frames),
            mel_lens=none,
            input_ids=[],
            labels=[],
            speech_clips=none,
            emotion_clips=none,
            emotion_labels=none,
            units=units,
            unit_lens=unit_lens,
            reply_hidden=hidden,
            reply_tokens=tokens,
            reply_lens=lens,
            row_ids=_row_ids(batch),
        )

    def _turn(self, batch: dict[str, Any], i: int) -> Turn:
        if self.stage is Stage.S3A:
            return Turn("user", _text(batch, "transcript", i) or "Say this.")
        return Turn("user", prompts.SER_INSTRUCTION if self.stage is Stage.S2A else "", spoken=True)

    def _reply(self, batch: dict[str, Any], i: int) -> str:
        if self.stage is Stage.S2A:
            return Emotion.parse(_text(batch, "emotion", i)).value
        reply = _text(batch, "reply", i)
        if not reply:
            raise ValueError(f"row {_text(batch, 'id', i)!r} has no reply for stage {self.stage.value}")
        return reply

    def _units(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [torch.as_tensor(np.asarray(u, dtype=np.int64)) for u in batch["reply_units"]]
        lens = torch.tensor([s.numel() for s in seqs])
        out = torch.zeros(len(seqs), int(lens.max()), dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : s.numel()] = s
        return out, lens


def _text(batch: dict[str, Any], key: str, i: int) -> str:
    if key not in batch or batch[key][i] is None:
        return ""
    value = batch[key][i]
    return value.decode() if isinstance(value, bytes) else str(value)


def _row_ids(batch: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(x) for x in batch["id"])


def _label(batch: dict[str, Any], i: int) -> int:
    word = _text(batch, "emotion", i)
    return Emotion.parse(word).index if word else IGNORE_INDEX
