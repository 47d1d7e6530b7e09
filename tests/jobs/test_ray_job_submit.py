"""A `ray start` cluster on loopback ports, started from the repository root as the README says: a real
`ray job submit` of the training job, and a real `serve deploy` of the Serve config that the `openai`
SDK then talks to.

The cluster gets its own temp dir, and teardown stops only its processes (`ray stop` would stop every Ray
instance of the user, including the test session's own).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import soundfile as sf
import yaml
from helpers import ROOT, wav_b64, write_tiny_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GCS_PORT, DASHBOARD_PORT, SERVE_PORT = 6391, 8276, 8792
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
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


@pytest.fixture(scope="module")
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
        cwd=ROOT,  # workers import `serve` from here (serve/app.py)
        env=env,
        capture_output=True,
        timeout=120,
    )
    yield env
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp in part for part in proc.info["cmdline"] or []):
            proc.kill()
    shutil.rmtree(temp, ignore_errors=True)


def run_when_agent_ready(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a CLI call to the cluster's dashboard, retried while its agent is still starting after `ray start`."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(5)


def test_train_job_runs_through_ray_job_submit(ray_cluster, tmp_path):
    shards = write_tiny_shards(tmp_path / "shards", n_rows=8, bad_rows=False)
    out = tmp_path / "out"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        DASHBOARD,
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
    done = run_when_agent_ready(cmd, ray_cluster)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["stage"] == "s1"
    assert json.loads((out / "frozen_check.json").read_text())["unchanged"]


def test_serve_deploy_of_the_config_answers_the_openai_sdk(ray_cluster, tmp_path):
    raw = yaml.safe_load((ROOT / "serve" / "configs" / "local.yaml").read_text())
    raw["http_options"]["port"] = SERVE_PORT
    args = raw["applications"][0]["args"]
    args["model"].update(config="tiny")
    args["limits"]["max_completion_tokens"] = 8  # a reply's default budget
    for options in args["deployments"].values():  # one replica each fits the cluster's 2 CPUs
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(raw))
    serve_cli = str(Path(sys.executable).parent / "serve")
    done = run_when_agent_ready([serve_cli, "deploy", str(config), "-a", DASHBOARD], ray_cluster)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    url = f"http://127.0.0.1:{SERVE_PORT}"
    deadline = time.monotonic() + 300
    while not _healthy(url):  # the replicas build the tiny model and start
        assert time.monotonic() < deadline, "the deployed app never answered /healthz"
        time.sleep(2)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["freezeempath"]
    audio = {"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}
    reply = client.chat.completions.create(
        model="freezeempath",
        messages=[{"role": "user", "content": [audio]}],
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
    )
    samples, rate = sf.read(io.BytesIO(base64.b64decode(reply.choices[0].message.audio.data)))
    assert rate == 24_000 and samples.size > 0 and reply.usage.completion_tokens <= 8
    shut = subprocess.run([serve_cli, "shutdown", "-y", "-a", DASHBOARD], env=ray_cluster, capture_output=True)
    assert shut.returncode == 0, shut.stderr[-2000:]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
