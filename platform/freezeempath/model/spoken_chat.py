"""The FreezeEmpath model: built parts composed into one forward pass per training stage.

In: a :class:`~freezeempath.batch.SpeechChatBatch`. Out: a :class:`~freezeempath.batch.ChatOutput`.
Flow: log-mel → frozen encoder → adapter (S) and emotion extractor (E) → slots filled in the prompt
embeddings → frozen LLM → (stage 3) speech decoder over the reply's hidden states.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from freezeempath.audio import WhisperLogMel
from freezeempath.batch import ChatOutput, SpeechChatBatch, Understanding
from freezeempath.chat_template import IGNORE_INDEX
from freezeempath.model.adapter import FrameStackAdapter
from freezeempath.model.emotion import AuxEmotionHead, EmotionExtractor
from freezeempath.model.encoder import EncoderOutput, SpeechEncoder
from freezeempath.model.fusion import FusedInputs, merge_placeholders
from freezeempath.model.llm import FrozenLLM
from freezeempath.model.speech_decoder import SpeechDecoder
from freezeempath.stages import ALWAYS_FROZEN, Stage


class FreezeEmpathModel(nn.Module):
    """Composition of the parts; owns no weights of its own.

    Args:
        frontend: waveform → Whisper log-mel (no parameters).
        encoder, llm: frozen in every stage.
        adapter, emotion, aux_head, speech_decoder: trained in their stages.
        stop_ids: token ids that end an assistant turn (not read by the speech decoder).
        read, write: R and W of the decoder's interleaving.
    """

    def __init__(
        self,
        frontend: WhisperLogMel,
        encoder: SpeechEncoder,
        adapter: FrameStackAdapter,
        emotion: EmotionExtractor,
        aux_head: AuxEmotionHead,
        llm: FrozenLLM,
        speech_decoder: SpeechDecoder,
        stop_ids: list[int],
        read: int,
        write: int,
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder.requires_grad_(False)
        self.adapter = adapter
        self.emotion = emotion
        self.aux_head = aux_head
        self.llm = llm
        self.speech_decoder = speech_decoder
        self.stop_ids = list(stop_ids)
        self.read, self.write = read, write

    def train(self, mode: bool = True) -> FreezeEmpathModel:
        """Trainable parts follow ``mode``; the encoder and LLM always stay in eval mode."""
        super().train(mode)
        for name in ALWAYS_FROZEN:
            getattr(self, name).eval()
        return self

    def understand(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> Understanding:
        """``mel (C, n_mels, F)``, ``mel_lens (C,)`` → S, its lengths, E and aux logits per clip."""
        with torch.no_grad():
            enc = self.encoder(mel.to(param_dtype(self.encoder)), mel_lens)
        return understand_encoded(enc, self.adapter, self.emotion, self.aux_head)

    def fuse(self, batch: SpeechChatBatch, und: Understanding, padding_side: str = "right") -> FusedInputs:
        """Fill each sequence's slots with the S and E of the clips they name (in the LLM's dtype)."""
        dtype = param_dtype(self.llm)
        return merge_placeholders(
            batch.input_ids,
            self.llm.embed,
            speech=und.speech[batch.speech_clips].to(dtype),
            speech_lens=und.speech_lens[batch.speech_clips],
            emotion=und.emotion[batch.emotion_clips].to(dtype),
            labels=batch.labels,
            padding_side=padding_side,  # type: ignore[arg-type]
        )

    def forward(self, batch: SpeechChatBatch, stage: Stage) -> ChatOutput:
        """One teacher-forced pass; every submodule runs every step (static graph under ZeRO-3).

        Stage 3 with cached reply states (``batch.reply_hidden``) runs the speech decoder only: the LLM is
        frozen, so its states are the same every epoch.
        """
        if stage.speech_stage and batch.reply_hidden is not None:
            return self._decoder_only(batch)
        und = self.understand(batch.mel, batch.mel_lens)
        fused = self.fuse(batch, und)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not stage.speech_stage):
            out = self.llm(fused.embeds, fused.attention_mask)
        units = None
        if stage.speech_stage:
            hidden, tokens, lens = self.reply_states(out.hidden.detach(), fused.labels)
            units = self._decode_units(batch, hidden, tokens, lens)
        return ChatOutput(out.logits, fused.labels, und.aux_logits, batch.emotion_labels, units)

    def live_reply_states(self, batch: SpeechChatBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen LLM's reply states for a batch (what the stage-3 cache stores)."""
        with torch.no_grad():
            fused = self.fuse(batch, self.understand(batch.mel, batch.mel_lens))
            return self.reply_states(self.llm(fused.embeds, fused.attention_mask).hidden, fused.labels)

    def _decoder_only(self, batch: SpeechChatBatch) -> ChatOutput:
        assert batch.reply_tokens is not None and batch.reply_lens is not None
        units = self._decode_units(batch, batch.reply_hidden, batch.reply_tokens, batch.reply_lens)
        empty = torch.zeros(0, dtype=torch.long, device=units.loss.device)
        return ChatOutput(units.logits[:0], empty.reshape(0, 0), units.logits.new_zeros(0, 5), empty, units)

    def _decode_units(self, batch: SpeechChatBatch, hidden, tokens, lens):
        if batch.units is None or batch.unit_lens is None:
            raise ValueError("a speech stage needs target units in the batch")
        return self.speech_decoder(hidden, tokens, lens, batch.units, batch.unit_lens, self.read, self.write)

    def reply_states(
        self, hidden: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per reply token, the hidden state at the position that predicted it (stop tokens excluded).

        ``hidden (B, L, D)``, ``labels (B, L)`` → ``(B, n, D)``, tokens ``(B, n)``, lengths ``(B,)``.
        """
        rows, toks = [], []
        stop = torch.tensor(self.stop_ids, device=labels.device)
        for b in range(labels.shape[0]):
            pos = (labels[b] != IGNORE_INDEX).nonzero().squeeze(-1)
            ids = labels[b, pos]
            ends = torch.isin(ids, stop).nonzero()
            keep = int(ends[0]) if ends.numel() else ids.numel()
            if keep == 0:
                raise ValueError("a stage-3 sample has an empty reply")
            rows.append(hidden[b, pos[:keep] - 1])
            toks.append(ids[:keep])
        lens = torch.tensor([t.numel() for t in toks], device=labels.device)
        n = int(lens.max())
        out_h = hidden.new_zeros(len(rows), n, hidden.shape[-1])
        out_t = torch.zeros(len(rows), n, dtype=torch.long, device=labels.device)
        for b, (r, t) in enumerate(zip(rows, toks, strict=True)):
            out_h[b, : r.shape[0]], out_t[b, : t.numel()] = r, t
        return out_h, out_t, lens


class SpeechUnderstander(nn.Module):
    """The speech side: waveform clips → S rows, E and aux logits (children named as in the full model)."""

    def __init__(
        self,
        frontend: WhisperLogMel,
        encoder: SpeechEncoder,
        adapter: FrameStackAdapter,
        emotion: EmotionExtractor,
        aux_head: AuxEmotionHead,
    ) -> None:
        super().__init__()
        self.frontend, self.encoder, self.adapter = frontend, encoder.requires_grad_(False), adapter
        self.emotion, self.aux_head = emotion, aux_head
        # SpeechEncoder.forward collects block outputs with forward hooks on the shared layers, so two
        # threads encoding at once would mix their layer stacks: one encoder pass at a time.
        self._encoder_lock = threading.Lock()

    @classmethod
    def of(cls, model: FreezeEmpathModel) -> SpeechUnderstander:
        """The speech side of a whole model, as a view: the same modules, shared, not copied."""
        return cls(model.frontend, model.encoder, model.adapter, model.emotion, model.aux_head)

    @torch.no_grad()
    def understand(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> Understanding:
        """``mel (C, n_mels, F)``, ``mel_lens (C,)`` → S, its lengths, E and aux logits per clip.

        Same computation as ``FreezeEmpathModel.understand`` (both end in ``understand_encoded``).
        """
        with self._encoder_lock:
            enc = self.encoder(mel.to(param_dtype(self.encoder)), mel_lens)
        return understand_encoded(enc, self.adapter, self.emotion, self.aux_head)


def understand_encoded(
    enc: EncoderOutput, adapter: FrameStackAdapter, emotion: EmotionExtractor, aux_head: AuxEmotionHead
) -> Understanding:
    """Encoder output → S, its lengths, E and aux logits per clip (the trained speech-side parts).

    Encoder states are cast to the trained parts' dtype: a bfloat16 frozen encoder may feed float32 parts.
    """
    dtype = param_dtype(adapter)
    speech, speech_lens = adapter(enc.last.to(dtype), enc.lens)
    e = emotion(enc.layers.to(dtype), enc.lens)
    return Understanding(speech, speech_lens, e, aux_head(e))


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s parameters (parts may differ: a bfloat16 frozen LLM, float32 adapters)."""
    return next(module.parameters()).dtype
