"""Ray Serve side of the serving benchmark (``python -m jobs.bench.serving``): cluster, apps, their counters.

In: a Serve config under ``serve/configs`` and the benchmark's switches. Out: a local Ray cluster with
Serve's HTTP proxy on loopback, the tiny-preset apps (``/on``, ``/off``, ``/defaults``) or the paper app
(``/paper``) deployed, bare handle-call timings and the deployments' counters.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# the apps deployed side by side: batching on, off, and on with Serve's defaults (``low_latency: false``)
APPS = {"on": {"batching": True}, "off": {"batching": False}, "defaults": {"batching": True, "low_latency": False}}


def one_replica_args(config: str) -> dict[str, Any]:
    """The ``args:`` of ``serve/configs/<config>``, every deployment at one replica (no autoscaling)."""
    raw = yaml.safe_load(Path("serve/configs", config).read_text())["applications"][0]["args"]
    for options in raw["deployments"].values():
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    return raw


def start_serve(port: int, num_cpus: int) -> str:
    """A local Ray cluster with Serve's HTTP proxy on loopback ``port``; returns the base URL."""
    import ray
    from ray import serve

    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def deploy_apps() -> None:
    """Tiny-preset apps from ``serve/configs/local.yaml``: batching on at ``/on``, off at ``/off``, and on
    with Serve's default transport and threads at ``/defaults``."""
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    raw = one_replica_args("local.yaml")
    raw["model"].update(config="tiny", device="cpu")
    raw["limits"].update(max_audio_seconds=8, max_concurrent_requests=64)
    for options in raw["deployments"].values():
        options["ray_actor_options"]["num_cpus"] /= len(APPS)  # all apps on 2 logical CPUs; one busy at a time
    for mode, switches in APPS.items():
        args = ServeArgs.model_validate({**raw, **switches})
        serve.run(build_app(args), name=f"bench-{mode}", route_prefix=f"/{mode}")


def deploy_paper_app(args: argparse.Namespace, overrides: list[str]) -> None:
    """``serve/configs/gpu.yaml`` with random weights and ``overrides``, one replica each, at ``/paper``."""
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    raw = one_replica_args("gpu.yaml")
    raw["model"].update(config="paper", overrides=overrides, weights=None, device=args.device)
    raw["limits"]["max_completion_tokens"] = max(raw["limits"]["max_completion_tokens"], args.max_tokens)
    for options in raw["deployments"].values():
        if not args.device.startswith("cuda"):
            options["ray_actor_options"]["num_gpus"] = 0
    serve.run(build_app(ServeArgs.model_validate(raw)), name="bench-paper", route_prefix="/paper")


def noop_call_ms(app: str, grpc: bool, n: int = 50) -> float:
    """Median round trip of a handle call that does no work (``Vocoder.vocode_round([])``): one bare hop."""
    from ray import serve

    handle = serve.get_deployment_handle("Vocoder", app_name=app).options(_by_reference=not grpc)

    async def timed() -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await handle.vocode_round.remote([])
            times.append(time.perf_counter() - start)
        return times

    return float(np.median(asyncio.run(timed())) * 1000)


def decoder_stats(app: str) -> dict[str, int]:
    """``SpeechDecoding.stats()`` of ``app`` (counts so far)."""
    from ray import serve

    return serve.get_deployment_handle("SpeechDecoding", app_name=app).stats.remote().result()


def lone_requests(app: str) -> tuple[int, int]:
    """Clips understood alone and decoder batches opened without the batch wait, so far, in ``app``."""
    from ray import serve

    understood = serve.get_deployment_handle("SpeechUnderstanding", app_name=app).stats.remote().result()
    return understood["alone"], decoder_stats(app)["unwaited"]
