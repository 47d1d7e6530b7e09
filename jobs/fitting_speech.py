"""Codec speech job: speed-perturbed and joined copies of shards' clips, as more fitting speech for the codec.

Real speakers are what a codec's units need to carry over to new voices (README, codec round trip).
Speed copies (``--speeds 0.9 1.1``) turn each real speaker into new voices; joining a speaker's short
clips into rows of up to ``--join-seconds`` (25) lets an ``encoder_vq`` fit spend one speech-encoder
window per row instead of one per clip. Transcripts are not needed: other languages' real speech helps
too. Writes one shard per input shard and speed (kept on rerun) and prints a summary as JSON::

    python -m jobs.fitting_speech --in "outputs/shards/ravdess/train-*" --out outputs/shards/ravdess-speed \\
        --speeds 0.9 1.1
    python -m jobs.prepare --corpus jsonl --root prompts.jsonl --out outputs/shards/prompts   # any real speech
    python -m jobs.fitting_speech --in outputs/shards/prompts --out outputs/shards/prompts-joined
    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*" outputs/shards/ravdess-speed \\
        outputs/shards/prompts-joined --out outputs/codec/real --config demo targets.codec_fit_clips=0 \\
        model.codec.kind=encoder_vq model.codec.decoder_hidden=512

Runs in this process, one input shard at a time; no Ray needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from freezeempath.prepare.fitting_speech import make_fitting_speech


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="inputs", nargs="+", required=True, help="shard folders, files or globs")
    parser.add_argument("--out", required=True, help="folder for the output shards (existing ones kept)")
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0], help="speed factors, e.g. 0.9 1.1")
    parser.add_argument("--join-seconds", type=float, default=25.0, help="joined row length; 0 = one clip per row")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Write the shards; print and return the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = dataclasses.asdict(make_fitting_speech(args.inputs, args.out, args.speeds, args.join_seconds))
    except ValueError as err:
        raise SystemExit(f"fitting_speech: {err}") from None
    print(json.dumps(summary, indent=2, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
