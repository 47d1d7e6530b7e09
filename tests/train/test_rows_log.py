"""The per-rank log of trained rows: after a restart it keeps exactly the micro-batches the checkpoint
counted (the killed-worker test in ``test_train_ray.py`` checks the rows themselves)."""

from __future__ import annotations

from freezeempath.train.loop import Progress, log_rows, truncate_rows
from helpers import read_jsonl


def logged(path):
    return [(x["epoch"], x["micro"], x["ids"]) for x in read_jsonl(path)]


def test_a_restart_keeps_the_micro_batches_up_to_its_checkpoint_and_a_fresh_run_none(tmp_path):
    path = tmp_path / "rank0.jsonl"
    for epoch, micro in [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]:
        log_rows(path, Progress(epoch=epoch, step=0, micro=micro), (f"e{epoch}m{micro}a", f"e{epoch}m{micro}b"))
    truncate_rows(path, Progress(epoch=1, step=4, micro=1))
    assert logged(path) == [
        (0, 1, ["e0m1a", "e0m1b"]),
        (0, 2, ["e0m2a", "e0m2b"]),
        (0, 3, ["e0m3a", "e0m3b"]),
        (1, 1, ["e1m1a", "e1m1b"]),
    ]
    truncate_rows(path, Progress(epoch=1, step=3, micro=0))  # checkpointed at the epoch's end
    assert [x[:2] for x in logged(path)] == [(0, 1), (0, 2), (0, 3)]
    truncate_rows(path, Progress())
    assert path.read_text() == ""


def test_a_missing_log_truncates_to_an_empty_one(tmp_path):
    path = tmp_path / "rank1.jsonl"
    truncate_rows(path, Progress(epoch=0, step=2, micro=2))
    assert path.read_text() == ""
