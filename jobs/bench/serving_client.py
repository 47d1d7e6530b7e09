"""Requests and measurements of the serving benchmark (``python -m jobs.bench.serving``).

In: clips of the bundled question, chat bodies, a Serve URL or ``Responder`` events. Out: per-request
timings (total, first audio, audio chunks, tokens), one level's summary row, and the ratios against the
targets.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

import numpy as np
import soundfile as sf
from freezeempath.assets import bundled_question
from freezeempath.inference.generate import AudioChunk, TextDelta

TARGETS = {"overhead_per_hop_ms": 5.0, "batching_speedup_c16": 2.0, "first_audio_share": 0.25}


def clips(n: int) -> list[tuple[np.ndarray, int]]:
    """``n`` distinct variants of the bundled question (distinct bytes: no cache hits in the gateway)."""
    q, rng = bundled_question("question_sad"), np.random.default_rng(0)
    base = np.asarray(q.samples, dtype=np.float32)
    noise = [1e-3 * rng.standard_normal(base.shape).astype(np.float32) for _ in range(n)]
    return [(base * (0.8 + 0.2 * rng.random()) + e, q.sample_rate) for e in noise]


def chat_body(samples: np.ndarray, rate: int, max_tokens: int) -> dict[str, Any]:
    """A streaming spoken chat request (pcm16 out, usage at the end)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV")
    data = base64.b64encode(buffer.getvalue()).decode()
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    return {
        "model": "freezeempath",
        "messages": [{"role": "user", "content": [part]}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "pcm16"},
        "max_completion_tokens": max_tokens,
    }


def summarize(name: str, concurrency: int, runs: list[dict[str, float]], wall: float) -> dict[str, Any]:
    """p50/p99 latency, first-audio p50 and share, requests/s of one level."""
    total = np.array([r["total"] for r in runs]) * 1000
    first = np.array([r["first_audio"] for r in runs]) * 1000
    return {
        "mode": name,
        "concurrency": concurrency,
        "requests": len(runs),
        "p50_ms": float(np.percentile(total, 50)),
        "p99_ms": float(np.percentile(total, 99)),
        "first_audio_p50_ms": float(np.percentile(first, 50)),
        "first_audio_share": float(np.median(first / total)),
        "rps": len(runs) / wall,
        "audio_chunks": float(np.mean([r["chunks"] for r in runs])),
        "tokens": float(np.mean([r["tokens"] for r in runs])),
    }


def timed_events(events: Any) -> dict[str, float]:
    """Consume one stream of ``Responder`` events; time to the first audio chunk and to the end."""
    start, first, chunks, tokens = time.perf_counter(), None, 0, 0
    for event in events:
        if isinstance(event, AudioChunk) and event.samples.numel():
            first, chunks = first or time.perf_counter() - start, chunks + 1
        tokens += isinstance(event, TextDelta)
    return {"total": time.perf_counter() - start, "first_audio": first or 0.0, "chunks": chunks, "tokens": tokens}


async def one_request(client: Any, url: str, body: dict[str, Any]) -> dict[str, float]:
    """Stream one chat reply; time to the first audio delta and to ``[DONE]``."""
    start, first, chunks, tokens = time.perf_counter(), None, 0, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.is_error:  # the API's error JSON names the problem
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            audio = (event["choices"][0]["delta"].get("audio") or {}) if event["choices"] else {}
            if audio.get("data"):
                first, chunks = first or time.perf_counter() - start, chunks + 1
            tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
    return {"total": time.perf_counter() - start, "first_audio": first or 0.0, "chunks": chunks, "tokens": tokens}


async def serve_level(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[list[dict], float]:
    """Run ``bodies`` with at most ``concurrency`` in flight; returns per-request timings and wall time."""
    import httpx

    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency + 4)) as client:

        async def limited(body: dict[str, Any]) -> dict[str, float]:
            async with gate:
                return await one_request(client, url, body)

        start = time.perf_counter()
        runs = await asyncio.gather(*(limited(b) for b in bodies))
        return list(runs), time.perf_counter() - start


def healthz_ms(url: str, n: int = 20) -> float:
    """Median HTTP round trip of ``GET /healthz``: one proxy → gateway hop on this machine right now."""
    import httpx

    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            client.get(f"{url}/on/healthz").raise_for_status()
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Batching speedup at the highest concurrency and the first-audio share at concurrency 1."""
    pick = {(r["mode"], r["concurrency"]): r for r in rows}
    top = max(r["concurrency"] for r in rows if r["mode"].startswith("serve"))
    out: dict[str, Any] = {"first_audio_share": pick[("serve batching on", 1)]["first_audio_share"]}
    on, off = pick.get(("serve batching on", top)), pick.get(("serve batching off", top))
    if on and off and top > 1:
        out[f"batching_speedup_c{top}"] = on["rps"] / off["rps"]
    return out


def met(summary: dict[str, Any]) -> dict[str, bool]:
    """Which targets of ``TARGETS`` the summary meets."""
    return {
        k: (summary[k] >= t if k.startswith("batching") else summary[k] <= t)
        for k, t in TARGETS.items()
        if k in summary
    }
