"""Evaluation job: the paper's protocols over a model bundle → a report folder (JSON, Markdown, plots).

    python -m jobs.evaluate --baseline demo --suite demo --out outputs/eval/untrained   # untrained parts
    python -m jobs.evaluate --bundle outputs/bundles/demo-s2a --suite demo --out outputs/eval/s2a
    python -m jobs.evaluate --bundle B --suite demo --out outputs/eval/b --compare outputs/eval/untrained/report.json
    ray job submit --working-dir . -- python -m jobs.evaluate --bundle B --suite paper --out OUT

``--baseline CONFIG`` first writes the bundle of ``CONFIG``'s untrained parts to ``OUT/bundle`` (what
``python -m jobs.bundle --config CONFIG`` writes) and evaluates that. ``--suite`` is ``demo``, ``paper``
(``jobs/configs/eval/``) or a suite YAML; trailing ``key=value`` arguments override the suite, ``--set
key=value`` the bundle's config. Without a cluster address it starts a local Ray instance. The demo
suite's bundled data is built first where missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from freezeempath.evaluation.suite import Suite, load_suite

from jobs.ray_cluster import connect

SUITES = Path(__file__).parent / "configs" / "eval"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="model bundle directory")
    source.add_argument("--baseline", help="preset or config YAML: evaluate its untrained parts")
    parser.add_argument("--suite", required=True, help="demo, paper or a suite YAML")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--compare", default="", help="another run's report.json to set beside this one")
    parser.add_argument("--set", action="append", default=[], dest="model_overrides", help="bundle config override")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""), help="Ray cluster; empty = local")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster")
    parser.add_argument("overrides", nargs="*", help="suite overrides, e.g. limit=8")
    return parser.parse_args(argv)


def suite_path(name: str) -> Path:
    """A suite name (``demo``, ``paper``) or a YAML path → the file."""
    return SUITES / f"{name}.yaml" if (SUITES / f"{name}.yaml").is_file() else Path(name)


def build_missing_data(suite: Suite) -> None:
    """Build the suite's bundled held-out data where its folder is missing."""
    if suite.data.sample_corpus and not Path(suite.data.sample_corpus).is_dir():
        from freezeempath.prepare.sample_corpus import build_sample_corpus

        build_sample_corpus(suite.data.sample_corpus)
    if suite.data.spoken_questions and not Path(suite.data.spoken_questions).is_dir():
        from freezeempath.prepare.spoken_questions import speak_questions

        speak_questions(suite.data.spoken_questions)


def main(argv: list[str] | None = None) -> dict:
    """Evaluate; writes the report folder, prints the Markdown report and returns the report."""
    from freezeempath.evaluation.report import build_report, compare, write_report
    from freezeempath.evaluation.runner import evaluate

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    suite = load_suite(suite_path(args.suite), args.overrides)
    connect(args.address, args.num_cpus)
    build_missing_data(suite)
    bundle = args.bundle or str(Path(args.out) / "bundle")
    if args.baseline:
        from jobs import bundle as bundle_job

        bundle_job.main(["--config", args.baseline, "--out", bundle])
    answered, frozen = evaluate(bundle, suite, args.model_overrides)
    report, confusions = build_report(answered, frozen, suite, bundle)
    out = write_report(report, confusions, args.out)
    if args.compare:
        (out / "comparison.md").write_text(compare(report, json.loads(Path(args.compare).read_text())))
    print((out / "report.md").read_text())
    return report


if __name__ == "__main__":
    main()
