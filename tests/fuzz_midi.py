"""A MIDI fuzzer for the app's upload path (`demo.load_melody`, which `app.py` calls for every
upload): mutates a seed corpus (the repository's MIDI files and the bombs of tests/midi_bombs.py)
and checks that every file is read or refused with a `MelodyError`, in bounded time and memory.

    python tests/fuzz_midi.py --seconds 600          # the long run (README, "Hostile files")
    python tests/fuzz_midi.py --files 300 --json     # what tests/test_hostile_midi.py runs

The process runs under an address-space limit (what importing took + --limit-mb), so a bomb
shows up as a MemoryError finding instead of taking the machine down. Findings (any other
exception, or a file whose reading costs more than --slow CPU seconds: CPU time, so that a busy
machine does not make findings) are saved to --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from midi_bombs import BOMBS, REPO, varlen  # noqa: E402

from symdiff import demo, melody  # noqa: E402

SEED_DIRS = (REPO / "tests" / "data" / "midi", REPO / "assets" / "examples")
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF)


def seed_corpus() -> list[bytes]:
    """The repository's MIDI files (good, bad and synthetic) and the bombs."""
    files = sorted(p for d in SEED_DIRS for p in d.rglob("*.mid") if p.is_file())
    return [p.read_bytes() for p in files] + [make() for make in BOMBS.values()]


def mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One to four random edits: flip, set or insert bytes, insert a huge delta time, cut, copy or
    delete a span, change the header's division, or splice in another seed."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.choice(INTERESTING)
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            b[i:i] = varlen(rng.choice((0x7F, 0x3FFF, 0x1FFFFF, 0x0FFFFFFF, rng.randrange(1 << 28))))
        elif op == 4:
            del b[i : i + rng.randint(1, 64)]
        elif op == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 256)]
        elif op == 6 and len(b) >= 14:
            b[12:14] = rng.choice((1, 2, 96, 480, 0x7FFF, 0x8000, 0xE728, 0)).to_bytes(2, "big")
        elif op == 7:
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            b[i:] = other[j:]
    return bytes(b[: 2 * 1024 * 1024])


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                    platform.machine())


def fuzz(seconds: float, seed: int, out: Path | None, slow: float, files: int | None = None) -> dict:
    """Mutated files until `seconds` pass or `files` are tried (a fixed amount of work, whatever
    else the machine is doing), whichever comes first."""
    rng = random.Random(seed)
    corpus = seed_corpus()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = {"files": 0, "read": 0, "refused": 0, "findings": 0, "slowest_cpu_s": 0.0, "slowest_bytes": 0}
    kinds: dict[str, int] = {}
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and (files is None or stats["files"] < files):
        data = mutate(rng.choice(corpus), corpus, rng) if stats["files"] >= len(corpus) else corpus[stats["files"]]
        t0 = time.process_time()
        finding = None
        try:
            demo.load_melody(data)
            stats["read"] += 1
        except melody.MelodyError:
            stats["refused"] += 1
        except Exception:  # noqa: BLE001 (that is what we look for)
            finding = traceback.format_exc()
        dt = time.process_time() - t0
        stats["files"] += 1
        if dt > stats["slowest_cpu_s"]:
            stats["slowest_cpu_s"], stats["slowest_bytes"] = dt, len(data)
        if finding is None and dt > slow:
            finding = f"slow: {dt:.2f} CPU s"
        if finding is not None:
            stats["findings"] += 1
            kind = finding.strip().splitlines()[-1][:120]
            kinds[kind] = kinds.get(kind, 0) + 1
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"finding_{stats['files']:07d}.mid").write_bytes(data)
                (out / f"finding_{stats['files']:07d}.txt").write_text(finding)
    stats["slowest_cpu_s"] = round(stats["slowest_cpu_s"], 3)
    stats["peak_rss_growth_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)
    stats["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    stats["seed_files"] = len(corpus)
    stats["finding_kinds"] = kinds
    stats["machine"] = f"{cpu_name()}, Python {platform.python_version()}"
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--files", type=int, help="stop after this many files (the seeds included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for the files that gave findings")
    p.add_argument("--slow", type=float, default=2.0,
                   help="a file whose reading costs more CPU seconds than this is a finding")
    p.add_argument("--limit-mb", type=int, default=1024, help="address space allowed beyond the imports")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")  # pretty_midi warns about odd but readable files
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (args.limit_mb << 20),) * 2)
    stats = fuzz(args.seconds, args.seed, args.out, args.slow, args.files)
    print(json.dumps(stats) if args.json else json.dumps(stats, indent=1))
    return 1 if stats["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
