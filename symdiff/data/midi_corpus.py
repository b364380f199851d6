"""The dataset built from a folder of MIDI files (the Lakh MIDI Dataset layout, ~170k files).

Every non-drum instrument of every file in MusicVAE's melody programs (0..31) becomes one
monophonic line on the model grid (`melody.sequence_lines`); lines without a note are
dropped. Metadata: source "midi", piece = the file's path relative to the folder (the split
is by file), voice "<instrument index>:<track name>", meter = the first time signature
("" where the file has none; MIDI then means 4/4), key = the first key signature in
music21's spelling ("E- major"), "" where there is none.

Built for a long, unattended run:
- Files: every *.mid / *.midi (any case) under the folder, in the order of their relative
  paths, so every machine lists the same files in the same order.
- Shards: `shard="i/n"` takes the files whose relative path hashes (SHA-1, salted) to i mod n.
  A hash and not the position in the listing, because a file's shard then depends on its
  own path only: machines that see a folder still being copied, or a folder that gains
  files between runs, never disagree about who owns a file, and a resumed shard keeps its
  files. Each shard writes its own dataset (`corpus.shard-0-of-4.npz`); `merge_shards`
  joins them into the dataset a single build would have written, line for line.
- Workers: a process pool with a bounded number of files in flight; `workers=0` reads in
  this process. A tqdm bar shows files/s.
- Resumable: every `checkpoint_every` files (or `checkpoint_seconds`) the finished lines are
  saved as a part file (`<out>.parts/part-000007.npz`, written to a temporary name and
  renamed) and then one JSON line naming the part and its files is appended to
  `<out>.parts/done.jsonl`. That line is the commit: on restart, parts without one are
  deleted, a torn line is dropped, and the files of committed parts are skipped. A
  kill at any moment thus loses at most the files since the last commit and never
  duplicates one. Ctrl-C and SIGTERM commit what is finished before stopping. The final
  dataset is written only when the shard is complete (again atomically), then the parts
  go.
- Bad files never stop the run: each is counted by reason (`REASONS`) and listed in
  `<out>.errors.tsv` (path, reason, detail). A file over `max_bytes` is not parsed, one
  that takes longer than `timeout` seconds is abandoned, and a worker process that dies
  (a crash, the OOM killer) costs only the file it held: the files in flight are retried
  one by one in a fresh process and the culprit is listed as "crashed".
- The end of the run prints (and `<out>.build.json` keeps) the counts: files, lines, bars,
  errors by reason, seconds, files/s.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import melody
from ..atomic import append_text, write_text
from ..dataset import Lines
from ..errors import SymdiffError

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
SOURCE = "midi"
STATE_VERSION = 1
DEFAULT_TIMEOUT = 60.0
DEFAULT_CHECKPOINT_FILES = 500
DEFAULT_CHECKPOINT_SECONDS = 120.0
IN_FLIGHT_PER_WORKER = 4

# Why a file gave no line, in the order a file is checked.
REASONS = {
    "unreadable": "the file could not be read (permissions, I/O error)",
    "empty": "the file has no bytes",
    "too_large": "the file is larger than the size cap and was not parsed",
    "not_midi": "no MThd header: not a standard MIDI file",
    "corrupt": "the MIDI parser failed (truncated or malformed data)",
    "timeout": "parsing took longer than the per-file timeout",
    "no_notes": "a valid MIDI file without a single note",
    "drums_only": "all notes are on the drum channel",
    "no_melody_programs": "pitched notes only in programs 32..127 (bass, strings, ...)",
    "no_lines": "no line with a note on the 16th-note grid",
    "error": "an unexpected error while extracting lines (a bug: please report)",
    "crashed": "the worker process died on this file",
}

# key (0 = C .. 11 = B) -> music21's spelling, as `corpus` writes keys.
MAJOR_KEYS = ("C", "D-", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")
MINOR_KEYS = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "G#", "A", "B-", "B")


class BuildError(SymdiffError):
    """A build or merge that cannot go on as asked; the message is meant for the user."""


@dataclass
class FileResult:
    """What one file gave: lines (tokens, voice) or the reason it gave none."""

    path: str  # relative to the folder, '/'-separated
    lines: list[tuple[np.ndarray, str]] = field(default_factory=list)
    meter: str = ""
    key: str = ""
    reason: str = ""  # "" when the file gave lines
    detail: str = ""

    @property
    def bars(self) -> int:
        return sum(len(t) // melody.STEPS_PER_BAR for t, _ in self.lines)


# --- files and shards ---------------------------------------------------------------------

def list_midi_files(root: str | Path) -> list[str]:
    """Relative '/'-paths of all MIDI files under `root` (any case of .mid/.midi), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.lower().endswith(MIDI_SUFFIXES):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    if shard is None:
        return 0, 1
    if isinstance(shard, tuple):
        i, n = shard
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
        if not m:
            raise BuildError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if not 0 <= i < n:
        raise BuildError(f"shard {i}/{n}: need 0 <= i < n")
    return i, n


