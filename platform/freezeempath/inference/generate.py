"""Streaming generation: waveform(s) in → emotion, reply tokens, unit chunks and audio chunks.

In: a batch of dialogues (:class:`~freezeempath.inference.dialogue.Message` lists). Out: an iterator of
events per stream — :class:`EmotionEvent` first, then :class:`TextDelta` per token, and after every R
tokens a :class:`UnitChunk` of at most W units followed by its :class:`AudioChunk`, then :class:`Done`.
The LLM decodes the batch together with one KV cache; the speech decoder runs the batch in lockstep rounds
with one cache row per stream; every stream samples with its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from freezeempath.codec.protocol import SpeechCodec
from freezeempath.config import GenerationConfig, ModelConfig
from freezeempath.inference.dialogue import EmotionResult, FinishReason, Message, Reply, prepare_dialogue
from freezeempath.inference.llm_session import GenerationRequest, LLMSession
from freezeempath.inference.speech_session import SpeechChunk, SpeechSession
from freezeempath.inference.understanding import generation_request, understand_clips
from freezeempath.inference.vocode import VocodeRequest, VocoderState, vocode_batch
from freezeempath.model.spoken_chat import FreezeEmpathModel, SpeechUnderstander


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


class Responder:
    """Runs the model and codec for a batch of dialogues, streaming events.

    The in-process pipeline, the same pieces the Serve deployments run:
    :func:`~freezeempath.inference.understanding.understand_clips` →
    :class:`~freezeempath.inference.llm_session.LLMSession` →
    :class:`~freezeempath.inference.speech_session.SpeechSession` →
    :func:`~freezeempath.inference.vocode.vocode_batch`.
    """

    def __init__(
        self,
        model: FreezeEmpathModel,
        codec: SpeechCodec,
        generation: GenerationConfig,
        max_input_seconds: float,
        max_units: int,
    ) -> None:
        self.model = model.eval()
        # the speech side as a view (shared modules) that casts between frozen and trained dtypes
        self.understander = SpeechUnderstander.of(model)
        self.codec = codec
        self.cfg = generation
        self.max_input_seconds = max_input_seconds
        self.max_units = max_units

    def respond(self, dialogues: list[list[Message]], **kwargs: float) -> list[Reply]:
        """Run :meth:`stream` and collect one :class:`Reply` per dialogue."""
        return collect(self.stream(dialogues, **kwargs), len(dialogues))

    def stream(
        self,
        dialogues: list[list[Message]],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Iterator[Event]:
        """Generate replies for ``dialogues`` (batch ≥ 1); see the module docstring for the events."""
        if not dialogues:
            raise ValueError("no dialogues given")
        requests, emotions = self.prepare(dialogues, max_new_tokens, temperature)
        for i, emotion in enumerate(emotions):
            yield EmotionEvent(i, emotion)
        yield from self.generate(requests)

    def prepare(
        self,
        dialogues: list[list[Message]],
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> tuple[list[GenerationRequest], list[EmotionResult | None]]:
        """Validate dialogues, understand all their clips in one batch; one request and emotion each."""
        prepared = []
        for i, messages in enumerate(dialogues):
            try:
                prepared.append(prepare_dialogue(messages, self.max_input_seconds))
            except ValueError as err:
                raise ValueError(f"dialogue {i}: {err}") from None
        features = understand_clips(self.understander, [c for p in prepared for c in p.clips])
        requests, emotions, start = [], [], 0
        for messages, p in zip(dialogues, prepared, strict=True):
            own = features[start : start + len(p.clips)]
            start += len(p.clips)
            emotions.append(own[-1].emotion_result if messages[-1].audio is not None else None)
            requests.append(
                generation_request(
                    p,
                    own,
                    max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                    temperature=self.cfg.temperature if temperature is None else temperature,
                    seed=self.cfg.seed,
                )
            )
        return requests, emotions

    def generate(self, requests: list[GenerationRequest]) -> Iterator[Event]:
        """Text, unit and audio events for prepared requests (streams numbered in request order)."""
        llm = LLMSession(self.model.llm, self.model.stop_ids, requests, self.model.read, self.cfg.top_p)
        speech = SpeechSession(
            self.model.speech_decoder,
            [r.speech_output for r in requests],
            self.model.read,
            self.model.write,
            self.max_units,
            self.cfg.unit_temperature,
            [r.seed for r in requests],
        )
        states: list[VocoderState | None] = [None] * len(requests)
        while not speech.done:
            yield from self._events(speech.round(llm.step()), states)

    def _events(self, chunks: list[SpeechChunk | None], states: list[VocoderState | None]) -> Iterator[Event]:
        live = [(i, c) for i, c in enumerate(chunks) if c is not None]
        vocode = [(i, c) for i, c in live if c.units]
        results = vocode_batch(self.codec, [VocodeRequest(states[i], c.units) for i, c in vocode])  # type: ignore[arg-type]
        audio = {}
        for (i, _), result in zip(vocode, results, strict=True):
            states[i], audio[i] = result.state, result
        for i, chunk in live:
            if chunk.error is not None:
                raise ValueError(f"dialogue {i}: {chunk.error}")
            for token, piece in zip(chunk.token_ids, chunk.pieces, strict=True):
                yield TextDelta(i, token, piece)
            if chunk.units:
                yield UnitChunk(i, list(chunk.units))
                yield AudioChunk(i, audio[i].audio, audio[i].sample_rate)
            if chunk.finish_reason is not None:
                yield Done(i, chunk.finish_reason)


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


@dataclass(frozen=True)
class TextReply:
    """A reply generated as text only: its tokens, its text and why it ended."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason


@torch.no_grad()
def text_replies(model: FreezeEmpathModel, requests: list[GenerationRequest], top_p: float = 1.0) -> list[TextReply]:
    """The frozen LLM's replies to ``requests`` with no speech decoding (evaluation probes, text-only turns).

    Raises:
        ValueError: a request cannot be generated (its prompt does not fit), naming it.
    """
    session = LLMSession(model.llm, model.stop_ids, requests, model.read, top_p)
    tokens: list[list[int]] = [[] for _ in requests]
    texts, finish = [""] * len(requests), [FinishReason.STOP] * len(requests)
    while (groups := session.step()) is not None:
        for i, group in enumerate(groups):
            if group is None:
                continue
            if group.error is not None:
                raise ValueError(f"request {i}: {group.error}")
            tokens[i] += group.token_ids
            texts[i] += "".join(group.pieces)
            finish[i] = group.finish_reason or finish[i]
    return [TextReply(tuple(t), x, f) for t, x, f in zip(tokens, texts, finish, strict=True)]


def build_responder(cfg: ModelConfig, trained: str | None = None, device: str = "cpu") -> Responder:
    """Model + codec from config (trained parts from an exported artefact directory), ready to answer."""
    from freezeempath.codec.build import build_codec_part
    from freezeempath.model.build import build_model

    return Responder(
        build_model(cfg, trained=trained, device=device),
        build_codec_part(cfg, device),
        cfg.generation,
        cfg.encoder.max_input_seconds,
        cfg.speech_decoder.max_units,
    )
