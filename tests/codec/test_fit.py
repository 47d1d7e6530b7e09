"""``codec/fit.py``'s process setting: large allocations in memory maps of their own (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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
