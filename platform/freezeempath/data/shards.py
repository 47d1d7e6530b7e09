"""Data step 0, the shard format: one Parquet schema for every processed audio corpus and stage.

In: rows (dicts) produced by ``freezeempath.prepare.corpus`` or later target jobs. Out: Parquet files
written atomically (temp file, then rename), so a reader or a resumed job never sees half a shard.

Columns (``SCHEMA``; "nullable" means ``None`` is a legal value):

============================  ===================  ==========================================================
column                        type                 meaning
============================  ===================  ==========================================================
``id``                        string               unique within the corpus, e.g. ``ravdess-03-01-05-01-02-01-12``
``audio``                     binary               FLAC bytes, mono, 16-bit
``sample_rate``               int32                rate of ``audio`` in Hz (16 000 after ``prepare``)
``duration``                  float32              seconds of ``audio``
``transcript``                string, nullable     what is said; null when the corpus gives no text
``emotion``                   string, nullable     canonical class (``labels.Emotion`` value) or null
``emotion_original``          string, nullable     the corpus's own label, e.g. ``calm``, ``exc``, ``ANG``
``speaker``                   string               speaker id, unique within ``corpus``
``language``                  string               ISO 639-1 code, e.g. ``en``, ``zh``, ``de``
``corpus``                    string               recipe name (``recipes.Corpus`` value)
``split``                     string               ``Split`` value: train / validation / test
``reply``                     string, nullable     target reply text (instruction corpora, later stages)
``reply_units``               list<int32>, null.   target speech units of the reply
``reply_hidden``              binary, nullable     raw little-endian float16 or float32 LLM hidden states
``reply_hidden_shape``        list<int32>, null.   shape of ``reply_hidden``, e.g. ``[tokens, width]``
``emotion_audio``             binary, nullable     optional: FLAC bytes of a second clip that carries ``emotion``
                                                   (stage 2b: an SER clip paired with the instruction ``audio``)
``reply_audio``               binary, nullable     optional: FLAC bytes of the reply's speech (stage 3 targets)
============================  ===================  ==========================================================

The first eleven are ``REQUIRED_COLUMNS``; the four target columns are optional and null until a
target job fills them, so one schema serves every stage. The ``OPTIONAL_COLUMNS`` (``emotion_audio``,
``reply_audio``) are appended after ``SCHEMA`` only in shards whose rows carry them (target jobs of
``freezeempath.prepare.targets``); readers check ``schema.names`` before reading them. Each shard also
carries its preparation statistics as Parquet key-value metadata (``STATS_KEY``), which lets a resumed
job report totals.
"""

from __future__ import annotations

import enum
import glob
import io
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch


class Split(enum.Enum):
    """Data split of a row; speakers never cross splits (see ``recipes.assign_split``)."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("audio", pa.binary(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("duration", pa.float32(), nullable=False),
        pa.field("transcript", pa.string()),
        pa.field("emotion", pa.string()),
        pa.field("emotion_original", pa.string()),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("reply", pa.string()),
        pa.field("reply_units", pa.list_(pa.int32())),
        pa.field("reply_hidden", pa.binary()),
        pa.field("reply_hidden_shape", pa.list_(pa.int32())),
    ]
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "audio",
    "sample_rate",
    "duration",
    "transcript",
    "emotion",
    "emotion_original",
    "speaker",
    "language",
    "corpus",
    "split",
)
TARGET_COLUMNS: tuple[str, ...] = ("reply", "reply_units", "reply_hidden", "reply_hidden_shape")
OPTIONAL_FIELDS: tuple[pa.Field, ...] = (pa.field("emotion_audio", pa.binary()), pa.field("reply_audio", pa.binary()))
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in OPTIONAL_FIELDS)
"""Nullable columns written only when present: a shard has them after ``SCHEMA``, in this order."""
STATS_KEY = b"freezeempath.shard_stats"
"""Parquet key-value metadata key holding a shard's JSON statistics (rows, skipped rows by reason)."""
CACHE_COLUMNS = ("id", "reply", "reply_units", "reply_tokens", "reply_hidden", "reply_hidden_shape")
"""Columns of a stage-3 reply-state cache shard (written by ``freezeempath.train.reply_cache``)."""

_HIDDEN_DTYPES = {2: np.dtype("<f2"), 4: np.dtype("<f4")}


