"""Shard format: schema, FLAC round trip, atomic writes, column checks, hidden-state bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from freezeempath.audio import decode_audio
from freezeempath.data import shards
from freezeempath.data.shards import (
    REQUIRED_COLUMNS,
    SCHEMA,
    TARGET_COLUMNS,
    check_columns,
    decode_hidden,
    encode_flac,
    encode_hidden,
    read_stats,
    write_shard,
)
from helpers import speech_like


def _row(i: int = 0, **extra) -> dict:
    wave = speech_like(0.2, seed=i).numpy()
    return {
        "id": f"c-{i}",
        "audio": encode_flac(wave, 16_000),
        "sample_rate": 16_000,
        "duration": wave.shape[0] / 16_000,
        "transcript": "hello",
        "emotion": "sad",
        "emotion_original": "sadness",
        "speaker": "s1",
        "language": "en",
        "corpus": "c",
        "split": "train",
        **extra,
    }


def test_schema_columns_and_nullability():
    assert SCHEMA.names == [*REQUIRED_COLUMNS, *TARGET_COLUMNS]
    nullable = {f.name for f in SCHEMA if f.nullable}
    assert nullable == {"transcript", "emotion", "emotion_original", *TARGET_COLUMNS}
    assert SCHEMA.field("reply_units").type == pa.list_(pa.int32())
    assert SCHEMA.field("sample_rate").type == pa.int32() and SCHEMA.field("duration").type == pa.float32()


def test_flac_round_trip_is_16_bit_exact():
    wave = speech_like(0.5, seed=3).numpy()
    data = encode_flac(wave, 16_000)
    assert data[:4] == b"fLaC"
    decoded, rate = decode_audio(data)
    assert rate == 16_000 and decoded.shape == wave.shape
    np.testing.assert_allclose(decoded, wave, atol=1 / 2**15)


def test_flac_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        encode_flac(np.zeros((100, 2), np.float32), 16_000)


def test_write_shard_round_trip_fills_targets_and_stats(tmp_path):
    path = write_shard(
        [_row(0), _row(1, reply="That sounds hard.", reply_units=[1, 2, 3])], tmp_path / "a.parquet", {"rows": 2}
    )
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == SCHEMA
    rows = table.to_pylist()
    assert rows[0]["reply"] is None and rows[0]["reply_units"] is None
    assert rows[1]["reply"] == "That sounds hard." and rows[1]["reply_units"] == [1, 2, 3]
    assert read_stats(path) == {"rows": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]  # no temp file left


def test_write_shard_accepts_a_table_without_target_columns(tmp_path):
    table = pa.Table.from_pylist([_row(0)])
    path = write_shard(table, tmp_path / "t.parquet")
    assert pq.read_schema(path).names == SCHEMA.names
    assert read_stats(path) == {}


def test_write_shard_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.parquet"

    def broken(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(shards.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_shard([_row(0)], target)
    assert list(tmp_path.iterdir()) == []


def test_missing_required_column_names_it(tmp_path):
    row = _row(0)
    del row["speaker"]
    with pytest.raises(ValueError, match="speaker"):
        write_shard([row], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_null_in_non_nullable_column_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="column split"):
        write_shard([_row(0, split=None)], tmp_path / "x.parquet")


def test_check_columns_names_every_missing_column():
    schema = pa.schema([("id", pa.string()), ("audio", pa.binary())])
    with pytest.raises(ValueError, match=r"missing column\(s\) reply, emotion"):
        check_columns(schema, ["id", "reply", "emotion"])
    check_columns(pa.table({"id": ["a"], "audio": [b""]}), ["id", "audio"])  # tables work too
    with pytest.raises(ValueError, match="sample_rate"):
        check_columns(schema)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_hidden_states_round_trip(dtype):
    hidden = np.arange(24, dtype=dtype).reshape(4, 6) / 7
    data, shape = encode_hidden(hidden)
    assert shape == [4, 6] and len(data) == hidden.nbytes
    out = decode_hidden(data, shape)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, hidden)


def test_hidden_states_bad_input():
    with pytest.raises(ValueError, match="float16 or float32"):
        encode_hidden(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="fits neither"):
        decode_hidden(b"\x00" * 10, [4, 6])
