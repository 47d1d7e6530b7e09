"""Streaming generation: waveform(s) in → emotion, reply tokens, unit chunks and audio chunks.

In: a batch of dialogues (:class:`~freezeempath.inference.dialogue.Message` lists). Out: an iterator of
events per stream — :class:`EmotionEvent` first, then :class:`TextDelta` per token, and after every R
tokens a :class:`UnitChunk` of at most W units followed by its :class:`AudioChunk`, then :class:`Done`.
The LLM decodes the batch together with a KV cache; each stream has its own decoder KV cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from freezeempath.batch import SpeechChatBatch
from freezeempath.config import GenerationConfig, ModelConfig
from freezeempath.data.template import render
from freezeempath.inference.dialogue import EmotionResult, FinishReason, Message, Reply, prepare_dialogue
from freezeempath.model.codec import SpeechCodec
from freezeempath.model.speech_decoder import UnitStream
from freezeempath.model.spoken_chat import FreezeEmpathModel


@dataclass(frozen=True)
class EmotionEvent:
    """Emotion of the stream's last spoken user turn (None when the turn was text)."""

    stream: int
    emotion: EmotionResult | None


@dataclass(frozen=True)
class TextDelta:
    """One generated token and the text it completes."""

    stream: int
    token_id: int
    text: str


@dataclass(frozen=True)
class UnitChunk:
    """Up to W speech units."""

    stream: int
    units: list[int]


@dataclass(frozen=True)
class AudioChunk:
    """Waveform ``(N,)`` at ``sample_rate`` for the preceding unit chunk."""

    stream: int
    samples: torch.Tensor
    sample_rate: int


@dataclass(frozen=True)
class Done:
    """End of a stream."""

    stream: int
    finish_reason: FinishReason


Event = EmotionEvent | TextDelta | UnitChunk | AudioChunk | Done


class _Stream:
    """Per-stream bookkeeping: tokens, pending decoder reads, text decoding, codec state."""

    def __init__(self, index: int, units: UnitStream, codec: SpeechCodec) -> None:
        self.index = index
        self.units = units
        self.audio = codec.stream()
        self.tokens: list[int] = []
        self.pending_hidden: list[torch.Tensor] = []
        self.text = ""
        self.done = False


