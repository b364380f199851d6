"""The MIDI-folder dataset builder on a small Lakh-like folder of real MIDI files.

The folder is built in tmp: real files (tests/data/midi, else the ones inside the music21
wheel) under hashed names in nested folders, plus planted bad files. Expectations come
from a plain reference loop over `melody.load_score` + `melody.sequence_lines`.
Builds run in this process (`workers=0`) or with one worker process.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from symdiff import melody
from symdiff.cli import main as cli_main
from symdiff.data.midi_corpus import (
    REASONS,
    BuildError,
    build_from_midi_folder,
    list_midi_files,
    merge_shards,
    shard_files,
    shard_of,
    shard_output,
    side_path,
)
from symdiff.dataset import FIELDS, Lines, split_of

REPO = Path(__file__).resolve().parent.parent
MAX_SOURCE_BYTES = 40_000  # keep the tests quick
MAX_SOURCE_FILES = 48
# planted file -> the reason it must be reported with
PLANTED = {
    "0/corrupt.mid": "corrupt",
    "e/empty.mid": "empty",
    "f/readme_named.mid": "not_midi",
    "d/drums.MID": "drums_only",
    "c/silence.midi": "no_notes",
}


def real_midi_files() -> list[Path]:
    here = REPO / "tests" / "data" / "midi"
    files = sorted(here.rglob("*.mid")) if here.is_dir() else []  # with its bad/ and synthetic/
    if len(files) < 8:
        import music21

        m21 = Path(music21.__file__).parent
        files = sorted((m21 / "midi" / "testPrimitive").glob("*.mid")) + sorted((m21 / "omr").glob("*.mid"))
    files = [f for f in files if f.is_file() and 0 < f.stat().st_size <= MAX_SOURCE_BYTES]
    return files[:MAX_SOURCE_FILES]


def write_mido(path: Path, tracks: list[list]) -> None:
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    for msgs in tracks:
        mid.tracks.append(mido.MidiTrack(msgs + [mido.MetaMessage("end_of_track", time=0)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)


def make_lakh_folder(root: Path) -> dict[str, Path]:
    """Real files as lmd/<first hex>/<md5>.mid (some .MID / .midi) and the planted ones;
    returns relative path -> source file for the real ones."""
    sources = {}
    for k, src in enumerate(real_midi_files()):
        try:
            data = src.read_bytes()
        except FileNotFoundError:  # tests/data/midi is being edited
            continue
        digest = hashlib.md5(data).hexdigest()
        suffix = (".mid", ".MID", ".midi")[k % 3]
        rel = f"{digest[0]}/{digest}{suffix}"
        if rel.lower() in {r.lower() for r in sources}:
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        sources[rel] = src
    good = max((root / rel for rel in sources), key=lambda p: p.stat().st_size).read_bytes()
    (root / "0").mkdir(parents=True, exist_ok=True)
    (root / "0/corrupt.mid").write_bytes(good[: len(good) // 2])
    (root / "e").mkdir(exist_ok=True)
    (root / "e/empty.mid").write_bytes(b"")
    (root / "f").mkdir(exist_ok=True)
    (root / "f/readme_named.mid").write_text("This is not a MIDI file.\n")
    drums = []
    for k in range(16):
        drums += [mido.Message("note_on", channel=9, note=36 + k % 3, velocity=100, time=0 if k == 0 else 120),
                  mido.Message("note_off", channel=9, note=36 + k % 3, velocity=0, time=120)]
    write_mido(root / "d/drums.MID", [drums])
    write_mido(root / "c/silence.midi", [[mido.MetaMessage("track_name", name="nothing", time=0)]])
    (root / "README.txt").write_text("not a MIDI name: ignored\n")
    (root / "0" / "notes.mid.bak").write_text("ignored too\n")
    return sources


def reference_lines(path: Path) -> list[melody.Candidate] | None:
    """A plain loop's answer: the lines in melody programs with notes; None if unreadable."""
    try:
        score = melody.load_score(path)
    except melody.MelodyError:
        return None
    return [c for c in melody.sequence_lines(score) if c.num_notes > 0 and c.in_melody_programs]


def same_lines(a: Lines, b: Lines) -> bool:
    return a.meta == b.meta and len(a) == len(b) and all(
        np.array_equal(x, y) for x, y in zip(a.tokens, b.tokens, strict=True))


