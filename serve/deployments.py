"""Ray Serve deployments of the pipeline steps; each method calls ``freezeempath.inference`` code.

What crosses each hop (all CPU tensors, pickled by Ray)::

    Gateway ──clip (N,) 16 kHz──▶ SpeechUnderstanding ──ClipFeatures: S (L_S, D), E (1, D), emotion──▶ Gateway
    Gateway ──GenerationRequest──▶ SpeechDecoder.stream ──[requests of one batch]──▶ LLM.generate
    LLM.generate ──per round: TextGroup | None per stream (≤ R tokens, pieces, hidden (k, D))──▶ SpeechDecoder
    SpeechDecoder ──per round: [VocodeRequest (state, units)] of its streams──▶ Vocoder.vocode_round
    Vocoder.vocode_round ──[VocodeResult (audio at 24 kHz, state)]──▶ SpeechDecoder
    SpeechDecoder.stream ──SpeechChunk (text, ≤ W units, audio, finish)──▶ Gateway

``SpeechUnderstanding`` and ``Vocoder`` batch with ``@serve.batch``; ``SpeechDecoder`` groups queued
streams into sessions, each driving one LLM stream for all its replies in lockstep (so the LLM batches
too). Each stream's decoder KV cache is a row of its session's cache and is freed when the session
ends. A session vocodes each round of all its streams in one vocoder call, while it decodes the next
round, and keeps the streams' vocoder states. A session belongs to no single request: one caller
leaving (client disconnect) never cancels the others' replies, and when every caller has left the
session stops, LLM stream included. Run with::

    serve run serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import torch
from freezeempath.config import Config
from freezeempath.inference.llm_session import GenerationRequest, LLMSession, TextGroup
from freezeempath.inference.parts import build_codec_part, build_decoder_part, build_llm_part, build_understander
from freezeempath.inference.speech_session import SpeechChunk, SpeechSession
from freezeempath.inference.understanding import ClipFeatures, understand_clips
from freezeempath.inference.vocode import VocodeRequest, VocodeResult, VocoderState, vocode_batch
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.schemas import CONCURRENT_BATCHES, Batching, ModelArgs

log = logging.getLogger("ray.serve")


def _setup(model: ModelArgs) -> tuple[Config, str]:
    torch.set_num_threads(model.torch_threads)
    return model.resolve(), model.torch_device()


def _configure(method: Any, batching: Batching) -> None:
    method.set_max_batch_size(batching.max_batch_size)
    method.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)


@serve.deployment
class SpeechUnderstanding:
    """Encoder + adapter + emotion extractor: one clip in, its S rows, E and emotion out (batched)."""

    def __init__(self, model: ModelArgs, batching: Batching) -> None:
        cfg, device = _setup(model)
        self.part = build_understander(cfg.model, model.weights, device)
        _configure(self.understand_batch, batching)
        self.calls = {"batched": 0, "alone": 0}

    async def understand(self, clip: torch.Tensor, alone: bool = False) -> ClipFeatures:
        """Mono 16 kHz clip ``(N,)`` (checked by the gateway) → :class:`ClipFeatures`.

        ``alone``: the gateway has no other request in flight, so no batch-mate can come: the clip runs
        at once instead of waiting ``batch_wait_timeout_s`` for company.
        """
        self.calls["alone" if alone else "batched"] += 1
        result = (await asyncio.to_thread(self._each, [clip]))[0] if alone else await self.understand_batch(clip)
        if isinstance(result, Exception):
            raise result
        return result

    async def stats(self) -> dict[str, int]:
        """Clips understood through the dynamic batch and alone (no batch wait)."""
        return dict(self.calls)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, max_concurrent_batches=CONCURRENT_BATCHES)
    async def understand_batch(self, clips: list[torch.Tensor]) -> list[ClipFeatures | Exception]:
        """One encoder pass for all queued clips; a failing clip fails alone."""
        return await asyncio.to_thread(self._each, clips)

    def _each(self, clips: list[torch.Tensor]) -> list[ClipFeatures | Exception]:
        try:
            return list(understand_clips(self.part, clips, output_device="cpu"))
        except ValueError as err:
            if len(clips) == 1:
                return [err]
            return [self._each([clip])[0] for clip in clips]


@serve.deployment
class LLM:
    """The frozen LLM: a batch of requests in, rounds of per-stream token groups out (streaming)."""

    def __init__(self, model: ModelArgs) -> None:
        cfg, device = _setup(model)
        self.llm, self.stop_ids = build_llm_part(cfg.model, device)
        self.read, self.top_p = cfg.model.speech_decoder.read, cfg.model.generation.top_p

    async def generate(self, requests: list[GenerationRequest]) -> AsyncIterator[list[TextGroup | None]]:
        """Yield each round's groups (one entry per request) until every reply has ended."""
        session = await asyncio.to_thread(LLMSession, self.llm, self.stop_ids, requests, self.read, self.top_p, "cpu")
        while (groups := await asyncio.to_thread(session.step)) is not None:
            yield groups


