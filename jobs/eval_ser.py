"""Speech emotion recognition read from the frozen LLM's label word, on held-out shards.

    python -m jobs.eval_ser --trained outputs/demo/stage2a_ravdess/artefact \\
        --shards 'outputs/shards/ravdess/test-*.parquet' --baseline

Builds the model from the artefact's resolved config (same seed as training, so parts the artefact does not
hold match the run's), loads each ``--trained`` artefact strictly, and prints label-word accuracy, aux
classifier accuracy and the majority-class rate. ``--baseline`` also scores the model without the last
artefact (the untrained emotion extractor) for comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", nargs="+", required=True, help="artefact directories, in stage order")
    parser.add_argument("--shards", nargs="+", required=True, help="shard files, folders or globs")
    parser.add_argument("--limit", type=int, default=0, help="score at most this many clips (0: all)")
    parser.add_argument("--baseline", action="store_true", help="also score without the last artefact")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    return parser.parse_args(argv)


def load_model(config_path: Path, artefacts: list[str]):
    """The training run's model: its config (random parts are seeded from it), then the artefacts loaded strictly."""
    from freezeempath.config import load_config
    from freezeempath.model.build import build_model
    from freezeempath.model.checkpoint import load_trained

    cfg = load_config(config_path)
    model = build_model(cfg.model)
    for directory in artefacts:
        load_trained(model, directory)
    return cfg, model.eval()


def main(argv: list[str] | None = None) -> dict:
    """Evaluate; prints and returns the reports."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from freezeempath.evaluation.ser import evaluate_ser
    from freezeempath.train.run import expand_shards

    args = parse_args(argv)
    config_path = Path(args.trained[-1]) / "config.yaml"
    table = pa.concat_tables([pq.read_table(p) for p in expand_shards(args.shards)])
    rows = table.slice(0, args.limit or None).to_pydict()
    variants = {"trained": args.trained}
    if args.baseline:
        variants["baseline (without the last artefact)"] = args.trained[:-1]
    result = {}
    for name, artefacts in variants.items():
        start = time.perf_counter()
        cfg, model = load_model(config_path, artefacts)
        report = evaluate_ser(model, rows, cfg.model.encoder)
        result[name] = asdict(report) | {"seconds": round(time.perf_counter() - start, 1), "artefacts": artefacts}
        print(
            f"{name}: {report.clips} clips, label word {report.label_word.accuracy:.1%} "
            f"(UAR {report.label_word.uar:.1%}), aux head {report.aux.accuracy:.1%}, "
            f"majority class {report.aux.majority_rate:.1%}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
