"""Main job: build the model and answer the bundled spoken question end to end.

Writes the reply audio, a JSON summary and the resolved config to ``output_dir``::

    python -m jobs.demo --config jobs/configs/demo.yaml
    ray job submit --working-dir . -- python -m jobs.demo --config jobs/configs/demo.yaml
    python -m jobs.demo --config tiny model.generation.max_new_tokens=8     # random weights, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import soundfile as sf
from freezeempath.assets import bundled_question
from freezeempath.config import load_config, save_config
from freezeempath.inference.dialogue import AudioInput, Message
from freezeempath.inference.generate import AudioChunk, build_responder, collect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--config`` (preset name or YAML) plus ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/demo.yaml", help="preset name or YAML file")
    parser.add_argument("--question", default="question_sad", help="bundled sample name")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.generation.seed=1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the job; returns the summary that is also written to ``reply.json``."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    start = time.perf_counter()
    responder = build_responder(cfg.model)
    built = time.perf_counter()
    sample = bundled_question(args.question)
    dialogue = [Message("user", audio=AudioInput(sample.samples, sample.sample_rate))]
    first_audio: list[float] = []

    def timed(events):
        for event in events:
            if isinstance(event, AudioChunk) and not first_audio:
                first_audio.append(time.perf_counter() - built)
            yield event

    reply = collect(timed(responder.stream([dialogue])), 1)[0]
    done = time.perf_counter()
    sf.write(out / "reply.wav", reply.waveform.numpy(), responder.codec.sample_rate)
    summary = {
        "preset": cfg.preset,
        "question": sample.transcript,
        "question_emotion": sample.emotion,
        "detected_emotion": reply.emotion.label.value if reply.emotion else None,
        "emotion_scores": reply.emotion.scores if reply.emotion else None,
        "reply_text": reply.text,
        "finish_reason": reply.finish_reason.value,
        "units": len(reply.units),
        "audio_seconds": round(reply.waveform.numel() / responder.codec.sample_rate, 3),
        "build_seconds": round(built - start, 2),
        "first_audio_seconds": round(first_audio[0], 3) if first_audio else None,
        "reply_seconds": round(done - built, 3),
        "output_dir": str(out),
    }
    (out / "reply.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
