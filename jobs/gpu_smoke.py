"""GPU smoke job: stage 1 of the paper preset under ZeRO-3 with the frozen LLM's parameters offloaded to CPU,
on one GPU; prints build time, step time, peak GPU memory and the memory estimator's figure beside it.

    python -m jobs.gpu_smoke --steps 5                 # reduced: real widths, 2 layers per stack
    python -m jobs.gpu_smoke --steps 3 --full          # full depth (32 encoder, 28 LLM, 24 decoder layers)
    python -m jobs.gpu_smoke --steps 1 --device cpu    # gloo on the CPU: checks the path, not the figures
    ray job submit --working-dir . --entrypoint-num-gpus 1 -- python -m jobs.gpu_smoke

Random weights of the real widths (no checkpoints needed). Exits with a clear message without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

ZERO3_OFFLOAD = [
    "model.encoder.source=random",
    "model.llm.source=random",
    "train.stage=s1",
    "train.zero_stage=3",
    "train.offload_param=true",
    "train.offload_optimizer=false",
    "train.num_workers=1",
    "train.global_batch=2",
    "train.micro_batch=2",
    "train.grad_accum=1",
]
REDUCED = ["model.encoder.layers=2", "model.llm.layers=2", "model.speech_decoder.layers=2"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="every layer of the paper preset")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default="", help="also write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, applied last")
    return parser.parse_args(argv)


def smoke_config(args: argparse.Namespace):
    """The paper preset, ZeRO-3 + parameter offload, reduced unless ``--full``; bf16 on CUDA, fp32 on CPU."""
    from freezeempath.config import load_config

    precision = ["train.use_gpu=true", "train.precision=bf16"] if args.device == "cuda" else []
    return load_config("paper", [*ZERO3_OFFLOAD, *([] if args.full else REDUCED), *precision, *args.overrides])


def init_single_process(device: str) -> None:
    """One-rank process group: NCCL on CUDA, gloo on the CPU."""
    import deepspeed

    if device == "cpu":
        from freezeempath.train.loop import skip_deepspeed_shm_build

        skip_deepspeed_shm_build()
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"})
    os.environ.setdefault("MASTER_PORT", "29533")
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")


def main(argv: list[str] | None = None) -> dict:
    """Run the smoke steps; prints and returns the figures."""
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_smoke needs a CUDA GPU; none is visible (torch.cuda.is_available() is False)")
    from freezeempath.assets import bundled_question
    from freezeempath.audio import WhisperLogMel, validate_waveform
    from freezeempath.batch import batch_to
    from freezeempath.model.build import build_model
    from freezeempath.stages import loss_weights
    from freezeempath.train.loop import build_engine
    from freezeempath.train.losses import total_loss
    from freezeempath.train.memory import estimate_memory

    from jobs.bench.stage1_variants import stage1_batch

    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = smoke_config(args)
    init_single_process(args.device)
    start = time.perf_counter()
    with torch.device(args.device):  # random init on the GPU: minutes faster than on the CPU at full depth
        model = build_model(cfg.model)
    engine, model, stage = build_engine(cfg, total_steps=args.steps, model=model)
    build_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # the peak below is the training steps', not the random init's
    sample = bundled_question()
    wave = validate_waveform(sample.samples, sample.sample_rate, 30.0)
    # The engine moved (and under bf16 cast) the model's front end; features are made on the CPU, as in training.
    enc = cfg.model.encoder
    frontend = WhisperLogMel(enc.n_mels, enc.window_frames, enc.sample_rate)
    waves = [wave, wave[: len(wave) // 2]]
    batch = batch_to(stage1_batch(model, waves, "I'm so sorry. I'm here.", frontend), args.device)
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        loss = total_loss(engine(batch, stage), loss_weights(stage, cfg.model.emotion.aux_weight))
        engine.backward(loss.total)
        engine.step()
        sync()
        times.append(time.perf_counter() - start)
    speech_rows = int(batch.mel_lens.max()) // 2 // cfg.model.adapter.k  # the <speech> slot's fused length
    estimate = estimate_memory(cfg, world_size=1, seq_len=int(batch.input_ids[0].numel()) + speech_rows)
    result = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "layers": {"encoder": cfg.model.encoder.layers, "llm": cfg.model.llm.layers},
        "build_seconds": build_s,
        "step_seconds": times,
        "step_seconds_median": sorted(times)[len(times) // 2],
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
        "estimated_gib": estimate.total,
        "estimate_parts_gib": asdict(estimate),
        "loss": float(loss.total),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
