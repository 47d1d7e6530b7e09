"""Data step 3, targets: shards in → the same shards with training targets filled, by batch inference.

In: shards in the ``freezeempath.data.shards`` schema (and, for stage 2b, SER shards). Out: one output
shard per input shard, with the same file name, plus ``summary.json``. Kinds (:class:`TargetKind`):

- ``replies`` (stage 1): ``reply`` = the frozen LLM's own reply to the row's transcript.
- ``pseudo_empathy`` (stage 2b, ``method.md`` §4.1): every instruction row gets a seeded pseudo label,
  drawn in proportion to the SER labels of its split; the LLM replies to ``text_twin(transcript, label)``
  under the empathetic system prompt; each SER clip is paired with K instruction rows of its split and
  label (cycling), giving rows with the instruction ``audio``, the label, the reply and the SER clip's
  FLAC in ``emotion_audio``.
- ``speech`` (stage 3): ``reply_audio`` = the reply spoken by a :class:`~freezeempath.prepare.synthesis.Synthesizer`
  (built in: espeak-ng with the per-emotion presets of ``sample_corpus``) in the voice style of
  :data:`~freezeempath.prepare.synthesis.REPLY_VOICE`.
- ``units`` (stage 3): ``reply_units`` = the codec's units of ``reply_audio``.

Rows that cannot get a target are dropped and counted by :class:`TargetSkip`. The pending shards run on a
Ray Data actor pool; each actor loads its LLM, synthesizer or codec once and writes whole shards
atomically, so a rerun skips the shards already written (resume). Pairing for stage 2b is in
:mod:`freezeempath.prepare.pairing`; codec fitting from shards in :mod:`freezeempath.codec.fit`.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import json
import logging
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import soundfile as sf
import torch

from freezeempath import prompts
from freezeempath.audio import decode_audio, validate_waveform
from freezeempath.chat_template import Turn, stop_token_ids
from freezeempath.config import Config, from_dict, to_dict
from freezeempath.data.shards import REQUIRED_COLUMNS, check_columns, encode_flac, list_shards, read_stats, write_shard
from freezeempath.labels import Emotion
from freezeempath.prepare.corpus import SUMMARY_FILE, write_json
from freezeempath.prepare.pairing import instruction_index, plan_pairs, read_ser_clips
from freezeempath.prepare.synthesis import REPLY_VOICE, CommandSynthesizer, EspeakSynthesizer, Synthesizer

logger = logging.getLogger(__name__)

RATE = 16_000


class TargetKind(enum.Enum):
    """Which target a job makes."""

    REPLIES = "replies"
    PSEUDO_EMPATHY = "pseudo_empathy"
    SPEECH = "speech"
    UNITS = "units"


class TargetSkip(enum.Enum):
    """Why an input row produced no output row."""

    NO_TRANSCRIPT = "no_transcript"
    NO_SER_CLIP = "no_ser_clip"  # stage 2b: no SER clip of the row's split
    UNPAIRED = "unpaired"  # stage 2b: K × SER clips of its label were covered by other rows
    PROMPT_TOO_LONG = "prompt_too_long"
    EMPTY_REPLY = "empty_reply"
    NO_REPLY = "no_reply"
    SYNTHESIS_FAILED = "synthesis_failed"
    NO_REPLY_AUDIO = "no_reply_audio"
    UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class TargetsSummary:
    """What a target job left in ``out_dir``; ``*_total``, ``rows_skipped`` and ``hours`` cover every output
    shard, resumed ones included. ``hours`` counts ``reply_audio`` for ``speech`` and ``units``, else ``audio``.
    """

    kind: str
    out_dir: str
    shards_total: int
    shards_written: int
    shards_existing: int
    rows_written: int
    rows_in_total: int
    rows_total: int
    rows_skipped: dict[str, int]
    hours: float
    ser_clips_unpaired: int
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the content of ``summary.json``)."""
        return asdict(self)


def row_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the job seed and a row key: the same row samples the same way in any batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


