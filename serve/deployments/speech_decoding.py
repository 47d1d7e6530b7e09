"""The speech decoding deployment: the LLM's token groups in, (text, ≤ W units, audio) chunks out per reply.

In: one :class:`~freezeempath.inference.llm_session.GenerationRequest` per reply from the gateway. Out:
its :class:`~freezeempath.inference.speech_session.SpeechChunk` stream. Replies queue here and run in
batches (a batched decoder, each reply a cache row) that take queued replies at every round boundary,
read them from LLM calls sharing one LLM session (:mod:`serve.deployments.llm`) and vocode each round
in one vocoder call (:mod:`serve.deployments.round_vocoder`)::

    serve run --address local serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import uuid
from collections import deque
from collections.abc import AsyncIterator

import torch
from freezeempath.inference.llm_session import GenerationRequest, TextGroup
from freezeempath.inference.speech_session import SpeechChunk, SpeechSession
from freezeempath.model.build import build_decoder_part
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.args import Batching, ModelArgs
from serve.deployments.outbox import drain, end, fail
from serve.deployments.replica import setup_replica
from serve.deployments.round_vocoder import RoundVocoder, sounds


@dataclasses.dataclass(eq=False)
class DecoderStream:
    """One reply in the decoder: its request, where its chunks go, and whether its caller has gone."""

    request: GenerationRequest
    outbox: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    gone: bool = False
    alone: bool = False  # the gateway had no other request in flight when it sent this one
    sounded: bool = False  # a chunk with units has gone to the vocoder


@dataclasses.dataclass(eq=False)
class _Feed:
    """One LLM call of a decoder batch: the streams it generates for and the step groups not yet read."""

    streams: list[DecoderStream]
    groups: deque = dataclasses.field(default_factory=deque)
    ended: bool = False
    error: BaseException | None = None
    task: asyncio.Task | None = None
    call_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


@serve.deployment
class SpeechDecoding:
    """Streaming speech decoder: consumes the LLM's rounds, yields (text, ≤ W units, audio) chunks per stream.

    Streams wait in a queue. A batch (one batched decoder, each reply a cache row, fed by LLM calls
    that share one LLM session) opens when fewer than ``max_concurrent_batches`` run, after
    ``batch_wait_timeout_s`` for company, and takes queued streams at every round boundary while it has
    fewer than ``max_batch_size`` rows (continuous batching): a stream that arrives while a batch runs
    joins it within a round instead of waiting for it to end. Finished streams leave their rows.
    Batching off: every batch holds one reply, up to ``DECODER_SESSIONS`` side by side.
    """

    def __init__(
        self, llm: DeploymentHandle, vocoder: DeploymentHandle, model: ModelArgs, batching: Batching, grpc: bool
    ) -> None:
        cfg, device = setup_replica(model)
        self.decoder = build_decoder_part(cfg.model, model.trained, device)
        self.llm = llm.options(stream=True, _by_reference=not grpc)  # also broadcasts ``drop`` (unary)
        self.vocoder = vocoder.options(_by_reference=not grpc)
        sd = cfg.model.speech_decoder
        self.read, self.write, self.max_units = sd.read, sd.write, sd.max_units
        self.unit_temperature = cfg.model.generation.unit_temperature
        self.batching = batching
        self.waiting: deque[DecoderStream] = deque()
        self.batches: set[asyncio.Task] = set()
        self.running: list[_DecoderBatch] = []  # the batches' rounds, to see which can take streams
        self.opening = False  # a batch is gathering its first streams
        self.dropped = 0  # streams left mid-reply because their callers had gone
        self.unwaited = 0  # batches opened at once: their first stream came alone
        self.joined = 0  # streams that joined a running batch
        self.llm_rows_dropped = 0  # LLM rows of gone streams stopped while their call served others
        self.drop_tasks: set[asyncio.Task] = set()  # ``drop_llm_row`` calls in flight

    async def stream(self, request: GenerationRequest, alone: bool = False) -> AsyncIterator[SpeechChunk]:
        """One reply's chunks; the last one carries ``finish_reason`` (or ``error``).

        ``alone``: the gateway has no other request in flight, so a batch this stream opens starts at
        once instead of waiting ``batch_wait_timeout_s`` for streams to share it.
        A caller that goes away (the gateway cancels when its client disconnects) leaves the queue, or
        marks its stream gone: its batch drops its row, and stops its LLM call once no stream needs it.
        """
        stream, ended = DecoderStream(request, alone=alone), False
        self.waiting.append(stream)
        self._admit()
        try:
            async for chunk in drain(stream.outbox):
                yield chunk
            ended = True
        finally:
            if not ended:
                stream.gone = True
                if stream in self.waiting:
                    self.waiting.remove(stream)

    async def stats(self) -> dict[str, int]:
        """Batches running (``sessions``), streams queued, streams dropped because their callers had gone,
        batches opened without the wait, and streams that joined a running batch."""
        return {
            "sessions": len(self.batches),
            "waiting": len(self.waiting),
            "dropped": self.dropped,
            "unwaited": self.unwaited,
            "joined": self.joined,
            "llm_rows_dropped": self.llm_rows_dropped,
        }

    def drop_llm_row(self, call_id: str, index: int) -> None:
        """Ask the LLM to stop reply ``index`` of call ``call_id`` (its stream has gone, the call's other
        replies go on); fire and forget: if the LLM cannot, the row runs to its end as before."""
        task = asyncio.get_running_loop().create_task(self._drop_llm_row(call_id, index))
        self.drop_tasks.add(task)
        task.add_done_callback(self.drop_tasks.discard)

    async def _drop_llm_row(self, call_id: str, index: int) -> None:
        # To every LLM replica: only the one running the call holds it (Serve routes by load, not by
        # call), and drops are rare (a caller leaving mid-reply); the others answer False.
        with contextlib.suppress(Exception):
            held = await self.llm.broadcast("drop", call_id, index).results_async(return_exceptions=True)
            self.llm_rows_dropped += any(r is True for r in held)

    def _admit(self) -> None:
        """Open a batch if streams wait, none is gathering, a slot is free and no running batch can take them."""
        full = all(not b.taking or len(b.rows) >= self.batching.max_batch_size for b in self.running)
        if self.waiting and not self.opening and full and len(self.batches) < self.batching.max_concurrent_batches:
            self.opening = True
            # A fresh context: Serve links handle calls to the request whose context they run in, and
            # cancels them with it; the batch serves every stream it takes, not the one that opened it.
            task = asyncio.get_running_loop().create_task(self._batch(), context=contextvars.Context())
            self.batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self.batches.discard(task)
        self._admit()

    def _take(self, room: int) -> list[DecoderStream]:
        taken = []
        while self.waiting and len(taken) < room:
            taken.append(self.waiting.popleft())
        return taken

    async def _batch(self) -> None:
        try:
            if len(self.waiting) == 1 and self.waiting[0].alone:
                self.unwaited += 1
            elif len(self.waiting) < self.batching.max_batch_size:
                await asyncio.sleep(self.batching.batch_wait_timeout_s)
            first = self._take(self.batching.max_batch_size)
        finally:
            self.opening = False
        if not first:
            return
        try:
            batch = _DecoderBatch(self, first)
        except Exception as err:  # the batch could not start: its streams fail, the replica goes on
            _fail(first, err)
            return
        self.running.append(batch)
        self._admit()  # streams still waiting may open the next batch now
        try:
            await batch.run()
        finally:
            self.running.remove(batch)


class _DecoderBatch:
    """One decoder batch's rounds: take queued streams, read their LLM groups, write units, vocode.

    Round k + 1 is decoded while round k is vocoded, and each round is delivered as soon as it is
    vocoded: the first audio must not wait for the second round's LLM tokens. A round that carries the
    first audio of every stream with units in it (a new batch's first, or one only new streams sound in)
    is vocoded before the next is decoded: the cores go to the first audio a listener waits for, and the
    whole reply comes no later (serve/BENCHMARKS.md).
    """

    def __init__(self, owner: SpeechDecoding, first: list[DecoderStream]) -> None:
        self.owner, self.key = owner, uuid.uuid4().hex
        self.rows: list[DecoderStream] = []  # session row → stream
        self.feeds: list[_Feed] = []
        self.arrived = asyncio.Event()
        self.taking = True  # False once its last round is out: queued streams open a new batch
        self.session = SpeechSession(
            owner.decoder, [], owner.read, owner.write, owner.max_units, owner.unit_temperature, []
        )
        self.voice = RoundVocoder(owner.vocoder)
        self._join(first)

    async def run(self) -> None:
        vocoded: asyncio.Queue[tuple[list, asyncio.Task] | None] = asyncio.Queue()  # rounds being vocoded
        delivery = asyncio.get_running_loop().create_task(self._deliver(vocoded))
        try:
            while self.rows:
                groups = await self._groups()
                chunks = await asyncio.to_thread(self.session.round, groups)
                items = list(zip(self.rows, chunks, strict=True))
                task, opening = self.voice.submit(items), first_sound(items)
                vocoded.put_nowait((items, task))
                self._compact()
                if len(self.rows) < self.owner.batching.max_batch_size:
                    self._join(self.owner._take(self.owner.batching.max_batch_size - len(self.rows)), late=True)
                if opening:  # the first audio of every stream in the round: the cores go to it, not round k + 1
                    await asyncio.wait({task})
        except Exception as err:  # a failed batch fails its streams, never the replica
            _fail(self.rows, err)
        finally:
            self.taking = False
            vocoded.put_nowait(None)
            await delivery
            for feed in self.feeds:
                feed.task.cancel()

    def _join(self, streams: list[DecoderStream], late: bool = False) -> None:
        streams = [s for s in streams if not s.gone]
        if not streams:
            return
        try:
            self.session.add([s.request.speech_output for s in streams], [s.request.seed for s in streams])
        except Exception as err:  # these streams fail alone: the rows in flight are as they were
            _fail(streams, err)
            return
        self.owner.joined += len(streams) if late and self.rows else 0  # beside replies in flight
        self.rows += streams
        feed = _Feed(streams)
        feed.task = asyncio.get_running_loop().create_task(self._read(feed))
        self.feeds.append(feed)

    async def _read(self, feed: _Feed) -> None:
        """Queue one LLM call's step groups for the rounds."""
        requests = [s.request for s in feed.streams]
        call, ended = self.owner.llm.generate.remote(requests, batch=self.key, call_id=feed.call_id), False
        try:
            async for groups in call:
                feed.groups.append(groups)
                self.arrived.set()
            ended = True
        except Exception as err:
            feed.error = err
        finally:
            feed.ended = True
            self.arrived.set()
            if not ended:  # cancelled (no stream needs it) or failed: stop its generation too
                call.cancel()

    async def _groups(self) -> list[TextGroup | None]:
        """The next group of each stream (at most one per LLM call's step); waits only while every stream
        needs text and none has come."""
        while True:
            row = {s: b for b, s in enumerate(self.rows)}  # streams hash by identity
            groups: list[TextGroup | None] = [None] * len(self.rows)
            got = False
            for feed in self.feeds:
                if feed.groups:
                    for stream, group in zip(feed.streams, feed.groups.popleft(), strict=True):
                        if group is not None and (b := row.get(stream)) is not None:
                            groups[b], got = group, True
                elif feed.ended:  # the call ended before these replies' text did (it failed)
                    for stream in feed.streams:
                        if (b := row.get(stream)) is not None and self.session.wants_text(b):
                            groups[b], got = _failed(feed.error), True
            if got or not all(self.session.wants_text(b) for b in range(len(self.rows))):
                return groups
            self.arrived.clear()
            await self.arrived.wait()

    def _compact(self) -> None:
        """Drop finished streams' rows and gone streams; stop LLM calls that no stream needs any more, and
        the LLM rows of gone streams whose call still serves others."""
        gone = {b for b, s in enumerate(self.rows) if s.gone}
        self.owner.dropped += len(gone)
        left = [self.rows[b] for b in gone]
        self.voice.forget(left)
        keep = self.session.compact(gone)
        self.rows = [self.rows[b] for b in keep]
        live, feeds, self.feeds = set(self.rows), self.feeds, []
        for feed in feeds:
            if live.isdisjoint(feed.streams):
                feed.task.cancel()
                continue
            self.feeds.append(feed)
            for j in (j for j, s in enumerate(feed.streams) if s in left and not feed.ended):
                self.owner.drop_llm_row(feed.call_id, j)

    async def _deliver(self, vocoded: asyncio.Queue) -> None:
        """Hand each vocoded round's chunks to their streams, in round order."""
        while (next_round := await vocoded.get()) is not None:
            items, task = next_round
            try:
                chunks = await task
            except Exception as err:  # the round's chunks go out with the error instead of audio
                chunks = [
                    (s, dataclasses.replace(c, error=f"vocoding failed: {err}", server_fault=True))
                    for s, c in items
                    if c is not None
                ]
            for stream, chunk in chunks:
                if chunk is not None and not stream.gone:
                    stream.outbox.put_nowait(chunk)
                    if chunk.finish_reason is not None or chunk.error is not None:
                        end(stream.outbox)


def _failed(error: BaseException | None) -> TextGroup:
    """The group a stream gets when its LLM call ended without finishing it."""
    message = f"the LLM stream failed: {error}" if error else "the LLM stream ended before the reply did"
    return TextGroup((), (), torch.zeros(0, 0), None, 0, error=message, server_fault=True)


def _fail(streams: list[DecoderStream], error: Exception) -> None:
    """End ``streams`` with ``error`` (their callers raise it)."""
    for stream in streams:
        fail(stream.outbox, error)


def first_sound(items: list[tuple[DecoderStream, SpeechChunk | None]]) -> bool:
    """Whether the round has units to vocode and they are the first of each stream that has them (marks
    those streams as sounded): the batch then vocodes it before decoding the next round."""
    sounding = [s for s, c in items if c is not None and c.units and sounds(c) and s.request.speech_output]
    first = bool(sounding) and not any(s.sounded for s in sounding)
    for stream in sounding:
        stream.sounded = True
    return first
