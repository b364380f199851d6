"""Float precision and thread count by hardware and load, for training and inference alike.

bf16 autocast pays only where the hardware has native bf16 units: a CUDA GPU, or a CPU with
AMX or AVX512-BF16 (2-2.5x faster training on our AMX CPUs). Elsewhere it is a trap: on an AVX2
CPU a bf16 matmul runs ~100x slower than fp32 and `nn.LSTM` under CPU autocast raises ("could
not create a primitive descriptor"). So `auto` (the default everywhere) picks bf16 only where
it is native, fp32 otherwise; `bf16` and `fp32` are taken as asked. Sampling on a CPU is fp32
even where bf16 is native: its model calls hold 1 to 12 rows (a melody and its guidance views, a
few requests), and there autocast's cast of the weights at every call costs more than the bf16
matmul saves (one call on 64 bars, 2 threads: fp32 4.8 ms against bf16 9.5 ms at 2 rows on our
AMX Xeon, equal near 12 rows, bf16 ahead only from about 24; the AVX512-BF16 EPYC, 8.9 against
9.7 ms at 2 rows). Training's batches of 128 windows are where bf16 pays. The environment variable
SYMDIFF_PRECISION=bf16|fp32 overrides what `auto` picks (tests use it to run as on an AVX2 CPU).

Threads by load (`choose_threads`): torch's OpenMP threads wait for each other at every op, so
one thread descheduled by another process stalls them all; on 2 shared cores a default sample
took 71 s with 2 threads beside one busy process and 5.1 s with 1 (issue 26). A run therefore
takes only the cores that were idle just before it starts, as /proc/stat counts them. numpy's
BLAS gets one thread (`limit_threads`, `choose_threads`): its threads spin for a while after each
call, and the app's numpy work between model calls (a trace's metrics) then stalls torch's
threads: a Generate of the app took 3.6 s against 1.8 s with one BLAS thread (AMX Xeon, 2 cores).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Collection
from contextlib import nullcontext
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from .errors import SymdiffError
from .options import DEVICES, PRECISIONS

ENV = "SYMDIFF_PRECISION"
_NATIVE_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}
# A core counts as free when at least 1 - FREE_SLACK of it was idle: a thread on a core another
# process wants half the time costs the whole team, one thread too few costs little.
FREE_SLACK = 0.2
PROBE_S = 0.1  # how long the cores are watched before a run
_STARTUP_THREADS = torch.get_num_threads()  # torch's own choice, or OMP_NUM_THREADS: the most a run takes


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16, from /proc/cpuinfo's flags (Linux), else from torch's cpuinfo probe."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & _NATIVE_CPU_FLAGS)


def resolve_precision(choice: str = "auto", device: str | torch.device = "cpu", sampling: bool = False) -> str:
    """'auto' | 'bf16' | 'fp32' -> 'bf16' or 'fp32' for a run on `device`; `sampling`: the small
    calls of generation, fp32 on any CPU (see the module doc)."""
    if choice not in PRECISIONS:
        raise SymdiffError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice != "auto":
        return choice
    forced = os.environ.get(ENV, "auto")
    if forced not in PRECISIONS:
        raise SymdiffError(f"{ENV} must be one of {', '.join(PRECISIONS)}, got {forced!r}")
    if forced != "auto":
        return forced
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() and not sampling else "fp32"


def resolve_device(choice: str = "auto") -> str:
    """'auto' | 'cpu' | 'cuda' -> the device a run uses: auto takes CUDA where torch sees a GPU,
    the CPU otherwise; 'cuda' on a machine without one is refused before any work."""
    if choice not in DEVICES:
        raise SymdiffError(f"device must be one of {', '.join(DEVICES)}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SymdiffError("--device cuda: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def autocast(precision: str, device_type: str = "cpu"):
    """bf16 autocast (fp32 master weights) for a resolved 'bf16', nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def limit_threads(jobs: int = 1) -> int:
    """At most cores // jobs torch threads (at least 1), so `jobs` runs at once never
    oversubscribe the cores, and one BLAS thread; returns the count set."""
    n = max(1, min(torch.get_num_threads(), available_cores() // max(1, jobs)))
    torch.set_num_threads(n)
    threadpool_limits(1, user_api="blas")  # (module doc)
    return n


def cpu_ticks(stat: str, cpus: Collection[int]) -> tuple[int, int]:
    """(busy, total) clock ticks since boot summed over the `cpus` lines ("cpu0", ...) of a
    /proc/stat text; idle and iowait are the idle ticks (proc(5))."""
    busy = total = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def free_cores(before: str, after: str, cpus: Collection[int], own_ticks: float = 0.0) -> float:
    """Cores of `cpus` left idle between two /proc/stat readings by every process but this one
    (`own_ticks`: this process' CPU ticks in between, which do not count against it)."""
    (b0, t0), (b1, t1) = cpu_ticks(before, cpus), cpu_ticks(after, cpus)
    if t1 <= t0:
        return float(len(cpus))
    busy = max(0.0, b1 - b0 - own_ticks)
    return len(cpus) * (1.0 - min(1.0, busy / (t1 - t0)))


def threads_for(free: float, cores: int, jobs: int = 1) -> int:
    """Torch threads for one of `jobs` runs sharing `free` idle cores out of `cores`: the free
    cores that count whole (FREE_SLACK), shared by the jobs, at least 1, at most cores // jobs."""
    share = math.floor(free + FREE_SLACK) // max(1, jobs)
    return max(1, min(share, cores // max(1, jobs)))


def choose_threads(jobs: int = 1, most: int | None = None, probe_s: float = PROBE_S) -> int:
    """Set this thread's torch threads for one of `jobs` runs by the load of the cores (module
    doc): watch /proc/stat for `probe_s` seconds (not counting this process' own use) and take the
    free cores (`threads_for`), never more than `most` nor torch's setting at start-up
    (OMP_NUM_THREADS is obeyed). Without /proc/stat (not Linux), the 1-minute load average.
    Returns the count set."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    try:
        stat = Path("/proc/stat")
        before, own = stat.read_text(), os.times()
        time.sleep(probe_s)
        after, own_after = stat.read_text(), os.times()
        own_ticks = (own_after.user + own_after.system - own.user - own.system) * os.sysconf("SC_CLK_TCK")
        free = free_cores(before, after, cpus, own_ticks)
    except (OSError, ValueError, AttributeError):
        free = max(0.0, len(cpus) - os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    n = min(threads_for(free, len(cpus), jobs), _STARTUP_THREADS, most or _STARTUP_THREADS)
    torch.set_num_threads(n)
    threadpool_limits(1, user_api="blas")  # (module doc)
    return n
