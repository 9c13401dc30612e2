"""hmls.allocator: with the thresholds fixed, 1 MiB buffers taken after a 4 MiB one was freed
are still mapped each on its own (glibc's dynamic threshold would have moved them onto the
heap, whose high water stays; mallinfo2 counts the mapped ones); an operator's
GLIBC_TUNABLES are left alone. Each case runs in a fresh interpreter: the setting is
process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hmls.allocator import fix_thresholds

PROBE = """
import ctypes, sys
from hmls.allocator import fix_thresholds
if sys.argv[1] == "fixed":
    assert fix_thresholds({})


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = MallInfo2
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
held = [libc.malloc(1 << 20) for _ in range(8)]
print(libc.mallinfo2().hblks - before)
"""


def where_large_buffers_live(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=60)
    return "mapped" if int(out.stdout) == 8 else "heap"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_fixed_thresholds_keep_large_buffers_off_the_heap() -> None:
    assert where_large_buffers_live("dynamic") == "heap"
    assert where_large_buffers_live("fixed") == "mapped"


def test_an_operators_tunables_win() -> None:
    assert not fix_thresholds({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
