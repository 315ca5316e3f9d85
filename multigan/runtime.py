"""Process-wide settings that make training on a CPU faster."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import time
from collections.abc import Callable

import torch


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


# CPU threads beside other busy processes ------------------------------------
def threads_beside(max_threads: int, cores: int, others_busy: float) -> int:
    """Torch threads to use on `cores` CPUs of which other processes keep `others_busy` busy (in cores).

    One thread per core the others leave free (rounded half up), at least 1
    and at most `max_threads`. An OpenMP team is only as fast as its slowest
    thread: a thread that shares its core with a busy process holds the
    others at every barrier, so on 2 cores one busy process made torch's 2
    threads 3x slower, where 1 thread was only about 1.7x slower than 2 on a
    quiet machine (bench/cpu_contention.py).
    """
    return max(1, min(max_threads, int(cores - others_busy + 0.5)))


def _cpus() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds that `cpus` have spent busy since boot, summed over them (Linux /proc/stat; None elsewhere)."""
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break  # the cpu lines come first
                name, *fields = line.split()
                if name != "cpu" and int(name[3:]) in cpus:
                    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
                    total += user + nice + system + irq + softirq + steal
    except (OSError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


class CpuThreads:
    """Keeps torch's CPU thread count at the cores that other processes leave free.

    Every `every_s` seconds of wall time, `after_step()` reads how long our
    cores were busy (/proc/stat) beyond this process's own CPU time, and sets
    the threads to `threads_beside(max_threads, len(cpus), others)`. Reading
    costs microseconds and no step runs on a worse setting to find out; a
    busy process that comes or goes is followed within a window. A no-op
    where /proc/stat is missing or `max_threads` is 1 (torchrun sets
    OMP_NUM_THREADS=1). DataLoader workers and other ranks count as other
    processes: they compete for the same cores.
    """

    def __init__(self, max_threads: int, set_threads: Callable[[int], None], cpus: set[int], every_s: float = 2.0,
                 busy: Callable[[set[int]], float | None] = busy_seconds,
                 clock: Callable[[], float] = time.perf_counter, own: Callable[[], float] = time.process_time):
        self.max_threads, self.threads, self.cpus, self.every_s = max_threads, max_threads, cpus, every_s
        self._set, self._busy, self._clock, self._own = set_threads, busy, clock, own
        self.changes: list[tuple[float, float, int]] = []  # (seconds since the start, others in cores, new threads)
        self._start = self._t0 = clock()
        self._busy0, self._own0 = busy(cpus), own()
        self.active = max_threads > 1 and self._busy0 is not None

    def after_step(self) -> None:
        """Call once per training step; it does something once per window."""
        if not self.active or (now := self._clock()) - self._t0 < self.every_s:
            return
        busy, own = self._busy(self.cpus), self._own()
        if busy is None:
            self.active = False
            return
        others = max(0.0, (busy - self._busy0) - (own - self._own0)) / (now - self._t0)
        threads = threads_beside(self.max_threads, len(self.cpus), others)
        if threads != self.threads:
            self._set(threads)
            self.threads = threads
            self.changes.append((now - self._start, others, threads))
        self._t0, self._busy0, self._own0 = now, busy, own

    def restore(self) -> None:
        """Give torch back the thread count it had (call when training ends)."""
        if self.threads != self.max_threads:
            self._set(self.max_threads)
            self.threads = self.max_threads


def configure_cpu_threads(every_s: float = 2.0) -> CpuThreads:
    """Start fitting torch's CPU threads to the free cores; call `.after_step()` after every training step
    and `.restore()` at the end.

    The most threads it uses is torch's count now (OMP_NUM_THREADS, or one per
    physical core), so a user's own setting stays the ceiling. OpenMP's wait
    policy stays at libgomp's default (spin, then sleep): with the right
    thread count, OMP_WAIT_POLICY=PASSIVE only cost speed (bench/cpu_contention.py).
    """
    return CpuThreads(torch.get_num_threads(), torch.set_num_threads, _cpus(), every_s)
