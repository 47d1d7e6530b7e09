"""What the gateway keeps between requests: assistant audio ids and understood clips.

In: a finished reply's transcript and voice (by its audio id), or a clip's features (by the sha256 of its
bytes). Out: the stored item until it expires or is pushed out, so a later request can name an earlier
reply's audio by id and re-sent history skips the understanding call. Both live in one gateway replica
(``serve/configs/*.yaml`` keep one)::

    serve run --address local serve/configs/local.yaml
"""

from __future__ import annotations

import time
from collections import OrderedDict

from freezeempath.inference.understanding import ClipFeatures

from serve.api import StoredAudio


class AudioStore:
    """Assistant audio ids → :class:`StoredAudio` until they expire (oldest dropped past ``capacity``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.items = capacity, OrderedDict[str, StoredAudio]()

    def put(self, audio_id: str, item: StoredAudio) -> None:
        """Keep ``item``; drops expired and excess entries."""
        now = time.time()
        for key in [k for k, v in self.items.items() if v.expires_at < now]:
            del self.items[key]
        self.items[audio_id] = item
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)

    def get(self, audio_id: str) -> StoredAudio | None:
        """The stored reply, or None when unknown or expired."""
        item = self.items.get(audio_id)
        return item if item is not None and item.expires_at >= time.time() else None


class ClipCache:
    """Understood clips by content hash (re-sent history skips the encoder); the least recently used
    go past ``capacity`` clips or ``max_bytes`` of features (a 30 s clip is about 2 MB at paper widths)."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity, self.max_bytes, self.bytes = capacity, max_bytes, 0
        self.items = OrderedDict[str, ClipFeatures]()

    def get(self, key: str) -> ClipFeatures | None:
        """The clip's features, or None when not kept."""
        return self.items.get(key)

    def put(self, key: str, features: ClipFeatures) -> None:
        """Keep ``features`` as the most recent; drops the least recent past either bound. Clips larger
        than the whole byte budget are not kept (nor do they flush the rest)."""
        if key in self.items:
            self.items.move_to_end(key)
            return
        if (size := _nbytes(features)) > self.max_bytes:
            return
        self.items[key] = features
        self.bytes += size
        while self.items and (len(self.items) > self.capacity or self.bytes > self.max_bytes):
            self.bytes -= _nbytes(self.items.popitem(last=False)[1])


def _nbytes(features: ClipFeatures) -> int:
    return sum(t.element_size() * t.numel() for t in (features.speech, features.emotion))
