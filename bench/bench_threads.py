"""Threads that never hurt (issue 26): the model time `symdiff` prints for a command, with one
torch thread (OMP_NUM_THREADS=1) and with the threads it chooses by load (`precision.choose_threads`),
on idle cores and beside one busy process (`python -c "while True: pass"`, started and stopped here).

    python bench/bench_threads.py [--repeat 3] [-- sample --num 1 --bars 64 --seed 0]

Prints the CPU model, whether it has native bf16, the load before each case (the cores are taken
as found: on a shared machine other jobs may run), and per case the median model time over the
repeats with the threads the command chose.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from symdiff.precision import cpu_has_native_bf16

DEFAULT_COMMAND = ["sample", "--num", "1", "--bars", "64", "--seed", "0"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run(command: list[str], one_thread: bool) -> tuple[float, int]:
    """(model seconds, threads) as the command prints them."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("OMP_NUM_THREADS", None)
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-m", "symdiff.cli", *command, "--quiet", "--out", f"{tmp}/out"],
                             env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r" in ([\d.]+) s \(.*?(\d+) threads?\)", out)
    if not found:
        raise SystemExit(f"no time in the command's output: {out!r}")
    return float(found.group(1)), int(found.group(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("command", nargs="*", default=DEFAULT_COMMAND, help="symdiff arguments (after --)")
    args = ap.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}; "
          f"symdiff {' '.join(args.command)}")
    print("| cores | threads | model time (median) | runs | load before |")
    print("|---|---|---|---|---|")
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(1.0 if busy else 0.0)
            for one in (True, False):
                load = os.getloadavg()[0]
                runs = [run(args.command, one) for _ in range(args.repeat)]
                secs = statistics.median(s for s, _ in runs)
                threads = sorted({n for _, n in runs})
                print(f"| {'as found, plus one busy process' if busy else 'as found'} | "
                      f"{'1 (OMP_NUM_THREADS=1)' if one else 'chosen: ' + '/'.join(map(str, threads))} | "
                      f"{secs:.2f} s | {', '.join(f'{s:.2f}' for s, _ in runs)} | {load:.2f} |")
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
