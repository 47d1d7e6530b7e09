"""Fuzz job: property-based inputs against the real Serve app on loopback; 5xx = 0 and hangs = 0 or it fails.

    python -m jobs.bench.fuzz_api                                  # 10,000 inputs, tiny preset, ≤ 30 min
    python -m jobs.bench.fuzz_api --config demo --examples 2000    # the demo preset's app

Deploys ``serve/configs/local.yaml`` (preset ``--config``, one replica each) on a local cluster of its own
(HTTP on 127.0.0.1:``--port``), sends ``--examples`` inputs drawn by :mod:`jobs.bench.fuzz_inputs` one at a
time, and prints the counts by status, the 5xx other than 503 (overload), requests that hung, ``/healthz``
latency during the run and the gateway replica's peak resident memory. Exits 1 on any 5xx or hang.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.bench.fuzz_inputs import fuzz
from jobs.bench.serving_apps import one_replica_args, start_serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="preset of the served model")
    parser.add_argument("--examples", type=int, default=10_000, help="inputs to draw and send")
    parser.add_argument("--seconds", type=float, default=1800, help="stop drawing after this long")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("--port", type=int, default=8781, help="loopback HTTP port of the app")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    return parser.parse_args(argv)


def gateway_pid() -> int | None:
    """The process of the gateway replica (its memory is what hostile input would blow up)."""
    import os

    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "fuzz#Gateway" in a["name"]]
    if not names:
        return None
    replica = ray.get_actor(names[0], namespace="serve")
    return ray.get(replica.__ray_call__.remote(lambda _: os.getpid()))


def main(argv: list[str] | None = None) -> dict:
    """Deploy, fuzz, print and return the report."""
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    args = parse_args(argv)
    url = start_serve(args.port, num_cpus=2)
    raw = one_replica_args("local.yaml")
    raw["model"].update(config=args.config, device="cpu")
    serve.run(build_app(ServeArgs.model_validate(raw)), name="fuzz", route_prefix="/")
    report = fuzz(url, args.examples, args.seed, args.seconds, gateway_pid=gateway_pid()).summary()
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    serve.shutdown()
    if report["5xx"] or report["hangs"]:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
