"""What reading a MIDI file costs per event kept, the figure `melody.MAX_EVENTS` is set by: CPU
time and peak memory (tracemalloc) of `melody.read_midi`, each file in a fresh process, on the long
songs of tests/data/songs, on synthetic songs of 40,000-160,000 note events (8 pitched tracks,
or 4 pitched and 4 drum tracks) and on the hostile files of tests/midi_bombs.py.

    python bench/bench_read_midi.py [--max-events N]   # N: read with another limit (default: ours)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mido

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from midi_bombs import BOMBS  # noqa: E402

_CHILD = r"""
import json, sys, time, tracemalloc
from symdiff import melody
melody.MAX_EVENTS = int(sys.argv[2])
data = open(sys.argv[1], "rb").read()
def read():
    try:
        found = melody.read_midi(data)
        return {"bars": found.bars.num_bars, "cut_at": found.bars.cut_at}
    except melody.MelodyError as e:
        return {"error": str(e)}
t0 = time.process_time()
out = read()
out["cpu_s"] = time.process_time() - t0
tracemalloc.start()  # a second read, for its peak memory (Python and numpy allocations)
read()
out["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
out["kept"] = sum(len(t) for t in melody.bounded_midi(data).midi.tracks)
print(json.dumps(out))
"""


def synthetic(path: Path, events: int, drum_tracks: int) -> Path:
    """A song of `events` note events in 8 tracks of 16th notes, the first `drum_tracks` on drums."""
    mid = mido.MidiFile(ticks_per_beat=480)
    for k in range(8):
        channel, track = 9 if k < drum_tracks else k % 9, mido.MidiTrack()
        track.append(mido.Message("program_change", channel=channel, program=k * 7))
        for i in range(events // 16):
            pitch = 36 + i % 10 if channel == 9 else 48 + (i * 7 + k * 5) % 36
            track += [mido.Message("note_on", channel=channel, note=pitch, velocity=80),
                      mido.Message("note_off", channel=channel, note=pitch, time=120)]
        mid.tracks.append(track)
    mid.save(path)
    return path


def measure(path: Path, max_events: int) -> dict:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _CHILD, str(path), str(max_events)],
                          capture_output=True, text=True, check=True, cwd=REPO,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    return json.loads(proc.stdout)


def main() -> None:
    from symdiff import melody

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-events", type=int, default=melody.MAX_EVENTS)
    args = ap.parse_args()
    labels = json.loads((REPO / "tests" / "data" / "songs" / "labels.json").read_text())["files"]
    with tempfile.TemporaryDirectory() as tmp:
        files = [REPO / "tests" / "data" / "songs" / e["file"] for e in labels if e["bars"] >= 200]
        files += [synthetic(Path(tmp) / f"synthetic_{n}_{d}drums.mid", n, d) for n in (40_000, 80_000, 160_000)
                  for d in (0, 4)]
        for name, make in BOMBS.items():
            (Path(tmp) / f"bomb_{name}.mid").write_bytes(make())
            files.append(Path(tmp) / f"bomb_{name}.mid")
        print(f"MAX_EVENTS = {args.max_events:,}")
        print(f"{'file':<32} {'kept':>8} {'bars':>5} {'cut at':>6} {'CPU s':>6} {'peak MB':>8} {'us/event':>8} "
              f"{'KB/event':>8}")
        for path in files:
            r = measure(path, args.max_events)
            per = max(r["kept"], 1)
            bars = r.get("bars", "-")
            print(f"{path.stem:<32} {r['kept']:>8} {bars:>5} {r.get('cut_at') or '-':>6} {r['cpu_s']:>6.2f} "
                  f"{r['peak_mb']:>8.1f} {1e6 * r['cpu_s'] / per:>8.1f} {1024 * r['peak_mb'] / per:>8.2f}")


if __name__ == "__main__":
    main()
