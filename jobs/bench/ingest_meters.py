"""Input-pipeline benchmark: Ray Data streaming vs a single-process torch DataLoader, and data wait in training.

In: shard paths and a config. Out: :class:`IngestResult` (records/s of both, measured side by side in one
run on the same shards doing the same read + decode + resample + log-mel; both read the Parquet files
inside the timed pass; where each pipeline's CPU goes per row), the padded share of feature windows with
and without length bucketing, and the data-wait fraction of a short training run read from its metrics.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from freezeempath.config import Config
from freezeempath.stages import Stage


@dataclass(frozen=True)
class IngestResult:
    """Records per second of both pipelines, from the pass with the median ratio, and every ratio."""

    rows: int
    ray_data_rows_per_s: float
    dataloader_rows_per_s: float  # one process, one torch thread: the same per-process work as a Ray actor
    dataloader_all_threads_rows_per_s: float  # one process using every core through torch's intra-op threads
    ratios: tuple[float, ...] = ()  # every pass's Ray Data ÷ one-thread DataLoader, in run order
    cpu_ms_per_row: dict[str, float] = field(default_factory=dict)  # the reported passes' steady CPU, by process

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


def cpu_seconds_by_role() -> Counter[str]:
    """CPU seconds (user + system) so far of this process (``driver``), Ray Data's map workers
    (``feature_actors``) and the other Ray processes (``ray_other``: raylet, GCS, idle workers, Ray's actors)."""
    import psutil

    seconds: Counter[str] = Counter()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            line, times = " ".join(proc.info["cmdline"] or ()), proc.cpu_times()
        except psutil.Error:  # gone or not ours
            continue
        role = "driver" if proc.info["pid"] == os.getpid() else "feature_actors" if "MapWorker" in line else ""
        if role or "ray::" in line or "raylet" in line or "gcs_server" in line:
            seconds[role or "ray_other"] += times.user + times.system
    return seconds


class CpuWindow:
    """CPU by role over the steady part of a pass, opened and closed by :func:`steady_rate`."""

    def __init__(self) -> None:
        self.rows = 0  # rows after the first batch
        self.seconds: Counter[str] = Counter()

    def open(self) -> None:
        """Read the counters at the first batch."""
        self.seconds = Counter({k: -v for k, v in cpu_seconds_by_role().items()})

    def close(self, rows: int) -> None:
        """Read the counters after the last batch; ``rows`` came after the first."""
        self.rows = rows
        self.seconds.update(cpu_seconds_by_role())

    def ms_per_row(self, prefix: str) -> dict[str, float]:
        """``{prefix_role: ms of CPU per row}`` over the window."""
        return {f"{prefix}_{k}": 1e3 * s / max(self.rows, 1) for k, s in sorted(self.seconds.items()) if s > 0}


def steady_rate(sizes: Iterable[int], cpu: CpuWindow | None = None) -> tuple[int, float]:
    """Rows and rows/s of an iterator of batch sizes, timed from the first batch (start-up excluded);
    ``cpu``, when given, is read over the same window."""
    rows, first, start = 0, 0, 0.0
    for n in sizes:
        if not start:
            if cpu:
                cpu.open()
            first, start = n, time.perf_counter()
        rows += n
    if cpu:
        cpu.close(rows - first)
    return rows, (rows - first) / max(time.perf_counter() - start, 1e-9)


def dataloader_rate(paths: list[str], cfg: Config, threads: int, cpu: CpuWindow | None = None) -> tuple[int, float]:
    """Rows and steady rows/s through ``torch.utils.data.DataLoader`` (``num_workers=0``) with ``threads``."""
    dataset = ShardStream(paths, cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)
        return steady_rate((len(item["mel_len"]) for item in loader), cpu)
    finally:
        torch.set_num_threads(before)


def ray_data_rate(paths: list[str], cfg: Config, cpu: CpuWindow | None = None) -> tuple[int, float]:
    """Rows and steady rows/s through :func:`freezeempath.data.pipeline.build_dataset`, read on the driver."""
    from freezeempath.data.pipeline import build_dataset

    dataset = build_dataset(cfg, paths, Stage.S2A)
    batches = dataset.iter_batches(batch_size=8, batch_format="numpy")
    return steady_rate((len(b["mel_len"]) for b in batches), cpu)


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
    ratio gives the reported rates and CPU per row (its DataLoader side: the faster pass beside it), and
    every ratio is kept.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    _, dl_all = dataloader_rate(paths, cfg, threads=os.cpu_count() or 1)
    loader_cpu = [CpuWindow()]
    rows_dl, first = dataloader_rate(paths, cfg, threads=1, cpu=loader_cpu[0])
    ray_rates, loader_rates, ray_cpu = [], [first], []
    for _ in range(passes):
        ray_cpu.append(CpuWindow())
        rows_rd, rd = ray_data_rate(paths, cfg, ray_cpu[-1])
        if rows_dl != rows_rd:
            raise RuntimeError(f"pipelines disagree on rows: DataLoader {rows_dl}, Ray Data {rows_rd}")
        ray_rates.append(rd)
        loader_cpu.append(CpuWindow())
        loader_rates.append(dataloader_rate(paths, cfg, threads=1, cpu=loader_cpu[-1])[1])
    pairs = bracketed_ratios(ray_rates, loader_rates)
    order = sorted(range(len(pairs)), key=lambda k: pairs[k][0] / pairs[k][1])
    i = order[(len(pairs) - 1) // 2]  # the median pass; the lower one if even
    rd, dl = pairs[i]
    loader = loader_cpu[i] if loader_rates[i] >= loader_rates[i + 1] else loader_cpu[i + 1]
    cpu = {**loader.ms_per_row("dataloader"), **ray_cpu[i].ms_per_row("ray_data")}
    return IngestResult(rows_rd, rd, dl, dl_all, tuple(r / d for r, d in pairs), cpu)


def window_padding(paths: list[str], window: int) -> dict[str, float]:
    """Padded share of the audio in feature windows of ``window`` rows over the shards, from their
    ``duration`` column: windows cut in read order against :func:`~freezeempath.data.pipeline.length_windows`
    (a feature call pads its clips to the longest, as a micro-batch does; the windows' order changes nothing)."""
    import numpy as np
    import pyarrow.parquet as pq
    from freezeempath.data.pipeline import length_windows, read_windows

    padded = {"read_order": [0.0, 0.0], "bucketed": [0.0, 0.0]}  # [padded seconds, window seconds]
    for path in dict.fromkeys(paths):  # a shard listed again pads the same
        durations = pq.read_table(path, columns=["duration"]).column(0).to_numpy().astype(np.float64)
        read, bucketed = read_windows(len(durations), window), length_windows(durations, window, None)
        for kind, windows in (("read_order", read), ("bucketed", bucketed)):
            for rows in windows:
                full = len(rows) * durations[rows].max()
                padded[kind][0] += full - durations[rows].sum()
                padded[kind][1] += full
    return {kind: float(pad / max(total, 1e-9)) for kind, (pad, total) in padded.items()}


def data_wait_fraction(history: list[dict[str, float]], skip_first: int = 1) -> float:
    """Total data wait ÷ total step time over the logged steps (the first step warms the pipeline up)."""
    steps = history[skip_first:] or history
    total = sum(r["step_seconds"] for r in steps)
    return sum(r["data_wait_fraction"] * r["step_seconds"] for r in steps) / max(total, 1e-9)
