"""Train one FreezeEmpath stage with Ray Train + DeepSpeed (the LLM and encoder stay frozen).

    ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/train/paper/stage1_semantic.yaml
    python -m jobs.train --config jobs/configs/train/tiny/stage1_semantic.yaml data.train_shards=[outputs/shards]

Without a cluster address (``RAY_ADDRESS`` or ``--address``) it starts a local Ray instance on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict

from freezeempath.config import load_config

from jobs.ray_cluster import connect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--config`` (YAML or preset) plus ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="stage YAML (jobs/configs/train/PRESET/*.yaml) or a preset")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""), help="Ray cluster; empty = local")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.zero_stage=3")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the stage; prints and returns the summary."""
    from freezeempath.train.run import run_training

    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    env = {"DS_ACCELERATOR": "cpu" if not cfg.train.use_gpu else "cuda", "OMP_NUM_THREADS": "1"}
    connect(args.address, os.cpu_count(), env)
    summary = asdict(run_training(cfg))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
