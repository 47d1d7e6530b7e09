"""``codec/fit.py``: fitting a mel_kmeans codec, ``fit_codec`` by kind, and the process setting for long
fits (large allocations in memory maps of their own, glibc)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.codec.fit import fit_codec, fit_mel_kmeans
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.protocol import CodecFitReport
from freezeempath.config import load_config
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip
from helpers import mel_distance

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from freezeempath.codec.fit import map_large_allocations

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "on":
        assert map_large_allocations()
    big = bytearray(8 << 20)
    del big  # glibc's default threshold now rises to 8 MiB
    before = libc.mallinfo2().hblkhd
    held = bytearray(4 << 20)
    print(libc.mallinfo2().hblkhd - before)  # bytes newly in memory maps
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_allocations_keep_their_own_maps_after_a_larger_one_is_freed() -> None:
    run = {
        mode: subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
        for mode in ("on", "off")
    }
    assert all(r.returncode == 0 for r in run.values()), {m: r.stderr[-2000:] for m, r in run.items()}
    mapped = {mode: int(r.stdout) for mode, r in run.items()}
    assert mapped["on"] >= 4 << 20  # its own map: given back when freed
    assert mapped["off"] == 0  # glibc's default put it in the heap, between whatever stays


def make_codec(voice_conditioned: bool = False) -> MelKMeansCodec:
    codec = build_codec(dataclasses.replace(TINY, voice_conditioned=voice_conditioned))
    assert isinstance(codec, MelKMeansCodec)
    return codec


def test_fit_improves_codebook_and_decoder(fitted: tuple[MelKMeansCodec, CodecFitReport]) -> None:
    codec, report = fitted
    assert report.clips == 6
    assert report.frames == 6 * codec.frame_count(TINY.sample_rate)
    assert report.inertia < report.inertia_initial
    assert report.mel_l1_after < report.mel_l1_before
    wave = clip(11)
    untrained = make_codec()
    lag = HOP  # output sample k reconstructs input sample k - hop
    fitted_error = mel_distance(codec, codec.decode(codec.encode(wave))[lag:], wave[:-lag])
    untrained_error = mel_distance(codec, untrained.decode(untrained.encode(wave))[lag:], wave[:-lag])
    assert fitted_error < untrained_error


def test_fit_is_deterministic_and_needs_enough_frames() -> None:
    waves = [clip(s, seconds=0.5) for s in range(2)]
    a, b = make_codec(), make_codec()
    assert fit_mel_kmeans(a, waves, kmeans_iters=3, decoder_steps=5, seed=3) == fit_mel_kmeans(
        b, waves, kmeans_iters=3, decoder_steps=5, seed=3
    )
    assert torch.equal(a.codebook, b.codebook)
    with pytest.raises(ValueError, match="at least n_units=16 frames"):
        fit_mel_kmeans(make_codec(), [clip(0, seconds=0.1)])


def test_mel_kmeans_fits_a_voice_conditioned_decoder_too() -> None:
    codec = make_codec(voice_conditioned=True)
    waves = [clip(s) * gain for s in range(3) for gain in (1.0, 0.05)]
    report = fit_mel_kmeans(codec, waves, decoder_steps=30, seed=0)
    assert report.mel_l1_after < report.mel_l1_before
    units, loud, quiet = codec.encode(clip(9)), codec.voice_of(clip(9)), codec.voice_of(clip(9) * 0.05)
    assert not torch.equal(codec.decode(units, loud), codec.decode(units, quiet))


def test_mel_kmeans_takes_no_crops() -> None:
    cfg = load_config("tiny", ["targets.codec_crops=audio", "model.codec.kind=mel_kmeans"])
    with pytest.raises(ValueError, match="mel_kmeans takes no crops"):
        fit_codec(cfg, [clip(0)])
