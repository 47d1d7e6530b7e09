"""A real `ray job submit` of the training job to a `ray start` cluster on loopback ports.

The cluster gets its own temp dir, and teardown stops only its processes (`ray stop` would stop every Ray
instance of the user, including the test session's own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, write_tiny_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GCS_PORT, DASHBOARD_PORT = 6391, 8276
# Every port of the second cluster is explicit: the test session's own Ray instance already holds the defaults
# (the dashboard agent's 52365 among them), and an agent that cannot bind leaves "No available agent" forever.
AGENT_PORTS = {
    "--dashboard-agent-listen-port": 52391,
    "--dashboard-agent-grpc-port": 52392,
    "--runtime-env-agent-port": 52393,
    "--metrics-export-port": 52394,
    "--node-manager-port": 52395,
    "--object-manager-port": 52396,
    "--ray-client-server-port": 52397,
}
AGENT_WAIT_S = 300  # the job agent registers late on a loaded 2-core machine


@pytest.fixture
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="/tmp/rj")  # short: Ray's socket paths live under it
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    subprocess.run(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--port",
            str(GCS_PORT),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(DASHBOARD_PORT),
            "--disable-usage-stats",
            "--temp-dir",
            temp,
            *(str(x) for kv in AGENT_PORTS.items() for x in kv),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    yield env
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp in part for part in proc.info["cmdline"] or []):
            proc.kill()
    shutil.rmtree(temp, ignore_errors=True)


def test_train_job_runs_through_ray_job_submit(ray_cluster, tmp_path):
    shards = write_tiny_shards(tmp_path / "shards", n_rows=8, bad_rows=False)
    out = tmp_path / "out"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        f"http://127.0.0.1:{DASHBOARD_PORT}",
        "--working-dir",
        ".",
        "--runtime-env",
        "jobs/runtime_env.yaml",
        "--",
        "python",
        "-m",
        "jobs.train",
        "--config",
        "jobs/configs/train/tiny/stage1_semantic.yaml",
        f"data.train_shards=[{Path(shards[0]).parent}]",
        "train.max_steps=1",
        f"output_dir={out}",
        f"train.storage_path={tmp_path / 'ray'}",
        "train.init_from=[]",
    ]
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:  # the dashboard's job agent may still be starting right after `ray start`
        done = subprocess.run(cmd, cwd=ROOT, env=ray_cluster, capture_output=True, text=True, timeout=420)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["stage"] == "s1"
    assert json.loads((out / "frozen_check.json").read_text())["unchanged"]
