"""Target job: shards → the same shards with training targets, by batch inference on a Ray actor pool.

Kinds: ``replies`` (stage 1, the frozen LLM's reply to the transcript), ``pseudo_empathy`` (stage 2b,
needs ``--ser``), ``speech`` (stage 3, the reply spoken with espeak-ng's emotion presets → ``reply_audio``),
``units`` (stage 3, the codec's units of ``reply_audio`` → ``reply_units``). One output shard per input
shard, same name; reruns skip shards already written. A progress line per shard; the summary (rows
written, rows skipped by reason, hours of audio) is printed as JSON::

    python -m jobs.make_targets --kind replies --in outputs/shards/sample --out outputs/targets/s1 --config demo
    python -m jobs.make_targets --kind pseudo_empathy --in outputs/shards/instruct --ser outputs/shards/ravdess \\
        --out outputs/targets/s2b --config demo targets.pairs_per_ser_clip=4
    python -m jobs.make_targets --kind speech --in outputs/targets/s2b --out outputs/targets/s3-speech --config demo
    python -m jobs.make_targets --kind units --in outputs/targets/s3-speech --out outputs/targets/s3 --config demo \\
        model.codec.path=outputs/codec/demo
    ray job submit --working-dir . -- python -m jobs.make_targets --kind replies --in /shared/shards/instruct \\
        --out /shared/targets/s1 --config demo targets.actors=4

Without ``--address`` / ``RAY_ADDRESS`` a local Ray instance is started with ``--num-cpus`` CPUs; on a
cluster ``--out`` must be storage every worker can write to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from freezeempath.config import load_config
from freezeempath.prepare.targets import TargetKind, make_targets

from jobs.ray_cluster import connect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; everything else comes from the config and its dotted overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=[k.value for k in TargetKind])
    parser.add_argument("--in", dest="inputs", nargs="+", required=True, help="shard folders, files or globs")
    parser.add_argument("--out", required=True, help="output shard folder (existing shards are kept)")
    parser.add_argument("--ser", nargs="*", default=[], help="SER shards (pseudo_empathy)")
    parser.add_argument("--config", default="tiny", help="preset name or YAML")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. targets.pairs_per_ser_clip=4")
    args = parser.parse_args(argv)
    if args.kind == TargetKind.PSEUDO_EMPATHY.value and not args.ser:
        parser.error("--kind pseudo_empathy needs --ser")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Start or join Ray, make the targets, print the summary JSON and return it."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    connect(args.address, args.num_cpus)
    summary = make_targets(args.kind, args.inputs, args.out, cfg, ser_shards=args.ser).to_dict()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