def shard_of(rel_path: str, n: int) -> int:
    """The shard (0..n-1) that owns a file: a salted SHA-1 of its relative path, mod n.

    Salted so that it is independent of `dataset.split_of`, which hashes the same string.
    """
    return int(hashlib.sha1(b"symdiff-shard\0" + rel_path.encode()).hexdigest()[:12], 16) % n


def shard_files(files: Iterable[str], shard: str | tuple[int, int] | None) -> list[str]:
    i, n = parse_shard(shard)
    return [f for f in files if n == 1 or shard_of(f, n) == i]


def shard_output(out: str | Path, shard: str | tuple[int, int] | None) -> Path:
    """`corpus.npz` -> `corpus.shard-0-of-4.npz` (unchanged for a single shard)."""
    out = Path(out)
    i, n = parse_shard(shard)
    if n == 1:
        return out
    suffix = out.suffix or ".npz"
    return out.with_name(f"{out.name[: len(out.name) - len(out.suffix)]}.shard-{i}-of-{n}{suffix}")


def side_path(out: Path, what: str) -> Path:
    """`corpus.npz` -> `corpus.errors.tsv`, `corpus.build.json`, `corpus.parts`."""
    return out.with_name(out.name[: len(out.name) - len(out.suffix)] + what)


# --- one file -------------------------------------------------------------------------------

class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that parsers' `except Exception` let it through."""


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    if seconds is None or not seconds > 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:  # an alarm handled after the block ended is ignored
            raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clean_name(name: str) -> str:
    """Track names: mido decodes them as Latin-1; recover UTF-8 names, drop control chars."""
    try:
        name = name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return "".join(ch if ch.isprintable() else " " for ch in name).strip()


def _key_name(key_number: int) -> str:
    """pretty_midi's key number (0-11 major, 12-23 minor) -> music21's spelling."""
    minor = key_number >= 12
    return f"{(MINOR_KEYS if minor else MAJOR_KEYS)[key_number % 12]} {'minor' if minor else 'major'}"


