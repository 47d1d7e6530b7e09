"""``cluster.yaml``: a valid Ray 2.60 cluster-launcher config whose image, installs and files match this checkout.

Validated the way ``ray up`` starts (defaults of the provider filled in, then Ray's JSON schema); launching it
needs a cloud account, which tests do not have.
"""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from helpers import ROOT

CLUSTER = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(CLUSTER.read_text())


def pinned() -> dict[str, str]:
    """``name → version`` of every ``==`` pin among pyproject's dependencies (extras stripped)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m[1]: m[2] for d in deps if (m := re.fullmatch(r"([\w-]+)(?:\[[^]]*])?==(\S+)", d.split(";")[0].strip()))}


def test_ray_accepts_the_config_as_ray_up_prepares_it(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cluster)
    validate_config(prepared)  # Ray's schema: a misspelt or misplaced key fails here
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["resources"] == {"CPU": 0}  # no Ray work on the head
    assert {"cpu_data", "gpu_train", "gpu_serve"} <= set(types)
    assert all(t["node_config"]["ImageId"].startswith("resolve:ssm:") for t in types.values())


def test_image_and_installs_follow_the_pins(cluster):
    pins = pinned()
    assert cluster["docker"]["image"] == f"rayproject/ray:{pins['ray']}-py311-gpu"
    assert (
        cluster["available_node_types"]["cpu_data"]["docker"]["worker_image"]
        == f"rayproject/ray:{pins['ray']}-py311-cpu"
    )
    setup = " ".join(cluster["setup_commands"])
    assert f"torch=={pins['torch']}" in setup and f"torchaudio=={pins['torchaudio']}" in setup
    assert setup.index("torch==") < setup.index("freezeempath[")  # the matched pair first


def test_the_checkout_is_synced_without_local_environments(cluster):
    assert cluster["file_mounts"] == {"~/freezeempath": "."}
    assert {".venv", "outputs", ".git"} <= set(cluster["rsync_exclude"])
    assert all(
        "RAY_AUTH_MODE=disabled" in " ".join(cmds)
        for cmds in (cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"])
    )


def test_files_named_in_the_usage_exist():
    usage = "".join(line for line in CLUSTER.read_text().splitlines(keepends=True) if line.startswith("#"))
    files = set(re.findall(r"\b((?:jobs|serve)/[\w/.-]+\.yaml)\b", usage))
    assert len(files) >= 3 and all((ROOT / f).is_file() for f in files), files
