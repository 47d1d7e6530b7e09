"""The serving benchmark's runs (``python -m jobs.bench.serving``): paired, alternating and GPU levels.

In: parsed options. Out: the result written to ``--out``: rows of p50/p99 latency, first audio and
requests/s per mode and concurrency, and the summary against the targets (see ``jobs/bench/serving.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import numpy as np
from freezeempath.config import load_config
from freezeempath.inference.dialogue import AudioInput, Message
from freezeempath.inference.generate import build_responder

from jobs.bench.serving_apps import (
    APPS,
    decoder_stats,
    deploy_apps,
    deploy_paper_app,
    lone_requests,
    noop_call_ms,
    start_serve,
)
from jobs.bench.serving_client import (
    chat_body,
    clips,
    healthz_ms,
    met,
    ratios,
    serve_level,
    summarize,
    timed_events,
)

REDUCED_PAPER = [
    "model.encoder.source=random",
    "model.encoder.layers=2",
    "model.llm.source=random",
    "model.llm.layers=2",
    "model.speech_decoder.layers=2",
]
MODES = ("on", "off")  # the apps alternating at concurrency above 1
# concurrency 1 also runs the batching-on app with Serve's defaults (``low_latency: false``) beside them
ROW_NAMES = {"on": "batching on", "off": "batching off", "defaults": "defaults, batching on"}


def cpu_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Tiny preset: paired concurrency-1 runs, then alternating on/off levels."""
    import ray
    import torch
    from ray import serve

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    n = max(args.requests, 2 * max(args.concurrency))
    every = clips(n + 4)
    data, warm = every[:n], every[n:]  # the warm-up's clips are never measured: the gateway caches features
    bodies = [chat_body(x, rate, args.max_tokens) for x, rate in data]
    responder = build_responder(load_config("tiny").model)
    url = start_serve(args.port, args.num_cpus)
    try:
        deploy_apps()
        for mode in APPS:  # warm-up: imports, first batches
            asyncio.run(serve_level(f"{url}/{mode}", [chat_body(x, rate, args.max_tokens) for x, rate in warm], 2))
        timed_events(responder.stream([[Message("user", audio=AudioInput(*data[0]))]]))
        rows, summary = paired_c1(responder, data[: args.requests], bodies[: args.requests], url, args.max_tokens)
        rows.append(in_process_batch(responder, data, args.max_tokens))
        for c in (c for c in args.concurrency if c > 1):
            rows += alternating(args, bodies, url, c)
            print(rows[-2:], flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    summary = {**summary, **ratios(rows)}
    summary["met"] = met(summary)
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    return {"preset": "tiny", "max_tokens": args.max_tokens, "rows": rows, "summary": summary, "load_average": load}


def paired_c1(responder: Any, data: list, bodies: list, url: str, max_tokens: int) -> tuple[list, dict]:
    """Each request in-process, then through every app back to back, the app order rotating (concurrency 1)."""
    runs: dict[str, list[dict[str, float]]] = {"in-process": [], **{mode: [] for mode in APPS}}
    bare_hop = healthz_ms(url)
    lone_before = lone_requests("bench-on")
    apps = list(APPS)
    for i, ((x, rate), body) in enumerate(zip(data, bodies, strict=True)):
        dialogue = [Message("user", audio=AudioInput(x, rate))]
        runs["in-process"].append(timed_events(responder.stream([dialogue], max_new_tokens=max_tokens)))
        # the app right after the in-process reply runs slower (2-4 ms per hop here): each goes first in turn
        for mode in apps[i % len(apps) :] + apps[: i % len(apps)]:
            runs[mode] += asyncio.run(serve_level(f"{url}/{mode}", [body], 1))[0]
    rows = [
        summarize(name if name == "in-process" else f"serve {ROW_NAMES[name]}", 1, r, sum(x["total"] for x in r))
        for name, r in runs.items()
    ]
    lone = [b - a for a, b in zip(lone_before, lone_requests("bench-on"), strict=True)]
    hops = 4 + np.array([r["chunks"] for r in runs["on"]])
    summary: dict[str, float] = {"hops_per_request": float(hops.mean())}
    summary["c1_understood_alone"], summary["c1_sessions_unwaited"] = lone[0] / len(data), lone[1] / len(data)
    keys = {"on": "overhead_per_hop_ms", "off": "overhead_per_hop_ms_batching_off"}
    for mode, key in {**keys, "defaults": "overhead_per_hop_ms_serve_defaults"}.items():
        extra = np.array([s["total"] - p["total"] for s, p in zip(runs[mode], runs["in-process"], strict=True)])
        summary[key] = float(np.median(extra * 1000 / hops))
    bare = {
        "healthz_round_trip_ms": (bare_hop + healthz_ms(url)) / 2,
        "noop_handle_call_ms": noop_call_ms("bench-on", grpc=True),
        "noop_handle_call_ms_actor": noop_call_ms("bench-defaults", grpc=False),
    }
    return rows, {**summary, **bare}


def alternating(args: argparse.Namespace, bodies: list, url: str, concurrency: int) -> list[dict[str, Any]]:
    """One level through ``/on`` and ``/off`` in turn, ``--repeats`` times; runs and wall times pooled."""
    n = max(args.requests, 2 * concurrency)
    level = (bodies * (n // len(bodies) + 1))[:n]
    runs: dict[str, list] = {m: [] for m in MODES}
    wall, joined = dict.fromkeys(MODES, 0.0), dict.fromkeys(MODES, 0)
    for _ in range(args.repeats):
        for mode in MODES:
            before = decoder_stats(f"bench-{mode}")["joined"]
            got, seconds = asyncio.run(serve_level(f"{url}/{mode}", level, concurrency))
            runs[mode] += got
            wall[mode] += seconds
            joined[mode] += decoder_stats(f"bench-{mode}")["joined"] - before
    rows = [summarize(f"serve batching {m}", concurrency, runs[m], wall[m]) for m in MODES]
    for row, mode in zip(rows, MODES, strict=True):  # replies that joined a running decoder batch
        row["joined_share"] = joined[mode] / len(runs[mode])
    return rows


def in_process_batch(responder: Any, data: list, max_tokens: int) -> dict[str, Any]:
    """16 requests as one ``Responder`` batch: the library's own batching, no Serve."""
    batch = [[Message("user", audio=AudioInput(x, rate))] for x, rate in data[:16]]
    start = time.perf_counter()
    replies = responder.respond(batch, max_new_tokens=max_tokens)
    wall, n = time.perf_counter() - start, len(batch)
    tokens = float(np.mean([len(r.token_ids) for r in replies]))
    return {"mode": "in-process batch", "concurrency": n, "requests": n, "rps": n / wall, "tokens": tokens}


def gpu_paper_reduced(args: argparse.Namespace) -> dict[str, Any]:
    """Replies on one GPU with paper widths (2 layers per stack): time to first audio in process and,
    with ``--serve``, through the app of ``serve/configs/gpu.yaml``, each request in process then through
    Serve, back to back."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        message = "--gpu-paper-reduced needs a CUDA GPU, and none is visible (torch.cuda.is_available() is False)"
        print(message, file=sys.stderr)
        raise SystemExit(2)
    overrides = [*REDUCED_PAPER, f"model.generation.max_new_tokens={args.max_tokens}", *args.overrides]
    cfg = load_config("paper", overrides)
    with torch.device(args.device):  # random init on the GPU: minutes faster than on the CPU at full depth
        responder = build_responder(cfg.model, device=args.device)
    data = clips(max(args.requests, 3) + 2)
    dialogues = [[Message("user", audio=AudioInput(x, rate))] for x, rate in data[:-2]]
    timed_events(responder.stream(dialogues[:1]))  # warm-up (kernels, allocator)
    result: dict[str, Any] = {"config": overrides, "device": args.device}
    if args.serve:
        rows, summary = paper_through_serve(args, overrides, responder, data)
    else:
        runs = [timed_events(responder.stream([d])) for d in dialogues]
        rows, summary = [summarize(f"paper-reduced {args.device}", 1, runs, sum(r["total"] for r in runs))], {}
    if torch.cuda.is_available():
        result["card"] = torch.cuda.get_device_name()
    return {**result, "rows": rows, "summary": summary}


def paper_through_serve(args: argparse.Namespace, overrides: list[str], responder: Any, data: list) -> tuple:
    """Concurrency 1 paired (in process, then Serve) with overhead per hop; higher levels through Serve."""
    import ray
    from ray import serve

    bodies = [chat_body(x, rate, args.max_tokens) for x, rate in data]
    url = start_serve(args.port, max(args.num_cpus, 8))  # gpu.yaml asks for 8 CPUs in all
    try:
        deploy_paper_app(args, overrides)
        asyncio.run(serve_level(f"{url}/paper", bodies[-2:], 2))  # warm-up: never-measured clips
        local, remote = [], []
        for (x, rate), body in zip(data[:-2], bodies[:-2], strict=True):
            local.append(timed_events(responder.stream([[Message("user", audio=AudioInput(x, rate))]])))
            remote += asyncio.run(serve_level(f"{url}/paper", [body], 1))[0]
        rows = [summarize(f"in-process {args.device}", 1, local, sum(r["total"] for r in local))]
        rows.append(summarize(f"serve {args.device}", 1, remote, sum(r["total"] for r in remote)))
        for c in (c for c in args.concurrency if c > 1):
            level = (bodies[:-2] * (2 * c // len(bodies) + 2))[: max(args.requests, 2 * c)]
            before = decoder_stats("bench-paper")["joined"]
            try:
                got, wall = asyncio.run(serve_level(f"{url}/paper", level, c))
            except RuntimeError as err:  # keep the levels measured so far; name what failed
                rows.append({"mode": f"serve {args.device}", "concurrency": c, "requests": 0, "error": str(err)})
                print(f"concurrency {c} failed: {err}", flush=True)
                continue
            rows.append(summarize(f"serve {args.device}", c, got, wall))
            rows[-1]["joined_share"] = (decoder_stats("bench-paper")["joined"] - before) / len(got)
    finally:
        serve.shutdown()
        ray.shutdown()
    hops = 4 + np.array([r["chunks"] for r in remote])
    extra = np.array([s["total"] - p["total"] for s, p in zip(remote, local, strict=True)])
    summary = {"first_audio_share": rows[1]["first_audio_share"], "hops_per_request": float(hops.mean())}
    summary["overhead_per_hop_ms"] = float(np.median(extra * 1000 / hops))
    summary["first_audio_extra_ms"] = rows[1]["first_audio_p50_ms"] - rows[0]["first_audio_p50_ms"]
    return rows, {**summary, "met": met(summary)}
