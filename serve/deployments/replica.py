"""Setup every replica shares: its threads' CPU priority, torch threads, config and device, batch sizes.

In: a deployment's :class:`~serve.args.ModelArgs` and :class:`~serve.args.Batching`, and the replica's
``CPU_PRIORITY_ENV`` (set from ``DeploymentArgs.cpu_priority``). Out: the config to build and the device,
with the process's threads at their nice value and ``@serve.batch`` methods at their batch size.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from freezeempath.config import Config

from serve.args import CPU_PRIORITY_ENV, Batching, ModelArgs

log = logging.getLogger("ray.serve")


def set_cpu_priority() -> None:
    """Give every thread of this process the nice value in ``CPU_PRIORITY_ENV``, if set; threads
    started later inherit it. Linux nice values are per thread, hence each of ``/proc/self/task``.
    Ray starts workers at ``RAY_worker_niceness`` (15) on some threads: going below that needs
    CAP_SYS_NICE, going above does not."""
    value = os.environ.get(CPU_PRIORITY_ENV)
    if value is None:
        return
    refused = 0
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), int(value))
        except PermissionError:
            refused += 1
        except ProcessLookupError:  # the thread has ended
            pass
    if refused:
        log.warning("CPU priority %s refused on %d threads of this replica (needs CAP_SYS_NICE)", value, refused)


def setup_replica(model: ModelArgs) -> tuple[Config, str]:
    """Start a model replica: CPU priority, torch threads; returns the config to build and its device."""
    set_cpu_priority()
    torch.set_num_threads(model.torch_threads)
    return model.resolve(), model.torch_device()


def configure_batching(method: Any, batching: Batching) -> None:
    """Set a ``@serve.batch`` method's batch size and wait (its decorator takes only fixed values)."""
    method.set_max_batch_size(batching.max_batch_size)
    method.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
