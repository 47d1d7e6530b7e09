"""Ingest benchmark: each Ray Data pass against the faster DataLoader pass beside it, and the loader baseline."""

from __future__ import annotations

import pytest
import torch
from freezeempath.config import load_config
from helpers import write_tiny_shards

from jobs.bench.ingest_meters import CpuWindow, IngestResult, ShardStream, bracketed_ratios, steady_rate, window_padding


def test_each_ray_pass_meets_the_faster_neighbouring_loader_pass():
    pairs = bracketed_ratios([300.0, 240.0], [150.0, 200.0, 120.0])
    assert pairs == [(300.0, 200.0), (240.0, 200.0)]
    result = IngestResult(10, *pairs[0], 250.0, tuple(r / d for r, d in pairs))
    assert result.ratio == pytest.approx(1.5) and result.ratios == pytest.approx((1.5, 1.2))


def test_passes_must_interleave():
    with pytest.raises(ValueError, match="one DataLoader pass around each Ray Data pass"):
        bracketed_ratios([300.0, 240.0], [150.0, 200.0])


def test_loader_baseline_reads_every_shard_row_in_file_order_and_drops_bad_ones(tmp_path):
    paths = write_tiny_shards(tmp_path, n_rows=6, n_shards=2)  # 6 good rows, 3 bad ones spread over both files
    cfg, threads = load_config("tiny"), torch.get_num_threads()
    items = list(torch.utils.data.DataLoader(ShardStream(paths, cfg), batch_size=None))
    assert torch.get_num_threads() == threads  # the UDF's one-thread pin stays out of this process
    assert len(items) == 9  # one item per row; a bad row's item has no rows
    assert [i for item in items for i in item["id"]] == ["u000", "u002", "u004", "u001", "u003", "u005"]
    mels = [(m, n) for item in items for m, n in zip(item["mel"], item["mel_len"], strict=True)]
    assert all(m.shape[0] == cfg.model.encoder.n_mels and 0 < n <= m.shape[1] for m, n in mels)


def test_cpu_window_counts_this_process_over_the_steady_rows_only():
    def sizes():
        yield 100  # the first batch: before the window opens
        for _ in range(3):
            torch.linalg.matrix_exp(torch.randn(200, 200, dtype=torch.float64))  # CPU work inside the window
            yield 5

    window = CpuWindow()
    rows, _ = steady_rate(sizes(), window)
    assert rows == 115 and window.rows == 15
    per_row = window.ms_per_row("dataloader")
    assert per_row["dataloader_driver"] > 0 and "dataloader_feature_actors" not in per_row


def test_window_padding_compares_read_order_with_length_buckets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({"duration": pa.array([1.0, 4.0, 1.0, 4.0], pa.float32())}), path)
    padding = window_padding([path, path], 2)  # a shard listed twice pads the same
    assert padding["read_order"] == pytest.approx(6 / 16)  # windows (1, 4) and (1, 4): 3 s padded in each 8
    assert padding["bucketed"] == 0.0  # windows (1, 1) and (4, 4)
