"""Stage-2b pairing: instruction rows get seeded pseudo emotion labels in proportion to their split's SER
labels, and each SER clip is paired with K instruction rows of its label (``method.md`` §4.1).

In: instruction shards (``id``, ``transcript``, ``split``) and SER shards (``id``, ``emotion``,
``emotion_original``, ``split``). Out: a :class:`PairingPlan` — pure and seeded, so reruns pair the same way.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq


@dataclass(frozen=True)
class SerClip:
    """An SER row that stage 2b can pair: where it is and its labels."""

    shard: str
    id: str
    emotion: str
    emotion_original: str | None
    split: str


@dataclass(frozen=True)
class PairingPlan:
    """Stage-2b plan: per instruction shard, its pairs; pseudo labels of all rows; unpaired SER clips."""

    pairs: dict[str, list[dict[str, Any]]]
    labels: dict[str, str]
    ser_clips_unpaired: int


def plan_pairs(instructions: Sequence[Mapping[str, Any]], clips: Sequence[SerClip], k: int, seed: int) -> PairingPlan:
    """Pair instruction rows (``shard``, ``id``, ``split``) with SER clips, split by split (pure, seeded).

    Pseudo labels follow the split's SER label distribution (largest remainder, every label at least once
    when there are enough rows). Each SER clip takes ``k`` rows of its label, cycling through them in a
    seeded order; rows never reached are left unpaired. A pair is ``{id, emotion, ser_shard, ser_id,
    ser_original, copy}``; ``copy`` numbers the ``k`` pairs of one clip.
    """
    pairs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    labels: dict[str, str] = {}
    unpaired = 0
    for split in sorted({str(row["split"]) for row in instructions}):
        rng = random.Random(f"{seed}:{split}")
        rows = sorted((r for r in instructions if r["split"] == split), key=lambda r: r["id"])
        by_label: dict[str, list[SerClip]] = defaultdict(list)
        for clip in sorted((c for c in clips if c.split == split), key=lambda c: c.id):
            by_label[clip.emotion].append(clip)
        if not by_label:
            continue
        quota = _quotas(len(rows), {e: len(c) for e, c in sorted(by_label.items())})
        drawn = [e for e, n in quota.items() for _ in range(n)]
        rng.shuffle(drawn)
        rng.shuffle(rows)
        pools: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row, emotion in zip(rows, drawn, strict=True):
            labels[row["id"]] = emotion
            pools[emotion].append(row)
        for emotion, group in by_label.items():
            pool, turn = pools[emotion], 0
            if not pool:
                unpaired += len(group)
                continue
            for clip in rng.sample(group, len(group)):
                for copy in range(k):
                    row = pool[turn % len(pool)]
                    turn += 1
                    pair = {"id": row["id"], "emotion": emotion, "ser_shard": clip.shard, "ser_id": clip.id}
                    pairs[row["shard"]].append({**pair, "ser_original": clip.emotion_original, "copy": copy})
    return PairingPlan(dict(pairs), labels, unpaired)


def _quotas(n: int, counts: Mapping[str, int]) -> dict[str, int]:
    """Split ``n`` rows over labels in proportion to ``counts`` (largest remainder; each ≥ 1 when n allows)."""
    total = sum(counts.values())
    exact = {e: n * c / total for e, c in counts.items()}
    quota = {e: int(x) for e, x in exact.items()}
    for e in sorted(counts, key=lambda e: (int(exact[e]) - exact[e], e))[: n - sum(quota.values())]:
        quota[e] += 1
    for e in [e for e, q in quota.items() if q == 0]:
        donor = max(quota, key=lambda d: (quota[d], d))
        if quota[donor] > 1:
            quota[donor], quota[e] = quota[donor] - 1, 1
    return quota


def read_ser_clips(shards: Sequence[str]) -> list[SerClip]:
    """Labelled rows of SER shards (null emotions left out); reads only the label columns."""
    clips = []
    for shard in shards:
        table = pq.read_table(shard, columns=["id", "emotion", "emotion_original", "split"])
        clips += [SerClip(shard=shard, **row) for row in table.to_pylist() if row["emotion"]]
    return clips


def instruction_index(shards: Sequence[str]) -> list[dict[str, Any]]:
    """``{shard, id, split}`` of every row with a transcript (what :func:`plan_pairs` pairs)."""
    index = []
    for shard in shards:
        for row in pq.read_table(shard, columns=["id", "transcript", "split"]).to_pylist():
            if row["transcript"]:
                index.append({"shard": shard, "id": row["id"], "split": row["split"]})
    return index
