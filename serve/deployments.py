"""Ray Serve deployments of the pipeline steps; each method calls ``freezeempath.inference`` code.

What crosses each hop (CPU tensors, which pickle as NumPy arrays: ``freezeempath.inference.wire``)::

    Gateway ──clip (N,) 16 kHz──▶ SpeechUnderstanding ──ClipFeatures: S (L_S, D), E (1, D), emotion──▶ Gateway
    Gateway ──GenerationRequest──▶ SpeechDecoder.stream ──[requests joining one batch], its key──▶ LLM.generate
    LLM.generate ──per round: TextGroup | None per stream (≤ R tokens, pieces, hidden (k, D))──▶ SpeechDecoder
    SpeechDecoder ──per round: [VocodeRequest (state, units)] of its streams──▶ Vocoder.vocode_round
    Vocoder.vocode_round ──[VocodeResult (audio at 24 kHz, state)]──▶ SpeechDecoder
    SpeechDecoder.stream ──SpeechChunk (text, ≤ W units, audio, finish)──▶ Gateway
    SpeechDecoder ──(call id, index) of a stream whose caller left──▶ LLM.drop on every LLM replica

``SpeechUnderstanding`` and ``Vocoder`` batch with ``@serve.batch``. ``SpeechDecoder`` batches
continuously: a batch takes queued streams at every round boundary, each as a row of its decoder KV
cache, and opens one LLM call per group of streams it takes, keyed by the batch, so the LLM replica joins
them into one session between its steps (each reply a row of the LLM's KV cache). Finished streams leave
both caches. A batch vocodes each round of all its streams in one vocoder call, while it decodes the
next round, and keeps the streams' vocoder states. A batch belongs to no single request: a caller
leaving (client disconnect) drops only its own stream: its LLM row stops (``LLM.drop``) while the call
serves other streams, and an LLM call stops once none of its streams is left. Run with::

    serve run serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import torch
from freezeempath.codec.mel_codec import build_codec_part
from freezeempath.config import Config
from freezeempath.inference.llm_session import GenerationRequest, LLMSession, TextGroup
from freezeempath.inference.speech_session import SpeechChunk, SpeechSession
from freezeempath.inference.understanding import ClipFeatures, understand_clips
from freezeempath.inference.vocode import VocodeRequest, VocodeResult, VocoderState, vocode_batch
from freezeempath.model.build import build_decoder_part, build_llm_part, build_understander
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.schemas import CONCURRENT_BATCHES, CPU_PRIORITY_ENV, Batching, ModelArgs

log = logging.getLogger("ray.serve")


def set_cpu_priority() -> None:
    """Give every thread of this process the nice value in ``CPU_PRIORITY_ENV``, if set; threads
    started later inherit it. Linux nice values are per thread, hence each of ``/proc/self/task``.
    Ray starts workers at ``RAY_worker_niceness`` (15) on some threads: going below that needs
    CAP_SYS_NICE, going above does not."""
    value = os.environ.get(CPU_PRIORITY_ENV)
    if value is None:
        return
    refused = 0
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), int(value))
        except PermissionError:
            refused += 1
        except ProcessLookupError:  # the thread has ended
            pass
    if refused:
        log.warning("CPU priority %s refused on %d threads of this replica (needs CAP_SYS_NICE)", value, refused)


def _setup(model: ModelArgs) -> tuple[Config, str]:
    set_cpu_priority()
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


@dataclasses.dataclass(eq=False)
class _Call:
    """One ``LLM.generate`` call: its requests, where their groups go, and whether its caller has gone."""

    requests: list[GenerationRequest]
    outbox: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    gone: bool = False
    dropped: set[int] = dataclasses.field(default_factory=set)  # replies whose callers have gone


class _LLMBatch:
    """One LLM session that the calls with one key join between steps (continuous batching).

    ``make(requests)`` opens the session in a worker thread. The loop runs while streams are live or
    calls wait to join; each step's groups go to their calls, and a call ends once its streams have.
    A call whose requests cannot join fails alone; a step that fails fails every call.
    """

    def __init__(self, make: Any, on_end: Any) -> None:
        self.make, self.on_end = make, on_end
        self.session: LLMSession | None = None
        self.owners: list[tuple[_Call, int]] = []  # session stream → (call, its index in the call)
        self.joining: list[_Call] = []
        self.task: asyncio.Task | None = None

    def join(self, call: _Call) -> None:
        self.joining.append(call)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop(), context=contextvars.Context())

    async def _loop(self) -> None:
        try:
            while self.joining or (self.session is not None and not self.session.done):
                await self._admit()
                if self.session is not None and (groups := await asyncio.to_thread(self.session.step)) is not None:
                    self._deliver(groups)
        except Exception as err:  # a failed batch fails its calls, never the replica
            for call in {c for c, _ in self.owners} | set(self.joining):
                call.outbox.put_nowait(err)
        finally:
            self.on_end(self)

    async def _admit(self) -> None:
        calls, self.joining = [c for c in self.joining if not c.gone], []
        if not calls:
            return
        requests = [r for c in calls for r in c.requests]
        self.owners += [(c, j) for c in calls for j in range(len(c.requests))]  # so a failure reaches them too
        if self.session is None:
            self.session = await asyncio.to_thread(self.make, requests)
            return
        try:
            await asyncio.to_thread(self.session.add, requests)
        except Exception as err:  # these calls fail alone: the session is as it was, its calls go on
            self.owners = [(c, j) for c, j in self.owners if c not in calls]
            for call in calls:
                call.outbox.put_nowait(err)

    def _deliver(self, groups: list[TextGroup | None]) -> None:
        """Send each call its streams' groups; end the calls whose streams have all finished or gone."""
        assert self.session is not None
        out: dict[_Call, list[TextGroup | None]] = {}
        for (call, j), group in zip(self.owners, groups, strict=True):
            if group is not None and not call.gone and j not in call.dropped:
                out.setdefault(call, [None] * len(call.requests))[j] = group
        for call, call_groups in out.items():
            call.outbox.put_nowait(call_groups)
        before = {c for c, _ in self.owners}
        keep = self.session.compact({b for b, (c, j) in enumerate(self.owners) if c.gone or j in c.dropped})
        self.owners = [self.owners[b] for b in keep]
        for call in before - {c for c, _ in self.owners}:
            call.outbox.put_nowait(_END)


