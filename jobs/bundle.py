"""Bundle job: a config (+ trained artefacts, + a fitted codec) → one model bundle directory.

    python -m jobs.bundle --config demo --out outputs/bundles/demo-untrained
    python -m jobs.bundle --config demo --trained outputs/demo/stage2a/artefact --codec outputs/codec \\
        --out outputs/bundles/demo-s2a

Parts no artefact holds stay as the config builds them (seeded, so the same every time); the manifest
names the parts the artefacts trained and records the sha256 of the frozen encoder and LLM.
"""

from __future__ import annotations

import argparse
import json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="preset name or config YAML")
    parser.add_argument("--trained", nargs="*", default=[], help="exported artefacts, in stage order")
    parser.add_argument("--codec", default="", help="a fitted codec folder (default: model.codec.path, if set)")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.seed=1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Assemble and write the bundle; prints and returns its manifest."""
    from freezeempath.bundle import StepRecord, write_bundle
    from freezeempath.config import load_config
    from freezeempath.model.build import build_model
    from freezeempath.model.checkpoint import load_trained

    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    model = build_model(cfg.model)
    parts = [part for artefact in args.trained for part in load_trained(model, artefact)]
    record = StepRecord("assemble", tuple(dict.fromkeys(parts)), metrics={"artefacts": list(args.trained)})
    manifest = write_bundle(args.out, model, cfg, record, codec_dir=args.codec or None)
    summary = json.loads(manifest.to_json())
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
