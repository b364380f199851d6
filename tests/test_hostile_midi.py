"""Issue 10, bounded work per input: the tiny files that once cost seconds and gigabytes (made
here, byte by byte, by tests/midi_bombs.py) are read or refused in under 2 s and 200 MB through
the upload path (`demo.load_melody`) and the CLI, and a short fuzzing run (tests/fuzz_midi.py)
finds nothing. The app's side is in tests/test_app.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest
from midi_bombs import BOMBS, REPO, run_bounded, smf

from symdiff import melody

MIDI = REPO / "tests" / "data" / "midi"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    out = {}
    for name, make in BOMBS.items():
        out[name] = root / f"{name}.mid"
        out[name].write_bytes(make())
    return out


def test_the_bombs_are_tiny(bombs):
    sizes = {name: p.stat().st_size for name, p in bombs.items()}
    assert sizes["far_event_1e8"] == 29 and sizes["far_event_1e9"] == 50 and sizes["long_note"] == 37, sizes


@pytest.mark.slow
def test_bombs_are_read_in_bounded_time_and_memory(bombs):
    names = list(bombs)
    results = dict(zip(names, run_bounded([bombs[n] for n in names], limit_mb=200), strict=True))
    for name, r in results.items():
        assert r["seconds"] < 2.0 and r["peak_mb"] < 200, (name, r)
    # what each one is: a note-on past the 1024 bars read and never ended; notes held for
    # 2**24 beats, cut at 1024 bars; a valid melody at MIDI's slowest tempo
    assert "no notes" in results["far_event_1e8"]["error"] and "no notes" in results["far_event_1e9"]["error"]
    assert results["long_note"]["bars"] == results["long_notes_16"]["bars"] == melody.MAX_BARS
    assert results["slowest_tempo_64_bars"]["bars"] == 64
    assert abs(results["slowest_tempo_64_bars"]["qpm"] - 3.576) < 0.01


def test_a_note_held_past_the_bar_limit_ends_there(bombs):
    tokens = melody.read_midi(bombs["long_note"]).chosen.tokens
    assert len(tokens) == melody.MAX_BARS * melody.STEPS_PER_BAR
    assert tokens[0] == melody.pitch_to_token(60) and not tokens[1:].any()  # one note, held to the end


def test_fine_resolution_is_rescaled_to_the_same_melody(tmp_path):
    """A real file at the finest resolution MIDI allows (its ticks beyond MAX_TICKS) reads as the
    same melody."""
    src = MIDI / "foster_brown_hair_lead_sheet.mid"
    mid = mido.MidiFile(src)
    factor = 0x7FFF // mid.ticks_per_beat
    fine = mido.MidiFile(type=mid.type, ticks_per_beat=mid.ticks_per_beat * factor)
    for track in mid.tracks:
        fine.tracks.append(mido.MidiTrack(m.copy(time=m.time * factor) for m in track))
    fine.save(tmp_path / "fine.mid")
    assert melody.bounded_midi((tmp_path / "fine.mid").read_bytes()).midi.ticks_per_beat == melody.RESCALED_TPB
    a, b = melody.read_midi(src), melody.read_midi(tmp_path / "fine.mid")
    assert [c.summary() for c in a.candidates] == [c.summary() for c in b.candidates]
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a.candidates, b.candidates, strict=True))


def test_a_file_with_more_events_than_the_limit_is_cut_in_time(tmp_path):
    """Four tracks of 16th notes, together over MAX_EVENTS before the bar limit: all are cut at
    the same bar, and the file is read as cut there."""
    n = melody.MAX_EVENTS  # notes per track: 8 times the limit in note events, 4 tracks together
    tracks = [bytes([0, 0x90, pitch, 80, 1, 0x80, pitch, 0]) * n + b"\x00\xff\x2f\x00" for pitch in (60, 64, 67, 72)]
    (tmp_path / "dense.mid").write_bytes(smf(tracks, division=4))
    t0 = time.perf_counter()
    found = melody.read_midi(tmp_path / "dense.mid")
    assert time.perf_counter() - t0 < 5.0
    bars = {c.num_bars for c in found.candidates}
    assert len(found.candidates) == 4 and len(bars) == 1 and bars.pop() < melody.MAX_BARS
    kept = sum(c.num_notes for c in found.candidates)
    assert melody.MAX_EVENTS // 2 - 16 <= kept <= melody.MAX_EVENTS // 2, kept  # note-on + note-off each
    assert found.bars.cut_at == found.bars.num_bars and "cut at bar" in found.bars.describe()


_CLI = r"""
import json, resource, sys, time
import symdiff.generate, symdiff.melody
from symdiff import cli
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    code = cli.main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump([time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024], f)
sys.exit(code)
"""


def cli(tmp_path: Path, *args: str) -> tuple[int, list[str], float, float]:
    """`symdiff ARGS` in a fresh process -> (exit status, stderr lines, seconds and growth of the
    peak RSS in MB from the start of the command, after the imports)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _CLI, str(tmp_path / "usage.json"), *args],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    seconds, mb = json.loads((tmp_path / "usage.json").read_text())
    return proc.returncode, proc.stderr.splitlines(), seconds, mb


@pytest.mark.slow
@pytest.mark.parametrize("command", ["inspect", "infill"])
def test_cli_reads_or_refuses_the_bombs_quickly(bombs, tmp_path, command):
    """Each bomb costs under 2 s and 200 MB more than a small real file, and the CLI answers
    with success or one `symdiff: error:` line."""
    def run(path: Path):
        # bar 1: a note held past the file's limit counts one step of music (melody.read_midi), so
        # the long-note bombs have 1 bar
        extra = ["--bars", "1-1", "--steps", "2", "--out", str(tmp_path / "out.mid")] if command == "infill" else []
        return cli(tmp_path, command, str(path), *extra)

    code, err, base_s, base_mb = run(MIDI / "oneills_003_4-4_melody.mid")
    assert code == 0, err
    for name, path in bombs.items():
        code, err, seconds, mb = run(path)
        assert seconds - base_s < 2.0 and mb - base_mb < 200, (name, seconds, base_s, mb, base_mb)
        if name.startswith("far_event"):
            assert code == 2 and err == ["symdiff: error: the MIDI file has no notes"], (name, err)
        else:
            assert code == 0, (name, err)


@pytest.mark.slow
def test_a_short_fuzzing_run_finds_nothing():
    """tests/fuzz_midi.py on 300 files (the seeds, then mutations): every one is read or refused
    with a MelodyError, none slower than 2 s (the README has the figures of a long run)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_midi.py"), "--files", "300", "--seconds", "150",
                           "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and stats["findings"] == 0, (stats, proc.stderr[-3000:])
    assert stats["files"] > stats["seed_files"] and stats["read"] > 0 and stats["refused"] > 0, stats
    assert stats["slowest_s"] < 2.0, stats
