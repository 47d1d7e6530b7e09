"""Benchmark the input pipeline: Ray Data vs a single-process DataLoader, and data wait during training.

    python -m jobs.bench.ingest --out outputs/bench_data
    ray job submit --working-dir . -- python -m jobs.bench.ingest --out outputs/bench_data

Builds the bundled sample corpus (espeak-ng) as shards, then measures side by side in one run: records/s of
the Ray Data pipeline (2 feature actors) and of ``torch.utils.data.DataLoader`` (one process) doing the same
decode + resample + log-mel on the same shards, in alternating passes (``--passes`` Ray Data passes, each
compared with the faster DataLoader pass beside it; the median ratio is reported, and every ratio, with
each side's CPU per row by process over the steady part of that pass), and the padded share of the
feature windows with and without length bucketing; then trains the tiny preset (2 workers) for a few
steps and reports the fraction of step time spent waiting for data. Targets: ingest ≥ 1.5×, data wait < 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from freezeempath.config import load_config


def main(argv: list[str] | None = None) -> dict:
    """Run both measurements; prints and writes ``bench_data.json``."""
    import ray
    from freezeempath.prepare.sample_corpus import build_sample_corpus
    from freezeempath.train.run import expand_shards, run_training

    from jobs.bench.ingest_meters import data_wait_fraction, measure_ingest, window_padding

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_data")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=16, help="read the corpus this many times for ingest")
    parser.add_argument("--config", default="tiny", help="preset whose features the ingest comparison computes")
    parser.add_argument("--passes", type=int, default=3, help="Ray Data passes, each between DataLoader passes")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False)
    build_sample_corpus(out / "shards")
    paths = expand_shards((str(out / "shards"),)) * args.repeat  # a longer stream for a steady-state rate
    # 2 feature actors (reading their shards) × 0.75 CPU leave the driver and Ray's own tasks room on 2 cores.
    ingest_cfg = load_config(args.config, ["data.feature_workers=2", "data.feature_cpus=0.75", "data.feature_batch=8"])
    ingest = measure_ingest(paths, ingest_cfg, args.passes)
    padding = window_padding(paths, ingest_cfg.data.feature_batch)
    train_cfg = load_config(
        "tiny",
        [
            "train.stage=s2a",
            f"data.train_shards=[{out / 'shards'}]",
            f"train.max_steps={args.steps}",
            "train.global_batch=4",
            "train.grad_accum=1",
            "train.micro_batch=2",
            f"output_dir={out / 'train'}",
            f"train.storage_path={out / 'ray'}",
            "train.run_name=bench-data",
            "data.feature_batch=8",
        ],
    )
    run_training(train_cfg)
    history = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "rows": ingest.rows,
        "ray_data_rows_per_s": round(ingest.ray_data_rows_per_s, 2),
        "dataloader_1_thread_rows_per_s": round(ingest.dataloader_rows_per_s, 2),
        "dataloader_all_threads_rows_per_s": round(ingest.dataloader_all_threads_rows_per_s, 2),
        "ingest_ratio_vs_1_thread": round(ingest.ratio, 2),
        "ingest_ratio_vs_all_threads": round(ingest.ratio_all_threads, 2),
        "ingest_ratio_every_pass": [round(r, 2) for r in ingest.ratios],
        "cpu_ms_per_row": {k: round(v, 2) for k, v in ingest.cpu_ms_per_row.items()},
        "feature_window_padding": {k: round(v, 3) for k, v in padding.items()},
        "data_wait_fraction": round(data_wait_fraction(history), 4),
        "train_steps": len(history),
    }
    (out / "bench_data.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
