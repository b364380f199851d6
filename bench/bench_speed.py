"""Every speed figure of issue 26's done-when list in one run, each beside its limit, idle (the
cores as found) and beside one busy process (`python -c "while True: pass"`):

- a default 64-bar melody (`symdiff sample --num 1 --bars 64`) and a default 8-bar infill, model
  time as the CLI prints it, with the threads symdiff chooses and with one thread (the ratio is
  what "threads that never hurt" asks: at most 1.2 beside a busy process, 1 idle);
- `symdiff inspect FILE`, wall time of the whole process;
- the app's default Generate and Infill, client to client (gradio_client, after a warm-up), and
  `--clients` concurrent default Generates (failures, p50 against the single latency).

    python bench/bench_speed.py [--repeat 3] [--clients 20] [--skip-app] [--reference CHECKPOINT]

`--reference` (default checkpoints/diffusion-cond, the quality reference the distilled default
is gated against) times the melody and the infill again with that checkpoint, in the same run.

Prints the CPU model, whether it has native bf16, the load average before each case, then one
markdown table. Limits are the issue's; "ok" says whether this run met them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests"), str(BENCH.parent)]

from bench_app_load import call_args  # noqa: E402
from bench_app_load import load as app_load  # noqa: E402
from bench_threads import cpu_model, run  # noqa: E402

from app import GENERATE_STEPS  # noqa: E402
from symdiff.generate import DEFAULT_SAMPLER  # noqa: E402
from symdiff.precision import cpu_has_native_bf16  # noqa: E402

SAMPLE = ["sample", "--num", "1", "--bars", "64", "--seed", "0"]
INFILL = ["infill", "tests/data/midi/foster_brown_hair_lead_sheet.mid", "--bars", "17-24", "--seed", "1"]
INSPECT = ["inspect", "tests/data/midi/oneills_020_jig_6-8.mid"]
APP_DEFAULTS = {"bars": 64, "sampler": DEFAULT_SAMPLER, "steps": GENERATE_STEPS}  # the app's default Generate


def median_of(repeat: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(repeat)]
    return statistics.median(runs), runs


def wall(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "symdiff.cli", *command], check=True, capture_output=True,
                   cwd=BENCH.parent)
    return time.perf_counter() - t0


def app_latency(url: str, kind: str, repeat: int) -> list[float]:
    """Client-to-client seconds of the app's default `kind` call, after one warm-up."""
    from gradio_client import Client, handle_file

    c = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    data, api = call_args(kind, argparse.Namespace(**APP_DEFAULTS), handle_file)
    if kind == "generate":
        data = ()  # the tab's own defaults
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        status = str(c.predict(*data, api_name=api)[0])
        if not status.startswith("Done"):
            raise SystemExit(f"the app answered {status[:80]!r}")
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--reference", default="checkpoints/diffusion-cond",
                    help="a checkpoint timed beside the default (none: skip)")
    args = ap.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}")
    rows: list[tuple[str, str, str, str, str]] = []  # (figure, case, value, limit, ok)

    def row(figure: str, case: str, value: float, runs: list[float], limit: float, unit: str = " s") -> None:
        rows.append((figure, case, f"{value:.2f}{unit} ({', '.join(f'{r:.2f}' for r in runs)})",
                     f"<= {limit:g}{unit}", "ok" if value <= limit else "over"))

    server = None
    if not args.skip_app:
        from app_server import start_app

        server = start_app(Path(tempfile.mkdtemp(prefix="bench-speed-")) / "app.log")
    try:
        for busy in (False, True):
            case = "beside one busy process" if busy else "as found"
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                time.sleep(1.0 if busy else 0.0)
                print(f"{case}: load average {os.getloadavg()[0]:.2f}", flush=True)
                for name, command in (("64-bar melody", SAMPLE), ("8-bar infill", INFILL)):
                    chosen, chosen_runs = median_of(args.repeat, lambda c=command: run(c, one_thread=False)[0])
                    one, one_runs = median_of(args.repeat, lambda c=command: run(c, one_thread=True)[0])
                    row(f"{name}, model time", case, chosen, chosen_runs, 1.0)
                    row(f"{name}, chosen threads / one thread", case, chosen / one, [one], 1.2 if busy else 1.0,
                        unit="x")
                    if args.reference != "none":
                        ref_command = [*command, "--checkpoint", args.reference]
                        ref, ref_runs = median_of(args.repeat, lambda c=ref_command: run(c, one_thread=False)[0])
                        row(f"{name}, model time of {Path(args.reference).name} (the reference)", case, ref, ref_runs,
                            1.0)
                t, runs = median_of(args.repeat, lambda: wall(INSPECT))
                row("inspect, whole process", case, t, runs, 1.5)
                if server is not None:
                    single: dict[str, float] = {}
                    for kind in ("generate", "infill"):
                        runs = app_latency(server.url, kind, args.repeat)
                        single[kind] = statistics.median(runs)
                        row(f"app {kind}, client to client", case, single[kind], runs, 2.0)
                    if not busy:
                        c = app_load(server.url, argparse.Namespace(
                            clients=args.clients, requests=1, endpoint="generate", timeout=600.0, **APP_DEFAULTS))
                        p50 = c["latency_s"].get("p50", float("inf"))
                        rows.append((f"app, {args.clients} concurrent Generates", case,
                                     f"{c['failed']} failed; p50 {p50:.2f} s = {p50 / single['generate']:.1f}x "
                                     "the single", "0 failed, <= 4x", "ok" if not c["failed"] and
                                     p50 <= 4 * single["generate"] else "over"))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    finally:
        if server is not None:
            server.stop()
    print("| figure | cores | this run (median; runs) | limit | |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
