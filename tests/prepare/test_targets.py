"""Target generation jobs (``prepare/targets.py``): replies, pseudo-empathy pairs, reply speech, units; resume.

Tiny preset on CPU; the jobs run on the session's local Ray instance (``ray_local``). Shards are written
here with ``write_shard`` from ``speech_like`` audio, so nothing is downloaded.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from freezeempath.audio import decode_audio
from freezeempath.chat_template import to_messages
from freezeempath.codec.build import build_codec
from freezeempath.codec.fit import fit_codec
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.vq import MelVQCodec
from freezeempath.config import load_config
from freezeempath.data.shards import encode_flac, read_stats, write_shard
from freezeempath.labels import Emotion
from freezeempath.prepare.fitting_speech import read_waves
from freezeempath.prepare.pairing import SerClip, plan_pairs
from freezeempath.prepare.synthesis import REPLY_VOICE, EspeakSynthesizer, Synthesizer
from freezeempath.prepare.targets import (
    SpeechMaker,
    TargetKind,
    generate_replies,
    load_llm,
    make_targets,
    reply_turns,
    row_seed,
)
from helpers import speech_like

HAS_ESPEAK = Path("/usr/bin/espeak-ng").is_file()
QUESTIONS = ("How do I boil an egg?", "Why is the sky blue?", "What is a healthy breakfast?", "How do I cook rice?")
LABELS = tuple(e.value for e in Emotion)


def row(uid: str, seconds: float, seed: int, **fields) -> dict:
    wave = speech_like(seconds, seed=seed).numpy()
    base = {"id": uid, "audio": encode_flac(wave, 16_000), "sample_rate": 16_000, "duration": seconds}
    base |= {"speaker": "spk", "language": "en", "corpus": "test", "split": "train"}
    base |= {"transcript": None, "emotion": None, "emotion_original": None}
    return base | fields


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", ["targets.batch_rows=3", "targets.pairs_per_ser_clip=2", "targets.temperature=1.0"])


@pytest.fixture(scope="module")
def tiny_llm(cfg):
    """The jobs' seeded tiny LLM, built in this process to recompute replies."""
    return load_llm(cfg)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Instruction shards (8 rows with text, one without, one validation row) and one SER shard (2 per label)."""
    root = tmp_path_factory.mktemp("targets")
    for s in range(2):
        rows = [row(f"in-{s}{i}", 0.6, i, transcript=QUESTIONS[i], emotion="neutral") for i in range(4)]
        rows += (
            [row(f"in-{s}-notext", 0.5, 9)] if s == 0 else [row("in-val", 0.5, 8, transcript="Hi.", split="validation")]
        )
        write_shard(rows, root / "instructions" / f"train-{s:05d}.parquet")
    ser = [row(f"ser-{e}-{i}", 0.5, i, emotion=e, emotion_original=e.upper()) for e in LABELS for i in range(2)]
    write_shard(ser, root / "ser" / "train-00000.parquet")
    replies = [row(f"re-{e}", 0.5, 1, transcript="Hello.", emotion=e, reply=f"I hear you, {e} friend.") for e in LABELS]
    write_shard(replies + [row("re-none", 0.5, 2)], root / "replies" / "train-00000.parquet")
    return {"instructions": root / "instructions", "ser": root / "ser", "replies": root / "replies", "root": root}


def read(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_plan_pairs_is_seeded_proportional_and_takes_k_rows_per_clip():
    rows = [{"shard": f"s{i % 2}", "id": f"r{i:02d}", "split": "train"} for i in range(12)]
    clips = [
        SerClip("ser", f"c-{e}-{i}", e, None, "train") for e in ("sad", "happy") for i in range(3 if e == "sad" else 1)
    ]
    plan = plan_pairs(rows, clips, k=3, seed=7)
    assert Counter(plan.labels.values()) == {"sad": 9, "happy": 3}  # 3:1 like the SER labels
    pairs = [p for shard in plan.pairs.values() for p in shard]
    assert Counter(p["ser_id"] for p in pairs) == {c.id: 3 for c in clips}
    assert all(plan.labels[p["id"]] == p["emotion"] == p["ser_id"].split("-")[1] for p in pairs)
    assert plan == plan_pairs(list(reversed(rows)), clips, k=3, seed=7)  # order-free, deterministic
    assert plan.labels != plan_pairs(rows, clips, k=3, seed=8).labels


def test_prompts_carry_the_label_word_and_the_empathetic_system_prompt():
    messages = to_messages(reply_turns("How do I boil an egg?", "sad"))
    assert messages[0]["role"] == "system" and "empathetic" in messages[0]["content"]
    assert messages[1]["content"] == "How do I boil an egg? (with a sad emotional tone)."
    assert to_messages(reply_turns("How do I boil an egg?"))[1]["content"] == "How do I boil an egg?"


@pytest.mark.ray
def test_replies_are_the_tiny_llms_own_and_a_rerun_writes_nothing(ray_local, cfg, shards, tiny_llm):
    out = shards["root"] / "s1"
    summary = make_targets("replies", shards["instructions"], out, cfg)
    rows = read(out)
    assert summary.shards_written == 2 and summary.rows_in_total == 10
    assert summary.rows_total == len(rows) == 10 - sum(summary.rows_skipped.values())
    assert summary.rows_skipped.get("no_transcript") == 1
    assert all(r["reply"] for r in rows) and {"in-00", "in-val"} <= {r["id"] for r in rows}
    first = [r for r in pq.read_table(shards["instructions"] / "train-00000.parquet").to_pylist() if r["transcript"]]
    seeds = [row_seed(cfg.targets.seed, r["id"]) for r in first]
    again = generate_replies(tiny_llm, [reply_turns(r["transcript"]) for r in first], seeds, cfg)
    assert {r["id"]: r["reply"] for r in rows if r["id"].startswith("in-0")} == {
        r["id"]: a for r, a in zip(first, again, strict=True) if a
    }
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    rerun = make_targets("replies", shards["instructions"], out, cfg)
    assert (rerun.shards_written, rerun.shards_existing, rerun.rows_written) == (0, 2, 0)
    assert rerun.rows_total == summary.rows_total
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == stamps


@pytest.mark.ray
def test_pseudo_empathy_pairs_instruction_speech_with_ser_clips_of_the_label(ray_local, cfg, shards, tiny_llm):
    out = shards["root"] / "s2b"
    summary = make_targets(TargetKind.PSEUDO_EMPATHY, shards["instructions"], out, cfg, ser_shards=shards["ser"])
    rows = read(out)
    ser = {r["id"]: r for r in read(shards["ser"])}
    instructions = {r["id"]: r for r in read(shards["instructions"])}
    assert summary.rows_skipped.get("no_transcript") == 1 and summary.rows_skipped.get("no_ser_clip") == 1
    assert rows and summary.ser_clips_unpaired == 0
    for r in rows:
        source, ser_id, _ = r["id"].split("~")
        assert r["audio"] == instructions[source]["audio"] and r["transcript"] == instructions[source]["transcript"]
        assert r["emotion"] == ser[ser_id]["emotion"] and r["emotion_audio"] == ser[ser_id]["audio"]
        assert r["emotion_original"] == ser[ser_id]["emotion_original"] and r["reply"]
    uses = Counter(r["id"].split("~")[1] for r in rows)
    if not summary.rows_skipped.get("empty_reply"):  # every SER clip takes K instruction rows
        assert uses == dict.fromkeys(ser, cfg.targets.pairs_per_ser_clip)
    some = rows[:2]
    seeds = [row_seed(cfg.targets.seed, f"{r['id'].split('~')[0]}:{r['emotion']}") for r in some]
    again = generate_replies(tiny_llm, [reply_turns(r["transcript"], r["emotion"]) for r in some], seeds, cfg)
    assert again == [r["reply"] for r in some]
    assert pq.read_schema(out / "train-00000.parquet").names[-1] == "emotion_audio"


class ToneSynthesizer:
    """A plug-in engine for the interface test: a tone whose pitch names the emotion."""

    def synthesize(self, text: str, emotion: Emotion) -> tuple[np.ndarray, int]:
        t = np.arange(int(0.05 * len(text) * 8000)) / 8000
        return (0.3 * np.sin(2 * np.pi * (200 + 50 * emotion.index) * t)).astype(np.float32), 8000


def test_speech_maker_takes_any_synthesizer():
    assert isinstance(ToneSynthesizer(), Synthesizer)
    rows = [row("a", 0.5, 0, emotion="angry", reply="Calm down, please."), row("b", 0.5, 0)]
    made, skipped = SpeechMaker(ToneSynthesizer()).make(rows, {})
    assert [r["id"] for r in made] == ["a"] and skipped == {"no_reply": 1}
    samples, rate = decode_audio(made[0]["reply_audio"])
    assert rate == 16_000 and samples.shape[0] == pytest.approx(0.05 * 18 * 16_000, abs=2)


@pytest.mark.ray
@pytest.mark.skipif(not HAS_ESPEAK, reason="apt-get install espeak-ng")
def test_speech_then_units_from_espeak_reply_audio(ray_local, cfg, shards):
    assert isinstance(EspeakSynthesizer(), Synthesizer) and REPLY_VOICE[Emotion.ANGRY] is Emotion.NEUTRAL
    speech = make_targets("speech", shards["replies"], shards["root"] / "s3-speech", cfg)
    assert (speech.rows_total, speech.rows_skipped) == (5, {"no_reply": 1}) and speech.hours > 0
    durations = {}
    for r in read(shards["root"] / "s3-speech"):
        samples, rate = decode_audio(r["reply_audio"])
        assert rate == 16_000 and 0.8 < samples.shape[0] / rate < 6 and np.abs(samples).max() > 0.05
        durations[r["id"]] = samples.shape[0]
    assert durations["re-sad"] > durations["re-happy"]  # the sad preset speaks slower
    units = make_targets("units", shards["root"] / "s3-speech", shards["root"] / "s3", cfg)
    n_units = cfg.model.codec.n_units
    for r in read(shards["root"] / "s3"):
        u, n = r["reply_units"], durations[r["id"]]
        assert len(u) == math.ceil(n / 320) and abs(len(u) - n / 16_000 * 50) <= 1
        assert min(u) >= 0 and max(u) < n_units
    assert units.rows_total == 5 and read_stats(shards["root"] / "s3" / "train-00000.parquet")["rows"] == 5
    assert make_targets("units", shards["root"] / "s3-speech", shards["root"] / "s3", cfg).shards_written == 0


@pytest.mark.parametrize(
    ("kind", "cls"), [("mel_kmeans", MelKMeansCodec), ("mel_vq", MelVQCodec), ("encoder_vq", MelVQCodec)]
)
def test_fit_codec_on_shard_audio_saves_a_loadable_codec(cfg, shards, tmp_path, kind, cls):
    waves = read_waves(shards["ser"], limit=6, seed=0)
    assert len(waves) == 6 and all(w.dtype == torch.float32 for w in waves)
    steps = ["targets.codec_decoder_steps=5", "targets.codec_kmeans_iters=3", f"model.codec.kind={kind}"]
    codec, report = fit_codec(load_config("tiny", steps), waves)
    assert isinstance(codec, cls) and report.clips == 6 and report.mel_l1_after < report.mel_l1_before
    assert kind == "mel_vq" or report.inertia < report.inertia_initial  # k-means; VQ latents change scale
    codec.save(tmp_path / "codec")
    model = load_config("tiny", [f"model.codec.kind={kind}", f"model.codec.path={tmp_path / 'codec'}"]).model
    loaded = build_codec(model.codec, model.encoder)
    assert isinstance(loaded, cls)
    torch.testing.assert_close(loaded.encode(waves[0]), codec.encode(waves[0]))
    shutil.rmtree(tmp_path / "codec")
