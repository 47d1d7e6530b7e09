"""The evaluation run: every probe of a suite as Ray Data batch inference over its shards, on a bundle.

In: a bundle directory, a :class:`~freezeempath.evaluation.suite.Suite`. Out: the rows each probe answered
(:class:`ProbeRows` per set), plus the frozen check; :mod:`freezeempath.evaluation.report` turns them into
the report. Each set is one Ray Data pipeline (read → ``map_batches`` over an actor pool that loads the
bundle once per actor), so each has its own progress bar; actors take a GPU when the cluster has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from freezeempath.bundle import build_bundle_model, frozen_hashes, read_manifest
from freezeempath.data.shards import list_shards
from freezeempath.evaluation.frozen import UnforgottenReport, unforgotten
from freezeempath.evaluation.probes import KEPT_COLUMNS, Prober
from freezeempath.evaluation.suite import Suite, check_speakers

log = logging.getLogger(__name__)
READ_COLUMNS = ("audio", "sample_rate", *KEPT_COLUMNS)


@dataclass(frozen=True)
class ProbeRows:
    """What one probe answered over one set: one dict per row (see the probe's columns)."""

    probe: str
    name: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Placement:
    """Where probe actors run: how many, and each one's CPUs and GPUs."""

    actors: int = 1
    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def from_cluster(cls) -> Placement:
        """One actor per GPU when the cluster has GPUs, else one CPU actor."""
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
        return cls(actors=gpus, cpus=1.0, gpus=1.0) if gpus else cls()


class ProbeActor:
    """Ray Data actor: builds the bundle's model once, then answers batches with one probe."""

    def __init__(self, bundle: str, overrides: list[str], probe: str, max_new_tokens: int, whisper: str) -> None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg, model = build_bundle_model(bundle, overrides, device)
        seconds = cfg.model.encoder.max_input_seconds
        self.probe = probe
        if probe == "speech_out":
            from freezeempath.codec.build import build_codec_part
            from freezeempath.evaluation.asr import load_whisper
            from freezeempath.evaluation.speech_out import SpeechOutProber
            from freezeempath.inference.generate import Responder

            responder = Responder(
                model,
                build_codec_part(cfg.model, device),
                cfg.model.generation,
                seconds,
                cfg.model.speech_decoder.max_units,
            )
            asr = None if whisper == "none" else (load_whisper(whisper, "") if whisper else load_whisper())
            self.prober: Any = SpeechOutProber(responder, asr, max_new_tokens)
        else:
            self.prober = Prober(model, seconds, max_new_tokens)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Rows in → rows answered."""
        return self.prober.run(batch) if self.probe == "speech_out" else self.prober.run(self.probe, batch)


def run_probe(
    bundle: str, overrides: list[str], probe: str, paths: list[str], suite: Suite, placement: Placement
) -> list[dict[str, Any]]:
    """One probe over the shards at ``paths`` (at most ``suite.limit`` rows): a list of answered rows."""
    import pyarrow.parquet as pq
    import ray

    columns = [c for c in READ_COLUMNS if c in pq.read_schema(paths[0]).names]
    dataset = ray.data.read_parquet(paths, columns=columns)
    if suite.limit:
        dataset = dataset.limit(suite.limit)
    answered = dataset.map_batches(
        ProbeActor,
        fn_constructor_kwargs={
            "bundle": bundle,
            "overrides": overrides,
            "probe": probe,
            "max_new_tokens": suite.max_new_tokens,
            "whisper": suite.whisper,
        },
        batch_size=suite.batch_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=placement.actors),
        num_cpus=placement.cpus,
        num_gpus=placement.gpus,
    )
    return answered.take_all()


def evaluate(
    bundle: str, suite: Suite, overrides: list[str] | None = None, placement: Placement | None = None
) -> tuple[list[ProbeRows], dict[str, Any]]:
    """Run every probe of ``suite`` on ``bundle``; returns the answered sets and the frozen check."""
    overrides = list(overrides or [])
    placement = placement or Placement.from_cluster()
    sets = [
        (probe, s.name, list_shards(list(s.shards)))
        for probe, group in (
            ("ser", suite.ser),
            ("asr", suite.asr),
            ("spoken_qa", suite.spoken_qa),
            ("empathy", suite.empathy),
            ("speech_out", suite.speech_out),
        )
        for s in group
    ]
    train = list_shards(list(suite.train_shards)) if suite.train_shards else []
    check_speakers(train, {f"{probe}/{name}": paths for probe, name, paths in sets})
    answered = []
    for probe, name, paths in sets:
        log.info("%s on %s: %d shard(s)", probe, name, len(paths))
        answered.append(ProbeRows(probe, name, run_probe(bundle, overrides, probe, paths, suite, placement)))
    if suite.judge.enabled:
        judge_empathy(answered, suite)
    return answered, frozen_check(bundle, overrides, suite)


def judge_empathy(answered: list[ProbeRows], suite: Suite) -> None:
    """Add the rubric judge's ``judge_quality`` and ``judge_empathy`` to every answered empathy row."""
    from freezeempath.evaluation.judge import Judge

    judge = Judge(suite.judge)
    for result in answered:
        for row in result.rows if result.probe == "empathy" else []:
            if row.get("error") is None:
                score = judge.score(row.get("transcript") or "", row.get("emotion") or "neutral", row["reply"])
                row |= {"judge_quality": score.quality, "judge_empathy": score.empathy}


def frozen_check(bundle: str, overrides: list[str], suite: Suite) -> dict[str, Any]:
    """The bundle's recorded frozen hashes against the configured parts, and the unforgotten prompts."""
    cfg, model = build_bundle_model(bundle, overrides)  # raises BundleError when the hashes differ
    hashes = frozen_hashes(model)
    report: UnforgottenReport | None = None
    if suite.frozen_prompts:
        report = unforgotten(model, cfg.model, list(suite.frozen_prompts), suite.max_new_tokens)
    examples = list(zip(report.prompts, report.ours, report.untouched, strict=True))[:3] if report else []
    return {
        "hashes": hashes,
        "hashes_match": hashes == read_manifest(bundle).frozen,
        "prompts": len(suite.frozen_prompts),
        "token_identical": sum(report.identical) if report else 0,
        "examples": [{"prompt": p, "ours": o, "untouched": u} for p, o, u in examples],
    }
