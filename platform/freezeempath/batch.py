"""Batch and output dataclasses shared by the model, the losses and the data pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecoderOutput:
    """Teacher-forced pass: ``logits (B, L, V)``, ``labels (B, L)`` (units at unit positions), ``loss``."""

    logits: torch.Tensor
    labels: torch.Tensor
    loss: torch.Tensor
    lens: torch.Tensor


@dataclass(frozen=True)
class SpeechChatBatch:
    """A training or inference batch of ``B`` token sequences over ``C`` audio clips.

    Slots refer to clips by index, so a ``<speech>`` slot and an ``<emotion>`` slot of the same
    turn may come from different clips (stage 2b: content speech and emotion speech).

    Attributes:
        mel: ``(C, n_mels, F)`` log-mel of each clip (one encoder window).
        mel_lens: ``(C,)`` valid mel frames per clip.
        input_ids: ``B`` tensors ``(L_b,)`` with slot sentinels (see ``model.fusion``).
        labels: ``B`` tensors ``(L_b,)``; ``IGNORE_INDEX`` except the reply.
        speech_clips: ``(N_s,)`` clip index of each ``<speech>`` slot, in reading order.
        emotion_clips: ``(N_e,)`` clip index of each ``<emotion>`` slot, in reading order.
        emotion_labels: ``(C,)`` canonical class index per clip, ``IGNORE_INDEX`` when unknown.
        units: ``(B, M)`` target speech units of each reply (stage 3), or None.
        unit_lens: ``(B,)`` valid units per reply, or None.
        reply_hidden: ``(B, n, D_llm)`` cached LLM states of the reply tokens (stage 3 from cache), or None.
        reply_tokens: ``(B, n)`` the reply tokens those states predicted, or None.
        reply_lens: ``(B,)`` valid reply tokens, or None.
        row_ids: the shard ``id`` of each of the ``B`` rows (training: the rows a step consumed), or ().
    """

    mel: torch.Tensor
    mel_lens: torch.Tensor
    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    speech_clips: torch.Tensor
    emotion_clips: torch.Tensor
    emotion_labels: torch.Tensor
    units: torch.Tensor | None = None
    unit_lens: torch.Tensor | None = None
    reply_hidden: torch.Tensor | None = None
    reply_tokens: torch.Tensor | None = None
    reply_lens: torch.Tensor | None = None
    row_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Understanding:
    """What the speech side produces per clip: S with lengths, E, and aux logits."""

    speech: torch.Tensor  # (C, T_s, D_llm)
    speech_lens: torch.Tensor  # (C,)
    emotion: torch.Tensor  # (C, 1, D_llm)
    aux_logits: torch.Tensor  # (C, 5)


@dataclass(frozen=True)
class ChatOutput:
    """Model outputs for the losses: LLM logits and labels, aux logits, decoder pass (stage 3)."""

    text_logits: torch.Tensor  # (B, L, V)
    text_labels: torch.Tensor  # (B, L)
    aux_logits: torch.Tensor  # (C, 5)
    emotion_labels: torch.Tensor  # (C,)
    units: DecoderOutput | None = None


def batch_to(batch: SpeechChatBatch, device: torch.device | str) -> SpeechChatBatch:
    """Move every tensor of a batch to ``device``."""
    import dataclasses

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    return dataclasses.replace(batch, **{f.name: move(getattr(batch, f.name)) for f in dataclasses.fields(batch)})
