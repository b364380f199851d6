"""Float precision and thread count by hardware, for training and inference alike.

bf16 autocast pays only where the hardware has native bf16 units: a CUDA GPU, or a CPU with
AMX or AVX512-BF16 (2-2.5x faster training on our AMX CPUs). Elsewhere it is a trap: on an AVX2
CPU a bf16 matmul runs ~100x slower than fp32 and `nn.LSTM` under CPU autocast raises ("could
not create a primitive descriptor"). So `auto` (the default everywhere) picks bf16 only where
it is native, fp32 otherwise; `bf16` and `fp32` are taken as asked. The environment variable
SYMDIFF_PRECISION=bf16|fp32 overrides what `auto` picks (tests use it to run as on an AVX2 CPU).
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch

from .errors import SymdiffError

PRECISIONS = ("auto", "bf16", "fp32")
ENV = "SYMDIFF_PRECISION"
_NATIVE_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16, from /proc/cpuinfo's flags (Linux), else from torch's cpuinfo probe."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & _NATIVE_CPU_FLAGS)


def resolve_precision(choice: str = "auto", device: str | torch.device = "cpu") -> str:
    """'auto' | 'bf16' | 'fp32' -> 'bf16' or 'fp32' for a run on `device` (see the module doc)."""
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
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


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
    oversubscribe the cores; returns the count set."""
    n = max(1, min(torch.get_num_threads(), available_cores() // max(1, jobs)))
    torch.set_num_threads(n)
    return n
