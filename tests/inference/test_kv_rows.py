"""Rows of a batched KV cache joining and leaving: hand-computed keys, values and masks.

Every cache here has one head and one channel, so a layer's keys ``(B, 1, T, 1)`` read as rows of
numbers; values are the keys times -10, so a function that moved keys but not values would show.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from freezeempath.inference.kv_rows import add_empty_rows, join_rows, keep_rows, pad_left
from transformers import DynamicCache


def cache(*layers: list[list[float]]) -> DynamicCache:
    """A transformers cache whose layer ``i`` holds the rows ``layers[i]`` (``B × T`` numbers)."""
    built = DynamicCache()
    for i, rows in enumerate(layers):
        keys = torch.tensor(rows, dtype=torch.float32)[:, None, :, None]  # (B, T) → (B, 1, T, 1)
        built.update(keys, -10 * keys, i)
    return built


def rows(built: DynamicCache, layer: int = 0) -> list[list[float]]:
    """Layer ``layer``'s keys as ``B × T`` numbers, after checking its values still pair with them."""
    keys, values = built.layers[layer].keys, built.layers[layer].values
    torch.testing.assert_close(values, -10 * keys)
    return keys[:, 0, :, 0].tolist()


def mask(*rows_: list[int]) -> torch.Tensor:
    return torch.tensor(rows_, dtype=torch.long)


def test_pad_left_adds_masked_positions_before_every_row():
    kv = cache([[1, 2], [3, 4]], [[5, 6], [7, 8]])
    padded = pad_left(kv, mask([1, 1], [0, 1]), 4)
    assert padded.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]
    assert rows(kv, 0) == [[0, 0, 1, 2], [0, 0, 3, 4]] and rows(kv, 1) == [[0, 0, 5, 6], [0, 0, 7, 8]]


def test_pad_left_to_a_length_already_reached_changes_nothing():
    kv, m = cache([[1, 2, 3]]), mask([1, 1, 1])
    assert pad_left(kv, m, 3) is m and pad_left(kv, m, 2) is m
    assert rows(kv) == [[1, 2, 3]]


def test_join_rows_appends_the_other_caches_rows_left_padding_the_shorter_side():
    mine, theirs = cache([[1, 2, 3]]), cache([[7], [8]])
    joined, joined_mask = join_rows(mine, mask([1, 1, 1]), theirs, mask([1], [1]))
    assert joined is mine
    assert joined_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert rows(joined) == [[1, 2, 3], [0, 0, 7], [0, 0, 8]]


def test_join_rows_pads_this_cache_when_the_other_is_longer():
    joined, joined_mask = join_rows(cache([[4]]), mask([1]), cache([[5, 6]]), mask([0, 1]))
    assert joined_mask.tolist() == [[0, 1], [0, 1]]
    assert rows(joined) == [[0, 4], [5, 6]]


def test_join_rows_refuses_caches_of_different_depth_before_changing_either():
    mine, theirs = cache([[1]], [[2]]), cache([[3, 4]])
    with pytest.raises(ValueError, match="differ in initialised layers: 2 vs 1"):
        join_rows(mine, mask([1]), theirs, mask([1, 1]))
    assert rows(mine, 0) == [[1]] and rows(mine, 1) == [[2]] and rows(theirs) == [[3, 4]]


def test_add_empty_rows_appends_rows_that_attend_nothing():
    kv = cache([[5, 6]])
    grown = add_empty_rows(kv, mask([1, 1]), 2)
    assert grown.tolist() == [[1, 1], [0, 0], [0, 0]]
    assert rows(kv) == [[5, 6], [0, 0], [0, 0]]


def test_keep_rows_reorders_and_trims_columns_no_kept_row_attends():
    kv = cache([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    kept = keep_rows(kv, mask([1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]), [2, 1])
    assert kept.tolist() == [[0, 1], [1, 1]]  # the first two columns only row 0 attended
    assert rows(kv) == [[11, 12], [7, 8]]


def test_keep_rows_keeps_every_column_a_kept_row_attends():
    kv = cache([[1, 2, 3], [4, 5, 6]])
    kept = keep_rows(kv, mask([1, 1, 1], [0, 1, 1]), [0])
    assert kept.tolist() == [[1, 1, 1]] and rows(kv) == [[1, 2, 3]]


def test_keep_no_rows_leaves_an_empty_cache():
    kv = cache([[1, 2], [3, 4]])
    kept = keep_rows(kv, mask([1, 1], [0, 1]), [])
    assert kept.shape == (0, 0) and kv.layers[0].keys.shape == (0, 1, 0, 1)


def test_sliding_window_layers_cannot_take_rows_and_empty_layers_are_skipped():
    keys = torch.ones(1, 1, 2, 1)
    sliding = SimpleNamespace(is_initialized=True, is_sliding=True, keys=keys, values=keys)
    with pytest.raises(ValueError, match="full-attention dynamic cache layers only"):
        pad_left(SimpleNamespace(layers=[sliding]), mask([1, 1]), 3)
    unused = SimpleNamespace(is_initialized=False, is_sliding=True)  # never filled: nothing to move
    kv = cache([[1, 2]])
    kv.layers.append(unused)
    assert pad_left(kv, mask([1, 1]), 3).tolist() == [[0, 1, 1]] and rows(kv) == [[0, 1, 2]]
