"""The shipped Serve configs: each loads against Serve's schema and ``ServeArgs``, builds, and fits its machine."""

from __future__ import annotations

import pytest
import yaml
from freezeempath.config import load_config
from helpers import ROOT
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from serve.app import build_app
from serve.args import ServeArgs

CONFIGS = sorted((ROOT / "serve" / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"local.yaml", "gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_serve_yaml_validates_and_builds(path):
    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)  # Serve's own schema (serve run / serve deploy)
    (app,) = raw["applications"]
    assert app["import_path"] == "serve.app:build_app"
    args = ServeArgs.model_validate(app["args"])
    load_config(args.model.config, args.model.overrides)  # preset and overrides load (artefact: at deploy)
    assert isinstance(build_app(app["args"]), Application)


def _shipped_args(name: str) -> ServeArgs:
    raw = yaml.safe_load((ROOT / "serve" / "configs" / name).read_text())
    return ServeArgs.model_validate(raw["applications"][0]["args"])


def _most_replicas(deployment) -> int:
    """Replicas the deployment may run at once (autoscaling's maximum, or its fixed count)."""
    scaling = deployment.autoscaling_config
    return scaling.max_replicas if scaling else deployment.num_replicas or 1


def test_local_yaml_fits_two_cpus_with_every_replica_autoscaling_may_start():
    args = _shipped_args("local.yaml")
    parts = [getattr(args.deployments, n) for n in ("gateway", "understanding", "llm", "decoder", "vocoder")]
    assert sum(d.ray_actor_options.num_cpus * _most_replicas(d) for d in parts) <= 2.0


def test_gpu_yaml_uses_fractional_gpus_on_one_card():
    args = _shipped_args("gpu.yaml")
    parts = [getattr(args.deployments, n) for n in ("understanding", "llm", "decoder", "vocoder")]
    gpus = [d.ray_actor_options.num_gpus for d in parts]
    most = [_most_replicas(d) for d in parts]
    assert all(0 < g < 1 for g in gpus)
    assert sum(g * n for g, n in zip(gpus, most, strict=True)) <= 1.0, "every replica autoscaling may start must fit"
    assert args.model.config == "paper"
