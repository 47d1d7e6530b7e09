"""Ingest benchmark bookkeeping: each Ray Data pass against the faster DataLoader pass beside it."""

from __future__ import annotations

import pytest
from freezeempath.data.bench import IngestResult, bracketed_ratios


def test_each_ray_pass_meets_the_faster_neighbouring_loader_pass():
    pairs = bracketed_ratios([300.0, 240.0], [150.0, 200.0, 120.0])
    assert pairs == [(300.0, 200.0), (240.0, 200.0)]
    result = IngestResult(10, *pairs[0], 250.0, tuple(r / d for r, d in pairs))
    assert result.ratio == pytest.approx(1.5) and result.ratios == pytest.approx((1.5, 1.2))


def test_passes_must_interleave():
    with pytest.raises(ValueError, match="one DataLoader pass around each Ray Data pass"):
        bracketed_ratios([300.0, 240.0], [150.0, 200.0])
