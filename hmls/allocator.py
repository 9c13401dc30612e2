"""The C allocator's thresholds, fixed before the controller starts.

Why it exists: glibc's malloc raises its mmap threshold each time a large block is freed
(the "dynamic threshold"), after which buffers of 128 KiB and more — response bodies of a
list, a JSON document being decoded — come from the heap instead of a mapping of their
own, and the heap's high water stays behind them. A controller that reconciles many
CRs at once frees such buffers all day, and its RSS creeps although Python's own heap is
flat (tracemalloc over 2,000 CR lifecycles at ``--workers 32``: 87 to 88 MB throughout, while
RSS grew 1.9 KB per lifecycle; with the thresholds fixed, 0.9). Fixing both thresholds at
glibc's initial 128 KiB turns the dynamic raise off: large buffers are mapped and unmapped,
and freed heap tops go back to the kernel.

Where it sits: ``hmls controller`` calls :func:`fix_thresholds` once, before the event loop
starts. An operator's own ``GLIBC_TUNABLES`` malloc settings win (nothing is changed), and
on a C library without ``mallopt`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt's parameter numbers (glibc's malloc.h)."""
THRESHOLD = 128 * 1024
"""glibc's initial mmap and trim thresholds."""


def fix_thresholds(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Fix malloc's mmap and trim thresholds; True when they were set here."""
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        log.info("malloc thresholds left to GLIBC_TUNABLES")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, THRESHOLD) == 1 for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
