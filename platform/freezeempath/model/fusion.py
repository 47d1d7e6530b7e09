"""Prompt fusion: fill ``<speech>`` and ``<emotion>`` slots of token sequences with feature rows.

In: per-sequence token ids holding sentinel ids at the slots, their labels, the speech rows of each
``<speech>`` slot (with lengths) and one emotion row per ``<emotion>`` slot, in reading order.
Out: :class:`FusedInputs` — padded ``inputs_embeds``, attention mask and labels for the frozen LLM.
A pure function with a count check: placeholders and features must match one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from freezeempath.chat_template import EMOTION_TOKEN_ID, IGNORE_INDEX, SPEECH_TOKEN_ID


@dataclass(frozen=True)
class FusedInputs:
    """LLM inputs after the merge: ``embeds (B, L, D)``, ``attention_mask (B, L)``, ``labels (B, L)``."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    lens: torch.Tensor  # (B,) valid rows per sequence


def merge_placeholders(
    input_ids: list[torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    speech: torch.Tensor,
    speech_lens: torch.Tensor,
    emotion: torch.Tensor,
    labels: list[torch.Tensor] | None = None,
    padding_side: Literal["left", "right"] = "right",
) -> FusedInputs:
    """Merge slot features into embedded token sequences.

    Args:
        input_ids: ``B`` tensors ``(L_b,)``; ``SPEECH_TOKEN_ID`` / ``EMOTION_TOKEN_ID`` mark slots.
        embed: token ids → embeddings (the LLM's own table).
        speech: ``(N_s, T_s, D)`` rows for the ``N_s`` speech slots, in reading order over the batch.
        speech_lens: ``(N_s,)`` valid rows of each speech slot (``L_S``).
        emotion: ``(N_e, 1, D)`` one row per emotion slot, in reading order.
        labels: optional ``B`` tensors ``(L_b,)``; inserted rows get ``IGNORE_INDEX``.
        padding_side: ``right`` for training, ``left`` for batched generation.

    Raises:
        ValueError: when slot counts and feature counts differ.
    """
    n_speech = sum(int((ids == SPEECH_TOKEN_ID).sum()) for ids in input_ids)
    n_emotion = sum(int((ids == EMOTION_TOKEN_ID).sum()) for ids in input_ids)
    if n_speech != speech.shape[0] or n_emotion != emotion.shape[0]:
        raise ValueError(
            f"placeholder/feature mismatch: {n_speech} <speech> slots for {speech.shape[0]} speech features, "
            f"{n_emotion} <emotion> slots for {emotion.shape[0]} emotion vectors"
        )
    labels = labels if labels is not None else [torch.full_like(ids, IGNORE_INDEX) for ids in input_ids]
    rows, targets = [], []
    cursor = {"speech": 0, "emotion": 0}
    for ids, lab in zip(input_ids, labels, strict=True):
        text = embed(ids.clamp(min=0))  # (L_b, D); slot rows are replaced below
        seq_rows, seq_labels = [], []
        for pos, token in enumerate(ids.tolist()):
            if token == SPEECH_TOKEN_ID:
                i = cursor["speech"]
                n = int(speech_lens[i])
                seq_rows.append(speech[i, :n])
                seq_labels.append(torch.full((n,), IGNORE_INDEX, dtype=torch.long))
                cursor["speech"] += 1
            elif token == EMOTION_TOKEN_ID:
                seq_rows.append(emotion[cursor["emotion"]].reshape(1, -1))
                seq_labels.append(torch.full((1,), IGNORE_INDEX, dtype=torch.long))
                cursor["emotion"] += 1
            else:
                seq_rows.append(text[pos : pos + 1])
                seq_labels.append(lab[pos : pos + 1].long().cpu())
        rows.append(torch.cat(seq_rows))
        targets.append(torch.cat(seq_labels))
    return _pad(rows, targets, padding_side)


def _pad(rows: list[torch.Tensor], targets: list[torch.Tensor], side: str) -> FusedInputs:
    lens = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    b, length, d = len(rows), int(lens.max()), rows[0].shape[-1]
    embeds = rows[0].new_zeros(b, length, d)
    mask = torch.zeros(b, length, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        span = slice(length - r.shape[0], length) if side == "left" else slice(0, r.shape[0])
        embeds[i, span] = r
        mask[i, span] = 1
        labels[i, span] = t
    device = rows[0].device
    return FusedInputs(embeds=embeds, attention_mask=mask.to(device), labels=labels.to(device), lens=lens)