@serve.deployment
class SpeechDecoder:
    """Streaming speech decoder: consumes the LLM's rounds, yields (text, ≤ W units, audio) chunks per stream.

    Streams wait in a queue; a session (one LLM stream + one batched decoder, each reply a cache row)
    starts when one of ``max_concurrent_batches`` slots is free and takes up to ``max_batch_size`` queued
    streams after ``batch_wait_timeout_s``. Forming the batch only when a slot frees (``@serve.batch``
    forms it as soon as its wait ends) lets the streams that queued behind a running session share the
    next one. Batching off: every reply is a session of its own, up to ``DECODER_SESSIONS`` side by side.
    """

    def __init__(
        self, llm: DeploymentHandle, vocoder: DeploymentHandle, model: ModelArgs, batching: Batching, grpc: bool
    ) -> None:
        cfg, device = _setup(model)
        self.decoder = build_decoder_part(cfg.model, model.weights, device)
        self.llm = llm.options(stream=True, _by_reference=not grpc)
        self.vocoder = vocoder.options(_by_reference=not grpc)
        sd = cfg.model.speech_decoder
        self.read, self.write, self.max_units = sd.read, sd.write, sd.max_units
        self.unit_temperature = cfg.model.generation.unit_temperature
        self.batching = batching
        self.waiting: deque[_Stream] = deque()
        self.sessions: set[asyncio.Task] = set()
        self.opening = False  # a session is gathering its batch
        self.stopped = 0  # sessions ended early: all their callers had gone
        self.unwaited = 0  # sessions opened at once: their first stream came alone

    async def stream(self, request: GenerationRequest, alone: bool = False) -> AsyncIterator[SpeechChunk]:
        """One reply's chunks; the last one carries ``finish_reason`` (or ``error``).

        ``alone``: the gateway has no other request in flight, so a session this stream opens starts at
        once instead of waiting ``batch_wait_timeout_s`` for streams to share it.
        A caller that goes away (the gateway cancels when its client disconnects) leaves the queue, or
        marks its stream gone; a session whose streams are all gone stops, and so does its LLM stream.
        """
        stream, ended = _Stream(request, alone=alone), False
        self.waiting.append(stream)
        self._admit()
        try:
            while (item := await stream.outbox.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
            ended = True
        finally:
            if not ended:
                stream.gone = True
                if stream in self.waiting:
                    self.waiting.remove(stream)

    async def stats(self) -> dict[str, int]:
        """Sessions running, streams queued, sessions stopped early because every caller had gone, and
        sessions opened without the batch wait."""
        running, waiting = len(self.sessions), len(self.waiting)
        return {"sessions": running, "waiting": waiting, "sessions_stopped": self.stopped, "unwaited": self.unwaited}

    def _admit(self) -> None:
        """Open a session if streams wait, a slot is free and no other session is gathering."""
        if self.waiting and not self.opening and len(self.sessions) < self.batching.max_concurrent_batches:
            self.opening = True
            # A fresh context: Serve links handle calls to the request whose context they run in, and
            # cancels them with it; the session serves every stream it gathers, not the one that opened it.
            task = asyncio.get_running_loop().create_task(self._session(), context=contextvars.Context())
            self.sessions.add(task)
            task.add_done_callback(self._session_done)

    def _session_done(self, task: asyncio.Task) -> None:
        self.sessions.discard(task)
        self._admit()

    async def _session(self) -> None:
        try:
            if len(self.waiting) == 1 and self.waiting[0].alone:
                self.unwaited += 1
            elif len(self.waiting) < self.batching.max_batch_size:
                await asyncio.sleep(self.batching.batch_wait_timeout_s)
            size = min(self.batching.max_batch_size, len(self.waiting))
            batch = [self.waiting.popleft() for _ in range(size)]
        finally:
            self.opening = False
        self._admit()  # streams still waiting may open the next session now
        try:
            if batch:
                await self._run(batch)
        except Exception as err:  # a failed session fails its streams, never the replica
            for stream in batch:
                stream.outbox.put_nowait(err)
        finally:
            for stream in batch:
                stream.outbox.put_nowait(_END)

    async def _run(self, batch: list[_Stream]) -> None:
        """Deliver each round's chunks to their streams; stop early once every stream is gone."""
        async with contextlib.aclosing(self._rounds([s.request for s in batch])) as rounds:
            async for chunks in rounds:
                if all(stream.gone for stream in batch):
                    self.stopped += 1
                    log.info("decoder session of %d stream(s) stopped: every caller has gone", len(batch))
                    return
                for stream, chunk in zip(batch, chunks, strict=True):
                    if chunk is not None:
                        stream.outbox.put_nowait(chunk)
                        if chunk.finish_reason is not None or chunk.error is not None:
                            stream.outbox.put_nowait(_END)

    async def _rounds(self, requests: list[GenerationRequest]) -> AsyncIterator[list[SpeechChunk | None]]:
        """Lockstep rounds: one LLM stream for all requests, one decoder cache row per reply."""
        session = SpeechSession(
            self.decoder,
            [r.speech_output for r in requests],
            self.read,
            self.write,
            self.max_units,
            self.unit_temperature,
            [r.seed for r in requests],
        )
        voice = RoundVocoder(self.vocoder, [r.speech_output for r in requests])
        vocoding: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()
        # Decode round k + 1 while round k is vocoded, and yield each round as soon as it is vocoded:
        # the first audio must not wait for the second round's LLM tokens.
        decoding = asyncio.get_running_loop().create_task(self._submit_rounds(session, requests, voice, vocoding))
        try:
            while (vocoded := await vocoding.get()) is not None:
                yield await vocoded
            await decoding  # a decoding error surfaces after the rounds before it
        finally:
            decoding.cancel()
            while not vocoding.empty():
                if (left := vocoding.get_nowait()) is not None:
                    left.cancel()

    async def _submit_rounds(
        self, session: SpeechSession, requests: list[GenerationRequest], voice: RoundVocoder, out: asyncio.Queue
    ) -> None:
        """Decode every round and start vocoding it; ``None`` closes ``out``."""
        try:
            async with contextlib.aclosing(self._decoded(session, requests)) as decoded:
                async for chunks in decoded:
                    out.put_nowait(voice.submit(chunks))
        finally:
            out.put_nowait(None)

    async def _decoded(
        self, session: SpeechSession, requests: list[GenerationRequest]
    ) -> AsyncIterator[list[SpeechChunk | None]]:
        llm, ended = self.llm.generate.remote(requests), False
        try:
            async for groups in llm:
                yield await asyncio.to_thread(session.round, groups)
            ended = True
        finally:
            if not ended:  # closed early (every caller gone): stop the LLM's generation too
                llm.cancel()
        while not session.done:
            yield await asyncio.to_thread(session.round, None)


_END = object()  # end of one stream's chunks


@dataclasses.dataclass(eq=False)
class _Stream:
    """One reply in the decoder: its request, where its chunks go, and whether its caller has gone."""

    request: GenerationRequest
    outbox: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    gone: bool = False
    alone: bool = False  # the gateway had no other request in flight when it sent this one


class RoundVocoder:
    """One session's vocoding: one vocoder call per round for all its streams, chained round after round.

    Each call waits for the previous round's (the streams' vocoder states come from it), so a session
    may submit round k + 1 while round k is still being vocoded.
    """

    def __init__(self, vocoder: DeploymentHandle, speech_output: list[bool]) -> None:
        self.vocoder, self.wanted = vocoder, speech_output
        self.states: list[VocoderState | None] = [None] * len(speech_output)
        self.last: asyncio.Task | None = None

    def submit(self, chunks: list[SpeechChunk | None]) -> asyncio.Task:
        """Start vocoding ``chunks``; the task returns them with ``audio`` set where speech is wanted."""
        self.last = asyncio.get_running_loop().create_task(self._vocode(chunks, self.last))
        return self.last

    async def _vocode(
        self, chunks: list[SpeechChunk | None], previous: asyncio.Task | None
    ) -> list[SpeechChunk | None]:
        if previous is not None:
            await previous
        todo = [b for b, c in enumerate(chunks) if c is not None and self.wanted[b] and _sounds(c)]
        if not todo:
            return chunks
        requests = [VocodeRequest(self.states[b], chunks[b].units, final=_final(chunks[b])) for b in todo]
        results = await self.vocoder.vocode_round.remote(requests)
        out = list(chunks)
        for b, result in zip(todo, results, strict=True):
            self.states[b], out[b] = result.state, dataclasses.replace(chunks[b], audio=result.audio)
        return out


def _final(chunk: SpeechChunk) -> bool:
    return chunk.finish_reason is not None


def _sounds(chunk: SpeechChunk) -> bool:
    """A chunk to vocode: it has units, or it ends its stream (the resampler's tail is flushed)."""
    return chunk.error is None and (bool(chunk.units) or _final(chunk))


@serve.deployment
class Vocoder:
    """Units → audio at the output rate, batched across streams; the stream state travels with requests."""

    def __init__(self, model: ModelArgs, batching: Batching, output_rate: int) -> None:
        cfg, device = _setup(model)
        self.codec, self.output_rate = build_codec_part(cfg.model, device), output_rate
        _configure(self.vocode_batch, batching)

    async def vocode_round(self, requests: list[VocodeRequest]) -> list[VocodeResult]:
        """One round of a decoder session: a chunk per stream (they join the dynamic batch together)."""
        return list(await asyncio.gather(*(self.vocode_batch(r) for r in requests)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, max_concurrent_batches=CONCURRENT_BATCHES)
    async def vocode_batch(self, requests: list[VocodeRequest]) -> list[VocodeResult]:
        """Chunks of several streams; equal shapes share one synthesis."""
        return await asyncio.to_thread(vocode_batch, self.codec, requests, self.output_rate)