def read_file(
    root: str | Path,
    rel_path: str,
    max_bytes: int = melody.MAX_FILE_BYTES,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_bars: int = melody.MAX_BARS,
) -> FileResult:
    """The lines of one MIDI file; never raises for bad input (the reason is in the result)."""
    res = FileResult(rel_path)

    def fail(reason: str, detail: str = "") -> FileResult:
        res.reason, res.detail, res.lines = reason, detail[:300], []
        return res

    path = Path(root) / rel_path
    try:
        size = path.stat().st_size
        if size == 0:
            return fail("empty")
        if size > max_bytes:
            return fail("too_large", f"{size} bytes > {max_bytes}")
        data = path.read_bytes()
    except OSError as e:
        return fail("unreadable", f"{type(e).__name__}: {e}")
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and b"MThd" in data[:64]:
        data = data[data.index(b"MThd"):]  # RIFF-wrapped MIDI (.rmi saved as .mid)
    if not data.startswith(b"MThd"):
        return fail("not_midi", repr(data[:8]))
    try:
        with _deadline(timeout):
            try:
                score = melody.load_score(data)
            except melody.MelodyError as e:
                return fail("corrupt", str(e).removeprefix("input: corrupt MIDI file "))
            if not score.notes:
                return fail("no_notes")
            pitched = [n for n in score.notes if not n.is_drum]
            if not pitched:
                return fail("drums_only", f"{len(score.notes)} drum notes")
            keep = [n for n in pitched if n.program in melody.MELODY_PROGRAMS]
            if not keep:
                programs = sorted({n.program for n in pitched})
                return fail("no_melody_programs", "programs " + ",".join(map(str, programs)))
            # Only the kept notes go through quantization and extraction (lines are per
            # instrument, so the others cannot change them); saves time on big arrangements.
            kept = replace(score, notes=keep)
            candidates = [c for c in melody.sequence_lines(kept, max_bars) if c.num_notes > 0]
    except _Timeout:
        return fail("timeout", f"over {timeout:g} s")
    except Exception as e:  # the reader and quantiser: count, never stop the run
        return fail("error", f"{type(e).__name__}: {e}")
    if not candidates:
        return fail("no_lines")
    sigs = sorted(score.meters, key=lambda m: m[0])
    keys = sorted(score.keys, key=lambda k: k[0])
    res.meter = f"{sigs[0][1]}/{sigs[0][2]}" if sigs else ""
    res.key = _key_name(keys[0][1]) if keys else ""
    res.lines = [(c.tokens, f"{c.instrument}:{_clean_name(c.name)}") for c in candidates]
    return res


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _isolated(args: tuple) -> FileResult:
    """Read one file alone in a fresh process: a crash then names its culprit."""
    try:
        with ProcessPoolExecutor(1, initializer=_init_worker) as pool:
            return pool.submit(read_file, *args).result()
    except BrokenProcessPool:
        return FileResult(args[1], reason="crashed", detail="the worker process died")


def _results(root: Path, todo: list[str], workers: int, opts: tuple) -> Generator[FileResult, None, None]:
    """FileResults for `todo`, in finishing order; a pool of `workers` (0: this process)."""
    if workers <= 0:
        for name in todo:
            yield read_file(root, name, *opts)
        return
    queue = iter(todo)
    suspects: list[str] = []
    while True:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker)
        in_flight: dict = {}
        broken = False
        try:
            while True:
                while not broken and len(in_flight) < workers * IN_FLIGHT_PER_WORKER:
                    rel = next(queue, None)
                    if rel is None:
                        break
                    in_flight[pool.submit(read_file, root, rel, *opts)] = rel
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    rel = in_flight.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(rel)
                if broken:  # everything still in flight failed with the pool
                    suspects += list(in_flight.values())
                    in_flight.clear()
                    break
        finally:
            if in_flight:  # the caller stopped early (stop_after, Ctrl-C): do not wait
                for p in list(getattr(pool, "_processes", {}).values()):
                    p.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        if not broken:
            return
        for rel in suspects:
            yield _isolated((root, rel, *opts))
        suspects = []


# --- resumable state ------------------------------------------------------------------------

