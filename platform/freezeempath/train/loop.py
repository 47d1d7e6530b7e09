"""Per-worker training loop (Ray Train V2 + DeepSpeed ZeRO), one stage, the LLM and encoder frozen.

In: the config as a plain dict (typed again here). Out: DeepSpeed resume checkpoints and per-step
metrics reported through ``ray.train.report`` on every rank, and at the end the exported artefact
(trained weights only + ``config.yaml``) written by rank 0; each rank logs the row ids of every
micro-batch it trains on. A restarted worker group resumes from the last reported checkpoint and skips
the micro-batches of the epoch it had already consumed: the same rows, since ingest keeps one row order
(``train.run.ingest_options``, ``data.pipeline.read_shards``) and each worker reorders its micro-batches
with a generator seeded by the epoch and its rank (``data.pipeline.epoch_order``), so epochs differ.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from freezeempath.config import Config, from_dict
from freezeempath.stages import ALWAYS_FROZEN, Stage

log = logging.getLogger(__name__)
CHECKPOINT_TAG = "state"  # DeepSpeed also writes a file named "latest" beside the tag folder


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint's client state."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches consumed in the current epoch


def skip_deepspeed_shm_build() -> None:
    """gloo needs no shared-memory allreduce op; skip its 40 s JIT build on the CPU accelerator."""
    import deepspeed  # noqa: F401  (registers deepspeed.comm.torch)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def build_engine(cfg: Config, total_steps: int, model: Any = None) -> tuple[Any, Any, Stage]:
    """Model (built from ``cfg.model`` unless given) → stage's trainable set → DeepSpeed engine; also loads
    earlier stages' artefacts."""
    import deepspeed

    from freezeempath.model.build import build_model
    from freezeempath.model.checkpoint import load_trained
    from freezeempath.model.masks import avoid_cudnn_attention
    from freezeempath.stages import apply_stage
    from freezeempath.train.ds_config import deepspeed_config
    from freezeempath.train.optimizers import make_optimizer, make_scheduler

    avoid_cudnn_attention()
    stage = Stage(cfg.train.stage)
    model = model if model is not None else build_model(cfg.model)
    for directory in cfg.train.init_from:
        load_trained(model, directory)
    params = apply_stage(model, stage)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=params,
        optimizer=make_optimizer(params, cfg.train),
        lr_scheduler=lambda opt: make_scheduler(opt, total_steps, cfg.train.warmup_ratio),
        config=deepspeed_config(cfg.train, world),
    )
    return engine, model, stage


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: runs ``cfg.train.epochs`` epochs (or ``max_steps``) of one stage."""
    import ray.train

    from freezeempath.data.collate import Collator
    from freezeempath.data.pipeline import epoch_order
    from freezeempath.stages import loss_weights
    from freezeempath.train.losses import total_loss
    from freezeempath.train.metrics import StepMeter

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    skip_deepspeed_shm_build()
    cfg = from_dict(Config, config["cfg"])
    torch.manual_seed(cfg.train.seed)
    engine, model, stage = build_engine(cfg, config["total_steps"])
    frozen_before = frozen_digest(model, cfg)
    progress = resume(engine)
    fresh = progress == Progress()
    rows = rows_log(cfg)
    truncate_rows(rows, progress)  # a fresh run starts it empty
    if not fresh:
        truncate_metrics(cfg, progress)
    weights = loss_weights(stage, cfg.model.emotion.aux_weight)
    collate = Collator(model.llm.tokenizer, stage, cfg.model.encoder.window_frames)
    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()
    meter = StepMeter(stage)
    while progress.epoch < cfg.train.epochs and not done(progress, cfg):
        batches = shard.iter_torch_batches(batch_size=cfg.train.micro_batch, collate_fn=collate, drop_last=True)
        order = epoch_order(batches, cfg.data.batch_shuffle, cfg.data.shuffle_seed, progress.epoch, rank)
        for index, batch in enumerate(_timed(order, meter)):
            if index < progress.micro:  # consumed before a restart: neither repeat nor lose it
                continue
            model.train()
            out = engine(batch, stage)
            loss = total_loss(out, weights)
            engine.backward(loss.total)
            # asked before step(): afterwards DeepSpeed's answer is about the next micro-batch
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            progress.micro += 1
            log_rows(rows, progress, batch.row_ids)
            meter.micro_step(loss, out, batch)
            if boundary:
                progress.step += 1
                metrics = meter.finish_step(progress, engine.get_lr()[0])
                log_metrics(cfg, metrics)
                if _should_checkpoint(progress, cfg):
                    save_and_report(engine, progress, metrics)
                else:
                    ray.train.report(metrics)
                if fresh and progress.step == cfg.train.crash_after_step:
                    _crash_rank_zero()
                if done(progress, cfg):
                    break
        if not done(progress, cfg):
            progress = Progress(epoch=progress.epoch + 1, step=progress.step)
            save_and_report(engine, progress, meter.epoch_metrics(progress))
    export(engine, model, stage, cfg, {"before": frozen_before, "after": frozen_digest(model, cfg)})


def frozen_digest(model: Any, cfg: Config) -> dict[str, str]:
    """sha256 of the encoder's and of the LLM's weights (gathered under ZeRO-3), as a bundle's manifest
    records them (:func:`freezeempath.bundle.module_sha256`): proof that they never moved."""
    import deepspeed

    from freezeempath.bundle import module_sha256

    hashes = {}
    for part in ALWAYS_FROZEN:
        module = getattr(model, part)
        with deepspeed.zero.GatheredParameters(
            list(module.parameters()), modifier_rank=None, enabled=cfg.train.zero_stage == 3
        ):
            hashes[part] = module_sha256(module)
    return hashes


def _crash_rank_zero() -> None:
    """Fault drill: kill rank 0 hard, as a lost node would; Ray Train restarts the group from the checkpoint."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        # The controller collects reports (and so checkpoints) by polling workers every
        # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; a dead worker's unpolled reports are lost, and with them
        # the checkpoint to resume from. Outlive two polls, so the drill tests resuming, not that race.
        time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
        log.warning("fault drill: rank 0 exits now")
        os._exit(1)


