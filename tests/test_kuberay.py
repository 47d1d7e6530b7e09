"""KubeRay manifests: valid against KubeRay's CRD schemas (../shared/kuberay), no field the schema does not
know, the RayService's Serve config equal to serve/configs/gpu.yaml, and every resource the Train and
Serve configs ask for present in a worker group."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from freezeempath.config import load_config
from helpers import ROOT

CRDS = ROOT.parent / "shared" / "kuberay"
SERVICE = ROOT / "serve" / "kuberay" / "rayservice.yaml"
JOBS = sorted((ROOT / "jobs" / "kuberay").glob("*.yaml"))

pytestmark = pytest.mark.skipif(not CRDS.is_dir(), reason="KubeRay CRD schemas not beside the checkout")


@functools.lru_cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The served, stored ``ray.io/v1`` OpenAPI v3 schema of ``kind``."""
    crd = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server would drop them silently: typos hide there)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [f for k, v in value.items() for f in unknown_fields(v, schema["additionalProperties"], f"{path}.{k}")]
    if isinstance(value, list) and "items" in schema:
        return [f for i, v in enumerate(value) for f in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def problems(manifest: dict[str, Any]) -> list[str]:
    schema = crd_schema(manifest["kind"])
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(manifest)
    ]
    return errors + [f"{f}: not in the {manifest['kind']} schema" for f in unknown_fields(manifest, schema)]


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [SERVICE, *JOBS], ids=lambda p: p.name)
def test_manifest_is_valid_against_its_crd(path):
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1" and not problems(manifest)


def test_the_check_catches_a_typo_and_a_wrong_type():
    manifest = load(SERVICE)
    typo = copy.deepcopy(manifest)
    typo["spec"]["rayClusterConfig"]["workerGroupSpec"] = typo["spec"]["rayClusterConfig"].pop("workerGroupSpecs")
    assert any("workerGroupSpec: not in the RayService schema" in p for p in problems(typo))
    wrong = copy.deepcopy(manifest)
    wrong["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "two"
    assert any("'two' is not of type 'integer'" in p for p in problems(wrong))


def group_resources(group: dict[str, Any]) -> tuple[float, float, int]:
    """CPUs, GPUs per pod of a worker group, and its most pods."""
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0)), int(group["maxReplicas"])


def test_the_rayservice_serves_the_gpu_config_and_its_deployments_fit():
    from serve.args import ServeArgs

    manifest = load(SERVICE)
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    gpu = load(ROOT / "serve" / "configs" / "gpu.yaml")
    assert served["applications"] == gpu["applications"] and served["http_options"]["port"] == 8000
    args = ServeArgs.model_validate(served["applications"][0]["args"])
    (group,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    cpus, gpus, pods = group_resources(group)
    need_gpus = need_cpus = 0.0
    for options in args.deployments.model_dump().values():
        scaling = options.get("autoscaling_config") or {}
        replicas = scaling.get("max_replicas") or options.get("num_replicas") or 1
        actor = options["ray_actor_options"]
        assert actor.get("num_gpus", 0) <= gpus and actor.get("num_cpus", 1) <= cpus
        need_gpus += replicas * actor.get("num_gpus", 0)
        need_cpus += replicas * actor.get("num_cpus", 1)
    assert need_gpus <= gpus * pods and need_cpus <= cpus * pods


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_each_rayjob_runs_its_stage_config_and_its_workers_fit(path):
    manifest = load(path)
    config = re.fullmatch(r"python -m jobs\.train --config (\S+)", manifest["spec"]["entrypoint"]).group(1)
    assert Path(config).stem == path.stem
    train = load_config(ROOT / config).train
    (group,) = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    cpus, gpus, pods = group_resources(group)
    per_pod = -(-train.num_workers // pods)  # workers spread over the pods
    assert per_pod * (1 if train.use_gpu else 0) <= gpus and per_pod * train.cpus_per_worker <= cpus
