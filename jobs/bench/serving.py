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
alongside. The runs live in ``jobs/bench/serving_runs.py``, the requests and measurements in
``serving_client.py``, the cluster and apps in ``serving_apps.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.bench.serving_client import TARGETS
from jobs.bench.serving_runs import cpu_benchmark, gpu_paper_reduced


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what is written to ``--out``."""
    args = parse_args(argv)
    result = gpu_paper_reduced(args) if args.gpu_paper_reduced else cpu_benchmark(args)
    print_table(result["rows"], result["summary"])
    if args.gpu_paper_reduced:
        for row in (r for r in result["rows"] if r["concurrency"] == 1):
            print(
                f"{row['mode']}: first audio p50 {row['first_audio_p50_ms']:.1f} ms of {row['p50_ms']:.1f} ms per reply"
            )
    else:
        load = result["load_average"]
        print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']} on {load['cpus']} CPUs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
