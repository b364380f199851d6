"""Files/s of the MIDI-folder dataset builder against a plain serial loop over `read_midi`.

    python bench/bench_midi_corpus.py [--n 300] [--workers 0 1 2] [--source DIR]

Makes a Lakh-like folder (lmd/<hex>/<name>.mid) of N copies of real MIDI files (those in
tests/data/midi, else the ones inside the music21 wheel), then times in the same run:
- `read_midi` in a plain loop (what a naive script would do; it extracts every instrument);
- `build_from_midi_folder` with each worker count (0 = in this process), including listing,
  checkpoints (every 100 files), the final dataset and its error list.
Timings share the machine with whatever else runs on it; note the load average printed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symdiff import melody  # noqa: E402
from symdiff.data.midi_corpus import build_from_midi_folder, list_midi_files  # noqa: E402


def real_files(source: Path | None) -> list[Path]:
    here = source or REPO / "tests" / "data" / "midi"
    files = sorted(here.glob("*.mid")) if here.is_dir() else []
    if not files:
        import music21

        m21 = Path(music21.__file__).parent
        files = sorted((m21 / "midi" / "testPrimitive").glob("*.mid")) + sorted((m21 / "omr").glob("*.mid"))
    return [f for f in files if f.stat().st_size > 0]


def make_folder(root: Path, sources: list[Path], n: int) -> None:
    for k in range(n):
        src = sources[k % len(sources)]
        name = hashlib.md5(f"{k}:{src.name}".encode()).hexdigest()
        dest = root / name[0] / f"{name}.mid"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def plain_loop(root: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    files = list_midi_files(root)
    lines = errors = 0
    for rel in files:
        try:
            lines += len(melody.read_midi(root / rel).candidates)
        except melody.MelodyError:
            errors += 1
    return time.perf_counter() - t0, lines, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source", type=Path, help="folder of real MIDI files to copy")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    sources = real_files(args.source)
    tmp = Path(tempfile.mkdtemp(prefix="bench_midi_"))
    try:
        root = tmp / "lmd"
        make_folder(root, sources, args.n)
        size = sum(p.stat().st_size for p in root.rglob("*.mid"))
        print(f"{args.n} files ({size / 1e6:.1f} MB) copied from {len(sources)} real MIDI files; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        rows = []
        secs, lines, errors = plain_loop(root)
        rows.append(("serial read_midi loop", secs, f"{lines} candidates (all programs), {errors} errors"))
        for w in args.workers:
            t0 = time.perf_counter()
            r = build_from_midi_folder(root, tmp / f"out{w}.npz", workers=w, checkpoint_every=100,
                                       restart=True, progress=False, verbose=False)
            secs = time.perf_counter() - t0
            label = "builder, in-process" if w == 0 else f"builder, {w} worker process{'es' if w > 1 else ''}"
            rows.append((label, secs, f"{r['lines']} lines (programs 0-31), {r['errors']} errors"))
        base = rows[0][1]
        print(f"{'':<28}{'seconds':>9}{'files/s':>10}{'vs loop':>9}")
        for label, secs, note in rows:
            print(f"{label:<28}{secs:>9.2f}{args.n / secs:>10.1f}{base / secs:>8.2f}x  {note}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
