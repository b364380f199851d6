"""Issue 10, bounded work per input: the tiny files that once cost seconds and gigabytes (made
here, byte by byte, by tests/midi_bombs.py) are read or refused through the upload path
(`demo.load_melody`) and the CLI for no more CPU time than a real file at the event limit and
under 200 MB, and a short fuzzing run (tests/fuzz_midi.py) finds nothing. Work is CPU time,
compared within one run, so the verdicts hold on a loaded or slower machine. The app's side is
in tests/test_app.py."""
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
from midi_bombs import BOMBS, REPO, at_event_limit, run_bounded

from symdiff import demo, melody

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


@pytest.fixture(scope="module")
def limit_file(tmp_path_factory) -> Path:
    """A real melody as long as a file may be read: what reading it costs is the most any file may."""
    path = tmp_path_factory.mktemp("limit") / "at_event_limit.mid"
    path.write_bytes(at_event_limit())
    return path


@pytest.mark.slow
def test_bombs_are_read_in_bounded_time_and_memory(bombs, limit_file):
    names = list(bombs)
    reference, *read = run_bounded([limit_file, *(bombs[n] for n in names)], limit_mb=200)
    results = dict(zip(names, read, strict=True))
    for name, r in results.items():
        assert r["cpu_s"] < reference["cpu_s"] and r["peak_mb"] < 200, (name, r, reference)
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


def test_a_file_with_more_events_than_the_limit_is_cut_in_time(tmp_path, limit_file):
    """Four tracks of 16th notes, together 8 times MAX_EVENTS before the bar limit: all are cut at
    the same bar, the file is read as cut there, and reading it costs about what reading a file
    at the limit does (not 8 times as much)."""
    (tmp_path / "dense.mid").write_bytes(at_event_limit(8))
    t0 = time.process_time()
    melody.read_midi(limit_file)
    at_limit = time.process_time() - t0
    t0 = time.process_time()
    found = melody.read_midi(tmp_path / "dense.mid")
    assert time.process_time() - t0 < 2 * at_limit, at_limit
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
t0 = time.process_time()
try:
    code = cli.main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump([time.process_time() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024], f)
sys.exit(code)
"""


def cli(tmp_path: Path, *args: str) -> tuple[int, list[str], float, float]:
    """`symdiff ARGS` in a fresh process -> (exit status, stderr lines, CPU seconds and growth of
    the peak RSS in MB from the start of the command, after the imports)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _CLI, str(tmp_path / "usage.json"), *args],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    cpu_s, mb = json.loads((tmp_path / "usage.json").read_text())
    return proc.returncode, proc.stderr.splitlines(), cpu_s, mb


@pytest.mark.slow
@pytest.mark.parametrize("command", ["inspect", "infill"])
def test_cli_reads_or_refuses_the_bombs_quickly(bombs, limit_file, tmp_path, command):
    """Each bomb costs less CPU time than the same command on a real melody at the event limit
    (read whole, infilled in a full window), and under 200 MB more than a small real file; the
    CLI answers with success or one `symdiff: error:` line."""
    def run(path: Path):
        # bar 1: a note held past the file's limit counts one step of music (melody.read_midi), so
        # the long-note bombs have 1 bar
        extra = ["--bars", "1-1", "--steps", "2", "--out", str(tmp_path / "out.mid")] if command == "infill" else []
        return cli(tmp_path, command, str(path), *extra)

    code, err, _, base_mb = run(MIDI / "oneills_003_4-4_melody.mid")
    assert code == 0, err
    code, err, limit_s, _ = run(limit_file)
    assert code == 0, err
    for name, path in bombs.items():
        code, err, cpu_s, mb = run(path)
        assert cpu_s < limit_s and mb - base_mb < 200, (name, cpu_s, limit_s, mb, base_mb)
        if name.startswith("far_event"):
            assert code == 2 and err == ["symdiff: error: the MIDI file has no notes"], (name, err)
        else:
            assert code == 0, (name, err)


@pytest.mark.slow
def test_a_short_fuzzing_run_finds_nothing(limit_file):
    """tests/fuzz_midi.py on 300 files (the seeds, then mutations): every one is read or refused
    with a MelodyError, none costing more than twice the CPU time of reading a real file at the
    event limit here (the README has the figures of a long run)."""
    t0 = time.process_time()
    demo.load_melody(limit_file)
    slow = 2 * (time.process_time() - t0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_midi.py"), "--files", "300", "--seconds", "1e9",
                           "--slow", str(slow), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and stats["findings"] == 0, (slow, stats, proc.stderr[-3000:])
    assert stats["files"] == 300 and stats["read"] > 0 and stats["refused"] > 0, stats