def truncate_metrics(cfg: Config, progress: Progress) -> None:
    """After a restart, drop logged steps past the resumed checkpoint (they are redone) and note the resume."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        return
    out = Path(cfg.output_dir)
    _keep_jsonl(out / "metrics.jsonl", lambda row: row["step"] <= progress.step)
    _append_jsonl(out / "events.jsonl", {"event": "resumed", **vars(progress)})


def rows_log(cfg: Config) -> Path:
    """``output_dir/rows/rank<r>.jsonl``: one line per micro-batch this rank trained on (epoch, micro, ids)."""
    import ray.train

    folder = Path(cfg.output_dir) / "rows"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"rank{ray.train.get_context().get_world_rank()}.jsonl"


def log_rows(path: Path, progress: Progress, ids: tuple[str, ...]) -> None:
    """Append the micro-batch just consumed (``progress.micro`` counts it)."""
    _append_jsonl(path, {"epoch": progress.epoch, "micro": progress.micro, "ids": list(ids)})


def truncate_rows(path: Path, progress: Progress) -> None:
    """After a restart, drop micro-batches past the resumed checkpoint: this rank consumes them again."""
    _keep_jsonl(path, lambda row: (row["epoch"], row["micro"]) <= (progress.epoch, progress.micro))


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _keep_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite ``path`` (created if missing) with only the records ``keep`` accepts."""
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in records if keep(r)))


def log_metrics(cfg: Config, metrics: dict[str, float]) -> None:
    """Rank 0 appends the step's metrics to ``output_dir/metrics.jsonl`` (the job turns it into CSV + PNG)."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        path = Path(cfg.output_dir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        _append_jsonl(path, metrics)


def done(progress: Progress, cfg: Config) -> bool:
    """``max_steps`` reached (0 means no cap)."""
    return bool(cfg.train.max_steps) and progress.step >= cfg.train.max_steps


def _should_checkpoint(progress: Progress, cfg: Config) -> bool:
    every = cfg.train.checkpoint_every
    return bool(every) and progress.step % every == 0 or done(progress, cfg)


def _timed(batches: Any, meter: Any) -> Any:
    """Yield batches, recording how long each wait for data took."""
    it = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        meter.data_wait(time.perf_counter() - start)
        yield batch


def save_and_report(engine: Any, progress: Progress, metrics: dict[str, float]) -> None:
    """Every rank saves its DeepSpeed shard (trainable state only) and reports it to Ray Train."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag=CHECKPOINT_TAG, client_state=vars(progress), exclude_frozen_parameters=True)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def resume(engine: Any) -> Progress:
    """Load the latest reported checkpoint, if any; frozen weights come from their base source."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return Progress()
    with checkpoint.as_directory() as directory:
        _, client = engine.load_checkpoint(directory, tag=CHECKPOINT_TAG, load_module_strict=False)
    log.info("resumed at %s", client)
    return Progress(epoch=client["epoch"], step=client["step"], micro=client["micro"])


def export(engine: Any, model: Any, stage: Stage, cfg: Config, frozen: dict[str, Any]) -> None:
    """Rank 0 writes the trained weights of this stage + ``config.yaml`` (gathered under ZeRO-3),
    and ``frozen_check.json`` with the frozen parts' digests before and after training."""
    import deepspeed
    import ray.train

    from freezeempath.model.checkpoint import export_trained

    params = [p for name in stage.trainable for p in getattr(model, name).parameters()]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=cfg.train.zero_stage == 3):
        if ray.train.get_context().get_world_rank() == 0:
            out = Path(cfg.output_dir) / "artefact"
            export_trained(model, stage.trainable, out, cfg)
            frozen["unchanged"] = frozen["before"] == frozen["after"]
            (Path(cfg.output_dir) / "frozen_check.json").write_text(json.dumps(frozen, indent=2))
            log.info("exported %s; frozen weights unchanged: %s", out, frozen["unchanged"])
