"""Driver side of a training run: datasets, the TorchTrainer, and the run's summary files.

In: a :class:`~freezeempath.config.Config` (``train.stage`` picks the stage). Out: a
:class:`TrainSummary`; ``output_dir`` holds ``config.yaml``, ``metrics.jsonl`` / ``metrics.csv``,
``loss.png``, ``summary.json`` and the exported ``artefact/``. Rerunning with the same ``run_name`` and
``storage_path`` resumes from the last checkpoint.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from freezeempath.config import Config, save_config, to_dict
from freezeempath.stages import Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    """What a run did."""

    stage: str
    steps: int
    rows: int
    skipped: dict[str, int]
    final_metrics: dict[str, float]
    artefact: str
    checkpoint: str | None


def expand_shards(patterns: tuple[str, ...]) -> list[str]:
    """Globs, files or directories (all ``*.parquet`` inside) → sorted shard paths."""
    paths: list[str] = []
    for pattern in patterns:
        p = Path(pattern)
        paths += sorted(str(x) for x in p.glob("*.parquet")) if p.is_dir() else sorted(glob.glob(pattern))
    return paths


def total_steps(rows: int, cfg: Config) -> int:
    """Optimizer steps of the run: epochs × whole global batches (or ``max_steps`` if smaller)."""
    per_epoch = rows // cfg.train.global_batch
    if per_epoch == 0:
        raise ValueError(f"{rows} rows cannot fill one global batch of {cfg.train.global_batch}")
    steps = cfg.train.epochs * per_epoch
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps else steps


def run_training(cfg: Config) -> TrainSummary:
    """Fit one stage with Ray Train on the cluster ``ray.init`` connected to."""
    import pyarrow.parquet as pq
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from freezeempath.data.pipeline import build_dataset, skip_counter
    from freezeempath.train.loop import train_loop_per_worker

    cfg = with_absolute_paths(cfg)
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    stage = Stage(cfg.train.stage)
    paths = expand_shards(cfg.data.train_shards)
    rows = sum(pq.read_metadata(p).num_rows for p in paths)  # footers only: no Ray Data job to count
    counter_name = f"freezeempath-skips-{cfg.train.run_name}"
    counter = skip_counter(counter_name)
    dataset = build_dataset(cfg, paths, stage, counter_name)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "total_steps": total_steps(rows, cfg)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})},
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        datasets={"train": dataset},
        dataset_config=ray.train.DataConfig(execution_options=ingest_options()),
        run_config=ray.train.RunConfig(
            name=cfg.train.run_name,
            storage_path=str(Path(cfg.train.storage_path).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    skipped = ray.get(counter.get.remote())
    ray.kill(counter)
    return _summarise(cfg, rows, skipped, result)


def ingest_options() -> Any:
    """Ray Train's ingest defaults with ``preserve_order``: each epoch streams the rows in one order, so a
    worker group restarted mid-epoch skips exactly the micro-batches its checkpoint counted."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def with_absolute_paths(cfg: Config) -> Config:
    """Output, storage, shard and artefact paths made absolute here, on the driver: Ray Train workers run in
    their own working directory, where a relative ``output_dir`` would land out of sight."""
    return replace(
        cfg,
        output_dir=_absolute(cfg.output_dir),
        data=replace(cfg.data, train_shards=tuple(_absolute(s) for s in cfg.data.train_shards)),
        train=replace(
            cfg.train,
            storage_path=_absolute(cfg.train.storage_path),
            init_from=tuple(_absolute(p) for p in cfg.train.init_from),
        ),
    )


def _absolute(path: str) -> str:
    """``path`` (a folder, file or glob) against the current directory; URIs pass through."""
    return path if "://" in path or Path(path).is_absolute() else str(Path.cwd() / path)


def _summarise(cfg: Config, rows: int, skipped: dict[str, int], result: Any) -> TrainSummary:
    from freezeempath.train.metrics import plot_losses, write_csv

    out = Path(cfg.output_dir)
    jsonl = out / "metrics.jsonl"
    if not jsonl.exists():
        raise RuntimeError(f"the training workers wrote no metrics to {jsonl}")
    history = [json.loads(line) for line in jsonl.read_text().splitlines()]
    write_csv(out / "metrics.csv", history)
    plot_losses(history, out / "loss.png")
    summary = TrainSummary(
        stage=cfg.train.stage,
        steps=int(history[-1]["step"]) if history else 0,
        rows=rows,
        skipped=skipped,
        final_metrics={k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)},
        artefact=str(out / "artefact"),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
    )
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary
