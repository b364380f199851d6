"""Threads by load: the choice is a pure function of two /proc/stat readings, fed here by hand."""
from __future__ import annotations

import torch

from symdiff.precision import choose_threads, cpu_ticks, free_cores, threads_for


def stat(*cpus: tuple[int, int]) -> str:
    """A /proc/stat text with per-cpu (busy, idle) ticks (busy as user, idle split idle/iowait)."""
    lines = [f"cpu  {sum(b for b, _ in cpus)} 0 0 {sum(i for _, i in cpus)} 0 0 0 0 0 0"]
    lines += [f"cpu{n} {b} 0 0 {i - i // 4} {i // 4} 0 0 0 0 0" for n, (b, i) in enumerate(cpus)]
    return "\n".join([*lines, "intr 1 2 3", "procs_running 2"]) + "\n"


def test_ticks_sum_the_chosen_cpus_only():
    text = stat((100, 900), (50, 950), (1000, 0))
    assert cpu_ticks(text, {0, 1}) == (150, 2000)
    assert cpu_ticks(text, {2}) == (1000, 1000)


def test_free_cores_between_two_readings():
    before = stat((0, 0), (0, 0))
    assert free_cores(before, stat((0, 100), (0, 100)), {0, 1}) == 2.0  # idle
    assert free_cores(before, stat((100, 0), (0, 100)), {0, 1}) == 1.0  # one busy process
    assert free_cores(before, stat((50, 50), (50, 50)), {0, 1}) == 1.0  # the same, moved between cores
    assert free_cores(before, stat((100, 0), (100, 0)), {0, 1}) == 0.0
    # this process' own ticks do not count against it
    assert free_cores(before, stat((100, 0), (60, 40)), {0, 1}, own_ticks=60) == 1.0
    assert free_cores(before, before, {0, 1}) == 2.0  # no time passed: nothing known against it


def test_threads_take_whole_free_cores_shared_by_the_jobs():
    assert threads_for(2.0, 2) == 2  # idle: every core
    assert threads_for(1.85, 2) == 2  # a little background noise
    assert threads_for(1.0, 2) == 1  # one busy process: one thread, never a stalled second
    assert threads_for(1.7, 2) == 1  # a core busy a third of the time is not free
    assert threads_for(0.0, 2) == 1  # never below one
    assert threads_for(16.0, 16, jobs=2) == 8 and threads_for(5.0, 16, jobs=2) == 2
    assert threads_for(30.0, 16) == 16


def test_choose_threads_sets_torch_within_its_bounds():
    before = torch.get_num_threads()
    try:
        n = choose_threads(probe_s=0.02)
        assert torch.get_num_threads() == n and 1 <= n
        assert choose_threads(most=1, probe_s=0.02) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
