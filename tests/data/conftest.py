"""Fixtures of the data tests: one local Ray instance per test session, shared with other suites."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_data():
    """A local Ray instance (2 CPUs, no dashboard); reuses one that is already running and leaves it up."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
