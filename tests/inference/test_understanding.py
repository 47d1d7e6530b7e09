"""Understanding clips: one understander part is safe to call from several threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from freezeempath.inference.understanding import understand_clips
from freezeempath.model.build import build_understander
from helpers import speech_like


def test_understanding_is_safe_across_threads(tiny_parts):
    cfg, _ = tiny_parts
    part = build_understander(cfg)
    batches = [[speech_like(0.5 + 0.1 * i, seed=i) for i in range(n)] for n in (2, 3, 1, 4) * 3]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda clips: understand_clips(part, clips), batches))
    assert [len(r) for r in results] == [len(b) for b in batches]
