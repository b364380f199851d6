"""Tiny MIDI files that once made reading or playing them cost seconds and gigabytes (issue 10),
written byte by byte so that each test makes its own, and `run_bounded`, which reads a file in a
fresh process under a memory limit and reports CPU time and peak memory, and `at_event_limit`, a
real melody as long as a file may be read, the yardstick of the work a file may cost. Used by tests/test_melody.py,
tests/test_demo.py, tests/test_app.py and the fuzzer (tests/fuzz_midi.py)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from symdiff import melody

REPO = Path(__file__).resolve().parent.parent


def varlen(value: int) -> bytes:
    """A MIDI variable-length quantity (at most 0x0FFFFFFF)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def smf(tracks: list[bytes], division: int = 480, type_: int = 1) -> bytes:
    """A Standard MIDI File from raw track bodies (no end-of-track is added)."""
    head = b"MThd" + struct.pack(">IHHH", 6, type_, len(tracks), division)
    return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def far_event(ticks: int = 10**8) -> bytes:
    """One note-on at tick `ticks` (29 bytes for 1e8): pretty_midi would build a tick table of
    `ticks` floats."""
    body = b""
    while ticks > 0x0FFFFFFF:  # a delta holds at most 2**28 - 1: chain empty text events
        body += varlen(0x0FFFFFFF) + b"\xff\x01\x00"
        ticks -= 0x0FFFFFFF
    return smf([body + varlen(ticks) + b"\x90\x3c\x40"], division=480, type_=0)


def long_notes(count: int = 1, beats: int = 2**24) -> bytes:
    """`count` notes, each held for `beats` beats at 1 tick per beat (37 bytes for one): note_seq
    would fill a melody of 4 * beats steps, one by one."""
    body = b""
    for k in range(count):
        body += b"\x00" + bytes([0x90, 60 + k, 0x40]) + varlen(beats) + bytes([0x80, 60 + k, 0])
    return smf([body + b"\x00\xff\x2f\x00"], division=1, type_=0)


def slowest_tempo(bars: int = 64) -> bytes:
    """A valid melody of `bars` 4/4 bars, one quarter note per beat, at the slowest tempo MIDI can
    state (0xFFFFFF us per beat = 3.58 qpm): 71 minutes of audio for 64 bars."""
    body = b"\x00\xff\x51\x03\xff\xff\xff"
    for beat in range(4 * bars):
        pitch = 60 + (beat * 5) % 12
        body += b"\x00" + bytes([0x90, pitch, 0x50]) + varlen(480) + bytes([0x80, pitch, 0])
    return smf([body + b"\x00\xff\x2f\x00"], division=480, type_=0)


def at_event_limit(times: int = 1) -> bytes:
    """Four tracks of 16th notes holding `times` x melody.MAX_EVENTS note events together: at
    times=1 the most a file may be read whole, so the most work reading a file may cost; at
    times > 1 the reading is cut at the limit."""
    n = times * melody.MAX_EVENTS // 8  # notes per track: a note-on and a note-off each, 4 tracks
    return smf([bytes([0, 0x90, pitch, 80, 1, 0x80, pitch, 0]) * n + b"\x00\xff\x2f\x00" for pitch in (60, 64, 67, 72)],
               division=4)


BOMBS = {
    "far_event_1e8": lambda: far_event(10**8),
    "far_event_1e9": lambda: far_event(10**9),
    "long_note": lambda: long_notes(1),
    "long_notes_16": lambda: long_notes(16),
    "slowest_tempo_64_bars": lambda: slowest_tempo(64),
}

_CHILD = r"""
import json, resource, sys, time
from symdiff import demo, melody
limit = int(sys.argv[1])
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + limit, vm + limit))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[2:]:
    t0 = time.process_time()
    try:
        found, cand = demo.load_melody(path)
        out = {"ok": True, "bars": cand.num_bars, "qpm": found.qpm}
    except melody.MelodyError as e:
        out = {"ok": False, "error": str(e)}
    out["cpu_s"] = time.process_time() - t0
    out["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(json.dumps(out), flush=True)
"""


def run_bounded(paths: list[Path], limit_mb: int = 200, timeout: float = 120.0) -> list[dict]:
    """Read each file with `demo.load_melody` in one fresh process allowed `limit_mb` MB of
    address space beyond what importing symdiff took -> per file {"ok", "cpu_s" (CPU seconds), "peak_mb"
    (growth of the peak resident memory since the imports), "bars"/"error"}. A MemoryError, a
    crash or a timeout fails with the child's output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(limit_mb << 20), *map(str, paths)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == len(paths), \
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in lines]
