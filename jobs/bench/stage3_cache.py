"""Benchmark stage 3 per epoch: live LLM forward vs cached reply states (tiny preset, one process).

    python -m jobs.bench.stage3_cache --rows 32
    ray job submit --working-dir . -- python -m jobs.bench.stage3_cache

Both paths train the same decoder on the same rows in micro-batches of 4, side by side in one run: the live
path decodes audio, computes features, runs the encoder and the frozen LLM every step; the cached path reads
the LLM's reply states written once by ``train.reply_cache``. Target: ≥ 3× faster per epoch after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from freezeempath.config import load_config


def main(argv: list[str] | None = None) -> dict:
    """Time one epoch each way; prints and returns the figures."""
    import pyarrow.parquet as pq
    from freezeempath.data.collate import Collator
    from freezeempath.data.pipeline import AudioFeatures
    from freezeempath.model.build import build_model
    from freezeempath.prepare.sample_corpus import build_sample_corpus
    from freezeempath.stages import Stage, apply_stage, loss_weights
    from freezeempath.train.losses import total_loss
    from freezeempath.train.optimizers import make_optimizer
    from freezeempath.train.reply_cache import cache_reply_states
    from freezeempath.train.run import expand_shards

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench_stage3_cache")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="epochs each way, alternating; medians reported")
    args = parser.parse_args(argv)
    out, cfg = Path(args.out), load_config(args.config)
    shards = _stage3_shards(out, build_sample_corpus, expand_shards, cfg.model.codec.n_units, args.rows)
    start = time.perf_counter()
    cache = cache_reply_states(cfg, shards, out / "cache")
    cache_seconds = time.perf_counter() - start
    model = build_model(cfg.model)
    optimizer = make_optimizer(apply_stage(model, Stage.S3B), cfg.train)  # training's own optimizer
    collate = Collator(model.llm.tokenizer, Stage.S3B, cfg.model.encoder.window_frames)
    enc = cfg.model.encoder
    features = AudioFeatures(enc.n_mels, enc.window_frames, enc.max_input_seconds)

    def epoch(paths, live: bool) -> float:
        begin = time.perf_counter()
        for path in paths:
            table = pq.read_table(path).to_pydict()
            for i in range(0, len(table["id"]) - 3, 4):
                rows = {k: v[i : i + 4] for k, v in table.items()}
                batch = collate(features(rows) if live else rows)
                loss = total_loss(model(batch, Stage.S3B), loss_weights(Stage.S3B, 0.0))
                optimizer.zero_grad()
                loss.total.backward()
                optimizer.step()
        return time.perf_counter() - begin

    epoch(cache, live=False)  # warm-up
    pairs = [(epoch(shards, live=True), epoch(cache, live=False)) for _ in range(args.repeats)]
    live, cached = (statistics.median(times) for times in zip(*pairs, strict=True))
    result = {
        "rows": args.rows,
        "repeats": args.repeats,
        "live_epoch_s": round(live, 3),
        "cached_epoch_s": round(cached, 3),
        "speedups": [round(a / b, 2) for a, b in pairs],
        "cache_build_s": round(cache_seconds, 2),
        "speedup_after_first_epoch": round(live / cached, 2),
    }
    print(json.dumps(result, indent=2))
    return result


def _stage3_shards(out: Path, build_corpus, expand, n_units: int, rows: int) -> list[str]:
    """Sample-corpus shards with replies and synthetic unit targets (what stage 3 reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    build_corpus(out / "corpus")
    table = pa.concat_tables([pq.read_table(p) for p in expand((str(out / "corpus"),))]).slice(0, rows)
    data = table.to_pydict()
    data["reply"] = ["I'm sorry to hear that. I'm here for you."] * len(data["id"])
    data["reply_units"] = [[(i + k) % n_units for k in range(int(d * 50))] for i, d in enumerate(data["duration"])]
    (out / "stage3").mkdir(parents=True, exist_ok=True)
    path = out / "stage3" / "stage3-00000.parquet"
    pq.write_table(pa.table(data), path)
    return [str(path)]


if __name__ == "__main__":
    main()