class _State:
    """The parts folder of an unfinished build: committed parts and the files they hold."""

    def __init__(self, parts_dir: Path, config: dict, restart: bool):
        self.dir = parts_dir
        self.log = parts_dir / "done.jsonl"
        self.entries: list[dict] = []
        if restart and parts_dir.exists():
            for p in parts_dir.iterdir():
                p.unlink()
        parts_dir.mkdir(parents=True, exist_ok=True)
        config_path = parts_dir / "config.json"
        if config_path.exists():
            old = json.loads(config_path.read_text())
            if old != config:
                diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
                raise BuildError(
                    f"{parts_dir} holds an unfinished build with other settings {diff}; "
                    "rerun with --restart to discard it")
        else:
            write_text(config_path, json.dumps(config, indent=1) + "\n")
        self._load()

    def _load(self) -> None:
        good: list[str] = []
        if self.log.exists():
            for line in self.log.read_text().splitlines(keepends=True):
                try:
                    entry = json.loads(line)
                    if not line.endswith("\n") or "files" not in entry:
                        raise ValueError
                except ValueError:
                    continue  # a torn line: the kill came while it was being written
                self.entries.append(entry)
                good.append(line)
            write_text(self.log, "".join(good))
        committed = {e["part"] for e in self.entries if e["part"]}
        for p in self.dir.glob("part-*"):
            if p.name not in committed:  # saved, never committed; its files are redone
                p.unlink()

    def done(self) -> dict[str, list]:
        """relative path -> [reason, detail, lines, bars, part] for every committed file."""
        out: dict[str, list] = {}
        for e in self.entries:
            for path, reason, detail, n_lines, bars in e["files"]:
                out.setdefault(path, [reason, detail, n_lines, bars, e["part"]])
        return out

    def commit(self, results: list[FileResult]) -> None:
        """Save a part and log it, then empty `results` (they are committed); Ctrl-C /
        SIGTERM wait until all of that is done, so a caller that commits `results` again
        on the way out finds nothing left to commit twice."""
        if not results:
            return
        with _signals_held():
            self._commit(results)
            results.clear()

    def _commit(self, results: list[FileResult]) -> None:
        lines = Lines()
        for r in results:
            for tokens, voice in r.lines:
                lines.add(tokens, source=SOURCE, piece=r.path, voice=voice, meter=r.meter, key=r.key)
        part = None
        if len(lines):
            number = 1 + max((int(e["part"][5:11]) for e in self.entries if e["part"]), default=-1)
            part = f"part-{number:06d}.npz"
            lines.save(self.dir / part)  # fsynced by atomic.save_npz
        entry = {"part": part, "files": [[r.path, r.reason, r.detail, len(r.lines), r.bars] for r in results]}
        append_text(self.log, json.dumps(entry) + "\n")
        self.entries.append(entry)


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT / SIGTERM that arrive in the block are handled when it ends.

    A handler that only records the signal, not a thread signal mask: the kernel hands a
    process-directed signal to any thread that does not block it (the process pool's
    threads, OpenBLAS's), and Python then raises in the main thread at once. Handlers run
    in the main thread only, so recording there defers the signal wherever it landed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if got:
            signal.raise_signal(got[0])  # now, with the handler the caller had


@contextmanager
def _sigterm_as_interrupt():
    """A batch scheduler's SIGTERM stops the build like Ctrl-C (with a last commit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the build --------------------------------------------------------------------------------

def build_from_midi_folder(
    midi_dir: str | Path,
    out: str | Path,
    workers: int = os.cpu_count() or 1,
    shard: str | tuple[int, int] | None = "0/1",
    *,
    restart: bool = False,
    limit: int | None = None,
    stop_after: int | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_FILES,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_bytes: int = melody.MAX_FILE_BYTES,
    max_bars: int = melody.MAX_BARS,
    progress: bool = True,
) -> dict:
    """Build (or resume) this shard's dataset from a MIDI folder; returns the report.

    The output is `shard_output(out, shard)`. `workers=0` reads in this process. `limit`
    keeps the first N files of the shard; `stop_after` stops (as an interruption would)
    after N files read in this run, for tests and trial runs. The report's "complete" says
    whether the dataset was written.
    """
    t0 = time.time()
    midi_dir = Path(midi_dir)
    i, n = parse_shard(shard)
    out = shard_output(out, (i, n))
    files = shard_files(list_midi_files(midi_dir), (i, n))
    if limit is not None:
        files = files[:limit]
    config = {
        "version": STATE_VERSION,
        "midi_dir": str(midi_dir.resolve()),
        "shard": f"{i}/{n}",
        "max_bytes": max_bytes,
        "max_bars": max_bars,
        "timeout": timeout,
        "programs": [melody.MELODY_PROGRAMS.start, melody.MELODY_PROGRAMS.stop],
    }
    state = _State(side_path(out, ".parts"), config, restart)
    done_before = state.done()
    wanted = set(files)
    todo = [f for f in files if f not in done_before]
    resumed = len(files) - len(todo)
    if resumed:
        log.info("resuming %s: %d of %d files already done", out, resumed, len(files))

    pending: list[FileResult] = []
    read_now = 0
    interrupted = False
    last_commit = time.time()
    bar = tqdm(total=len(files), initial=resumed, desc=f"midi {i}/{n}", unit="file",
               disable=not progress, smoothing=0.05)
    results = _results(midi_dir, todo, workers, (max_bytes, timeout, max_bars))
    try:
        with _sigterm_as_interrupt():
            for res in results:
                pending.append(res)
                read_now += 1
                bar.update(1)
                if len(pending) >= checkpoint_every or time.time() - last_commit >= checkpoint_seconds:
                    state.commit(pending)
                    pending, last_commit = [], time.time()
                if stop_after is not None and read_now >= stop_after:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results.close()  # stops the pool; files in flight are dropped and redone next time
        bar.close()
        state.commit(pending)  # what finished is kept, also on Ctrl-C / SIGTERM

    done = {k: v for k, v in state.done().items() if k in wanted}
    complete = len(done) == len(files)
    seconds = time.time() - t0
    report = _report(done, len(files), resumed, read_now, seconds)
    report.update(out=str(out), shard=f"{i}/{n}", complete=complete, interrupted=interrupted)
    if complete:
        lines = _assemble(state, done, files)
        lines.save(out)
        _write_errors(side_path(out, ".errors.tsv"), done)
        report["seconds_total_build"] = round(seconds, 1)
        write_text(side_path(out, ".build.json"), json.dumps(report, indent=1) + "\n")
        for p in state.dir.iterdir():
            p.unlink()
        state.dir.rmdir()
    return report


def _assemble(state: _State, done: dict[str, list], files: list[str]) -> Lines:
    """The committed parts as one dataset, in file order (each file from one part only)."""
    rank = {f: k for k, f in enumerate(files)}
    lines = Lines()
    for part in sorted({v[4] for v in done.values() if v[4]}):
        got = Lines.load(state.dir / part)
        keep = [k for k, m in enumerate(got.meta) if done.get(m["piece"], [None] * 5)[4] == part]
        lines.extend(Lines([got.tokens[k] for k in keep], [got.meta[k] for k in keep]))
    order = sorted(range(len(lines)), key=lambda k: rank[lines.meta[k]["piece"]])  # stable
    return Lines([lines.tokens[k] for k in order], [lines.meta[k] for k in order])


def _write_errors(path: Path, done: dict[str, list]) -> None:
    rows = ["path\treason\tdetail\n"]
    for rel in sorted(done):
        reason, detail = done[rel][0], done[rel][1]
        if reason:
            clean = " ".join(str(detail).split())
            rows.append(f"{rel}\t{reason}\t{clean}\n")
    write_text(path, "".join(rows))


def _report(done: dict[str, list], n_files: int, resumed: int, read_now: int, seconds: float) -> dict:
    errors = Counter(v[0] for v in done.values() if v[0])
    return {
        "files": n_files,
        "files_done": len(done),
        "files_resumed": resumed,
        "files_read_now": read_now,
        "files_with_lines": sum(1 for v in done.values() if not v[0]),
        "lines": sum(v[2] for v in done.values()),
        "bars": sum(v[3] for v in done.values()),
        "errors": sum(errors.values()),
        "errors_by_reason": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "seconds": round(seconds, 1),
        "files_per_s": round(read_now / seconds, 2) if seconds > 0 else 0.0,
    }


def format_report(r: dict) -> str:
    by_reason = ", ".join(f"{k} {v}" for k, v in r["errors_by_reason"].items()) or "none"
    head = (f"wrote {r['out']}" if r["complete"] else
            f"{'interrupted' if r['interrupted'] else 'stopped'}: {r['out']} not written yet, "
            f"{r['files'] - r['files_done']} files to go; rerun the same command to resume")
    return "\n".join([
        head,
        f"  files  {r['files']} in shard {r['shard']}: {r['files_done']} done "
        f"({r['files_resumed']} from earlier runs, {r['files_read_now']} read now), "
        f"{r['files_with_lines']} with lines",
        f"  lines  {r['lines']}, bars {r['bars']}",
        f"  errors {r['errors']}: {by_reason}",
        f"  time   {r['seconds']} s, {r['files_per_s']} files/s",
    ])


# --- merging shards ---------------------------------------------------------------------------

_SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)$")


def merge_shards(paths: list[str | Path], out: str | Path) -> dict:
    """Join shard datasets into one (file order, as a single build writes it), with their
    errors and build counts. Refuses overlapping shards and, for `*.shard-i-of-n` names,
    an incomplete or mixed set."""
    shards = [Path(p) for p in paths]
    out = Path(out)
    if not shards:
        raise BuildError("nothing to merge")
    ids: list[tuple[int, int]] = []  # (i, n) of each `*.shard-i-of-n` name
    for p in shards:
        m = _SHARD_NAME.search(p.name[: len(p.name) - len(p.suffix)])
        if m:
            ids.append((int(m.group(1)), int(m.group(2))))
    if len(ids) == len(shards):  # every name is a shard's
        counts = {n for _, n in ids}
        if len(counts) > 1:
            raise BuildError(f"shards of different splits: {sorted(counts)} shards")
        total = counts.pop()
        have = [i for i, _ in ids]
        missing = sorted(set(range(total)) - set(have))
        if missing or len(have) != len(set(have)):
            raise BuildError(f"need each of the {total} shards once; missing {missing}, "
                             f"given {sorted(have)}")
    merged = Lines()
    owner: dict[str, Path] = {}
    errors: list[str] = []
    build: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for p in shards:
        part = Lines.load(p)
        for piece in {m["piece"] for m in part.meta}:
            if piece in owner:
                raise BuildError(f"{piece} is in both {owner[piece]} and {p}")
            owner[piece] = p
        merged.extend(part)
        err = side_path(p, ".errors.tsv")
        if err.exists():
            errors += err.read_text().splitlines(keepends=True)[1:]
        info = side_path(p, ".build.json")
        if info.exists():
            b = json.loads(info.read_text())
            for k in ("files", "files_with_lines", "lines", "bars", "errors"):
                build[k] += b.get(k, 0)
            reasons.update(b.get("errors_by_reason", {}))
    order = sorted(range(len(merged)), key=lambda k: merged.meta[k]["piece"])  # stable
    merged = Lines([merged.tokens[k] for k in order], [merged.meta[k] for k in order])
    merged.save(out)
    write_text(side_path(out, ".errors.tsv"), "path\treason\tdetail\n" + "".join(sorted(errors)))
    report = {
        "out": str(out),
        "shards": [str(p) for p in shards],
        "pieces": len(owner),
        **build,
        "lines": len(merged),
        "bars": int(sum(len(t) for t in merged.tokens) // melody.STEPS_PER_BAR),
        "errors_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    write_text(side_path(out, ".build.json"), json.dumps(report, indent=1) + "\n")
    return report
