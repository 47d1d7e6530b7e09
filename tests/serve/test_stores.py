"""What the gateway keeps between requests: audio ids until they expire, clip features within two bounds."""

from __future__ import annotations

from serve.api import StoredAudio
from serve.stores import AudioStore, ClipCache


def test_audio_store_expires_and_caps():
    store = AudioStore(capacity=2)
    store.put("old", StoredAudio("a", expires_at=0, voice="", emotion=None, units=0))
    assert store.get("old") is None
    for i in range(3):
        store.put(f"id{i}", StoredAudio("t", expires_at=2**40, voice="", emotion=None, units=0))
    assert store.get("id0") is None and store.get("id2") is not None


def test_clip_cache_drops_the_least_recently_used_past_either_bound():
    import torch
    from freezeempath.inference.understanding import ClipFeatures

    def clip(rows: int) -> ClipFeatures:  # float32: 4 bytes per value, emotion (1, 8) = 32 bytes
        return ClipFeatures(torch.zeros(rows, 8), torch.zeros(1, 8), None)  # type: ignore[arg-type]

    cache = ClipCache(capacity=3, max_bytes=3 * 32 + 32 * 10)  # three clips of 2 rows, or one of 10
    for key in "abc":
        cache.put(key, clip(2))
    cache.put("a", clip(2))  # seen again: most recent, not counted twice
    cache.put("d", clip(2))  # past 3 clips: "b" goes, the least recently used
    assert [cache.get(k) is not None for k in "abcd"] == [True, False, True, True] and cache.bytes == 3 * 96
    cache.put("e", clip(10))  # 352 bytes: "c", "a", "d" go until it fits
    assert list(cache.items) == ["e"] and cache.bytes == 352
    cache.put("f", clip(20))  # larger than the whole budget: not kept, and "e" stays
    assert list(cache.items) == ["e"] and cache.bytes == 352