@serve.deployment
class LLM:
    """The frozen LLM: requests in, rounds of per-stream token groups out (streaming), batched continuously."""

    def __init__(self, model: ModelArgs) -> None:
        cfg, device = _setup(model)
        self.llm, self.stop_ids = build_llm_part(cfg.model, device)
        self.read, self.top_p = cfg.model.speech_decoder.read, cfg.model.generation.top_p
        self.batches: dict[Any, _LLMBatch] = {}
        self.calls: dict[str, _Call] = {}  # running calls by the caller's id (for ``drop``)
        self.dropped = 0  # replies stopped by ``drop``

    async def generate(
        self, requests: list[GenerationRequest], batch: str = "", call_id: str = ""
    ) -> AsyncIterator[list[TextGroup | None]]:
        """Yield each step's groups of ``requests`` (None where a stream has none) until all have ended.

        Calls with the same ``batch`` key share one session: a later call's requests join it at the next
        step (the decoder keys its LLM calls by its own batch). Without a key a call runs on its own.
        With a ``call_id``, :meth:`drop` can stop one of its replies while the others go on.
        """
        key = batch or object()
        if key not in self.batches:
            self.batches[key] = _LLMBatch(self._session, lambda _: self.batches.pop(key, None))
        call, ended = _Call(list(requests)), False
        if call_id:
            self.calls[call_id] = call
        self.batches[key].join(call)
        try:
            async for groups in _drain(call.outbox):
                yield groups
            ended = True
        finally:
            call.gone = not ended
            self.calls.pop(call_id, None)

    async def drop(self, call_id: str, index: int) -> bool:
        """Stop generating reply ``index`` of call ``call_id`` (its caller has gone); its row leaves the
        session at the next step and the call's other replies go on. False when this replica runs no
        such call (it has ended, or another replica runs it)."""
        call = self.calls.get(call_id)
        if call is None or not 0 <= index < len(call.requests) or index in call.dropped:
            return False
        call.dropped.add(index)
        self.dropped += 1
        return True

    def _session(self, requests: list[GenerationRequest]) -> LLMSession:
        return LLMSession(self.llm, self.stop_ids, requests, self.read, self.top_p, "cpu")


@dataclasses.dataclass(eq=False)
class _Stream:
    """One reply in the decoder: its request, where its chunks go, and whether its caller has gone."""

    request: GenerationRequest
    outbox: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    gone: bool = False
    alone: bool = False  # the gateway had no other request in flight when it sent this one
    sounded: bool = False  # a chunk with units has gone to the vocoder


@dataclasses.dataclass(eq=False)
class _Feed:
    """One LLM call of a decoder batch: the streams it generates for and the step groups not yet read."""

    streams: list[_Stream]
    groups: deque = dataclasses.field(default_factory=deque)
    ended: bool = False
    error: BaseException | None = None
    task: asyncio.Task | None = None
    call_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


