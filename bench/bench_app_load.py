"""Load test of the Gradio app: concurrent gradio_client clients against a local server.

    python bench/bench_app_load.py                    # starts `python app.py` on 127.0.0.1 itself
    python bench/bench_app_load.py --url http://127.0.0.1:7860/ --clients 20 --requests 1

First the latency of one client alone (the default Generate: 64 bars, DDPM 80 steps, the
issue's "under 5 s" figure; after a warm-up call), then `--clients` clients at once, each with its own
gradio_client session, each sending `--requests` calls as fast as their answers come back. The
run is bounded: at most `--clients` x `--requests` calls, and whatever is unfinished after
`--timeout` seconds is cancelled and counted as a failure. Reports completions, failures (by
reason) and latency percentiles (submit to result, so queueing time is included), as text and,
with --json, as a file. Only 127.0.0.1/localhost servers are accepted.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from app import GENERATE_STEPS  # noqa: E402  (the app's defaults)
from symdiff.generate import DEFAULT_SAMPLER  # noqa: E402

MAX_CLIENTS = 64
MAX_REQUESTS = 20


def call_args(kind: str, args, handle_file):
    if kind == "generate":
        return (args.bars, args.sampler, args.steps, 0), "/generate"
    example = REPO / "assets" / "examples" / "liliuokalani_aloha_oe_voice_piano.mid"
    return (handle_file(str(example)), "auto", 5, 8, args.sampler, args.steps, 0), "/infill"


def percentiles(xs) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs)
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)} | {
        "min": round(float(a.min()), 2), "max": round(float(a.max()), 2), "mean": round(float(a.mean()), 2)}


def single_latency(url: str, args, repeats: int = 3) -> dict:
    from gradio_client import Client

    c = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    c.predict(api_name="/generate")  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        status = c.predict(api_name="/generate")[0]  # the defaults: 64 bars, ddim, 50 steps
        times.append(time.perf_counter() - t0)
        assert str(status).startswith("Done"), status
    return {"repeats": repeats, "seconds": [round(t, 2) for t in times], "median": round(float(np.median(times)), 2)}


def load(url: str, args) -> dict:
    from gradio_client import Client, handle_file

    deadline = time.monotonic() + args.timeout
    lat: list[float] = []
    fails: Counter = Counter()
    lock = threading.Lock()
    ready = threading.Barrier(args.clients + 1)

    def client_main(k: int):
        kind = args.endpoint if args.endpoint != "mix" else ("generate" if k % 2 == 0 else "infill")
        try:
            c = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        except Exception as e:  # noqa: BLE001
            with lock:
                fails[f"connect: {type(e).__name__}"] += args.requests
            ready.wait()
            return
        ready.wait()
        for _ in range(args.requests):
            left = deadline - time.monotonic()
            if left <= 0:
                with lock:
                    fails["timeout (not sent)"] += 1
                continue
            data, api = call_args(kind, args, handle_file)
            t0 = time.perf_counter()
            job = c.submit(*data, api_name=api)
            try:
                out = job.result(timeout=left)
                ok = str(out[0]).startswith("Done")
                with lock:
                    if ok:
                        lat.append(time.perf_counter() - t0)
                    else:
                        fails[f"unexpected answer: {str(out[0])[:60]}"] += 1
            except TimeoutError:
                job.cancel()
                with lock:
                    fails["timeout"] += 1
            except Exception as e:  # noqa: BLE001
                with lock:
                    fails[f"{type(e).__name__}: {str(e)[:80]}"] += 1

    threads = [threading.Thread(target=client_main, args=(k,), daemon=True) for k in range(args.clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    wall = time.perf_counter() - t0
    sent = args.clients * args.requests
    return {"clients": args.clients, "requests_per_client": args.requests, "endpoint": args.endpoint,
            "calls": sent, "completed": len(lat), "failed": sum(fails.values()), "failures": dict(fails),
            "wall_s": round(wall, 1), "throughput_per_min": round(60 * len(lat) / wall, 1) if wall else None,
            "latency_s": percentiles(lat)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app (127.0.0.1 only); default: start one")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=1, help="calls per client")
    p.add_argument("--endpoint", choices=("generate", "infill", "mix"), default="generate")
    p.add_argument("--bars", type=int, default=64)
    p.add_argument("--steps", type=int, default=GENERATE_STEPS)
    p.add_argument("--sampler", default=DEFAULT_SAMPLER)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole concurrent phase")
    p.add_argument("--skip-single", action="store_true", help="no single-client latency phase")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.requests <= MAX_REQUESTS:
        p.error(f"--clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    server = None
    if args.url:
        host = urllib.parse.urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            p.error("only a local app (127.0.0.1) may be load-tested")
        url = args.url
    else:
        import tempfile

        from app_server import start_app

        log = Path(tempfile.mkdtemp(prefix="bench-app-")) / "app.log"
        print(f"starting the app (log: {log}) ...", flush=True)
        server = start_app(log)
        url = server.url
    try:
        report = {"url": url}
        if not args.skip_single:
            report["single_client_default_generate_s"] = single_latency(url, args)
            print(f"single client, Generate ({args.bars} bars, {args.sampler.upper()} {args.steps}):",
                  report["single_client_default_generate_s"],
                  flush=True)
        report["concurrent"] = load(url, args)
        if server is not None:
            report["server_alive_after"] = server.alive
    finally:
        if server is not None:
            server.stop()
    c = report["concurrent"]
    print(f"{c['clients']} clients x {c['requests_per_client']} {c['endpoint']} calls: {c['completed']} completed, "
          f"{c['failed']} failed {c['failures'] or ''} in {c['wall_s']} s; latency {c['latency_s']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if c["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
