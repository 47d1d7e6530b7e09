"""The vocoder deployment: units → audio at the output rate, a decoder batch's round per call.

In: one :class:`~freezeempath.inference.vocode.VocodeRequest` per stream of a decoder round (units and
the stream's vocoder state). Out: a :class:`~freezeempath.inference.vocode.VocodeResult` each (audio at
the output rate and the next state); requests of concurrent rounds batch with ``@serve.batch``::

    serve run --address local serve/configs/local.yaml
"""

from __future__ import annotations

import asyncio

from freezeempath.codec.build import build_codec_part
from freezeempath.inference.vocode import VocodeRequest, VocodeResult, vocode_batch
from ray import serve

from serve.args import CONCURRENT_BATCHES, Batching, ModelArgs
from serve.deployments.replica import configure_batching, setup_replica


@serve.deployment
class Vocoder:
    """Units → audio at the output rate, batched across streams; the stream state travels with requests."""

    def __init__(self, model: ModelArgs, batching: Batching, output_rate: int) -> None:
        cfg, device = setup_replica(model)
        self.codec, self.output_rate = build_codec_part(cfg.model, device), output_rate
        configure_batching(self.vocode_batch, batching)

    async def vocode_round(self, requests: list[VocodeRequest]) -> list[VocodeResult]:
        """One round of a decoder session: a chunk per stream (they join the dynamic batch together)."""
        return list(await asyncio.gather(*(self.vocode_batch(r) for r in requests)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, max_concurrent_batches=CONCURRENT_BATCHES)
    async def vocode_batch(self, requests: list[VocodeRequest]) -> list[VocodeResult]:
        """Chunks of several streams; equal shapes share one synthesis."""
        return await asyncio.to_thread(vocode_batch, self.codec, requests, self.output_rate)