def encode_flac(samples: np.ndarray, rate: int) -> bytes:
    """Encode a mono waveform ``(N,)`` (float in [-1, 1], clipped) as 16-bit FLAC bytes."""
    wave = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if wave.ndim != 1:
        raise ValueError(f"encode_flac expects mono samples (N,), got shape {wave.shape}")
    buffer = io.BytesIO()
    sf.write(buffer, wave, int(rate), format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def encode_hidden(hidden: np.ndarray) -> tuple[bytes, list[int]]:
    """Hidden states (any shape, float16 or float32) → ``(reply_hidden bytes, reply_hidden_shape)``."""
    array = np.asarray(hidden)
    if array.dtype not in (np.float16, np.float32):
        raise ValueError(f"reply_hidden must be float16 or float32, got {array.dtype}")
    return array.astype(array.dtype.newbyteorder("<")).tobytes(), [int(d) for d in array.shape]


def decode_hidden(data: bytes, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`encode_hidden`; the dtype follows from the byte count per element."""
    count = int(np.prod(shape)) if len(shape) else 1
    width = len(data) // count if count else 0
    if width not in _HIDDEN_DTYPES or width * count != len(data):
        raise ValueError(f"reply_hidden has {len(data)} bytes, which fits neither float16 nor float32 {list(shape)}")
    return np.frombuffer(data, dtype=_HIDDEN_DTYPES[width]).reshape(tuple(shape))


def check_columns(schema_or_table: pa.Schema | pa.Table, needed: Iterable[str] = REQUIRED_COLUMNS) -> None:
    """Raise ``ValueError`` naming every column of ``needed`` that is missing.

    Args:
        schema_or_table: a ``pyarrow.Schema`` or anything with a ``.schema`` (table, dataset).
        needed: column names the caller reads.
    """
    schema = schema_or_table if isinstance(schema_or_table, pa.Schema) else schema_or_table.schema
    missing = [name for name in needed if name not in schema.names]
    if missing:
        raise ValueError(f"shard is missing column(s) {', '.join(missing)}; it has {', '.join(schema.names)}")


def shard_schema(names: Iterable[str] = ()) -> pa.Schema:
    """``SCHEMA`` plus those ``OPTIONAL_FIELDS`` whose names are in ``names``."""
    present = set(names)
    return pa.schema([*SCHEMA, *(f for f in OPTIONAL_FIELDS if f.name in present)])


def rows_to_table(rows: Iterable[Mapping[str, Any]] | pa.Table) -> pa.Table:
    """Rows (dicts; absent target columns become null) → a table in ``SCHEMA`` order, validated.

    An optional column (``OPTIONAL_COLUMNS``) is kept, after ``SCHEMA``, when the table has it or any row
    has its key; other extra keys are dropped.

    Raises:
        ValueError: a required column is absent, or a non-nullable column holds nulls.
    """
    if isinstance(rows, pa.Table):
        check_columns(rows, REQUIRED_COLUMNS)
        schema = shard_schema(rows.column_names)
        columns = [
            rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type) for f in schema
        ]
        table = pa.Table.from_arrays(columns, schema=schema)
    else:
        rows = list(rows)
        absent = sorted({n for n in REQUIRED_COLUMNS for row in rows if n not in row})
        if absent:
            raise ValueError(f"shard rows are missing column(s) {', '.join(absent)}")
        table = pa.Table.from_pylist(rows, schema=shard_schema(k for row in rows for k in row))
    for field in SCHEMA:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"column {field.name} must not hold nulls")
    return table


def write_shard(
    rows: Iterable[Mapping[str, Any]] | pa.Table, path: str | Path, stats: Mapping[str, Any] | None = None
) -> Path:
    """Write rows as one Parquet shard atomically: a hidden temp file in the same folder, then rename.

    Args:
        rows: dicts with at least ``REQUIRED_COLUMNS`` (or a table); target columns may be absent.
        path: final ``*.parquet`` path; its folder is created.
        stats: JSON-able statistics stored under ``STATS_KEY`` in the file's metadata.

    Returns:
        The final path.
    """
    path = Path(path)
    table = rows_to_table(rows)
    if stats is not None:
        table = table.replace_schema_metadata({STATS_KEY: json.dumps(dict(stats), sort_keys=True).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # no .parquet suffix: readers skip it
    try:
        pq.write_table(table, temp, compression="zstd")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def read_stats(path: str | Path) -> dict[str, Any]:
    """The statistics :func:`write_shard` stored in a shard (``{}`` when it has none)."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[STATS_KEY]) if STATS_KEY in metadata else {}


def list_shards(specs: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard files from folders (their ``*.parquet``), files or glob patterns; sorted, names unique."""
    found: list[Path] = []
    for spec in [specs] if isinstance(specs, str | Path) else specs:
        path = Path(spec)
        if path.is_dir():
            found += sorted(path.glob("*.parquet"))
        elif path.is_file():
            found.append(path)
        elif matches := sorted(glob.glob(str(path))):
            found += [Path(m) for m in matches if m.endswith(".parquet")]
        else:
            raise FileNotFoundError(f"no shards at {spec}")
    names = Counter(p.name for p in found)
    if dup := [n for n, c in names.items() if c > 1]:
        raise ValueError(f"input shards share file names (outputs keep names): {dup[:3]}")
    return [str(p) for p in sorted(found, key=lambda p: p.name)]


def cached_batch_arrays(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cache columns → padded ``hidden (B, n, D)`` float32, ``tokens (B, n)``, ``lens (B,)``."""
    states = [
        decode_hidden(bytes(d), list(s))
        for d, s in zip(batch["reply_hidden"], batch["reply_hidden_shape"], strict=True)
    ]
    lens = torch.tensor([s.shape[0] for s in states])
    hidden = torch.zeros(len(states), int(lens.max()), states[0].shape[1])
    tokens = torch.zeros(len(states), int(lens.max()), dtype=torch.long)
    for i, (s, t) in enumerate(zip(states, batch["reply_tokens"], strict=True)):
        hidden[i, : s.shape[0]] = torch.from_numpy(np.array(s, dtype=np.float32))
        tokens[i, : s.shape[0]] = torch.as_tensor(np.asarray(t, dtype=np.int64))
    return hidden, tokens, lens
