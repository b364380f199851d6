"""The `symdiff` command line for data: `inspect`, `data build`, `data stats`.

The process-level checks (exit status, one clean stderr line, the console script itself)
run `symdiff` as a real subprocess. Each such process pays `data build`'s imports, so there are
two and they start together: `data build`
and `inspect` on a corrupt file (a fresh process is where an import-time warning would add a
second stderr line). They run with CI=1, under which pyfluidsynth (imported by pretty_midi)
prints to stdout unless symdiff silences it. The other cases call `symdiff.cli.main` in this process: the same code
the console script runs, minus the process boundary.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symdiff.cli import main
from symdiff.dataset import Lines


def symdiff_cmd() -> list[str]:
    script = Path(sys.executable).parent / "symdiff"  # the installed console script, not a shim
    if script.is_file():
        return [str(script)]
    found = shutil.which("symdiff")
    return [found] if found else [sys.executable, "-m", "symdiff.cli"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bad_midi):
    """Start the subprocesses at once and wait for them."""
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "x.npz"
    commands = {
        "build": ["data", "build", "--sources", "josquin", "--out", str(out), "--workers", "1"],
        "corrupt": ["inspect", str(bad_midi["corrupt"])],
    }
    env = {**os.environ, "CI": "1"}
    t0 = time.time()
    procs = {k: subprocess.Popen(symdiff_cmd() + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
             for k, argv in commands.items()}
    results = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        results[k] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    results["seconds"] = time.time() - t0
    results["out"] = out
    return results


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("symdiff: error: ")
    assert "Traceback" not in stderr
    return lines[0]


# --- subprocesses -------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_file_subprocess_exit_2_one_line(runs):
    r = runs["corrupt"]
    assert r.returncode == 2
    assert r.stdout == ""
    assert "corrupt.mid: corrupt MIDI file" in assert_one_error_line(r.stderr)


@pytest.mark.slow
def test_data_build_and_stats_json(runs, capsys):
    build = runs["build"]
    assert build.returncode == 0, build.stderr
    out: Path = runs["out"]
    lines = Lines.load(out)
    # josquin: 8 ABC files, one voice per X: tune (2+4+3+5+3+4+3+5 = 29), one piece per file
    assert len(lines) == 29
    assert len({m["piece"] for m in lines.meta}) == 8
    assert {m["source"] for m in lines.meta} == {"josquin"}
    assert build.stdout.startswith(f"wrote {out}: 29 lines, ")
    assert main(["data", "stats", "--path", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(lines.stats()))
    assert printed["all"]["all"]["lines"] == 29 and printed["josquin"]["all"]["pieces"] == 8
    side = json.loads(out.with_suffix(".stats.json").read_text())  # written next to the dataset
    build_counts = side.pop("_build")
    assert side == printed
    assert build_counts["errors"] == 0 and build_counts["parts"] == 29 and build_counts["scores"] == 29
    print(f"subprocesses (build + inspect) took {runs['seconds']:.1f} s")


# --- in process: the same main() the console script calls -----------------------------------

def test_data_build_without_music21_says_what_to_install(tmp_path, monkeypatch, capsys):
    """music21 is the `data` extra, not an app dependency: without it, one line saying so."""
    monkeypatch.setitem(sys.modules, "music21", None)  # what an install without the extra has
    assert main(["data", "build", "--out", str(tmp_path / "x.npz"), "--sources", "josquin"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'symdiff[data]'" in err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("kind, text", [
    ("missing", "no such file"),
    ("empty", "the file is empty"),
    ("not_midi", "not a MIDI file"),
    ("corrupt", "corrupt MIDI file"),
    ("drums_only", "only drums"),
    ("no_notes", "no notes"),
])
def test_bad_files_exit_2_with_one_line(bad_midi, tmp_path, capsys, kind, text):
    path = tmp_path / "missing.mid" if kind == "missing" else bad_midi[kind]
    assert main(["inspect", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert text in assert_one_error_line(err)


def test_inspect_json_on_a_real_multitrack_file(m21_midi, capsys):
    assert main(["inspect", str(m21_midi("k525short.mid")), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    assert report["default"] == 0 and report["time_signature"] == "4/4" and report["qpm"] == 100.0
    assert report["tempo_changes"] == 2 and report["time_signature_changes"] == 0
    cands = report["candidates"]
    assert [c["index"] for c in cands] == [0, 1, 2, 3, 4]
    assert {c["program"] for c in cands} == {48} and {c["bars"] for c in cands} == {8}
    assert [c["notes"] for c in cands] == [41, 50, 34, 32, 32]
    assert cands[0]["pitch_range"] == [64, 86]


def test_inspect_table(m21_midi, capsys):
    assert main(["inspect", str(m21_midi("test12.mid"))]) == 0
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0].endswith("test12.mid: 2 bars of 4/4, 100.0 qpm, 0 tempo / 0 meter changes")
    assert rows[1].split() == ["track", "program", "bars", "notes", "range", "poly", "instrument", "name"]
    assert rows[2].split() == ["0*", "52", "2", "3", "72-76", "0.00", "Choir", "Aahs", "SOPRANO"]
    assert [r.split()[0] for r in rows[2:6]] == ["0*", "1", "2", "3"]
    assert rows[5].split()[-1] == "BASS" and rows[5].split()[4] == "48-60"
    assert rows[6].startswith("* = the melody used by default")
    assert len(rows) == 7


@pytest.mark.slow
def test_stats_table_and_missing_dataset(runs, tmp_path, capsys):
    assert main(["data", "stats", "--path", str(runs["out"])]) == 0
    out, _ = capsys.readouterr()
    rows = [r.split() for r in out.splitlines()]
    assert rows[0] == ["source", "split", "pieces", "lines", "bars", "chunks", "lines_64_bars", "windows_64_bars"]
    stats = Lines.load(runs["out"]).stats()
    body = {(r[0], r[1]): [int(v) for v in r[2:]] for r in rows[1:]}
    cols = rows[0][2:]
    assert body == {(s, sp): [row[c] for c in cols] for s, splits in stats.items() for sp, row in splits.items()}
    assert main(["data", "stats", "--path", str(tmp_path / "none.npz")]) == 2
    _, err = capsys.readouterr()
    assert "symdiff data build" in assert_one_error_line(err)
