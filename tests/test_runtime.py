"""The CPU thread policy: how many threads beside how much other load, and when it changes them."""
from __future__ import annotations


import pytest

from multigan.runtime import CpuThreads, busy_seconds, threads_beside


@pytest.mark.parametrize("max_threads, cores, others, expected", [
    (2, 2, 0.0, 2),   # quiet: every core
    (2, 2, 0.3, 2),   # a light background load is not worth a core
    (2, 2, 0.67, 1),  # one busy process beside 2 spinning threads gets about 2/3 of a core
    (2, 2, 1.0, 1),
    (2, 2, 3.0, 1),   # never fewer than one thread
    (8, 8, 1.0, 7),
    (8, 8, 2.6, 5),
    (8, 16, 1.0, 8),  # one thread per physical core: a busy logical CPU still leaves 8 free
    (8, 16, 9.0, 7),
    (4, 16, 6.0, 4),  # OMP_NUM_THREADS=4 stays the ceiling
    (1, 2, 0.9, 1),
])
def test_threads_beside_other_load(max_threads, cores, others, expected):
    assert threads_beside(max_threads, cores, others) == expected


class FakeMachine:
    """A clock, our process's CPU time and our cores' busy time, advanced by hand."""

    def __init__(self):
        self.now = self.own = self.busy = 0.0

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)


def _policy(machine: FakeMachine, max_threads: int = 2, busy=None) -> tuple[CpuThreads, list[int]]:
    calls: list[int] = []
    threads = CpuThreads(max_threads, calls.append, {0, 1}, every_s=2.0, busy=busy or (lambda cpus: machine.busy),
                         clock=lambda: machine.now, own=lambda: machine.own)
    return threads, calls


def test_a_busy_process_takes_a_thread_and_gives_it_back():
    machine = FakeMachine()
    threads, calls = _policy(machine)
    for _ in range(8):  # quiet: 2 s windows, no change
        machine.run(0.5, own_cores=2.0, other_cores=0.0)
        threads.after_step()
    assert calls == [] and threads.threads == 2
    for _ in range(3):  # a busy process: within one window, down to 1 thread
        machine.run(0.9, own_cores=1.3, other_cores=0.7)
        threads.after_step()
    assert calls == [1] and threads.threads == 1
    for _ in range(6):  # still there: no further calls
        machine.run(0.9, own_cores=1.0, other_cores=1.0)
        threads.after_step()
    assert calls == [1]
    for _ in range(5):  # gone: back to 2
        machine.run(0.6, own_cores=1.0, other_cores=0.0)
        threads.after_step()
    assert calls == [1, 2] and threads.threads == 2


def test_restore_gives_back_the_threads_it_took():
    machine = FakeMachine()
    threads, calls = _policy(machine)
    threads.restore()
    assert calls == []  # nothing taken, nothing to give back
    machine.run(2.0, own_cores=1.0, other_cores=1.0)
    threads.after_step()
    threads.restore()
    assert calls == [1, 2] and threads.threads == 2


def test_nothing_changes_before_a_window_is_full():
    machine = FakeMachine()
    threads, calls = _policy(machine)
    machine.run(1.9, own_cores=1.0, other_cores=1.0)
    threads.after_step()
    assert calls == []
    machine.run(0.2, own_cores=1.0, other_cores=1.0)
    threads.after_step()
    assert calls == [1] and threads.changes == [(pytest.approx(2.1), pytest.approx(1.0), 1)]


@pytest.mark.parametrize("max_threads, busy", [(1, None), (2, lambda cpus: None)], ids=["one-thread", "no-proc-stat"])
def test_no_op_with_one_thread_or_without_proc_stat(max_threads, busy):
    machine = FakeMachine()
    threads, calls = _policy(machine, max_threads, busy)
    for _ in range(5):
        machine.run(1.0, own_cores=1.0, other_cores=1.0)
        threads.after_step()
    assert calls == [] and not threads.active


def test_busy_seconds_counts_only_the_cpus_asked_for():
    import os

    cpus = set(os.sched_getaffinity(0))
    assert busy_seconds(set()) == 0.0
    assert busy_seconds(cpus) > 0.0
    assert busy_seconds(cpus) <= busy_seconds(cpus | {10**6})  # a CPU that does not exist adds nothing
