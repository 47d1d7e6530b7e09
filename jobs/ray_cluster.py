"""Joining Ray from a job: the cluster at ``--address`` (or ``RAY_ADDRESS``), else a local one on this machine."""

from __future__ import annotations

import sys


def connect(address: str, num_cpus: int | None = None, env_vars: dict[str, str] | None = None) -> None:
    """Join the cluster at ``address``, or start a local one (no dashboard) when it is empty.

    A driver that already called ``ray.init`` (a test, another job in the same process) keeps its cluster.
    Ray Data's progress bars are shown only on a terminal.
    """
    import ray

    if not ray.is_initialized():
        runtime_env = {"env_vars": env_vars} if env_vars else None
        if address:
            ray.init(address=address, runtime_env=runtime_env)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
