"""The LLM deployment: generation requests in, rounds of per-stream token groups out, batched continuously.

In: a decoder batch's :class:`~freezeempath.inference.llm_session.GenerationRequest` list, keyed by that
batch. Out: a stream of steps, each a :class:`~freezeempath.inference.llm_session.TextGroup` or None per
request. Calls with one key share one :class:`~freezeempath.inference.llm_session.LLMSession`
(:class:`LLMBatch`): a later call's requests join it between steps, and each call gets only its own
requests' groups::

    serve run --address local serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from freezeempath.inference.llm_session import GenerationRequest, LLMSession, TextGroup
from freezeempath.model.build import build_llm_part
from ray import serve

from serve.args import ModelArgs
from serve.deployments.outbox import drain, end
from serve.deployments.replica import setup_replica


@dataclasses.dataclass(eq=False)
class LLMCall:
    """One ``LLM.generate`` call: its requests, where their groups go, and whether its caller has gone."""

    requests: list[GenerationRequest]
    outbox: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    gone: bool = False
    dropped: set[int] = dataclasses.field(default_factory=set)  # replies whose callers have gone


class LLMBatch:
    """One LLM session that the calls with one key join between steps (continuous batching).

    ``make(requests)`` opens the session in a worker thread. The loop runs while streams are live or
    calls wait to join; each step's groups go to their calls, and a call ends once its streams have.
    A call whose requests cannot join fails alone; a step that fails fails every call.
    """

    def __init__(self, make: Any, on_end: Any) -> None:
        self.make, self.on_end = make, on_end
        self.session: LLMSession | None = None
        self.owners: list[tuple[LLMCall, int]] = []  # session stream → (call, its index in the call)
        self.joining: list[LLMCall] = []
        self.task: asyncio.Task | None = None

    def join(self, call: LLMCall) -> None:
        """Queue ``call`` to join the session at its next step (the first call opens it)."""
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
        out: dict[LLMCall, list[TextGroup | None]] = {}
        for (call, j), group in zip(self.owners, groups, strict=True):
            if group is not None and not call.gone and j not in call.dropped:
                out.setdefault(call, [None] * len(call.requests))[j] = group
        for call, call_groups in out.items():
            call.outbox.put_nowait(call_groups)
        before = {c for c, _ in self.owners}
        keep = self.session.compact({b for b, (c, j) in enumerate(self.owners) if c.gone or j in c.dropped})
        self.owners = [self.owners[b] for b in keep]
        for call in before - {c for c, _ in self.owners}:
            end(call.outbox)


@serve.deployment
class LLM:
    """The frozen LLM: requests in, rounds of per-stream token groups out (streaming), batched continuously."""

    def __init__(self, model: ModelArgs) -> None:
        cfg, device = setup_replica(model)
        self.llm, self.stop_ids = build_llm_part(cfg.model, device)
        model.check_frozen("llm", self.llm)
        self.read, self.top_p = cfg.model.speech_decoder.read, cfg.model.generation.top_p
        self.batches: dict[Any, LLMBatch] = {}
        self.calls: dict[str, LLMCall] = {}  # running calls by the caller's id (for ``drop``)
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
            self.batches[key] = LLMBatch(self._session, lambda _: self.batches.pop(key, None))
        call, ended = LLMCall(list(requests)), False
        if call_id:
            self.calls[call_id] = call
        self.batches[key].join(call)
        try:
            async for groups in drain(call.outbox):
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
