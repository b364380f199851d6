"""The app's install and start (issue 28): for each git revision, a fresh venv with the README's
app install (`pip install -r requirements.txt`), its size on disk, and the app's start time
(`python app.py` launched until its page answers), idle and beside one busy process.

    python bench/bench_install.py [--repeat 3] REV [REV ...]     # e.g. 3d05a56 HEAD

Each revision is checked out in a temporary worktree; the venvs are made with this Python and
removed at the end (pip's cache is shared, so the first revision pays the downloads). Prints
the CPU model, then one row per revision: venv size, the largest packages, the median start time
over the repeats with its range.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_threads import cpu_model  # noqa: E402

START_LIMIT = 300.0  # seconds a start may take before the run gives up


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def largest(site: Path, n: int = 5) -> str:
    sizes = {p.name: size_mb(p) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")}
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:n])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_seconds(python: Path, tree: Path) -> float:
    """Seconds from `python app.py` to the first answer of its page."""
    port = free_port()
    t0 = time.perf_counter()
    app = subprocess.Popen([str(python), "app.py", "--port", str(port)], cwd=tree,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < START_LIMIT:
            if app.poll() is not None:
                raise SystemExit(f"app.py exited with {app.returncode} in {tree}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"app.py did not answer in {START_LIMIT:.0f} s")
    finally:
        app.terminate()
        app.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rev in args.revs:
            tree, venv = Path(tmp) / f"tree-{rev}", Path(tmp) / f"venv-{rev}"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                python = venv / "bin" / "python"
                t0 = time.perf_counter()
                subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=tree,
                               check=True)
                install = time.perf_counter() - t0
                site = next((venv / "lib").glob("python3*/site-packages"))
                starts: dict[str, list[float]] = {}
                for busy in (False, True):
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                    try:
                        starts["busy" if busy else "idle"] = [start_seconds(python, tree) for _ in range(args.repeat)]
                    finally:
                        if hog:
                            hog.kill()
                rows.append((rev, size_mb(venv), install, largest(site), starts))
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)
    print("| revision | venv size (MB) | pip install (s) | largest packages (MB) | app start, idle (s) "
          "| app start, beside one busy process (s) |")
    print("|---|---|---|---|---|---|")
    for rev, size, install, big, starts in rows:
        cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in starts.values()]
        print(f"| {rev} | {size:.0f} | {install:.0f} | {big} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
