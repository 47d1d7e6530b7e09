"""Serving benchmark: latency, time to first audio and requests/s through Serve vs the in-process pipeline.

Runs the tiny preset on CPU: the same spoken requests through ``Responder`` (no Serve) and through the
Serve app (streaming chat, pcm16) at concurrency 1, 4 and 16, with dynamic batching on and off. Prints a
table and the ratios against the targets (≤ 5 ms overhead per hop; ≥ 2× requests/s from batching at
concurrency 16; first audio ≤ 25 % of the full reply) and writes them as JSON::

    python -m jobs.bench_serve                                  # a few minutes on 2 cores
    python -m jobs.bench_serve --requests 4 --concurrency 1 4   # quicker
    python -m jobs.bench_serve --gpu-paper-reduced              # one CUDA GPU: paper widths, 2 layers each
    ray job submit --working-dir . -- python -m jobs.bench_serve --out outputs/bench_serve.json

Hops per request = proxy→gateway, understanding, decoder stream, LLM stream, one vocoder call per audio
chunk; overhead per hop = (Serve p50 − in-process p50) / hops, so it includes HTTP, JSON, base64, 24 kHz
resampling and pcm16 encoding (an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from freezeempath.assets import bundled_question
from freezeempath.config import load_config
from freezeempath.inference.dialogue import AudioInput, Message
from freezeempath.inference.generate import AudioChunk, TextDelta, build_responder

REDUCED_PAPER = [
    "model.encoder.source=random",
    "model.encoder.layers=2",
    "model.llm.source=random",
    "model.llm.layers=2",
    "model.speech_decoder.layers=2",
]
TARGETS = {"overhead_per_hop_ms": 5.0, "batching_speedup_c16": 2.0, "first_audio_share": 0.25}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per level (at least 2 × concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=24, help="reply token budget")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default="outputs/bench_serve.json")
    parser.add_argument("--gpu-paper-reduced", action="store_true", help="reduced paper preset on one GPU")
    parser.add_argument("--device", default="cuda", help="device of --gpu-paper-reduced (cpu: smoke test)")
    return parser.parse_args(argv)


def clips(n: int) -> list[tuple[np.ndarray, int]]:
    """``n`` distinct variants of the bundled question (distinct bytes: no cache hits in the gateway)."""
    q, rng = bundled_question("question_sad"), np.random.default_rng(0)
    base = np.asarray(q.samples, dtype=np.float32)
    return [
        (base * (0.8 + 0.2 * rng.random()) + 1e-3 * rng.standard_normal(base.shape).astype(np.float32), q.sample_rate)
        for _ in range(n)
    ]


def chat_body(samples: np.ndarray, rate: int, max_tokens: int) -> dict[str, Any]:
    """A streaming spoken chat request (pcm16 out)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV")
    part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode(), "format": "wav"},
    }
    return {
        "model": "freezeempath",
        "messages": [{"role": "user", "content": [part]}],
        "stream": True,
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


def in_process(responder: Any, data: list[tuple[np.ndarray, int]], max_tokens: int) -> list[dict[str, Any]]:
    """The same requests through ``Responder`` one at a time, and 16 at once as one batch."""
    dialogues = [[Message("user", audio=AudioInput(x, rate))] for x, rate in data]
    runs = [timed_events(responder.stream([d], max_new_tokens=max_tokens)) for d in dialogues]
    rows = [summarize("in-process", 1, runs, sum(r["total"] for r in runs))]
    batch = dialogues[:16]
    start = time.perf_counter()
    replies = responder.respond(batch, max_new_tokens=max_tokens)
    wall = time.perf_counter() - start
    tokens = float(np.mean([len(r.token_ids) for r in replies]))
    n = len(batch)
    rows.append({"mode": "in-process batch", "concurrency": n, "requests": n, "rps": n / wall, "tokens": tokens})
    return rows


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
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            audio = (event["choices"][0]["delta"].get("audio") or {}) if event["choices"] else {}
            if audio.get("data"):
                first, chunks = first or time.perf_counter() - start, chunks + 1
            tokens = event.get("usage", {}).get("completion_tokens", tokens)
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


def serve_rows(args: argparse.Namespace, batching: bool, data: list, url: str) -> list[dict[str, Any]]:
    """Deploy the app (batching on or off), warm it, measure every concurrency level, delete it."""
    from ray import serve

    from serve.app import build_app
    from serve.schemas import ServeArgs

    raw = yaml.safe_load(Path("serve/configs/local.yaml").read_text())["applications"][0]["args"]
    raw["model"].update(config="tiny", device="cpu")
    raw["limits"].update(max_audio_seconds=8, max_concurrent_requests=64)
    raw["batching"] = batching
    for options in raw["deployments"].values():
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    serve.run(build_app(ServeArgs.model_validate(raw)), name="bench", route_prefix="/")
    bodies = [chat_body(x, rate, args.max_tokens) for x, rate in data]
    asyncio.run(serve_level(url, bodies[:4], 2))  # warm-up: imports, first batches
    rows = []
    for c in args.concurrency:
        n = max(args.requests, 2 * c)
        runs, wall = asyncio.run(serve_level(url, (bodies * (n // len(bodies) + 1))[:n], c))
        rows.append(summarize(f"serve batching {'on' if batching else 'off'}", c, runs, wall))
        print(rows[-1], flush=True)
    serve.delete("bench")
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The three target ratios from the measured rows."""
    pick = {(r["mode"], r["concurrency"]): r for r in rows}
    local, on1 = pick.get(("in-process", 1)), pick.get(("serve batching on", 1))
    out: dict[str, Any] = {}
    if local and on1:
        hops = 4 + on1["audio_chunks"]
        out["overhead_per_hop_ms"] = (on1["p50_ms"] - local["p50_ms"]) / hops
        out["hops_per_request"] = hops
    top = max(r["concurrency"] for r in rows if r["mode"].startswith("serve"))
    on, off = pick.get(("serve batching on", top)), pick.get(("serve batching off", top))
    if on and off:
        out[f"batching_speedup_c{top}"] = on["rps"] / off["rps"]
    if on1:
        out["first_audio_share"] = on1["first_audio_share"]
    checks = {
        k: (v <= TARGETS[k] if k != "batching_speedup_c16" else v >= TARGETS[k]) for k, v in out.items() if k in TARGETS
    }
    return {**out, "targets": TARGETS, "met": checks}


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """A fixed-width table of every row, then the ratios."""
    header = f"{'mode':<22}{'conc':>5}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'1st audio':>10}{'share':>7}{'req/s':>8}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        cells = [r.get(k) for k in ("p50_ms", "p99_ms", "first_audio_p50_ms", "first_audio_share", "rps")]
        text = "".join(
            f"{v:>{w}.{p}f}" if v is not None else " " * w
            for v, w, p in zip(cells, (9, 9, 10, 7, 8), (1, 1, 1, 2, 2), strict=True)
        )
        print(f"{r['mode']:<22}{r['concurrency']:>5}{r['requests']:>5}{text}")
    for key, value in summary.items():
        if key not in ("targets", "met"):
            target = TARGETS.get(key)
            verdict = "" if target is None else f"  (target {target}: {'met' if summary['met'][key] else 'NOT met'})"
            print(f"{key}: {value:.3f}{verdict}")


def gpu_paper_reduced(args: argparse.Namespace) -> dict[str, Any]:
    """In-process reply on one GPU with paper widths (2 layers per stack): time to first audio."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "--gpu-paper-reduced needs a CUDA GPU, and none is visible (torch.cuda.is_available() is False)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    cfg = load_config("paper", [*REDUCED_PAPER, f"model.generation.max_new_tokens={args.max_tokens}"])
    responder = build_responder(cfg.model, device=args.device)
    dialogues = [[Message("user", audio=AudioInput(x, rate))] for x, rate in clips(max(args.requests, 3))]
    timed_events(responder.stream(dialogues[:1]))  # warm-up (kernels, allocator)
    runs = [timed_events(responder.stream([d])) for d in dialogues]
    row = summarize(f"paper-reduced {args.device}", 1, runs, sum(r["total"] for r in runs))
    print_table([row], {})
    print(f"time to first audio p50: {row['first_audio_p50_ms']:.1f} ms of {row['p50_ms']:.1f} ms per reply")
    return {"rows": [row], "config": REDUCED_PAPER}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what is written to ``--out``."""
    args = parse_args(argv)
    result = gpu_paper_reduced(args) if args.gpu_paper_reduced else cpu_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def cpu_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Tiny preset: in-process rows, then Serve with batching on and off."""
    import ray
    import torch
    from ray import serve

    torch.set_num_threads(1)
    data = clips(max(args.requests, 2 * max(args.concurrency)))
    responder = build_responder(load_config("tiny").model)
    timed_events(responder.stream([[Message("user", audio=AudioInput(*data[0]))]]))  # warm-up
    rows = in_process(responder, data[: args.requests], args.max_tokens)
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    try:
        url = f"http://127.0.0.1:{args.port}"
        for batching in (True, False):
            rows += serve_rows(args, batching, data, url)
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = ratios(rows)
    print_table(rows, summary)
    return {"preset": "tiny", "max_tokens": args.max_tokens, "rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