@serve.deployment
class SpeechDecoder:
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
        cfg, device = _setup(model)
        self.decoder = build_decoder_part(cfg.model, model.weights, device)
        self.llm = llm.options(stream=True, _by_reference=not grpc)  # also broadcasts ``drop`` (unary)
        self.vocoder = vocoder.options(_by_reference=not grpc)
        sd = cfg.model.speech_decoder
        self.read, self.write, self.max_units = sd.read, sd.write, sd.max_units
        self.unit_temperature = cfg.model.generation.unit_temperature
        self.batching = batching
        self.waiting: deque[_Stream] = deque()
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
        stream, ended = _Stream(request, alone=alone), False
        self.waiting.append(stream)
        self._admit()
        try:
            async for chunk in _drain(stream.outbox):
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

    def _take(self, room: int) -> list[_Stream]:
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
    is vocoded before the next is decoded: on 2 cores first audio came 6-8 ms sooner and whole replies
    no later.
    """

    def __init__(self, owner: SpeechDecoder, first: list[_Stream]) -> None:
        self.owner, self.key = owner, uuid.uuid4().hex
        self.rows: list[_Stream] = []  # session row → stream
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
                task, opening = self.voice.submit(items), _first_sound(items)
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

    def _join(self, streams: list[_Stream], late: bool = False) -> None:
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
                        stream.outbox.put_nowait(_END)


def _failed(error: BaseException | None) -> TextGroup:
    """The group a stream gets when its LLM call ended without finishing it."""
    message = f"the LLM stream failed: {error}" if error else "the LLM stream ended before the reply did"
    return TextGroup((), (), torch.zeros(0, 0), None, 0, error=message, server_fault=True)


# End of one stream's chunks or one LLM call's groups. Only module-level code may name it: Serve pickles
# the deployment classes by value, so their methods would see a copy of it.
_END = object()


def _fail(streams: list[_Stream], error: Exception) -> None:
    """End ``streams`` with ``error`` (their callers raise it)."""
    for stream in streams:
        stream.outbox.put_nowait(error)
        stream.outbox.put_nowait(_END)


async def _drain(outbox: asyncio.Queue) -> AsyncIterator[Any]:
    """Items of ``outbox`` until ``_END``; an exception put there is raised."""
    while (item := await outbox.get()) is not _END:
        if isinstance(item, BaseException):
            raise item
        yield item


class RoundVocoder:
    """One batch's vocoding: one vocoder call per round for all its streams, chained round after round.

    Each call waits for the previous round's (the streams' vocoder states come from it), so a batch
    may submit round k + 1 while round k is still being vocoded. States are kept per stream object.
    """

    def __init__(self, vocoder: DeploymentHandle) -> None:
        self.vocoder = vocoder
        self.states: dict[Any, VocoderState | None] = {}  # by stream object (kept alive here: ids are reused)
        self.last: asyncio.Task | None = None

    def forget(self, streams: list[Any]) -> None:
        """Drop the states of streams that left mid-reply (a stream's last chunk drops its own)."""
        for stream in streams:
            self.states.pop(stream, None)

    def submit(self, items: list[tuple[Any, SpeechChunk | None]]) -> asyncio.Task:
        """Start vocoding ``(stream, chunk)`` pairs; the task returns them with ``audio`` set where the
        stream's request wants speech (``stream.request.speech_output``)."""
        self.last = asyncio.get_running_loop().create_task(self._vocode(items, self.last))
        return self.last

    async def _vocode(
        self, items: list[tuple[Any, SpeechChunk | None]], previous: asyncio.Task | None
    ) -> list[tuple[Any, SpeechChunk | None]]:
        if previous is not None:
            with contextlib.suppress(Exception):  # its own failure is reported with its own round
                await previous
        todo = [i for i, (s, c) in enumerate(items) if c is not None and s.request.speech_output and _sounds(c)]
        if not todo:
            return items
        chunks = [items[i] for i in todo]
        requests = [VocodeRequest(self.states.get(s), c.units, final=_final(c)) for s, c in chunks]
        results = await self.vocoder.vocode_round.remote(requests)
        out = list(items)
        for i, result in zip(todo, results, strict=True):
            stream, chunk = items[i]
            if _final(chunk) or stream.gone:
                self.states.pop(stream, None)
            else:
                self.states[stream] = result.state
            out[i] = (stream, dataclasses.replace(chunk, audio=result.audio))
        return out


def _first_sound(items: list[tuple[_Stream, SpeechChunk | None]]) -> bool:
    """Whether the round has units to vocode and they are the first of each stream that has them (marks
    those streams as sounded)."""
    sounding = [s for s, c in items if c is not None and c.units and _sounds(c) and s.request.speech_output]
    first = bool(sounding) and not any(s.sounded for s in sounding)
    for stream in sounding:
        stream.sounded = True
    return first


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
