"""Serving benchmark: latency, time to first audio and requests/s through Serve vs the in-process pipeline.

Tiny preset on CPU. Two Serve apps run side by side, dynamic batching on (``/on``) and off (``/off``);
the conditions being compared are interleaved so that load drifting on a shared machine hits them alike:
at concurrency 1 each request goes through ``Responder`` (no Serve), then the apps back to back, each
app first after ``Responder`` in turn; at concurrency 4 and 16 the two apps alternate level by level
(``--repeats`` times). Prints a table and
the ratios against the targets (≤ 5 ms overhead per hop; ≥ 2× requests/s from batching at concurrency 16;
first audio ≤ 25 % of the full reply) and writes them as JSON::

    python -m jobs.bench.serving                                  # ≈ 5 minutes on 2 cores
    python -m jobs.bench.serving --requests 4 --concurrency 1 4   # quicker
    python -m jobs.bench.serving --gpu-paper-reduced              # one CUDA GPU: paper widths, 2 layers each
    python -m jobs.bench.serving --gpu-paper-reduced --serve --concurrency 1 4   # also through Ray Serve
    python -m jobs.bench.serving --gpu-paper-reduced model.encoder.layers=32 model.llm.layers=28 \\
        model.speech_decoder.layers=24                          # the same at full depth
    python -m jobs.bench.serving --gpu-paper-reduced --device cpu --requests 1 --max-tokens 6 \\
        model.dtype=float32 model.speech_decoder.max_units=60   # CPU smoke test of that path
    ray job submit --working-dir . -- python -m jobs.bench.serving --out outputs/bench_serve.json

Hops per request = proxy→gateway, understanding, decoder stream, LLM stream, and the decoder's vocoder
call per round (one per audio chunk at concurrency 1). Overhead per hop = median over requests of
(Serve − in-process latency of the same request, run back to back) / hops, with batching on and off, and
with batching on under Serve's defaults (``low_latency: false``: Ray actor calls between deployments,
user code in its own thread); it includes HTTP, JSON, base64, 24 kHz resampling, pcm16 encoding and (on)
the batch waits, which a request alone in the gateway skips (``c1_understood_alone`` and
``c1_sessions_unwaited``: the share of concurrency-1 requests through ``/on`` that did). Rows at
concurrency 4 and 16 carry ``joined_share``: the share of replies that joined a decoder batch already
running (continuous batching; 0 with batching off, where every batch holds one reply). For scale,
``healthz_round_trip_ms`` is a bare HTTP → proxy → gateway round trip and ``noop_handle_call_ms`` (gRPC) /
``noop_handle_call_ms_actor`` a handle call that does no work (driver → vocoder replica), all measured
alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
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
MODES = ("on", "off")
# concurrency 1 also runs the batching-on app with Serve's defaults (``low_latency: false``) beside them
ROW_NAMES = {"on": "batching on", "off": "batching off", "defaults": "defaults, batching on"}
APPS = {"on": {"batching": True}, "off": {"batching": False}, "defaults": {"batching": True, "low_latency": False}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per level (at least 2 × concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=2, help="on/off alternations per level above 1")
    parser.add_argument("--max-tokens", type=int, default=48, help="reply token budget")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default="outputs/bench_serve.json")
    parser.add_argument("--gpu-paper-reduced", action="store_true", help="reduced paper preset on one GPU")
    parser.add_argument("--device", default="cuda", help="device of --gpu-paper-reduced (cpu: smoke test)")
    parser.add_argument("--serve", action="store_true", help="--gpu-paper-reduced also through Ray Serve")
    parser.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of the local Ray cluster")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for --gpu-paper-reduced")
    args = parser.parse_args(argv)
    if (args.serve or args.overrides) and not args.gpu_paper_reduced:
        parser.error("--serve and config overrides apply to --gpu-paper-reduced only")
    return args


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


def one_replica_args(config: str) -> dict[str, Any]:
    """The ``args:`` of ``serve/configs/<config>``, every deployment at one replica (no autoscaling)."""
    raw = yaml.safe_load(Path("serve/configs", config).read_text())["applications"][0]["args"]
    for options in raw["deployments"].values():
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    return raw


def deploy_apps() -> None:
    """Tiny-preset apps from ``serve/configs/local.yaml``: batching on at ``/on``, off at ``/off``, and on
    with Serve's default transport and threads at ``/defaults``."""
    from ray import serve

    from serve.app import build_app
    from serve.schemas import ServeArgs

    raw = one_replica_args("local.yaml")
    raw["model"].update(config="tiny", device="cpu")
    raw["limits"].update(max_audio_seconds=8, max_concurrent_requests=64)
    for options in raw["deployments"].values():
        options["ray_actor_options"]["num_cpus"] /= len(APPS)  # all apps on 2 logical CPUs; one busy at a time
    for mode, switches in APPS.items():
        args = ServeArgs.model_validate({**raw, **switches})
        serve.run(build_app(args), name=f"bench-{mode}", route_prefix=f"/{mode}")


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


