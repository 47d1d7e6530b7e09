"""The GPU jobs' code paths on the CPU (gloo, fp32) with the paper preset's structure at tiny widths:
ZeRO-3 + parameter offload stage-1 steps, and time to first audio in process and through Serve. The
figures come from a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow

# Paper preset structure (Qwen2 LLM, Whisper encoder, 128 mels, 30 s window) at widths a CPU runs in seconds.
TINY_WIDTHS = [
    "model.encoder.d_model=32",
    "model.encoder.heads=2",
    "model.encoder.ffn_dim=64",
    "model.adapter.hidden=64",
    "model.emotion.gate_hidden=16",
    "model.emotion.heads=2",
    "model.emotion.ffn_hidden=64",
    "model.llm.hidden=32",
    "model.llm.heads=4",
    "model.llm.kv_heads=2",
    "model.llm.ffn=64",
    "model.llm.vocab=300",
    "model.speech_decoder.hidden=32",
    "model.speech_decoder.heads=4",
    "model.speech_decoder.kv_heads=2",
    "model.speech_decoder.ffn=64",
    "model.codec.n_units=32",
    "model.codec.decoder_hidden=32",
]


def run_job(args: list[str], tmp_path) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_PORT": "29571", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", *args, "--out", str(out), *TINY_WIDTHS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_gpu_smoke_runs_zero3_offload_steps_on_cpu(tmp_path):
    result = run_job(["jobs.gpu_smoke", "--device", "cpu", "--steps", "2"], tmp_path)
    assert result["device"] == "cpu" and result["layers"] == {"encoder": 2, "llm": 2}
    assert len(result["step_seconds"]) == 2 and all(t > 0 for t in result["step_seconds"])
    assert result["estimated_gib"] > 0 and result["loss"] == result["loss"]  # finite, not NaN


def test_gpu_latency_path_pairs_in_process_replies_with_serve_on_cpu(tmp_path):
    """In process, and through the app of ``serve/configs/gpu.yaml`` (real Serve HTTP on loopback, GPUs zeroed)."""
    args = ["jobs.bench.serving", "--gpu-paper-reduced", "--serve", "--device", "cpu", "--requests", "2"]
    args += ["--max-tokens", "6", "--concurrency", "1", "2", "--port", "8797"]
    result = run_job(args, tmp_path)
    local, remote, loaded = result["rows"]
    assert result["device"] == "cpu"
    assert (local["mode"], remote["mode"], loaded["mode"]) == ("in-process cpu", "serve cpu", "serve cpu")
    assert (local["requests"], remote["requests"], loaded["concurrency"], loaded["requests"]) == (3, 3, 2, 4)
    assert 0 <= loaded["joined_share"] <= 1
    for row in (local, remote, loaded):
        assert 0 < row["first_audio_p50_ms"] <= row["p50_ms"] and row["audio_chunks"] >= 1
    summary = result["summary"]
    assert summary["hops_per_request"] == pytest.approx(4 + remote["audio_chunks"])
    assert summary["first_audio_share"] == remote["first_audio_share"]
    assert set(summary["met"]) == {"overhead_per_hop_ms", "first_audio_share"}


def test_bench_serve_takes_serve_and_overrides_only_with_the_gpu_path():
    from jobs.bench.serving import parse_args

    assert parse_args(["--gpu-paper-reduced", "--serve", "model.llm.layers=4"]).serve
    for argv in (["--serve"], ["model.llm.layers=4"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
