"""Train one FreezeEmpath stage with Ray Train + DeepSpeed (the LLM and encoder stay frozen).

    ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/train/stage1_semantic.yaml
    python -m jobs.train --config jobs/configs/train/tiny_s1.yaml data.train_shards=[outputs/shards] train.zero_stage=3

Without a cluster address (``RAY_ADDRESS`` or ``--address``) it starts a local Ray instance on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict

from freezeempath.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--config`` (YAML or preset) plus ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="stage YAML (jobs/configs/train/*.yaml) or preset name")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""), help="Ray cluster; empty = local")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.zero_stage=3")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the stage; prints and returns the summary."""
    import ray
    from freezeempath.train.run import run_training

    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    env = {"DS_ACCELERATOR": "cpu" if not cfg.train.use_gpu else "cuda", "OMP_NUM_THREADS": "1"}
    if args.address:
        ray.init(address=args.address, runtime_env={"env_vars": env})
    elif not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env={"env_vars": env})
    summary = asdict(run_training(cfg))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
