"""glibc malloc settings for the CPU (training, compiled inference): keep freed memory, not return it to the OS.

Each training step frees and reallocates the same few-MB activation buffers. glibc serves blocks above its
(dynamic) mmap threshold with fresh ``mmap`` calls and trims freed heap tops back to the OS, so every step
faults the same pages in again, zero-filled by the kernel. On the 2-core ``make demo`` machine that was
seen in some runs and not others (5-9 million minor page faults for 300-700 steps instead of 0.3 million,
14-50 % of the CPU time in the kernel, ~1.4× slower steps). Fixing the mmap threshold (which also stops its
dynamic growth) and raising the trim threshold keeps those pages mapped; ``MALLOC_*_`` environment
variables (mallopt(3)) would do the same, but only when set before the process starts.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt(3) parameters, <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit: only blocks above 32 MiB are mmapped
TRIM_THRESHOLD = (1 << 31) - 1  # keep up to 2 GiB of freed heap (mallopt takes an int)
TOP_PAD = 256 << 20


def keep_freed_memory() -> bool:
    """Set the thresholds above with mallopt; False where there is no glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
