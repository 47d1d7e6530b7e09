"""TTS corpus job: sentences spoken by several voices → audio files + a JSONL manifest (codec fitting speech).

Each ``--voice`` is an espeak-ng pseudo-speaker of the sample corpus (``s0`` … ``s7``, built in) or
``NAME=COMMAND``, any installed TTS program as a command line with ``{text}`` (else the text goes to its
stdin), ``{out}`` (a WAV path it writes; else its stdout is read) and ``{emotion}``. Each voice speaks
``--per-voice`` sentences of its own; reruns keep the clips already written. Prints a summary (clips,
written, kept, failures per voice, seconds of audio) as JSON. Then make shards of the manifest and fit
the codec on them beside real speech::

    python -m jobs.synthesize --text sentences.txt --out outputs/tts --per-voice 200 --voice s0 s1 \\
        "awb=flite -voice awb -t {text} -o {out}" "slt=flite -voice slt -t {text} -o {out}" \\
        "kal=text2wave -eval (voice_kal_diphone) -o {out}" "joe=piper -m en_US-joe-medium.onnx -f {out}"
    python -m jobs.prepare --corpus jsonl --root outputs/tts/manifest.jsonl --out outputs/shards/tts
    python -m jobs.fit_codec --in "outputs/shards/ravdess/train-*" "outputs/shards/tts/*" \\
        --out outputs/codec/demo --config demo targets.codec_fit_clips=0 model.codec.kind=encoder_vq

Runs in this process (the engines are subprocesses, ``--workers`` voices at a time); no Ray needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from freezeempath.prepare.tts_corpus import parse_voice, read_sentences, synthesize_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, help="UTF-8 text file, one sentence per line")
    parser.add_argument("--out", required=True, help="folder for audio/ and manifest.jsonl (existing clips kept)")
    parser.add_argument("--voice", nargs="+", required=True, help="espeak pseudo-speaker (s0…s7) or NAME=COMMAND")
    parser.add_argument("--per-voice", type=int, default=200, help="sentences each voice speaks (each at most once)")
    parser.add_argument("--workers", type=int, default=2, help="voices synthesised at a time")
    args = parser.parse_args(argv)
    if args.per_voice < 1:
        parser.error("--per-voice must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Check the voices, speak the sentences, write the manifest; print and return the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    voices = dict(parse_voice(spec) for spec in args.voice)
    if len(voices) != len(args.voice):
        raise SystemExit(f"voice names must be unique: {args.voice}")
    summary = dataclasses.asdict(
        synthesize_corpus(read_sentences(args.text), voices, args.out, args.per_voice, args.workers)
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
