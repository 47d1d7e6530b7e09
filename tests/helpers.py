"""Test helpers importable from every test module (``pythonpath = tests`` in pyproject)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from freezeempath.config import CodecConfig

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, seed: int = 0, rate: int = 16_000) -> torch.Tensor:
    """A deterministic voiced-speech-like signal: a gliding harmonic tone with noise ``(N,)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 0.7 * t + seed)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return (0.3 * wave + 0.01 * torch.randn(t.shape, generator=g)).float()


def wav_b64(seconds: float = 1.2, seed: int = 0, rate: int = 16_000, fmt: str = "WAV") -> str:
    """:func:`speech_like` audio as a base64 file (``fmt``: a soundfile format), as API clients send it."""
    import base64
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, seed, rate).numpy(), rate, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def text_request(text: str, tokens: int, seed: int = 0, temperature: float = 1.0) -> Any:
    """A generation request of one typed user turn (no clips), sampled unless ``temperature`` is 0."""
    from freezeempath.chat_template import Turn
    from freezeempath.inference.llm_session import GenerationRequest

    return GenerationRequest(turns=(Turn("user", text),), max_new_tokens=tokens, temperature=temperature, seed=seed)


def unslotted_request(hidden: int = 32) -> Any:
    """A generation request carrying one clip's features but no ``<speech>`` slot: the LLM cannot prefill it."""
    from freezeempath.chat_template import Turn
    from freezeempath.inference.llm_session import GenerationRequest

    speech, emotion = torch.zeros(3, hidden), torch.zeros(1, hidden)
    return GenerationRequest(turns=(Turn("user", "hi"),), speech=(speech,), emotion=(emotion,), max_new_tokens=4)


def finite_cache(cache: Any) -> bool:
    """Whether every filled layer of an HF KV cache holds only finite keys and values."""
    layers = [layer for layer in getattr(cache, "layers", []) if getattr(layer, "is_initialized", False)]
    return all(bool(torch.isfinite(x.keys).all() and torch.isfinite(x.values).all()) for x in layers)


def nan_where_nothing_attended(model: Any, mask: Any = None) -> list[int]:
    """Give an HF model an SDPA kernel that returns NaN for a query attending no key, as some CUDA kernels do.

    The model keeps its mask function unless ``mask`` is given. Returns a counter whose one entry grows
    by the number of such queries the kernel saw.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    seen = [0]

    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: Any, bias: Any, **kw: Any) -> Any:
        out, weights = sdpa_attention_forward(module, query, key, value, bias, **kw)  # out (B, Q, H, Dh)
        if bias is not None:
            empty = ~bias.any(-1).transpose(1, 2)[..., None]  # bias (B, 1, Q, K) → (B, Q, 1, 1)
            seen[0] += int(empty.sum())
            out = out.masked_fill(empty, float("nan"))
        return out, weights

    name = f"sdpa_nan_where_nothing_attended_{id(seen)}"
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask or ALL_MASK_ATTENTION_FUNCTIONS[model.config._attn_implementation])
    model.set_attn_implementation(name)
    return seen


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
        rows.append(_row(f"u{i:03d}", buf.getvalue(), 16000, i, n_units, len(wave) / 16000))
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


def _row(uid, audio, rate, i, n_units, duration=1.0):
    emotion = EMOTION_CYCLE[i % 5]
    return {
        "id": uid,
        "audio": audio,
        "sample_rate": rate,
        "duration": duration,
        "transcript": f"sentence number {i}",
        "emotion": emotion,
        "reply": "I hear you." if i % 2 else "That sounds hard.",
        "reply_units": [(i * 7 + k) % n_units for k in range(12 + i % 5)],
    }


# The stage × ZeRO matrix, split in two: each stage runs through Ray Train under one mode
# (tests/train/test_train_ray.py) and through two gloo processes under the other (test_zero_matrix.py).
STAGE_ZERO_RAY = [("s1", 3), ("s2a", 2), ("s2b", 3), ("s3a", 2), ("s3b", 3)]
STAGE_ZERO_DIRECT = [("s1", 2), ("s2a", 3), ("s2b", 2), ("s3a", 3), ("s3b", 2)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (metrics, events and rows logs of a training run)."""
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def check_fit_outputs(cfg: Any, out: Path, summary: Any) -> list[dict[str, Any]]:
    """What every Ray Train fit must leave in ``out``: frozen digests equal, one metrics row per step with
    its rate, the CSV and plot, and an artefact holding the stage's trainable parts, which all moved from
    the base weights. Returns the metrics rows."""
    import json

    from freezeempath.model.build import build_model
    from freezeempath.model.checkpoint import load_trained
    from freezeempath.stages import Stage

    stage = Stage(cfg.train.stage)
    frozen = json.loads((out / "frozen_check.json").read_text())
    assert frozen["unchanged"] and frozen["before"] == frozen["after"]
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, summary.steps + 1))
    rate = "units_per_s" if stage.speech_stage else "tokens_per_s"
    assert all(0.0 <= r["data_wait_fraction"] <= 1.0 and r[rate] > 0 for r in rows)
    assert (out / "metrics.csv").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    base = build_model(cfg.model)  # the same base weights the workers started from
    before = {k: v.clone() for k, v in base.state_dict().items()}
    assert set(load_trained(base, out / "artefact")) == set(stage.trainable)
    changed = {k.split(".")[0] for k, v in base.state_dict().items() if not v.equal(before[k])}
    assert changed == set(stage.trainable)
    return rows


# codec tests (8 kHz, hop 160, 24 mels, 16 units)
TINY_CODEC = CodecConfig(
    n_units=16,
    unit_rate=50,
    sample_rate=8000,
    n_mels=24,
    n_fft=512,
    decoder_hidden=32,
    griffin_lim_iters=8,
    context_units=4,
)
CODEC_HOP = TINY_CODEC.sample_rate // TINY_CODEC.unit_rate


def codec_clip(seed: int, seconds: float = 1.0) -> torch.Tensor:
    """Speech-like test audio ``(N,)``: harmonics of a gliding pitch, syllable envelope, a little noise."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * TINY_CODEC.sample_rate)
    t = torch.arange(n) / TINY_CODEC.sample_rate
    f0 = 100 + 80 * torch.rand(1, generator=g) + 40 * torch.sin(2 * math.pi * (0.5 + torch.rand(1, generator=g)) * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / TINY_CODEC.sample_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = torch.sin(math.pi * (2 + 3 * torch.rand(1, generator=g)) * t).abs()
    noise = torch.randn(n, generator=g) * (1 - envelope) * 0.05
    return (0.2 * voiced * envelope + noise).to(torch.float32)


def mel_distance(codec: Any, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean log-mel L1 between two waveforms of equal length."""
    return (codec.log_mel(a) - codec.log_mel(b)).abs().mean().item()


def serve_on_loopback(port: int) -> Iterator[Any]:
    """Ray Serve with its HTTP proxy on 127.0.0.1:``port`` for a test module (a local Ray cluster when none
    is running, shut down after); yields the ``ray.serve`` module. Wrap with ``pytest.fixture``."""
    import os

    import ray
    from ray import serve

    os.environ.pop("FREEZEEMPATH_API_KEYS", None)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield serve
    serve.shutdown()
    if owns_ray:
        ray.shutdown()
