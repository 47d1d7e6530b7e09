"""A decoder batch's vocoding: one vocoder call per round for all its streams, chained round after round.

In: each round's ``(stream, SpeechChunk | None)`` pairs of a decoder batch, the stream being any object
with ``request.speech_output`` and ``gone``. Out: the same pairs, each chunk with its ``audio`` set where
its stream wants speech; the streams' vocoder states stay here between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from freezeempath.inference.speech_session import SpeechChunk
from freezeempath.inference.vocode import VocodeRequest, VocoderState
from ray.serve.handle import DeploymentHandle


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
        todo = [i for i, (s, c) in enumerate(items) if c is not None and s.request.speech_output and sounds(c)]
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


def sounds(chunk: SpeechChunk) -> bool:
    """Whether a chunk is vocoded: it has units, or it ends its stream (the resampler's tail is flushed)."""
    return chunk.error is None and (bool(chunk.units) or _final(chunk))


def _final(chunk: SpeechChunk) -> bool:
    return chunk.finish_reason is not None
