"""The understanding deployment: encoder + adapter + emotion extractor, one clip in, its features out.

In: a mono 16 kHz clip ``(N,)`` from the gateway (checked there). Out:
:class:`~freezeempath.inference.understanding.ClipFeatures` (S rows, E, emotion), clips of concurrent
requests batched with ``@serve.batch``::

    serve run --address local serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio

import torch
from freezeempath.inference.understanding import ClipFeatures, understand_clips
from freezeempath.model.build import build_understander
from ray import serve

from serve.args import CONCURRENT_BATCHES, Batching, ModelArgs
from serve.deployments.replica import configure_batching, setup_replica


@serve.deployment
class SpeechUnderstanding:
    """Encoder + adapter + emotion extractor: one clip in, its S rows, E and emotion out (batched)."""

    def __init__(self, model: ModelArgs, batching: Batching) -> None:
        cfg, device = setup_replica(model)
        self.part = build_understander(cfg.model, model.trained, device)
        model.check_frozen("encoder", self.part.encoder)
        configure_batching(self.understand_batch, batching)
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
