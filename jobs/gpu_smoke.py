"""GPU smoke job: stage 1 of a reduced paper preset (real layer widths, 2 layers each) under ZeRO-3 with
the frozen LLM's parameters offloaded to CPU, on one GPU; prints step time and peak GPU memory.

    python -m jobs.gpu_smoke --steps 5
    ray job submit --working-dir . --entrypoint-num-gpus 1 -- python -m jobs.gpu_smoke

Random weights of the real widths (no checkpoints needed). Exits with a clear message without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REDUCED = [
    "model.encoder.source=random",
    "model.encoder.layers=2",
    "model.llm.source=random",
    "model.llm.layers=2",
    "model.speech_decoder.layers=2",
    "train.stage=s1",
    "train.zero_stage=3",
    "train.offload_param=true",
    "train.offload_optimizer=false",
    "train.num_workers=1",
    "train.global_batch=2",
    "train.micro_batch=2",
    "train.grad_accum=1",
    "train.use_gpu=true",
    "train.precision=bf16",
]


def main(argv: list[str] | None = None) -> dict:
    """Run the smoke steps; prints and returns the figures."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_smoke needs a CUDA GPU; none is visible (torch.cuda.is_available() is False)")
    import deepspeed
    from freezeempath.assets import bundled_question
    from freezeempath.batch import batch_to
    from freezeempath.config import load_config
    from freezeempath.data.audio import validate_waveform
    from freezeempath.train.bench import stage1_batch
    from freezeempath.train.loop import build_engine
    from freezeempath.train.losses import total_loss
    from freezeempath.train.stages import loss_weights

    os.environ.update(
        {
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": os.environ.get("MASTER_PORT", "29533"),
        }
    )
    deepspeed.init_distributed(dist_backend="nccl")
    cfg = load_config("paper", REDUCED)
    engine, model, stage = build_engine(cfg, total_steps=args.steps)
    sample = bundled_question()
    wave = validate_waveform(sample.samples, sample.sample_rate, 30.0)
    batch = batch_to(stage1_batch(model, [wave, wave[: len(wave) // 2]], "I'm so sorry. I'm here."), "cuda")
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = total_loss(engine(batch, stage), loss_weights(stage, 0.8))
        engine.backward(loss.total)
        engine.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {
        "device": torch.cuda.get_device_name(0),
        "step_seconds_median": sorted(times)[len(times) // 2],
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 1024**3,
        "loss": float(loss.total),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
