"""Shared fixtures: tiny configs and models of the real architectures, seeded; no downloads."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg():
    """The tiny preset."""
    from freezeempath.config import load_config

    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    """A fresh tiny FreezeEmpath model (random weights of the real classes)."""
    from freezeempath.model.build import build_model

    return build_model(tiny_cfg.model)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test run (2 CPUs, no dashboard)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
