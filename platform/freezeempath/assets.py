"""Bundled sample assets (synthetic speech made with espeak-ng; no licensed data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from freezeempath.audio import decode_audio


@dataclass(frozen=True)
class SpokenSample:
    """A bundled clip with its transcript and intended emotion."""

    samples: np.ndarray
    sample_rate: int
    transcript: str
    emotion: str


def bundled_question(name: str = "question_sad") -> SpokenSample:
    """Load the bundled spoken question ``name`` (``assets/<name>.json`` + its audio)."""
    folder = resources.files("freezeempath") / "assets"
    meta = json.loads((folder / f"{name}.json").read_text())
    samples, rate = decode_audio((folder / meta["audio"]).read_bytes())
    return SpokenSample(samples, rate, meta["transcript"], meta["emotion"])
