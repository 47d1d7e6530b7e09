"""Prepare job: a raw corpus (its published layout) → 16 kHz FLAC Parquet shards + ``summary.json``.

Reruns skip shards already written (resume). One log line per finished shard; the summary (rows
written, rows skipped by reason, label drops by original label, hours) is printed as JSON::

    python -m jobs.prepare --corpus ravdess --root ../shared/data/ravdess --out outputs/shards/ravdess
    python -m jobs.prepare --corpus sample --out outputs/shards/sample          # espeak-ng, no download
    python -m jobs.prepare --corpus jsonl --root data/manifest.jsonl --out outputs/shards/mine --field text=sentence
    ray job submit --working-dir . -- python -m jobs.prepare --corpus ravdess --root /data/ravdess --out /shared/ravdess

Corpora: ravdess, crema_d, iemocap, meld, esd, emodb, instruct_s2s (``--root`` = the JSON file),
jsonl (``--root`` = the manifest), sample. Without ``--address`` / ``RAY_ADDRESS`` a local Ray
instance is started with ``--num-cpus`` CPUs; under ``ray job submit`` the job joins its cluster, and
``--out`` must then be storage every worker can write to. Against a local ``ray start --head`` cluster
submit with ``RAY_AUTH_MODE=token`` (token auth, ``platform-notes.md`` §9).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from freezeempath.config import DataConfig
from freezeempath.prepare.corpus import PrepareSummary, prepare_corpus
from freezeempath.prepare.recipes import Corpus, ManifestFields, SplitFractions, collect, jsonl_manifest, load_corpus
from freezeempath.prepare.sample_corpus import build_sample_corpus

from jobs.ray_cluster import connect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults come from ``DataConfig``."""
    defaults = DataConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, choices=[c.value for c in Corpus])
    parser.add_argument("--root", type=Path, help="corpus folder, or the JSON / JSONL manifest file")
    parser.add_argument("--out", type=Path, required=True, help="shard folder (created; existing shards are kept)")
    parser.add_argument("--shard-rows", type=int, default=defaults.shard_rows)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction)
    parser.add_argument("--keep-unmapped", action="store_true", help="keep rows whose label has no 5-class mapping")
    parser.add_argument("--field", action="append", default=[], help="jsonl field name, e.g. text=sentence")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster address")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args(argv)
    if args.corpus != Corpus.SAMPLE.value and args.root is None:
        parser.error(f"--root is required for --corpus {args.corpus}")
    return args


def run(args: argparse.Namespace) -> PrepareSummary:
    """Build the rows with the corpus recipe and write the shards (Ray must be initialised)."""
    cfg = dataclasses.replace(
        DataConfig(),
        shard_rows=args.shard_rows,
        max_seconds=args.max_seconds,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
    )
    corpus = Corpus(args.corpus)
    if corpus is Corpus.SAMPLE:
        return build_sample_corpus(args.out, cfg)
    fractions = SplitFractions.from_config(cfg)
    if corpus is Corpus.JSONL:
        fields = ManifestFields(**dict(item.split("=", 1) for item in args.field))
        rows = collect(jsonl_manifest(args.root, fields), fractions, args.keep_unmapped)
    else:
        rows = load_corpus(corpus, args.root, fractions, args.keep_unmapped)
    return prepare_corpus(corpus.value, rows, args.out, cfg)


def main(argv: list[str] | None = None) -> dict:
    """Start or join Ray, run the job, print the summary JSON and return it."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connect(args.address, args.num_cpus)
    summary = run(args).to_dict()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
