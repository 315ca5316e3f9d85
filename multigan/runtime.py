"""Process-wide settings that make training on a CPU faster."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def keep_freed_memory() -> bool:
    """Keep glibc from handing freed memory back to the OS between steps; True if it took.

    By default glibc unmaps freed blocks of a few MiB and trims its heap, so
    every training step page-faults its activations back in: thousands of
    minor faults per step (measured in bench/engine_throughput.py: about 13%
    of a DCGAN step on 2 cores). Same as MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=1073741824. No effect off Linux/glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc, or no mallopt
        return False
