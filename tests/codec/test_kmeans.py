"""k-means for codec units: recovers separated clusters, re-seeds empty ones, deterministic per generator."""

from __future__ import annotations

import torch
from freezeempath.codec.kmeans import kmeans, nearest


def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight clusters of 50 points around far-apart centres → points ``(150, 2)``, centres ``(3, 2)``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = centres.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=g)
    return points, centres


def test_recovers_separated_clusters():
    points, centres = blobs()
    found, inertia = kmeans(points, 3, 10, torch.Generator().manual_seed(0))
    order = nearest(centres, found)[1]  # the found centroid closest to each true centre
    assert sorted(order.tolist()) == [0, 1, 2]
    torch.testing.assert_close(found[order], centres, atol=0.05, rtol=0)
    assert inertia < 0.05


def test_more_clusters_than_distinct_points_leaves_none_empty():
    points = torch.tensor([[0.0], [0.0], [1.0], [1.0], [5.0]])
    found, inertia = kmeans(points, 4, 5, torch.Generator().manual_seed(1))
    assert torch.bincount(nearest(points, found)[1], minlength=4).ne(0).sum() >= 3
    assert inertia == 0.0


def test_same_generator_seed_same_result():
    points, _ = blobs(3)
    a = kmeans(points, 5, 4, torch.Generator().manual_seed(7))
    b = kmeans(points, 5, 4, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    assert a[1] == b[1]