def reply_turns(transcript: str, emotion: str | None = None) -> list[Turn]:
    """The text prompt of a target reply: the transcript, or its ``(with a <emotion> emotional tone).`` twin.

    The chat template adds the empathetic system prompt (``template.to_messages``), as in training.
    """
    return [Turn("user", prompts.text_twin(transcript, emotion) if emotion else transcript)]


def load_llm(cfg: Config) -> Any:
    """The frozen LLM of ``cfg`` with its weights: the model's own (a random source is seeded per part, so
    every actor and the training run build the same one)."""
    from freezeempath.model.build import build_llm_part

    return build_llm_part(cfg.model, device=None)[0]


def generate_replies(llm: Any, prompts_: Sequence[list[Turn]], seeds: Sequence[int], cfg: Config) -> list[str | None]:
    """Replies to text prompts, ``targets.batch_rows`` at a time; None where the prompt does not fit.

    Greedy when ``targets.temperature`` is 0, else sampled with each prompt's own seeded generator.
    """
    from freezeempath.inference.llm_session import GenerationRequest, LLMSession

    gen, step = cfg.model.generation, cfg.targets.batch_rows
    replies: list[str | None] = []
    for start in range(0, len(prompts_), step):
        requests = [
            GenerationRequest(tuple(t), max_new_tokens=gen.max_new_tokens, temperature=cfg.targets.temperature, seed=s)
            for t, s in zip(prompts_[start : start + step], seeds[start : start + step], strict=True)
        ]
        session = LLMSession(llm, stop_token_ids(llm.tokenizer), requests, gen.max_new_tokens, gen.top_p, "cpu")
        tokens: list[list[int]] = [[] for _ in requests]
        failed = [False] * len(requests)
        while (groups := session.step()) is not None:
            for b, group in enumerate(groups):
                if group is not None:
                    tokens[b] += group.token_ids
                    failed[b] = failed[b] or group.error is not None
        texts = [llm.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
        replies += [None if bad else text for bad, text in zip(failed, texts, strict=True)]
    return replies


class ReplyMaker:
    """Stage 1: ``reply`` = the frozen LLM's reply to the transcript."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.llm = cfg, load_llm(cfg)

    def make(self, rows: list[dict[str, Any]], plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Input rows → rows with replies, and skip counts."""
        todo = [r for r in rows if r["transcript"]]
        skipped: Counter[str] = Counter()
        if len(todo) < len(rows):
            skipped[TargetSkip.NO_TRANSCRIPT.value] = len(rows) - len(todo)
        seeds = [row_seed(self.cfg.targets.seed, r["id"]) for r in todo]
        replies = generate_replies(self.llm, [reply_turns(r["transcript"]) for r in todo], seeds, self.cfg)
        return _with_replies(todo, replies, skipped), skipped


class PseudoEmpathyMaker:
    """Stage 2b: one row per planned pair, with the reply to the emotional text twin and the SER clip."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.llm = cfg, load_llm(cfg)

    def make(self, rows: list[dict[str, Any]], plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Input rows + this shard's pairs and pseudo labels → pair rows, and skip counts (per input row)."""
        labels, pairs = plan["labels"], plan["pairs"]
        paired = {p["id"] for p in pairs}
        skipped: Counter[str] = Counter()
        for row in rows:
            reason = _pair_skip(row, labels, paired)
            if reason is not None:
                skipped[reason.value] += 1
        todo = [r for r in rows if r["id"] in paired]
        prompts_ = [reply_turns(r["transcript"], labels[r["id"]]) for r in todo]
        seeds = [row_seed(self.cfg.targets.seed, f"{r['id']}:{labels[r['id']]}") for r in todo]
        replied = {
            r["id"]: r for r in _with_replies(todo, generate_replies(self.llm, prompts_, seeds, self.cfg), skipped)
        }
        audio = _ser_audio(pairs)
        out = []
        for p in pairs:
            if p["id"] in replied:
                row = {**replied[p["id"]], "id": f"{p['id']}~{p['ser_id']}~{p['copy']}", "emotion": p["emotion"]}
                out.append({**row, "emotion_original": p["ser_original"], "emotion_audio": audio[p["ser_id"]]})
        return out, skipped


def _pair_skip(row: Mapping[str, Any], labels: Mapping[str, str], paired: set[str]) -> TargetSkip | None:
    if not row["transcript"]:
        return TargetSkip.NO_TRANSCRIPT
    if row["id"] not in labels:
        return TargetSkip.NO_SER_CLIP
    return None if row["id"] in paired else TargetSkip.UNPAIRED


def _with_replies(
    rows: Sequence[dict[str, Any]], replies: Sequence[str | None], skipped: Counter[str]
) -> list[dict[str, Any]]:
    out = []
    for row, reply in zip(rows, replies, strict=True):
        if reply is None:
            skipped[TargetSkip.PROMPT_TOO_LONG.value] += 1
        elif not reply:
            skipped[TargetSkip.EMPTY_REPLY.value] += 1
        else:
            out.append({**row, "reply": reply})
    return out


def _ser_audio(pairs: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """SER clip id → 16 kHz FLAC bytes, read from each SER shard once (only the needed rows)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        wanted[p["ser_shard"]].add(p["ser_id"])
    audio = {}
    for shard, ids in wanted.items():
        table = pq.read_table(shard, columns=["id", "audio", "sample_rate"], filters=[("id", "in", sorted(ids))])
        for row in table.to_pylist():
            audio[row["id"]] = row["audio"] if row["sample_rate"] == RATE else _flac_16k(row["audio"])
    return audio


def _flac_16k(data: bytes) -> bytes:
    samples, rate = decode_audio(data)
    return encode_flac(validate_waveform(samples, rate, float("inf"), RATE).numpy(), RATE)


class SpeechMaker:
    """Stage 3: ``reply_audio`` = the reply spoken in the voice style of the row's emotion."""

    def __init__(self, synthesizer: Synthesizer) -> None:
        self.synthesizer = synthesizer

    def make(self, rows: list[dict[str, Any]], plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Input rows → rows with 16 kHz FLAC ``reply_audio``, and skip counts."""
        skipped: Counter[str] = Counter()
        out = []
        for row in rows:
            if not row.get("reply"):
                skipped[TargetSkip.NO_REPLY.value] += 1
                continue
            try:
                emotion = REPLY_VOICE[Emotion.parse(row["emotion"]) if row["emotion"] else Emotion.NEUTRAL]
                samples, rate = self.synthesizer.synthesize(row["reply"], emotion)
                wave = validate_waveform(samples, rate, float("inf"), RATE).numpy()
            except (subprocess.SubprocessError, ValueError) as err:  # failed, hung, or no audio
                logger.warning("synthesis failed for %s: %s", row["id"], err)
                skipped[TargetSkip.SYNTHESIS_FAILED.value] += 1
                continue
            out.append({**row, "reply_audio": encode_flac(wave, RATE)})
        return out, skipped


class UnitsMaker:
    """Stage 3: ``reply_units`` = the codec's units of ``reply_audio``."""

    def __init__(self, cfg: Config) -> None:
        from freezeempath.codec.build import build_codec

        if not cfg.model.codec.path:
            logger.warning("model.codec.path is empty: units come from an untrained codec (random codebook)")
        self.codec = build_codec(cfg.model.codec, cfg.model.encoder)

    def make(self, rows: list[dict[str, Any]], plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Input rows → rows with ``reply_units``, and skip counts."""
        skipped: Counter[str] = Counter()
        out = []
        for row in rows:
            if not row.get("reply_audio"):
                skipped[TargetSkip.NO_REPLY_AUDIO.value] += 1
                continue
            try:
                samples, rate = decode_audio(row["reply_audio"])
                wave = validate_waveform(samples, rate, float("inf"), self.codec.sample_rate)
            except ValueError:
                skipped[TargetSkip.UNDECODABLE.value] += 1
                continue
            out.append({**row, "reply_units": self.codec.encode(wave).tolist()})
        return out, skipped


def build_maker(kind: TargetKind, cfg: Config, synthesizer: Callable[[], Synthesizer] | None = None) -> Any:
    """The row maker of ``kind``; loads its LLM, synthesizer (default espeak-ng) or codec."""
    if kind is TargetKind.REPLIES:
        return ReplyMaker(cfg)
    if kind is TargetKind.PSEUDO_EMPATHY:
        return PseudoEmpathyMaker(cfg)
    if kind is TargetKind.SPEECH:
        return SpeechMaker((synthesizer or default_synthesizer(cfg))())
    return UnitsMaker(cfg)


def default_synthesizer(cfg: Config) -> Callable[[], Synthesizer]:
    """``targets.tts_command``'s program when set, else espeak-ng with ``targets.voice``."""
    if cfg.targets.tts_command:
        return functools.partial(CommandSynthesizer, cfg.targets.tts_command)
    return functools.partial(EspeakSynthesizer, cfg.targets.voice)


def make_shard(maker: Any, kind: TargetKind, shard: str, out: str, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Read one input shard, make its targets and write the output shard atomically; returns its stats."""
    table = pq.read_table(shard)
    check_columns(table, REQUIRED_COLUMNS)
    rows = table.to_pylist()
    made, skipped = maker.make(rows, plan)
    audio = "reply_audio" if kind in (TargetKind.SPEECH, TargetKind.UNITS) else "audio"
    seconds = sum(_seconds(row, audio) for row in made)
    stats = {"rows": len(made), "rows_in": len(rows), "skipped": dict(skipped), "seconds": seconds}
    write_shard(made, out, stats=stats)
    return {"shard": Path(out).name, "rows": len(made), "rows_in": len(rows), "skipped": json.dumps(dict(skipped))}


def _seconds(row: Mapping[str, Any], column: str) -> float:
    return float(row["duration"]) if column == "audio" else float(sf.info(io.BytesIO(row[column])).duration)


class TargetWorker:
    """Ray Data actor UDF: builds one maker (its model loaded once), then writes one shard per work item."""

    def __init__(self, kind: str, cfg: dict[str, Any], synthesizer: Callable[[], Synthesizer] | None = None) -> None:
        config = from_dict(Config, cfg)
        torch.set_num_threads(max(1, int(config.targets.actor_cpus)))
        self.kind = TargetKind(kind)
        self.maker = build_maker(self.kind, config, synthesizer)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Work items ``{shard, out, plan}`` → one stats row per written shard."""
        results = [
            make_shard(self.maker, self.kind, str(shard), str(out), json.loads(str(plan)))
            for shard, out, plan in zip(batch["shard"], batch["out"], batch["plan"], strict=True)
        ]
        return {key: [r[key] for r in results] for key in ("shard", "rows", "rows_in", "skipped")}


def make_targets(
    kind: TargetKind | str,
    in_shards: str | Sequence[str],
    out_dir: str | Path,
    cfg: Config,
    ser_shards: str | Sequence[str] = (),
    synthesizer: Callable[[], Synthesizer] | None = None,
) -> TargetsSummary:
    """Make ``kind`` targets for every input shard not yet in ``out_dir`` (Ray must be initialised).

    Args:
        kind: which target (:class:`TargetKind` or its value).
        in_shards: shard folder(s), files or glob patterns.
        out_dir: output folder; shards already there are kept (resume).
        cfg: ``targets`` and ``model`` (LLM, generation, codec) are used.
        ser_shards: SER shards for ``pseudo_empathy`` (labelled rows are paired by split and label). The
            pairs are planned over all inputs, so a resumed run must get the same inputs and SER shards.
        synthesizer: zero-argument factory of a :class:`Synthesizer` for ``speech`` (default:
            ``targets.tts_command``'s program, else espeak-ng).

    Returns:
        The summary, also written to ``out_dir/summary.json``.
    """
    kind, start, out = TargetKind(kind), time.perf_counter(), Path(out_dir)
    inputs = list_shards(in_shards)
    out.mkdir(parents=True, exist_ok=True)
    plan, unpaired = _plans(kind, inputs, ser_shards, cfg)
    pending = [s for s in inputs if not (out / Path(s).name).exists()]
    done = len(inputs) - len(pending)
    logger.info("%s: %d shards, %d already written, %d to write", kind.value, len(inputs), done, len(pending))
    rows_written = _run_pool(kind, pending, out, plan, cfg, synthesizer) if pending else 0
    summary = _summarize(kind, out, inputs, len(pending), rows_written, unpaired, start)
    write_json(out / SUMMARY_FILE, summary.to_dict())
    return summary


def _plans(
    kind: TargetKind, inputs: Sequence[str], ser_shards: str | Sequence[str], cfg: Config
) -> tuple[dict[str, dict[str, Any]], int]:
    """Per input shard, what its worker needs beyond the shard (stage 2b: its pairs and labels)."""
    if kind is not TargetKind.PSEUDO_EMPATHY:
        return {s: {} for s in inputs}, 0
    if not ser_shards:
        raise ValueError("pseudo_empathy needs SER shards (--ser)")
    index = instruction_index(inputs)
    clips = read_ser_clips(list_shards(ser_shards))
    plan = plan_pairs(index, clips, cfg.targets.pairs_per_ser_clip, cfg.targets.seed)
    ids_by_shard: dict[str, list[str]] = defaultdict(list)
    for row in index:
        ids_by_shard[row["shard"]].append(row["id"])
    per_shard = {
        s: {"pairs": plan.pairs.get(s, []), "labels": {i: plan.labels[i] for i in ids_by_shard[s] if i in plan.labels}}
        for s in inputs
    }
    return per_shard, plan.ser_clips_unpaired


def _run_pool(
    kind: TargetKind,
    pending: Sequence[str],
    out: Path,
    plan: Mapping[str, Any],
    cfg: Config,
    synthesizer: Callable[[], Synthesizer] | None,
) -> int:
    import ray

    items = [{"shard": s, "out": str(out / Path(s).name), "plan": json.dumps(plan[s])} for s in pending]
    dataset = ray.data.from_items(items).map_batches(
        TargetWorker,
        batch_size=1,  # one work item = one shard
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(cfg.targets.actors, len(pending))),
        num_cpus=cfg.targets.actor_cpus,
        fn_constructor_kwargs={"kind": kind.value, "cfg": to_dict(cfg), "synthesizer": synthesizer},
    )
    written = 0
    for done, result in enumerate(dataset.iter_rows(), start=1):
        written += int(result["rows"])
        logger.info(
            "shard %d/%d %s: %d rows from %d, skipped %s",
            done, len(pending), result["shard"], result["rows"], result["rows_in"], result["skipped"],
        )  # fmt: skip
    return written


def _summarize(
    kind: TargetKind, out: Path, inputs: Sequence[str], written: int, rows_written: int, unpaired: int, start: float
) -> TargetsSummary:
    skipped: Counter[str] = Counter()
    rows = rows_in = 0
    seconds = 0.0
    for shard in inputs:
        stats = read_stats(out / Path(shard).name)
        skipped.update(stats.get("skipped", {}))
        rows, rows_in, seconds = (
            rows + stats.get("rows", 0),
            rows_in + stats.get("rows_in", 0),
            seconds + stats.get("seconds", 0.0),
        )
    return TargetsSummary(
        kind=kind.value,
        out_dir=str(out),
        shards_total=len(inputs),
        shards_written=written,
        shards_existing=len(inputs) - written,
        rows_written=rows_written,
        rows_in_total=rows_in,
        rows_total=rows,
        rows_skipped=dict(sorted(skipped.items())),
        hours=round(seconds / 3600, 6),
        ser_clips_unpaired=unpaired,
        wall_seconds=round(time.perf_counter() - start, 2),
    )
