"""Benchmark stage 1 with the LLM frozen vs fully fine-tuned, and print the per-GPU memory estimate.

    python -m jobs.bench.stage1 --config demo --steps 5
    ray job submit --working-dir . -- python -m jobs.bench.stage1 --config demo

Both variants run side by side in this process on the same batch (throughput and exact gradient + optimizer
bytes). Targets: ≥ 1.3× throughput and ≤ 0.5× gradient + optimizer memory for the frozen LLM. Then prints
the memory estimate of the paper preset's stage-1 config on 8 × 80 GB for ZeRO-2 and ZeRO-3 + offload.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from freezeempath.config import load_config


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; prints and returns the results."""
    import torch
    from freezeempath.assets import bundled_question
    from freezeempath.audio import validate_waveform
    from freezeempath.train.memory import estimate_memory

    from jobs.bench.stage1_variants import run_variant

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    sample = bundled_question()
    wave = validate_waveform(sample.samples, sample.sample_rate, cfg.model.encoder.max_input_seconds)
    waves = [wave[: int(len(wave) * (1 - 0.2 * i))] for i in range(args.batch)]
    torch.manual_seed(0)
    frozen, full = (run_variant(cfg, waves, full=f, steps=args.steps) for f in (False, True))
    result = {
        "preset": cfg.preset,
        "variants": [asdict(frozen), asdict(full)],
        "throughput_ratio": round(frozen.tokens_per_s / full.tokens_per_s, 2),
        "grad_optimizer_memory_ratio": round(frozen.grad_optimizer_bytes / full.grad_optimizer_bytes, 6),
        "paper_stage1_per_gpu_gib_8x80GB": {},
    }
    for name, extra in {"zero2": ["train.zero_stage=2", "train.offload_param=false"], "zero3_offload": []}.items():
        est = estimate_memory(load_config("jobs/configs/train/paper/stage1_semantic.yaml", extra), world_size=8)
        result["paper_stage1_per_gpu_gib_8x80GB"][name] = {k: round(v, 2) for k, v in asdict(est).items()} | {
            "total": round(est.total, 2)
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