def noop_call_ms(app: str, grpc: bool, n: int = 50) -> float:
    """Median round trip of a handle call that does no work (``Vocoder.vocode_round([])``): one bare hop."""
    from ray import serve

    handle = serve.get_deployment_handle("Vocoder", app_name=app).options(_by_reference=not grpc)

    async def timed() -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await handle.vocode_round.remote([])
            times.append(time.perf_counter() - start)
        return times

    return float(np.median(asyncio.run(timed())) * 1000)


def decoder_stats(app: str) -> dict[str, int]:
    """``SpeechDecoder.stats()`` of ``app`` (counts so far)."""
    from ray import serve

    return serve.get_deployment_handle("SpeechDecoder", app_name=app).stats.remote().result()


def lone_requests(app: str) -> tuple[int, int]:
    """Clips understood alone and decoder batches opened without the batch wait, so far, in ``app``."""
    from ray import serve

    understood = serve.get_deployment_handle("SpeechUnderstanding", app_name=app).stats.remote().result()
    return understood["alone"], decoder_stats(app)["unwaited"]


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


def start_serve(port: int, num_cpus: int) -> str:
    """A local Ray cluster with Serve's HTTP proxy on loopback ``port``; returns the base URL."""
    import ray
    from ray import serve

    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


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
    summary["met"] = _met(summary)
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    print_table(rows, summary)
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']} on {load['cpus']} CPUs")
    return {"preset": "tiny", "max_tokens": args.max_tokens, "rows": rows, "summary": summary, "load_average": load}


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Batching speedup at the highest concurrency and the first-audio share at concurrency 1."""
    pick = {(r["mode"], r["concurrency"]): r for r in rows}
    top = max(r["concurrency"] for r in rows if r["mode"].startswith("serve"))
    out: dict[str, Any] = {"first_audio_share": pick[("serve batching on", 1)]["first_audio_share"]}
    on, off = pick.get(("serve batching on", top)), pick.get(("serve batching off", top))
    if on and off and top > 1:
        out[f"batching_speedup_c{top}"] = on["rps"] / off["rps"]
    return out


def _met(summary: dict[str, Any]) -> dict[str, bool]:
    return {
        k: (summary[k] >= t if k.startswith("batching") else summary[k] <= t)
        for k, t in TARGETS.items()
        if k in summary
    }


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """A fixed-width table of every row, then the ratios."""
    header = f"{'mode':<22}{'conc':>5}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'1st audio':>10}{'share':>7}{'req/s':>8}"
    header += f"{'joined':>8}"  # share of replies that joined a running decoder batch
    print(header + "\n" + "-" * len(header))
    keys = ("p50_ms", "p99_ms", "first_audio_p50_ms", "first_audio_share", "rps", "joined_share")
    for r in rows:
        cells = [r.get(k) for k in keys]
        widths, places = (9, 9, 10, 7, 8, 8), (1, 1, 1, 2, 2, 2)
        text = "".join(
            " " * w if v is None else f"{v:>{w}.{p}f}" for v, w, p in zip(cells, widths, places, strict=True)
        )
        print(f"{r['mode']:<22}{r['concurrency']:>5}{r['requests']:>5}{text}")
    for key, value in summary.items():
        if key in TARGETS:
            print(f"{key}: {value:.3f}  (target {TARGETS[key]}: {'met' if summary['met'][key] else 'NOT met'})")
        elif key != "met":
            print(f"{key}: {value:.3f}")


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
    print_table(rows, summary)
    for row in (r for r in rows if r["concurrency"] == 1):
        print(f"{row['mode']}: first audio p50 {row['first_audio_p50_ms']:.1f} ms of {row['p50_ms']:.1f} ms per reply")
    if torch.cuda.is_available():
        result["card"] = torch.cuda.get_device_name()
    return {**result, "rows": rows, "summary": summary}


def deploy_paper_app(args: argparse.Namespace, overrides: list[str]) -> None:
    """``serve/configs/gpu.yaml`` with random weights and ``overrides``, one replica each, at ``/paper``."""
    from ray import serve

    from serve.app import build_app
    from serve.schemas import ServeArgs

    raw = one_replica_args("gpu.yaml")
    raw["model"].update(config="paper", overrides=overrides, weights=None, device=args.device)
    raw["limits"]["max_completion_tokens"] = max(raw["limits"]["max_completion_tokens"], args.max_tokens)
    for options in raw["deployments"].values():
        if not args.device.startswith("cuda"):
            options["ray_actor_options"]["num_gpus"] = 0
    serve.run(build_app(ServeArgs.model_validate(raw)), name="bench-paper", route_prefix="/paper")


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
    return rows, {**summary, "met": _met(summary)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what is written to ``--out``."""
    args = parse_args(argv)
    result = gpu_paper_reduced(args) if args.gpu_paper_reduced else cpu_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
