"""Input-pipeline benchmark: Ray Data streaming vs a single-process torch DataLoader, and data wait in training.

In: shard paths and a config. Out: :class:`IngestResult` (records/s of both, measured side by side in one
run on the same shards doing the same read + decode + resample + log-mel; both read the Parquet files
inside the timed pass) and the data-wait fraction of a short training run read from its metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from freezeempath.config import Config
from freezeempath.train.stages import Stage


@dataclass(frozen=True)
class IngestResult:
    """Records per second of both pipelines, from the pass with the median ratio, and every ratio."""

    rows: int
    ray_data_rows_per_s: float
    dataloader_rows_per_s: float  # one process, one torch thread: the same per-process work as a Ray actor
    dataloader_all_threads_rows_per_s: float  # one process using every core through torch's intra-op threads
    ratios: tuple[float, ...] = ()  # every pass's Ray Data ÷ one-thread DataLoader, in run order

    @property
    def ratio(self) -> float:
        """Ray Data ÷ single-threaded DataLoader (target ≥ 1.5)."""
        return self.ray_data_rows_per_s / self.dataloader_rows_per_s

    @property
    def ratio_all_threads(self) -> float:
        """Ray Data ÷ DataLoader with all intra-op threads."""
        return self.ray_data_rows_per_s / self.dataloader_all_threads_rows_per_s


class ShardStream(torch.utils.data.IterableDataset):
    """The shards' rows in order, read file by file inside the pass (as Ray Data reads them), one process.

    Each row goes through the same :class:`~freezeempath.data.pipeline.AudioFeatures` as the Ray Data
    pipeline; yields its output (one row, or none when the row is bad).
    """

    def __init__(self, paths: list[str], cfg: Config) -> None:
        from freezeempath.data.pipeline import AudioFeatures

        self.paths = list(paths)
        enc = cfg.model.encoder
        threads = torch.get_num_threads()  # the UDF pins one thread per actor; this process keeps all of its own
        self.features = AudioFeatures(enc.n_mels, enc.window_frames, min(cfg.data.max_seconds, enc.max_input_seconds))
        torch.set_num_threads(threads)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        from freezeempath.data.pipeline import BASE_COLUMNS  # what AudioFeatures reads of a row

        for path in self.paths:
            for row in pq.read_table(path, columns=list(BASE_COLUMNS)).to_pylist():
                yield self.features({k: [row[k]] for k in BASE_COLUMNS})


def steady_rate(sizes: Any) -> tuple[int, float]:
    """Rows and rows/s of an iterator of batch sizes, timed from the first batch (start-up excluded)."""
    rows, first, start = 0, 0, 0.0
    for n in sizes:
        if not start:
            first, start = n, time.perf_counter()
        rows += n
    return rows, (rows - first) / max(time.perf_counter() - start, 1e-9)


def dataloader_rate(paths: list[str], cfg: Config, threads: int) -> tuple[int, float]:
    """Rows and steady rows/s through ``torch.utils.data.DataLoader`` (``num_workers=0``) with ``threads``."""
    dataset = ShardStream(paths, cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)
        return steady_rate(len(item["mel_len"]) for item in loader)
    finally:
        torch.set_num_threads(before)


def ray_data_rate(paths: list[str], cfg: Config) -> tuple[int, float]:
    """Rows and steady rows/s through :func:`freezeempath.data.pipeline.build_dataset`, read on the driver."""
    from freezeempath.data.pipeline import build_dataset

    dataset = build_dataset(cfg, paths, Stage.S2A)
    return steady_rate(len(b["mel_len"]) for b in dataset.iter_batches(batch_size=8, batch_format="numpy"))


def bracketed_ratios(ray: Sequence[float], loader: Sequence[float]) -> list[tuple[float, float]]:
    """Pair Ray Data pass ``i`` with the faster DataLoader pass around it (``loader[i]`` or ``loader[i + 1]``).

    The machine's speed drifts over a run, so each Ray Data pass is compared with its neighbours only, and
    with the faster one, so a slow spell cannot flatter the ratio. Returns ``(ray, loader)`` rates per pass.
    """
    if len(loader) != len(ray) + 1:
        raise ValueError(f"need one DataLoader pass around each Ray Data pass: {len(ray)} vs {len(loader)}")
    return [(r, max(loader[i], loader[i + 1])) for i, r in enumerate(ray)]


def measure_ingest(paths: list[str], cfg: Config, passes: int = 3) -> IngestResult:
    """Both pipelines on the same shards, alternating in this process: DataLoader, Ray Data, DataLoader, ….

    ``passes`` Ray Data passes, each compared with :func:`bracketed_ratios`; the pass with the median
    ratio gives the reported rates, and every ratio is kept.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    _, dl_all = dataloader_rate(paths, cfg, threads=os.cpu_count() or 1)
    rows_dl, first = dataloader_rate(paths, cfg, threads=1)
    ray_rates, loader_rates = [], [first]
    for _ in range(passes):
        rows_rd, rd = ray_data_rate(paths, cfg)
        if rows_dl != rows_rd:
            raise RuntimeError(f"pipelines disagree on rows: DataLoader {rows_dl}, Ray Data {rows_rd}")
        ray_rates.append(rd)
        loader_rates.append(dataloader_rate(paths, cfg, threads=1)[1])
    pairs = bracketed_ratios(ray_rates, loader_rates)
    rd, dl = sorted(pairs, key=lambda p: p[0] / p[1])[(len(pairs) - 1) // 2]  # median; lower one if even
    return IngestResult(rows_rd, rd, dl, dl_all, tuple(r / d for r, d in pairs))


def data_wait_fraction(history: list[dict[str, float]], skip_first: int = 1) -> float:
    """Total data wait ÷ total step time over the logged steps (the first step warms the pipeline up)."""
    steps = history[skip_first:] or history
    total = sum(r["step_seconds"] for r in steps)
    return sum(r["data_wait_fraction"] * r["step_seconds"] for r in steps) / max(total, 1e-9)
