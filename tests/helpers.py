"""Test helpers importable from every test module (``pythonpath = tests`` in pyproject)."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, seed: int = 0, rate: int = 16_000) -> torch.Tensor:
    """A deterministic voiced-speech-like signal: a gliding harmonic tone with noise ``(N,)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 0.7 * t + seed)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return (0.3 * wave + 0.01 * torch.randn(t.shape, generator=g)).float()


EMOTION_CYCLE = ("neutral", "happy", "sad", "angry", "surprised")


def write_tiny_shards(directory, n_rows: int = 16, n_shards: int = 2, bad_rows: bool = True, n_units: int = 32):
    """Parquet shards with FLAC audio, replies, labels and units; optionally corrupt/empty/wrong-rate rows.

    Returns the list of shard paths. Bad rows: undecodable bytes, empty audio, a declared rate that is
    not the file's rate.
    """
    import io
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_rows):
        buf = io.BytesIO()
        wave = speech_like(0.8 + 0.15 * (i % 7), seed=i)
        sf.write(buf, wave.numpy(), 16000, format="FLAC")
        rows.append(_row(f"u{i:03d}", buf.getvalue(), 16000, i, n_units))
    if bad_rows:
        rows.append(_row("bad-corrupt", b"fLaC not really", 16000, 0, n_units))
        rows.append(_row("bad-empty", b"", 16000, 1, n_units))
        buf = io.BytesIO()
        sf.write(buf, speech_like(0.5).numpy(), 22050, format="FLAC")
        rows.append(_row("bad-rate", buf.getvalue(), 16000, 2, n_units))
    paths = []
    for s in range(n_shards):
        path = directory / f"shard-{s:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[s::n_shards]), path)
        paths.append(str(path))
    return paths


def _row(uid, audio, rate, i, n_units):
    emotion = EMOTION_CYCLE[i % 5]
    return {
        "id": uid,
        "audio": audio,
        "sample_rate": rate,
        "duration": 1.0,
        "transcript": f"sentence number {i}",
        "emotion": emotion,
        "reply": "I hear you." if i % 2 else "That sounds hard.",
        "reply_units": [(i * 7 + k) % n_units for k in range(12 + i % 5)],
    }


# The stage × ZeRO matrix, split in two: each stage runs through Ray Train under one mode
# (tests/train/test_train_ray.py) and through two gloo processes under the other (test_zero_matrix.py).
STAGE_ZERO_RAY = [("s1", 3), ("s2a", 2), ("s2b", 3), ("s3a", 2), ("s3b", 3)]
STAGE_ZERO_DIRECT = [("s1", 2), ("s2a", 3), ("s2b", 2), ("s3a", 3), ("s3b", 2)]