class Responder:
    """Runs the model and codec for a batch of dialogues, streaming events."""

    def __init__(
        self,
        model: FreezeEmpathModel,
        codec: SpeechCodec,
        generation: GenerationConfig,
        max_input_seconds: float,
        max_units: int,
    ) -> None:
        self.model = model.eval()
        self.codec = codec
        self.cfg = generation
        self.max_input_seconds = max_input_seconds
        self.max_units = max_units

    def respond(self, dialogues: list[list[Message]], **kwargs: float) -> list[Reply]:
        """Run :meth:`stream` and collect one :class:`Reply` per dialogue."""
        return collect(self.stream(dialogues, **kwargs), len(dialogues))

    @torch.no_grad()
    def stream(
        self,
        dialogues: list[list[Message]],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Iterator[Event]:
        """Generate replies for ``dialogues`` (batch ≥ 1); see the module docstring for the events."""
        if not dialogues:
            raise ValueError("no dialogues given")
        batch, last_clip = self._batch(dialogues)
        und = self.model.understand(batch.mel, batch.mel_lens) if batch.mel.shape[0] else None
        for i, clip in enumerate(last_clip):
            emotion = EmotionResult.from_logits(und.aux_logits[clip]) if und is not None and clip >= 0 else None
            yield EmotionEvent(i, emotion)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        streams = [
            _Stream(
                i,
                UnitStream(self.model.speech_decoder, self.max_units, self.cfg.unit_temperature, generator),
                self.codec,
            )
            for i in range(len(dialogues))
        ]
        yield from self._decode(
            batch,
            und,
            streams,
            generator,
            max_new_tokens or self.cfg.max_new_tokens,
            self.cfg.temperature if temperature is None else temperature,
        )

    def _batch(self, dialogues: list[list[Message]]) -> tuple[SpeechChatBatch, list[int]]:
        tokenizer = self.model.llm.tokenizer
        ids, clips, slot_clips, last_clip = [], [], [], []
        for i, messages in enumerate(dialogues):
            try:
                prepared = prepare_dialogue(messages, self.max_input_seconds)
            except ValueError as err:
                raise ValueError(f"dialogue {i}: {err}") from None
            slot_clips += range(len(clips), len(clips) + len(prepared.clips))
            last_clip.append(len(clips) + len(prepared.clips) - 1 if messages[-1].audio is not None else -1)
            clips += prepared.clips
            ids.append(torch.tensor(render(tokenizer, prepared.turns).input_ids))
        feats = self.model.frontend(clips) if clips else None
        n_mels = self.model.frontend.mel.n_mels
        slots = torch.tensor(slot_clips, dtype=torch.long)
        batch = SpeechChatBatch(
            mel=feats.mel if feats else torch.zeros(0, n_mels, self.model.frontend.window_frames),
            mel_lens=feats.lens if feats else torch.zeros(0, dtype=torch.long),
            input_ids=ids,
            labels=[torch.full_like(x, -100) for x in ids],
            speech_clips=slots,
            emotion_clips=slots,
            emotion_labels=torch.full((len(clips),), -100),
        )
        return batch, last_clip

    def _decode(
        self,
        batch: SpeechChatBatch,
        und,
        streams: list[_Stream],
        generator: torch.Generator,
        max_new_tokens: int,
        temperature: float,
    ) -> Iterator[Event]:
        llm = self.model.llm
        if und is None:  # text-only dialogues: no slots to fill
            d = llm.hidden_size
            und = _empty_understanding(d)
        fused = self.model.fuse(batch, und, padding_side="left")
        out = llm(fused.embeds, fused.attention_mask, use_cache=True, last_logits_only=True)
        mask, cache = fused.attention_mask, out.cache
        logits, hidden = out.logits[:, -1], out.hidden[:, -1]
        pad = llm.tokenizer.pad_token_id or 0
        for step in range(max_new_tokens):
            tokens = self._sample(logits, generator, temperature)
            for s in streams:
                if not s.done:
                    yield from self._advance(s, int(tokens[s.index]), hidden[s.index], step == max_new_tokens - 1)
            if all(s.done for s in streams):
                return
            tokens = torch.tensor([pad if s.done else s.tokens[-1] for s in streams])
            mask = torch.cat([mask, torch.ones(len(streams), 1, dtype=mask.dtype)], dim=1)
            out = llm(llm.embed(tokens)[:, None], mask, cache=cache, use_cache=True, last_logits_only=True)
            cache, logits, hidden = out.cache, out.logits[:, -1], out.hidden[:, -1]

    def _advance(self, s: _Stream, token: int, hidden: torch.Tensor, last_step: bool) -> Iterator[Event]:
        stop = token in self.model.stop_ids
        if not stop:
            s.tokens.append(token)
            s.pending_hidden.append(hidden)
            yield from self._text_delta(s)
            if len(s.pending_hidden) == self.model.read:
                yield from self._read_write(s, self.model.write)
        if stop or last_step:
            s.done = True
            yield from self._read_write(s, None)
            yield Done(s.index, FinishReason.STOP if stop else FinishReason.LENGTH)

    def _text_delta(self, s: _Stream) -> Iterator[Event]:
        text = self.model.llm.tokenizer.decode(s.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            yield TextDelta(s.index, s.tokens[-1], "")
            return
        yield TextDelta(s.index, s.tokens[-1], text[len(s.text) :])
        s.text = text

    def _read_write(self, s: _Stream, write: int | None) -> Iterator[Event]:
        """Read pending text states, then write W units (``write=None``: end of text, write to EOS)."""
        if s.pending_hidden:
            n = len(s.pending_hidden)
            s.units.read(torch.stack(s.pending_hidden), torch.tensor(s.tokens[-n:]))
            s.pending_hidden.clear()
        if write is not None:
            yield from self._emit(s, s.units.write(write).units)
            return
        s.units.end_text()
        while True:
            result = s.units.write(self.model.write)
            yield from self._emit(s, result.units)
            if result.finished or not result.units:
                break
        tail = s.audio.flush()
        if tail.numel():
            yield AudioChunk(s.index, tail, self.codec.sample_rate)

    def _emit(self, s: _Stream, units: list[int]) -> Iterator[Event]:
        if units:
            yield UnitChunk(s.index, units)
            yield AudioChunk(s.index, s.audio.push(torch.tensor(units)), self.codec.sample_rate)

    def _sample(self, logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if self.cfg.top_p < 1.0:
            probs = _top_p(probs, self.cfg.top_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def collect(events: Iterable[Event], n_streams: int) -> list[Reply]:
    """Fold an event stream into one :class:`Reply` per stream."""
    replies = [Reply() for _ in range(n_streams)]
    for event in events:
        reply = replies[event.stream]
        if isinstance(event, EmotionEvent):
            reply.emotion = event.emotion
        elif isinstance(event, TextDelta):
            reply.token_ids.append(event.token_id)
            reply.text += event.text
        elif isinstance(event, UnitChunk):
            reply.units.extend(event.units)
        elif isinstance(event, AudioChunk):
            reply.audio.append(event.samples)
        else:
            reply.finish_reason = event.finish_reason
    return replies


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p``; renormalise."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
    sorted_probs[drop] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs) / sorted_probs.sum(-1, keepdim=True)


def _empty_understanding(d: int):
    from freezeempath.batch import Understanding

    return Understanding(
        torch.zeros(0, 1, d), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, d), torch.zeros(0, 5)
    )


def build_responder(cfg: ModelConfig) -> Responder:
    """Model + codec from config, ready to answer."""
    from freezeempath.model.build import build_model
    from freezeempath.model.codec import build_codec

    return Responder(
        build_model(cfg),
        build_codec(cfg.codec),
        cfg.generation,
        cfg.encoder.max_input_seconds,
        cfg.speech_decoder.max_units,
    )