def dir_names(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


@pytest.fixture(scope="module")
def lakh(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmd") / "lmd_full"
    sources = make_lakh_folder(root)
    out = root.parent / "full" / "corpus.npz"
    report = build_from_midi_folder(root, out, workers=0, progress=False)
    return {"root": root, "sources": sources, "out": out, "report": report, "lines": Lines.load(out)}


def read_errors(path: Path) -> dict[str, str]:
    rows = path.read_text().splitlines()
    assert rows[0] == "path\treason\tdetail"
    return {r.split("\t")[0]: r.split("\t")[1] for r in rows[1:]}


# --- listing and shards ---------------------------------------------------------------------

def test_listing_is_sorted_case_insensitive_and_nested(lakh):
    files = list_midi_files(lakh["root"])
    assert files == sorted(files)
    assert set(files) == set(lakh["sources"]) | set(PLANTED)
    assert not any(f.endswith((".txt", ".bak")) for f in files)


def test_shard_assignment_is_a_stable_partition():
    paths = [f"{k % 16:x}/{hashlib.md5(str(k).encode()).hexdigest()}.mid" for k in range(4000)]
    shards = [shard_files(paths, f"{i}/4") for i in range(4)]
    assert sorted(sum(shards, [])) == sorted(paths)
    assert all(900 < len(s) < 1100 for s in shards)  # balanced
    assert shard_files(paths[:100], "2/4") == [p for p in shards[2] if p in set(paths[:100])]  # own path only
    assert shard_of("0/abc.mid", 7) == shard_of("0/abc.mid", 7)
    assert shard_output("x/corpus.npz", "1/4").name == "corpus.shard-1-of-4.npz"
    assert shard_output("x/corpus.npz", "0/1").name == "corpus.npz"
    for bad in ("4/4", "1-4", "-1/3"):
        with pytest.raises(BuildError):
            shard_files(paths, bad)


# --- one full build ---------------------------------------------------------------------------

def test_full_build_matches_a_plain_loop(lakh):
    lines, report, root = lakh["lines"], lakh["report"], lakh["root"]
    errors = read_errors(side_path(lakh["out"], ".errors.tsv"))
    assert report["complete"] and not report["interrupted"]
    n_files = len(lakh["sources"]) + len(PLANTED)
    assert report["files"] == report["files_done"] == report["files_read_now"] == n_files
    assert report["errors"] == len(errors) == sum(report["errors_by_reason"].values())
    assert report["files_with_lines"] + report["errors"] == n_files
    assert set(report["errors_by_reason"]) <= set(REASONS)
    for rel, reason in PLANTED.items():
        assert errors[rel] == reason, rel

    by_piece: dict[str, list[int]] = {}
    for k, m in enumerate(lines.meta):
        by_piece.setdefault(m["piece"], []).append(k)
    for rel in lakh["sources"]:
        expected = reference_lines(root / rel)
        if not expected:
            assert rel in errors and rel not in by_piece, rel
            if expected is None:
                assert errors[rel] in {"corrupt", "not_midi", "empty"}
            continue
        assert rel not in errors, (rel, errors.get(rel))
        got = by_piece[rel]
        assert [lines.meta[k]["voice"].split(":")[0] for k in got] == [str(c.instrument) for c in expected]
        for k, c in zip(got, expected, strict=True):
            assert np.array_equal(lines.tokens[k], c.tokens), rel
    assert set(by_piece) <= set(lakh["sources"])
    assert len(lines) == report["lines"]
    assert sum(len(t) // 16 for t in lines.tokens) == report["bars"]
    pieces = [m["piece"] for m in lines.meta]
    assert pieces == sorted(pieces)  # file order


def test_metadata(lakh):
    lines = lakh["lines"]
    assert len(lines) > 10
    for toks, m in zip(lines.tokens, lines.meta, strict=True):
        assert set(m) == set(FIELDS)
        assert m["source"] == "midi" and m["split"] == split_of(m["piece"])
        assert m["meter"] == "" or m["meter"].count("/") == 1
        assert m["key"] == "" or m["key"].endswith((" major", " minor"))
        assert m["voice"].split(":")[0].isdigit()
        assert toks.dtype == np.uint8 and len(toks) % 16 == 0 and (toks >= 2).any()
    assert any(m["meter"] == "4/4" for m in lines.meta)
    assert any(m["key"] for m in lines.meta)
    stats = lines.stats()
    assert stats["midi"]["all"]["lines"] == len(lines)
    build = json.loads(side_path(lakh["out"], ".build.json").read_text())
    assert build["lines"] == len(lines) and build["complete"]
    assert not side_path(lakh["out"], ".parts").exists()  # cleaned up once complete


# --- shards and merge -------------------------------------------------------------------------

def test_shards_are_disjoint_and_merge_to_the_full_build(lakh, tmp_path):
    out = tmp_path / "corpus.npz"
    shard_paths, reads = [], []
    for i in range(3):
        r = build_from_midi_folder(lakh["root"], out, workers=0, shard=f"{i}/3", progress=False)
        shard_paths.append(Path(r["out"]))
        reads.append(set(read_errors(side_path(Path(r["out"]), ".errors.tsv")))
                     | {m["piece"] for m in Lines.load(r["out"]).meta})
        assert r["files"] == len(shard_files(list_midi_files(lakh["root"]), f"{i}/3"))
    assert [p.name for p in shard_paths] == [f"corpus.shard-{i}-of-3.npz" for i in range(3)]
    assert all(not (a & b) for k, a in enumerate(reads) for b in reads[k + 1:])
    assert set().union(*reads) == set(list_midi_files(lakh["root"]))

    merged = tmp_path / "merged.npz"
    assert cli_main(["data", "merge", *map(str, shard_paths), "--out", str(merged)]) == 0
    assert same_lines(Lines.load(merged), lakh["lines"])
    assert read_errors(side_path(merged, ".errors.tsv")) == read_errors(side_path(lakh["out"], ".errors.tsv"))
    assert json.loads(side_path(merged, ".build.json").read_text())["errors"] == lakh["report"]["errors"]

    with pytest.raises(BuildError, match="missing"):
        merge_shards(shard_paths[:2], tmp_path / "partial.npz")
    twice = tmp_path / "twice.npz"
    shutil.copy(shard_paths[0], twice)
    with pytest.raises(BuildError, match="in both"):
        merge_shards([shard_paths[0], twice], tmp_path / "dup.npz")


def test_cli_build_with_one_worker_process(lakh, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    rc = cli_main(["data", "build", "--midi-dir", str(lakh["root"]), "--out", str(out),
                   "--workers", "1", "--shard", "1/2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "files/s" in text and "errors" in text
    got = Lines.load(tmp_path / "cli.shard-1-of-2.npz")
    mine = {m["piece"] for m in got.meta}
    full = lakh["lines"]
    keep = [k for k, m in enumerate(full.meta) if m["piece"] in mine]
    assert same_lines(got, Lines([full.tokens[k] for k in keep], [full.meta[k] for k in keep]))
    assert cli_main(["data", "build", "--midi-dir", str(lakh["root"]), "--shard", "2/2"]) == 2  # bad shard


# --- resuming ---------------------------------------------------------------------------------

def test_stop_and_resume_equals_uninterrupted(lakh, tmp_path):
    out = tmp_path / "corpus.npz"
    r1 = build_from_midi_folder(lakh["root"], out, workers=0, stop_after=7, checkpoint_every=3,
                                progress=False)
    assert not r1["complete"] and r1["files_done"] == 7 and not out.exists()
    parts = side_path(out, ".parts")
    assert len((parts / "done.jsonl").read_text().splitlines()) == 3  # 3 + 3 + the last one
    for part in parts.glob("part-*.npz"):
        Lines.load(part)  # every saved part is a whole dataset
    r2 = build_from_midi_folder(lakh["root"], out, workers=0, checkpoint_every=3, progress=False)
    assert r2["complete"] and r2["files_resumed"] == 7
    assert r2["files_read_now"] == r2["files"] - 7
    assert same_lines(Lines.load(out), lakh["lines"])
    assert read_errors(side_path(out, ".errors.tsv")) == read_errors(side_path(lakh["out"], ".errors.tsv"))
    assert r2["errors_by_reason"] == lakh["report"]["errors_by_reason"]


@pytest.mark.slow
def test_resume_with_a_worker_process_and_other_settings(lakh, tmp_path):
    out = tmp_path / "corpus.npz"
    r1 = build_from_midi_folder(lakh["root"], out, workers=1, stop_after=5, checkpoint_every=2,
                                progress=False)
    assert r1["files_done"] == 5
    with pytest.raises(BuildError, match="restart"):
        build_from_midi_folder(lakh["root"], out, workers=1, max_bars=64, progress=False)
    r2 = build_from_midi_folder(lakh["root"], out, workers=1, progress=False)
    assert r2["complete"] and r2["files_resumed"] == 5
    assert same_lines(Lines.load(out), lakh["lines"])
    r3 = build_from_midi_folder(lakh["root"], out, workers=0, stop_after=3, progress=False)
    r4 = build_from_midi_folder(lakh["root"], out, workers=0, restart=True, progress=False)
    assert r3["files_done"] == 3 and r4["files_resumed"] == 0 and r4["complete"]


def _wait_for_commits(log: Path, proc: subprocess.Popen, n: int, limit: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("no progress saved")


BUILD_SCRIPT = """
import sys
from symdiff.data.midi_corpus import build_from_midi_folder
r = build_from_midi_folder(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), checkpoint_every=1,
                           progress=False)
print("INTERRUPTED" if r["interrupted"] else "DONE")
"""


def _start_build(lakh, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(lakh["root"]), str(out), str(workers)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_then_resume(lakh, tmp_path):
    out = tmp_path / "corpus.npz"
    proc = _start_build(lakh, out, workers=0)
    parts = side_path(out, ".parts")
    _wait_for_commits(parts / "done.jsonl", proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    # What a kill in the middle of a commit leaves: a part saved but not logged, a torn line.
    # (Copy a committed part: the kill may have left a half-written part-*.npz.tmp.npz.)
    committed = []
    for line in (parts / "done.jsonl").read_text().splitlines():
        try:
            committed.append(json.loads(line)["part"])
        except ValueError:  # the kill tore this line
            pass
    Lines.load(parts / next(p for p in committed if p)).save(parts / "part-999999.npz")
    with open(parts / "done.jsonl", "a") as f:
        f.write('{"part": "part-999999.npz", "files": [["0/corr')
    r = build_from_midi_folder(lakh["root"], out, workers=0, progress=False)
    assert r["complete"] and 2 <= r["files_resumed"] < r["files"]
    assert same_lines(Lines.load(out), lakh["lines"])
    assert read_errors(side_path(out, ".errors.tsv")) == read_errors(side_path(lakh["out"], ".errors.tsv"))


# The Ctrl-C tests pin down where the signal lands instead of racing the build: the child
# script watches the build through its progress bar's updates (tqdm, one per file result
# taken) and can hold the worker process on one file (`Path.read_bytes` of that file never
# returns, like a very slow file), or send the signal from inside a commit (`os.fsync` of
# done.jsonl). Neither changes what the build does; the signals are real. (The worker sees
# the parent's `Path.read_bytes` because pools fork on Linux with this Python.)
CTRL_C_SCRIPT = """
import os, pathlib, signal, sys, threading, time
import tqdm
from symdiff.data.midi_corpus import build_from_midi_folder, side_path

root, out, workers, checkpoint_every, progress, hold, interrupt_in_commit = sys.argv[1:]
real_update, taken = tqdm.tqdm.update, [0]
def update(self, n=1):
    taken[0] += n
    pathlib.Path(progress + ".tmp").write_text(str(taken[0]))
    os.replace(progress + ".tmp", progress)
    return real_update(self, n)
tqdm.tqdm.update = update
real_read = pathlib.Path.read_bytes
def read_bytes(self):
    if str(self) == os.path.join(root, hold):  # in the worker: held until terminated
        while True:
            time.sleep(1)
    return real_read(self)
pathlib.Path.read_bytes = read_bytes
log, real_fsync, fired = str(side_path(pathlib.Path(out), ".parts") / "done.jsonl"), os.fsync, []
def fsync(fd):
    real_fsync(fd)
    if interrupt_in_commit == "1" and not fired and os.readlink("/proc/self/fd/%d" % fd) == log:
        fired.append(1)  # Ctrl-C while the first commit is on its way out; sent to the main
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # thread, so it lands here
os.fsync = fsync
r = build_from_midi_folder(root, out, workers=int(workers), checkpoint_every=int(checkpoint_every),
                           checkpoint_seconds=1e9, progress=False)
print("INTERRUPTED" if r["interrupted"] else "DONE")
"""


def _start_ctrl_c_build(lakh, out: Path, workers: int, checkpoint_every: int, hold: str = "",
                        interrupt_in_commit: bool = False) -> tuple[subprocess.Popen, Path]:
    progress = out.parent / "progress.txt"
    args = [str(lakh["root"]), str(out), str(workers), str(checkpoint_every), str(progress), hold,
            str(int(interrupt_in_commit))]
    # preexec_fn: a test run started in the background (nohup, &) ignores SIGINT, and so would
    # the child; the default disposition lets Python install its Ctrl-C handler there.
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, progress


def _committed_files(parts: Path) -> list[str]:
    """Every file named in done.jsonl, once per time it was committed."""
    log = parts / "done.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [f[0] for line in lines for f in json.loads(line)["files"]]


@pytest.mark.slow
def test_ctrl_c_with_a_worker_process_then_resume(lakh, tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while the build waits on
    its worker: the commits made so far stay, the result taken since is committed on the way
    out, the file in flight is not, and a resume skips exactly the committed files."""
    out = tmp_path / "corpus.npz"
    parts = side_path(out, ".parts")
    files = list_midi_files(lakh["root"])
    # Hold the worker on file n (odd, so with checkpoint_every=2 the build has committed
    # files 1..n-1 in pairs and holds file n uncommitted when it takes its n-th result).
    n = next(k for k in range(5, len(files), 2) if (lakh["root"] / files[k]).stat().st_size > 0)
    proc, progress = _start_ctrl_c_build(lakh, out, workers=1, checkpoint_every=2, hold=files[n])
    try:
        t0 = time.time()
        while not (progress.exists() and progress.read_text() == str(n)):
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 60, "the build took no results"
            time.sleep(0.005)
        assert len((parts / "done.jsonl").read_text().splitlines()) == (n - 1) // 2
        os.killpg(proc.pid, signal.SIGINT)  # the held worker ignores it, as workers do
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "INTERRUPTED"
    assert not out.exists()
    assert progress.read_text() == str(n)  # nothing was taken after the signal
    # each of the n files the worker finished once (results come in finishing order, which
    # for files done together is any order), and not the held one
    assert sorted(_committed_files(parts)) == files[:n]
    assert len((parts / "done.jsonl").read_text().splitlines()) == (n - 1) // 2 + 1  # + the last one
    r = build_from_midi_folder(lakh["root"], out, workers=1, progress=False)
    assert r["complete"] and r["files_resumed"] == n and r["files_read_now"] == len(files) - n
    assert same_lines(Lines.load(out), lakh["lines"])
    assert read_errors(side_path(out, ".errors.tsv")) == read_errors(side_path(lakh["out"], ".errors.tsv"))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_ctrl_c_during_a_commit_commits_each_file_once(lakh, tmp_path, workers):
    """Ctrl-C that arrives while a commit is being written (the race the old version of the
    test above lost under load, pinned down): the build still stops cleanly, and no file is
    committed twice, so a resume counts each committed file once."""
    out = tmp_path / "corpus.npz"
    parts = side_path(out, ".parts")
    proc, _ = _start_ctrl_c_build(lakh, out, workers=workers, checkpoint_every=1, interrupt_in_commit=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "INTERRUPTED"
    assert not out.exists()
    committed = _committed_files(parts)
    assert committed and set(committed) <= set(list_midi_files(lakh["root"]))
    assert len(set(committed)) == len(committed)  # no file twice: fails while the bug is there
    r = build_from_midi_folder(lakh["root"], out, workers=0, progress=False)
    assert r["complete"] and same_lines(Lines.load(out), lakh["lines"])
    assert r["files_resumed"] == len(committed)  # fails while a file is logged twice


# --- pathological files ------------------------------------------------------------------------

def test_size_cap_and_timeout(lakh, tmp_path):
    root = tmp_path / "big"
    biggest = max((lakh["root"] / rel for rel in lakh["sources"]), key=lambda p: p.stat().st_size)
    (root / "a").mkdir(parents=True)
    shutil.copy(biggest, root / "a" / "big.mid")
    shutil.copy(biggest, root / "a" / "slow.mid")
    r = build_from_midi_folder(root, tmp_path / "capped.npz", workers=0, max_bytes=biggest.stat().st_size - 1,
                               progress=False)
    assert r["errors_by_reason"] == {"too_large": 2} and r["complete"]
    assert len(Lines.load(tmp_path / "capped.npz")) == 0
    r = build_from_midi_folder(root, tmp_path / "slow.npz", workers=1, timeout=1e-5, progress=False)
    assert r["errors_by_reason"] == {"timeout": 2}
    errors = read_errors(side_path(tmp_path / "slow.npz", ".errors.tsv"))
    assert errors == {"a/big.mid": "timeout", "a/slow.mid": "timeout"}


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_from_midi_folder(tmp_path / "nope", tmp_path / "x.npz", workers=0, progress=False)
