"""Property-based inputs for the API fuzz job: audio containers, headers, sample formats and JSON bodies.

Hypothesis draws each input; :func:`fuzz` sends it to a running app on loopback and counts answers by
status, requests that hang, ``/healthz`` latency while it runs and the gateway replica's peak memory.
Every input is bounded (bodies of at most ~200 KB, audio of at most a few seconds as declared), so a run
stays inside its time budget.
"""

from __future__ import annotations

import base64
import io
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

RATES = (1, 8000, 16000, 4001, 22050, 44100, 96000, 384000)
JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def audio_files(draw: Any) -> bytes:
    """A sound file soundfile writes (any rate, channel count, sample format and content), maybe damaged."""
    container, subtype = draw(
        st.sampled_from([("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16")])
    )
    rate, channels = draw(st.sampled_from(RATES)), draw(st.integers(1, 3))
    frames = draw(st.integers(0, min(rate * 2, 40_000)))
    scale = draw(st.sampled_from([0.0, 0.5, 1.0, 1e4, 1e20])) if subtype == "FLOAT" else 0.5
    seed = draw(st.integers(0, 2**16))
    samples = (np.random.default_rng(seed).standard_normal((frames, channels)) * scale).astype(np.float32)
    if subtype == "FLOAT" and frames and draw(st.booleans()):
        samples[draw(st.integers(0, frames - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    buffer = io.BytesIO()
    try:
        sf.write(buffer, samples, rate, format=container, subtype=subtype)
    except Exception:  # a combination libsndfile refuses (FLAC beyond 655 kHz): send raw noise instead
        return np.random.default_rng(seed).bytes(frames % 4096)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate" and data:
        return data[: draw(st.integers(0, len(data)))]
    if damage == "flip" and data:
        at = draw(st.integers(0, min(len(data), 64) - 1))  # the header
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


AUDIO = audio_files() | st.binary(max_size=4096)
FORMATS = st.sampled_from(["wav", "flac", "mp3", "aac", "", "WAV"])


@st.composite
def audio_parts(draw: Any) -> dict[str, Any]:
    data = draw(AUDIO)
    encoded = base64.b64encode(data).decode() if draw(st.booleans()) or not data else draw(st.text(max_size=40))
    return {"type": "input_audio", "input_audio": {"data": encoded, "format": draw(FORMATS)}}


CONTENT = st.one_of(
    st.text(max_size=200),
    st.lists(audio_parts() | st.fixed_dictionaries({"type": st.just("text"), "text": JSON}) | JSON, max_size=3),
    JSON,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", 5]), "content": CONTENT}
    ),
    max_size=3,
)


@st.composite
def chat_bodies(draw: Any) -> bytes:
    """A chat completion body: the known fields with values of any JSON type or range, sometimes extra ones."""
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["freezeempath", "gpt-4o", "", 7])),
        "messages": draw(MESSAGES),
    }
    optional = {
        "temperature": st.floats(allow_nan=False) | st.sampled_from([1e-38, 0.0, 2.0]),
        "max_completion_tokens": st.integers(-5, 2**40),
        "seed": st.integers(-(2**70), 2**70),
        "stream": st.booleans(),
        "n": st.integers(-1, 3),
        "modalities": st.lists(st.sampled_from(["text", "audio", "video"]), max_size=3),
        "audio": st.fixed_dictionaries(
            {
                "voice": st.sampled_from(["alloy", "default", "robot"]),
                "format": st.sampled_from(["wav", "pcm16", "aac"]),
            }
        ),
        "extra": JSON,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    text = json.dumps(body)
    return text.encode() if draw(st.integers(0, 9)) else text[: draw(st.integers(0, len(text)))].encode()


@st.composite
def requests(draw: Any) -> tuple[str, bytes]:
    """An endpoint and the body sent to it."""
    if draw(st.integers(0, 3)):
        return "/v1/chat/completions", draw(chat_bodies())
    return "/v1/audio/emotion", json.dumps({"input_audio": draw(audio_parts())["input_audio"]}).encode()


@dataclass
class FuzzReport:
    """What a fuzz run saw."""

    inputs: int = 0
    by_status: Counter = field(default_factory=Counter)
    hangs: int = 0
    healthz_ms: list[float] = field(default_factory=list)
    gateway_peak_mb: float | None = None
    seconds: float = 0.0
    examples_5xx: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status other than 503 (overload and lost replicas are answers to retry)."""
        return sum(n for status, n in self.by_status.items() if status >= 500 and status != 503)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        lat = sorted(self.healthz_ms)
        return {
            "inputs": self.inputs,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "5xx": self.server_errors,
            "hangs": self.hangs,
            "healthz_ms": {"p50": statistics.median(lat), "max": lat[-1]} if lat else None,
            "gateway_peak_mb": self.gateway_peak_mb,
            "seconds": round(self.seconds, 1),
            "examples_5xx": self.examples_5xx[:3],
        }


def _watch(url: str, report: FuzzReport, stop: threading.Event, gateway_pid: int | None) -> None:
    """Every 0.25 s: ``/healthz`` latency and the gateway's resident memory."""
    import psutil

    process = psutil.Process(gateway_pid) if gateway_pid else None
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            client.get(f"{url}/healthz")
            report.healthz_ms.append(1000 * (time.perf_counter() - start))
            if process is not None:
                rss = process.memory_info().rss / 2**20
                report.gateway_peak_mb = max(report.gateway_peak_mb or 0.0, rss)
            stop.wait(0.25)


def fuzz(
    url: str, examples: int, seed: int, seconds: float, timeout_s: float = 60.0, gateway_pid: int | None = None
) -> FuzzReport:
    """Send ``examples`` drawn inputs to the app at ``url`` (stopping early after ``seconds``)."""
    report, stop, start = FuzzReport(), threading.Event(), time.perf_counter()
    watcher = threading.Thread(target=_watch, args=(url, report, stop, gateway_pid), daemon=True)
    watcher.start()
    client = httpx.Client(timeout=timeout_s)

    @settings(
        max_examples=examples, database=None, deadline=None, derandomize=False, suppress_health_check=list(HealthCheck)
    )
    @given(requests())
    def send(request: tuple[str, bytes]) -> None:
        if time.perf_counter() - start > seconds:
            return
        path, body = request
        report.inputs += 1
        try:
            answer = client.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
            answer.read()
        except httpx.TimeoutException:
            report.hangs += 1
            return
        report.by_status[answer.status_code] += 1
        if answer.status_code >= 500 and answer.status_code != 503:
            report.examples_5xx.append(f"{path} {answer.status_code} {answer.text[:200]} <- {body[:200]!r}")

    try:
        hypothesis_seed(seed)(send)()
    finally:
        stop.set()
        watcher.join()
        client.close()
        report.seconds = time.perf_counter() - start
    return report
