"""Streaming input pipeline on a local Ray: bad rows skipped and counted, features exact, batches collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from freezeempath.chat_template import IGNORE_INDEX, byte_level_chat_tokenizer
from freezeempath.config import load_config
from freezeempath.data.collate import Collator, pad_mels
from freezeempath.data.pipeline import (
    AudioFeatures,
    BlockFeatures,
    build_dataset,
    check_shard_columns,
    epoch_order,
    length_windows,
    skip_counter,
)
from freezeempath.stages import Stage
from helpers import speech_like, write_tiny_shards

pytestmark = pytest.mark.ray


def test_bad_rows_are_skipped_and_counted(ray_local, tmp_path):
    cfg = load_config("tiny")
    paths = write_tiny_shards(tmp_path, n_rows=10)
    counter = skip_counter("test-skips")
    ds = build_dataset(cfg, paths, Stage.S3B, "test-skips").materialize()
    assert "ReadParquet->MapBatches(BlockFeatures)" in ds.stats()  # the read runs inside the feature actors
    rows = ds.take_all()
    assert len(rows) == 10
    assert sorted(r["id"] for r in rows) == [f"u{i:03d}" for i in range(10)]
    assert ray_local.get(counter.get.remote()) == {"undecodable": 1, "empty": 1, "wrong_rate": 1}
    ray_local.kill(counter)


def test_block_features_bucket_a_block_by_duration(tmp_path):
    import pyarrow.parquet as pq

    table = pq.read_table(write_tiny_shards(tmp_path, n_rows=5, n_shards=1)[0]).to_pydict()
    order = [4, 3, 2, 1, 0, 5, 6, 7]  # the good rows longest first, then the three bad ones
    block = {k: np.asarray([v[i] for i in order], dtype=object) for k, v in table.items()}
    block["duration"][5:] = 9.0  # the bad rows bucket together, last
    ascending = list(BlockFeatures(3, -1, 80, 800, 8.0)(block))
    assert [w["id"] for w in ascending] == [["u000", "u001", "u002"], ["u003", "u004"]]  # all-bad window: none
    assert all(w["mel_len"] == sorted(w["mel_len"]) and len(set(w["mel_len"])) == len(w["id"]) for w in ascending)
    shuffled = [w["id"] for w in BlockFeatures(2, 0, 80, 800, 8.0)(block)]
    assert sorted(shuffled) == [["u000", "u001"], ["u002", "u003"], ["u004"]]
    assert shuffled == [w["id"] for w in BlockFeatures(2, 0, 80, 800, 8.0)(block)]  # a restart sees the same


def test_length_windows_cut_sorted_durations_in_seeded_order():
    durations = np.random.default_rng(1).uniform(0.5, 9.0, size=23)
    windows = length_windows(durations, 4, np.random.default_rng(7))
    assert sorted(np.concatenate(windows).tolist()) == list(range(23))
    assert [len(w) for w in sorted(windows, key=lambda w: durations[w].min())] == [4, 4, 4, 4, 4, 3]
    spans = sorted((durations[w].min(), durations[w].max()) for w in windows)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False))  # no overlap in length
    again = length_windows(durations, 4, np.random.default_rng(7))
    assert [w.tolist() for w in windows] == [w.tolist() for w in again]
    ascending = [durations[w].max() for w in length_windows(durations, 4, None)]
    assert ascending == sorted(durations[w].max() for w in windows)


def test_epoch_order_reshuffles_each_epoch_and_replays_one():
    stream = [f"m{i}" for i in range(40)]
    pulled = []

    def source():
        for item in stream:
            pulled.append(item)
            yield item

    first = epoch_order(source(), 8, 0, epoch=0, rank=0)
    assert next(first) in stream[:9] and len(pulled) == 9  # holds at most 8 ahead of what it yields
    orders = {(e, r): list(epoch_order(stream, 8, 0, e, r)) for e in (0, 1) for r in (0, 1)}
    assert all(sorted(o) == sorted(stream) for o in orders.values())  # every micro-batch once
    assert len({tuple(o) for o in orders.values()}) == 4  # each epoch and rank its own order
    assert list(epoch_order(stream, 8, 0, 1, 0)) == orders[(1, 0)]  # a restart replays its epoch
    assert list(epoch_order(stream, 8, -1, 1, 0)) == list(epoch_order(stream, 1, 0, 1, 0)) == stream
    positions = [orders[(1, 0)].index(m) for m in stream]
    assert min(p - i for i, p in enumerate(positions)) >= -8  # none leaves before it could have arrived


def test_missing_column_fails_fast_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": ["a"], "audio": [b""], "sample_rate": [16000]}), path)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['reply'\] needed by stage s1"):
        check_shard_columns([str(path)], Stage.S1)


def test_cropped_features_re_pad_exactly_to_the_window(tiny_model):
    import io

    import soundfile as sf

    waves = [speech_like(1.1, seed=1), speech_like(3.7, seed=2)]
    udf = AudioFeatures(80, 800, 8.0)
    blobs = []
    for w in waves:
        buf = io.BytesIO()
        sf.write(buf, w.numpy(), 16000, format="FLAC")
        blobs.append(buf.getvalue())
    out = udf({"id": ["a", "b"], "audio": blobs, "sample_rate": [16000, 16000]})
    padded = pad_mels(out["mel"], out["mel_floor"], 800)
    decoded = [torch.as_tensor(sf.read(io.BytesIO(b), dtype="float32")[0]) for b in blobs]
    reference = tiny_model.frontend(decoded)
    torch.testing.assert_close(padded, reference.mel, atol=1e-6, rtol=0)
    assert out["mel_len"] == reference.lens.tolist()


@pytest.mark.parametrize(
    "samples",
    [
        (17_600, 48_040),  # the longest clip's last boundary frame lies past the span: one floor frame added
        (16_000, 48_000),  # the span ends on the longest clip's last boundary frame
        (16_000, 127_900),  # the span fills the window
        (4_000,),
    ],
)
def test_cropped_rows_equal_the_padded_window_cropped_bit_for_bit(samples):
    udf = AudioFeatures(80, 800, 8.0)
    clips = [speech_like(n / 16_000, seed=n)[:n] for n in samples]
    clips[0] = clips[0] * 1e-7  # a quiet clip: its floor is the -10 decade floor, not peak - 8
    out = udf._features(clips, "mel")
    window = udf.frontend(clips)  # (B, 80, 800): the whole padded window
    for i, n in enumerate(window.lens.tolist()):
        keep = min(800, n + 3)
        assert np.array_equal(out["mel"][i], window.mel[i, :, :keep].numpy())
        assert out["mel_floor"][i] == float(window.mel[i, :, -1].min())


@pytest.mark.parametrize("stage", [Stage.S1, Stage.S2A, Stage.S3A, Stage.S3B])
def test_collate_builds_stage_batches(stage, tmp_path):
    udf = AudioFeatures(80, 800, 8.0)
    import pyarrow.parquet as pq

    table = pq.read_table(write_tiny_shards(tmp_path, n_rows=3, n_shards=1, bad_rows=False)[0]).to_pydict()
    batch = {**udf(table)}
    tok = byte_level_chat_tokenizer()
    b = Collator(tok, stage, 800)(batch)
    assert b.mel.shape == (3, 80, 800) and len(b.input_ids) == 3
    assert b.row_ids == tuple(batch["id"]) and sorted(b.row_ids) == ["u000", "u001", "u002"]
    replies = [tok.decode([t for t in lab.tolist() if t != IGNORE_INDEX]) for lab in b.labels]
    if stage is Stage.S2A:
        assert [r.split("<")[0] for r in replies] == ["neutral", "happy", "sad"]
        assert b.emotion_labels.tolist() == [4, 2, 3]
    else:
        assert replies[0].startswith("That sounds hard.")
    assert b.speech_clips.numel() == (0 if stage is Stage.S3A else 3)
    if stage.speech_stage:
        assert b.unit_lens.tolist() == [12, 13, 14]
