"""symdiff's Gradio app (the Hugging Face Space entry point): generate melodies, infill a MIDI
file, and learn how diffusion works. Thin wiring over the library: the generation core is
`symdiff.generate`, everything else the app computes is in `symdiff.demo`, the drawings in
`symdiff.pianoroll` and the sound in `symdiff.audio`.

    python app.py                      # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 7860 --diffusion checkpoints/diffusion-cpu   # the paper's architecture

Files: uploads and outputs live only in a temporary folder made at start-up (gradio's cache is
pointed there); outputs are written to a fresh folder per request; every 5 minutes, uploads,
outputs and their folders older than 15 minutes are removed (`sweep`), and the whole folder is
removed when the app exits. An uploaded file is read into
memory and parsed from there; nothing a user uploads is written anywhere else.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

# Everything gradio stores (uploads, outputs) goes under one private temporary folder, set
# before gradio is imported.
TMP_ROOT = Path(tempfile.mkdtemp(prefix="symdiff-app-"))
atexit.register(shutil.rmtree, TMP_ROOT, True)
os.environ.setdefault("GRADIO_TEMP_DIR", str(TMP_ROOT / "gradio"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from symdiff import audio, demo, melody, pianoroll  # noqa: E402
from symdiff.arrangement import write_arrangement  # noqa: E402
from symdiff.errors import SymdiffError  # noqa: E402
from symdiff.generate import (  # noqa: E402
    ANY_STYLE,
    CONTEXT_GUIDANCE,
    DEFAULT_DIFFUSION,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MelodyDiffusion,
    Progress,
    Request,
    Result,
    context_guidance_for,
)
from symdiff.options import DEVICES, MAX_NEW_BARS  # noqa: E402
from symdiff.precision import choose_threads, resolve_device  # noqa: E402

log = logging.getLogger("symdiff.app")

MAX_BARS = MAX_NEW_BARS  # past 64, written 32 bars at a time (`MelodyDiffusion.generate`)
DEFAULT_BARS = 64  # one window of the model, the paper's length (past it, every 32 bars cost another window)
MAX_VARIATIONS = 4  # side by side, each with its audio and MIDI
VARY_NUM = 3
VARY_STRENGTH = 0.3  # eval/variations.md: about two thirds of the 16ths still sound the original's pitch
MAX_STEPS = 1000
MAX_SEED = 2**31 - 1
PIECE_STYLE = "piece"  # the infill dropdown's default: the style the rest of the piece is heard in
# The infill's note rate (`symdiff.fit`): the dropdown's labels -> `MelodyDiffusion.infill`'s density
# (None: the "notes per bar" number beside it).
DENSITY_REPLACED = "as the bars replaced"
DENSITY_LABELS: dict[str, str | None] = {DENSITY_REPLACED: "replaced", "as the rest of the piece": "piece",
                                         "notes per bar:": None}
# The Generate tab starts at DDPM 80 steps: a 64-bar melody with context guidance (two model calls
# per step) then answers within issue 6's 5 s on 2 cores (4.25 s; 100 steps took 5.2 s). Its samples
# hold together about as well as at the library's 200 (coherence at 80 steps, seeds 0, 1, 2: range
# 13.3, 12.8, 12.3 semitones, key stability 0.906, 0.926, 0.928, silent bars 11.5-13.0%; real
# windows 14.5-14.9, 0.925-0.936, 11-14%).
GENERATE_STEPS = 80
EXAMPLE_BARS = 16  # the example run on the Generate tab before any click
EXAMPLE_WAIT_S = 300.0  # a page opened while the example is drawn waits this long for it
# Generate draws its live picture at most once in this many seconds: each takes about 0.2 s of the
# core the model runs on, and drawing all 16 trace points took 3.7 of a default Generate's 8.6 s
# (2-core EPYC, one thread)
LIVE_EVERY_S = 1.0
# A run's status is sent at most this often: every update is a message gradio processes, and 20
# Generates at once sending one a model step took half the server's time (2-core EPYC)
UPDATE_EVERY_S = 0.25
CLEAR_TO_UPLOAD = "or clear it (x, top right of the file) and upload your own."
OPENING_EXAMPLE = "liliuokalani_aloha_oe_voice_piano.mid"  # loaded in Infill and Vary before any click: a song
# with a piano part, so the whole arrangement coming back shows
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # MIDI files are small; 2 MB is generous
CONCURRENCY = 2  # requests served at once (the Space has 2 vCPUs); their model runs take turns
# Concurrent Generates of one shape are drawn as one batch (`GenerateBatcher`): at most this many
# requests a batch, gathered for BATCH_WAIT_S after the first arrives while no batch runs. 20 at
# once (bench/bench_app_load.py, 2-core EPYC): 6 a batch ended them all in 73-89 s, one at a time
# in 97 s; 10 and 24 a batch held every request until the big batch ended (p50 64 and 106 s).
MAX_BATCH = 6
BATCH_WAIT_S = 0.05
QUEUE_SIZE = 64  # requests waiting beyond that are told the app is busy
REQUEST_MAX_AGE_S = 15 * 60  # uploads and outputs older than this are swept
SWEEP_EVERY_S = 5 * 60
TIME_LIMIT_S = 120.0  # a model run (generate, infill) is stopped after this long
SAMPLERS = ("ddpm", "dpmpp-sde", "ddim")
WIDTH_PX = 1000  # figures on a laptop: drawn 1000 px wide, shown scaled to the column
PHONE_PX = 640  # a page narrower than this gets figures drawn for its width, shown 1:1 (`SymdiffApp.width`)
MIN_WIDTH_PX = 300
PAGE_MARGIN_PX = 66  # a phone page's width less a figure's column (measured in chromium at 390 px)
MAX_SESSIONS = 10_000  # page widths remembered (`SymdiffApp.set_width`), the oldest forgotten first
RESTORE_STARTS = (20, 100, 300, 600, 1000)  # the Learn tab's curve for one melody
RESTORE_FIGURE = Path(__file__).resolve().parent / "eval" / "restoration.png"  # scripts/restoration_curve.py
RESTORE_DATA = RESTORE_FIGURE.with_suffix(".json")  # what it plots


class _UserError(SymdiffError):
    """A bad value in a request."""


def user_errors(fn):
    """Every failure of a handler becomes a `gr.Error` with a message for the user, never a
    traceback in the UI: our own errors (bad file, bad range, ...) say what is wrong, anything
    else is logged here and reported briefly."""

    def convert(e: BaseException) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, SymdiffError):  # bad file, range, setting: the message is for the user
            return gr.Error(str(e), print_exception=False)
        log.exception("internal error in %s", fn.__name__)
        return gr.Error(f"Sorry, something went wrong on our side ({type(e).__name__}). Please try again.",
                        print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as e:
                raise convert(e) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise convert(e) from None
    return call


def whole(name: str, value, lo: int, hi: int) -> int:
    """A whole number in lo..hi, or a clear error."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _UserError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or not v.is_integer():
        raise _UserError(f"{name} must be a whole number, got {value!r}")
    if not lo <= v <= hi:
        raise _UserError(f"{name} must be between {lo} and {hi}, got {int(v)}")
    return int(v)


def request_dir() -> Path:
    """A fresh folder for one request's output files (`sweep` removes it later)."""
    root = TMP_ROOT / "requests"
    root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def sweep(root: Path, max_age_s: float, keep: Collection[str] = ()) -> None:
    """Remove every file under `root` (uploads, gradio's cached outputs, the per-request folders)
    older than `max_age_s` and the folders left empty, except the files in `keep` (what gradio
    must keep, e.g. cached examples). gradio's own `delete_cache` removed nothing here."""
    cutoff = time.time() - max_age_s
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):  # gone already, or in use: next round
                if path not in keep and os.lstat(path).st_mtime < cutoff:
                    os.remove(path)
        if Path(folder) not in (root, root / "gradio", root / "requests"):
            with contextlib.suppress(OSError):  # not empty: fine
                if os.stat(folder).st_mtime < cutoff:
                    os.rmdir(folder)


def sweep_forever(root: Path, every_s: float, max_age_s: float, ui: gr.Blocks) -> None:
    """The sweeper thread: `sweep` every `every_s` seconds, whether requests come or not."""
    while True:
        time.sleep(every_s)
        keep = {str(p) for b in ui.blocks.values() for p in getattr(b, "keep_in_cache", ())}
        try:
            sweep(root, max_age_s, keep)
        except Exception:  # noqa: BLE001 (a failed sweep must not end the sweeper)
            log.exception("sweeping %s failed", root)


def image(fig, counted: bool = False) -> np.ndarray:
    """The figure as RGB; the bar axis says how its numbers relate to the bars users count
    (`counted`: the file's own bars, each number at the bar's start; else bar lines from 0)."""
    for ax in fig.axes:
        if ax.get_xlabel():
            ax.set_xlabel("bar (its number at its start)" if counted else "bar lines (bar 1 starts at 0)")
    return pianoroll.figure_rgb(fig)


def sound(tokens: np.ndarray, qpm: float) -> tuple[int, np.ndarray]:
    """The melody played at its tempo brought into audio.PLAYBACK_QPM (a file at 3.58 qpm would
    otherwise give 71 minutes of audio for 64 bars)."""
    sr, a = audio.render(tokens, qpm=audio.playback_qpm(qpm))
    return sr, audio.to_int16(a)


def threaded(work, updates: queue.Queue, stop: threading.Event, show, limit_s: float,
             every: Callable[[], float] = lambda: UPDATE_EVERY_S):
    """Run `work()` in a thread while yielding `show(u)` for what it puts on `updates` (only the
    newest, at most one every `every()` seconds); `work` must end soon after `stop` is set. `stop` is set when
    the request is cancelled (gradio closes this generator) or after `limit_s` seconds, which
    becomes a message. Returns what `work` returned; raises what it raised."""
    out: dict = {}

    def run():
        try:
            out["result"] = work()
        except BaseException as e:  # noqa: BLE001 (handed to the request's thread)
            out["error"] = e
        finally:
            updates.put(None)

    timed_out = threading.Event()

    def time_up() -> None:
        timed_out.set()
        stop.set()

    timer = threading.Timer(limit_s, time_up)
    worker = threading.Thread(target=run, name="symdiff-model", daemon=True)
    timer.start()
    worker.start()
    try:
        shown = 0.0
        while (u := updates.get()) is not None:
            # at most one update every `every()` seconds, the newest (each costs gradio a message)
            while (left := shown + every() - time.perf_counter()) > 0 or not updates.empty():
                try:
                    nxt = updates.get(timeout=max(left, 0.0))
                except queue.Empty:
                    break
                if nxt is None:
                    updates.put(None)
                    break
                u = nxt
            yield show(u)
            shown = time.perf_counter()
    finally:
        stop.set()  # a cancelled request stops the chain at its next step
        timer.cancel()
    worker.join()
    if isinstance(out.get("error"), demo.Cancelled) and timed_out.is_set():  # (else Stop: the caller says so)
        raise _UserError(f"Stopped: this took longer than the app's limit of {limit_s:.0f} s per request. "
                         "Try fewer diffusion steps.")
    if "error" in out:
        raise out["error"]
    return out["result"]


class ModelThread:
    """Every model run of the app (the Generate batches, infills, variations, the example) on one
    long-lived thread, one run at a time, each on the cores idle when it starts
    (`precision.choose_threads`). Why one thread: each thread that once ran a team of OpenMP
    threads keeps it parked, and once a process holds more such threads than cores, libgomp
    stops spinning and the threads of a run wait on each other far longer. Runs on fresh threads
    with two cores each sampled a lone Generate in 4.3 s, one thread a run 2.8 s, this 2.0 s (AMX
    Xeon, 2 idle cores). Between runs the process' default is one thread, so gradio's threads
    (decoding, drawing) never start teams of their own."""

    def __init__(self, most: int | None = None):
        self.most = most  # torch threads per run at most (None: the threads torch started with)
        self._jobs: queue.Queue[tuple[Callable, dict, threading.Event]] = queue.Queue()
        threading.Thread(target=self._serve, name="symdiff-model", daemon=True).start()

    def on_free_cores(self, work: Callable) -> Callable:
        """`work` as a call that runs it on the model thread when its turn comes and returns
        what it returned (or raises what it raised)."""
        def run():
            out: dict = {}
            done = threading.Event()
            self._jobs.put((work, out, done))
            done.wait()
            if "error" in out:
                raise out["error"]
            return out["result"]
        return run

    def _serve(self) -> None:
        while True:
            work, out, done = self._jobs.get()
            try:
                choose_threads(1, self.most)
                out["result"] = work()
            except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
                out["error"] = e
            finally:
                torch.set_num_threads(1)  # the default for threads that start computing now
                done.set()


class _Job:
    """A Generate waiting in `GenerateBatcher`: its request (callback and progress muted once
    `stop` is set, `_guard`), and what it got."""

    def __init__(self, key: tuple, request: Request, trace: demo.RefinementTrace | None, stop: threading.Event):
        self.key, self.trace, self.stop = key, trace, stop
        progress = None if request.progress is None else Progress(self._guard(request.progress.report))
        self.request = dataclasses.replace(request, callback=self._guard(request.callback), progress=progress)
        self.done = threading.Event()
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.peers: list[_Job] = [self]  # the jobs of its batch, once it is in one

    def _guard(self, f):
        """`f`, doing nothing once `stop` is set and never raising `demo.Cancelled` into the batch
        (the request's own wait says it stopped), unless every request of the batch has stopped:
        then the batch stops at its next step."""
        if f is None:
            return None

        def call(*args):
            if self.stop.is_set():
                if all(j.stop.is_set() for j in self.peers):
                    raise demo.Cancelled()
                return
            with contextlib.suppress(demo.Cancelled):
                f(*args)
        return call


class GenerateBatcher:
    """Concurrent Generates of one shape (bars, sampler, steps) drawn as one
    `MelodyDiffusion.generate_batch`, by one thread, one batch at a time. Why: on a CPU a model
    call on 40 rows costs about 10 times one on 2 (2-core EPYC), so requests queued one after
    another each pay for calls a batch shares; their traces are decoded together too
    (`demo.traced_together`). A request gets the melody it would get alone. Its Stop (or time
    limit) ends its wait at once and mutes its trace and progress; the batch goes on for the
    others."""

    def __init__(self, pipe: MelodyDiffusion, on_free_cores, max_batch: int = MAX_BATCH,
                 wait_s: float = BATCH_WAIT_S):
        self.pipe, self.on_free_cores, self.max_batch, self.wait_s = pipe, on_free_cores, max_batch, wait_s
        self._pending: list[_Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.waiting = 0  # requests submitted and not answered: the app draws less often the more there are

    def draw(self, bars: int, sampler: str, steps: int, request: Request, trace: demo.RefinementTrace | None,
             stop: threading.Event) -> tuple[Result, int]:
        """`request`'s melodies, drawn with whatever else is waiting, `trace` following its first
        melody -> (them, how many requests were drawn together); raises `demo.Cancelled` when
        `stop` is set first, and what the pipeline raised for it."""
        job = _Job((bars, sampler, steps), request, trace, stop)
        with self._cond:
            self._pending.append(job)
            self.waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="symdiff-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            while not job.done.wait(0.1):
                if stop.is_set():
                    raise demo.Cancelled()
        finally:
            with self._cond:
                self.waiting -= 1
                if job in self._pending:
                    self._pending.remove(job)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result, len(job.peers)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            time.sleep(self.wait_s)  # let the requests sent together arrive
            with self._cond:
                if not self._pending:
                    continue
                key = self._pending[0].key
                batch = [j for j in self._pending if j.key == key and not j.stop.is_set()][: self.max_batch]
                self._pending = [j for j in self._pending if j not in batch and not j.stop.is_set()]
                for j in batch:
                    j.peers = batch
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        bars, sampler, steps = batch[0].key
        t0 = time.perf_counter()
        try:
            traces = demo.traced_together(self.pipe, [j.trace for j in batch], [j.request.num for j in batch])
            results = self.on_free_cores(lambda: self.pipe.generate_batch([j.request for j in batch], bars, sampler,
                                                                          steps, callback=traces))()
        except SymdiffError as e:
            if len(batch) > 1:  # whose request it was: each alone says
                for j in batch:
                    self._run([j])
                return
            batch[0].error = e
            batch[0].done.set()
            return
        except Exception as e:  # noqa: BLE001 (handed to each request's thread, which reports it)
            for j in batch:
                j.error = e
                j.done.set()
            return
        log.info("drew %d Generate requests together in %.1f s", len(batch), time.perf_counter() - t0)
        for j, r in zip(batch, results, strict=True):
            j.result = r
            j.done.set()


METRIC_COLORS = {"pitch consistency": "#1f4e8c", "pitch variance": "#7fb2e5", "duration consistency": "#b45309",
                 "duration variance": "#f6b26b", demo.SETTLED: "#6b21a8"}


def legend(names) -> str:
    """An HTML legend (gradio's LinePlot draws none when it starts empty), its names on as many lines
    as the column needs (on a phone the third ran off the edge)."""
    return ('<div style="display:flex;flex-wrap:wrap;column-gap:1.2em">'
            + "".join(f'<span style="white-space:nowrap"><span style="color:{METRIC_COLORS[n]};font-size:1.3em">'
                      f'&#9644;</span> {n}</span>' for n in names) + "</div>")


def metric_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    """Long-format metric rows with numeric step/value columns (an untyped empty frame would
    make the plot's axes categorical)."""
    df = pd.DataFrame(rows or [], columns=["step", "metric", "value"])
    return df.astype({"step": "int64", "metric": "object", "value": "float64"})


def roll_image(label: str, **kwargs) -> gr.Image:
    """A piano roll output (the figure carries its own title, so no label badge over it)."""
    return gr.Image(label=label, show_label=False, type="numpy", format="png", interactive=False,
                    buttons=["download", "fullscreen"], elem_classes=["roll"], **kwargs)


# On a phone a figure is drawn for the page's width (`SymdiffApp.width`) and shown 1:1, the full
# width of its column, so its labels keep their size; the image's buttons (full screen, download),
# which covered the music, are hidden.
CSS = """
@media (max-width: 640px) {
  .roll .icon-button-wrapper { display: none !important; }
  .roll .image-container > button, .roll .image-frame { width: 100% !important; }
  .roll img { width: 100% !important; max-width: none !important; height: auto !important;
              object-fit: contain !important; }
}
"""


def upload_path(midi_file) -> str | None:
    """The path gradio gives for a gr.File value (a str, or a dict from some clients)."""
    if midi_file is None:
        return None
    if isinstance(midi_file, dict):
        return midi_file.get("path")
    return str(midi_file)


def parse_track(track) -> int | None:
    """Dropdown value -> candidate index (None = the most melodic); accepts 'auto', 3, '3' or
    '3: Piano ...'."""
    if track is None or str(track).strip().lower() in ("", "auto"):
        return None
    head = str(track).split(":", 1)[0].strip()
    try:
        return int(float(head))
    except ValueError:
        raise _UserError(f"track must be 'auto' or a track number, got {track!r}") from None


class SymdiffApp:
    """The model, the reference statistics and the handlers of every action."""

    def __init__(self, pipe: MelodyDiffusion, reference: demo.Reference, time_limit_s: float = TIME_LIMIT_S):
        self.pipe, self.reference, self.time_limit_s = pipe, reference, time_limit_s
        self.examples = demo.list_examples()
        self.cores = ModelThread()
        self._stops: dict[str, threading.Event] = {}  # each browser session's latest run, for Stop
        self._widths: dict[str, int] = {}  # each browser session's figure width (`set_width`)
        self.example: dict = {}  # what the Generate tab shows before a run (`example_run`), once drawn
        self.example_ready = threading.Event()  # set when `example` is drawn (or failed: then it stays {})
        self.batcher = GenerateBatcher(pipe, self.cores.on_free_cores)  # concurrent Generates share model calls

    # --- generate ---------------------------------------------------------------------------

    @staticmethod
    def _plots(trace: demo.RefinementTrace, steps: int):
        cv = metric_frame(trace.rows())
        cv = cv[cv.metric != demo.LATENT_METRIC]
        settled = metric_frame(trace.settled_rows())
        # (x_lim and color_map are repeated: gradio's LinePlot loses them on some updates; an empty
        # frame is sent as None: after an empty frame the plot draws no lines any more)
        return (gr.LinePlot(value=cv if len(cv) else None, x_lim=[0, steps], color_map=METRIC_COLORS),
                gr.LinePlot(value=settled if len(settled) else None, x_lim=[0, steps], color_map=METRIC_COLORS))

    def _live(self, p: demo.TracePoint, title: str, width: int) -> np.ndarray:
        """The run at a trace point: its noisy latents over the model's guess of the finished melody."""
        return image(pianoroll.plot_latent_rolls(
            [(f"step {p.step} of {p.total}: the noisy latents (top, one column per 2 bars) and the model's guess "
              "of the finished melody (bottom)", demo.shown_latents(self.pipe, p.latents), p.tokens)],
            title=title, width_px=width, panel_height_px=300))

    @staticmethod
    def _stages(trace: demo.RefinementTrace, width: int) -> np.ndarray:
        """The refinement stages side by side, or one under another on a phone."""
        return image(pianoroll.plot_stages(trace.stage_tokens, ncols=2 if width >= WIDTH_PX else 1, width_px=width))

    def set_width(self, page_px, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """Remember the width of this session's page (CSS px, sent by the browser on load)."""
        if request is not None and request.session_hash and isinstance(page_px, (int, float)) and page_px > 0:
            self._widths.pop(request.session_hash, None)
            self._widths[request.session_hash] = int(page_px)
            while len(self._widths) > MAX_SESSIONS:
                self._widths.pop(next(iter(self._widths)))

    def width(self, request: gr.Request | None) -> int:
        """The width to draw this session's figures at: WIDTH_PX on a laptop (shown scaled to the
        column); on a phone the page's own width less its margins, so a figure shows 1:1 and its
        labels keep their size (a 1000 px figure on a 390 px phone has 3-4 px labels)."""
        page = self._widths.get(request.session_hash or "", WIDTH_PX) if request is not None else WIDTH_PX
        return WIDTH_PX if page >= PHONE_PX else max(MIN_WIDTH_PX, page - PAGE_MARGIN_PX)

    def _session_stop(self, request: gr.Request | None) -> threading.Event:
        """A fresh stop signal for this browser session's run (`stop` sets it)."""
        stop = threading.Event()
        if request is not None and request.session_hash:
            self._stops = {k: v for k, v in self._stops.items() if not v.is_set()}  # runs that ended set theirs
            self._stops[request.session_hash] = stop
        return stop

    def stop(self, request: gr.Request):
        """Stop this session's run at its next step (the run then says where it stopped)."""
        if request is not None and request.session_hash in self._stops:
            self._stops[request.session_hash].set()

    @staticmethod
    def _style(style) -> str | None:
        """The dropdown's style -> the pipeline's (None: heard in the piece; the pipeline refuses
        one it lacks)."""
        return None if style in (None, "", PIECE_STYLE) else str(style)

    @user_errors
    def generate(self, bars, sampler, steps, seed, style=ANY_STYLE, context=CONTEXT_GUIDANCE,
                 request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        style = None if style == ANY_STYLE else self._style(style)  # a new melody has no piece to hear
        bars = whole("bars", bars, 1, MAX_BARS)
        steps = whole("steps", steps, 1, MAX_STEPS)
        seed = whole("seed", seed, 0, MAX_SEED)
        context = float(context)
        width = self.width(request)
        first_draw = self.pipe.sampler(sampler, steps).num_steps  # the one check of sampler settings
        t0 = time.perf_counter()
        stop, points = self._session_stop(request), queue.Queue[demo.TracePoint | tuple[int, int, str]]()
        trace = demo.RefinementTrace(self.pipe, self.reference, bars, points=min(steps, 16), stages=4,
                                     on_point=points.put, stop=stop)

        def report(done: int, total: int, stage: str) -> None:
            """The stages after the first draw (the floor's redraws, a long melody's continuations),
            which the trace does not follow, in the status."""
            if stop.is_set():
                raise demo.Cancelled()
            if done > first_draw:
                points.put((done, total, stage))

        drawn = [0.0]  # when the live picture was last drawn

        def show(u: demo.TracePoint | tuple[int, int, str]):
            if isinstance(u, tuple):
                return (f"Sampling: {u[2]}, pass {u[0]} of {u[1]} ...", *(gr.skip(),) * 6)
            live = gr.skip()
            # a picture costs the model's core 0.2 s: the more requests wait on it, the rarer
            if time.perf_counter() - drawn[0] >= LIVE_EVERY_S * max(1, self.batcher.waiting):
                live, drawn[0] = self._live(u, title, width), time.perf_counter()
            return (f"Sampling: step {u.step} of {u.total} ...", *self._plots(trace, steps), live,
                    gr.skip(), gr.skip(), gr.skip())

        title = (f"{bars} bars{f' ({style})' if style else ''}, {sampler.upper()} {steps} steps, "
                 f"context guidance {context:g}, seed {seed}")
        longer = f" (the first {self.pipe.seq_len * 2}, then 32 at a time)" if bars > self.pipe.seq_len * 2 else ""
        yield (f"Sampling {bars} bars{longer} with {sampler.upper()}, {steps} steps ...", *self._plots(trace, steps),
               gr.skip(), None, None, None)
        try:
            wanted = Request(1, seed, style, context_guidance=context, progress=Progress(report))
            result, together = yield from threaded(lambda: self.batcher.draw(bars, sampler, steps, wanted, trace, stop),
                                                   points, stop, show, self.time_limit_s,
                                                   lambda: UPDATE_EVERY_S * max(1, self.batcher.waiting))
        except demo.Cancelled:  # Stop was pressed: say where, and show what there is
            if not trace.trace:
                yield "Stopped before the first step.", *self._plots(trace, steps), gr.skip(), None, None, None
                return
            last = trace.trace[-1]
            stages = self._stages(trace, width)
            yield (f"**Stopped** at step {trace.reached} of {last.total}. Above: the partial result, the model's "
                   f"guess of the finished melody at step {last.step} (not repaired, no MIDI file).",
                   *self._plots(trace, steps), self._live(last, f"Stopped at step {last.step}: " + title, width),
                   stages, sound(last.tokens, melody.DEFAULT_QPM), None)
            return
        tokens = result.tokens[0]
        sampled = time.perf_counter() - t0
        roll = image(pianoroll.plot_latent_rolls(
            [("the finished latents (top, one column per 2 bars) and the melody they decode to (bottom)",
              demo.shown_latents(self.pipe, result.latents[0]), tokens)],
            title=title, width_px=width, panel_height_px=300))
        stages = self._stages(trace, width)
        wav = sound(tokens, melody.DEFAULT_QPM)
        midi_path = request_dir() / f"symdiff_{bars}bars_seed{seed}.mid"
        melody.tokens_to_midi(tokens, midi_path, melody.DEFAULT_QPM)  # atomic, like every write
        notes = int(melody.is_onset(tokens).sum())
        shared = f", drawn together with {together - 1} other request{'s' * (together > 2)}" if together > 1 else ""
        yield (f"Done in {time.perf_counter() - t0:.1f} s (sampling {sampled:.1f} s{shared}): {bars} bars"
               f"{f' of {style}' if style else ''}, {notes} notes.", *self._plots(trace, steps), roll, stages, wav,
               str(midi_path))

    def draw_example(self) -> None:
        """`example_run` into `example`, in a thread beside the server's start: the page answers
        at once and shows the example when it is drawn (`shown_example`); it is also the warm-up."""
        def draw():
            try:
                self.example = self.example_run()
            except Exception:  # the app works without its example
                log.exception("the Generate tab's example could not be drawn")
            finally:
                self.example_ready.set()

        threading.Thread(target=self.cores.on_free_cores(draw), name="symdiff-example", daemon=True).start()

    def shown_example(self, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """What a page shows in Generate when it opens: the example once it is drawn (drawn again
        for a phone's width)."""
        self.example_ready.wait(EXAMPLE_WAIT_S)
        e, width = self.example, self.width(request)
        roll, stages = e.get("roll"), e.get("stages")
        if e and width != WIDTH_PX:
            roll, stages = self._example_roll(e["tokens"], e["title"], width), self._stages(e["trace"], width)
        return (e.get("status", "Press **Generate**."), e.get("cv"), e.get("settled"), roll, stages, e.get("wav"),
                e.get("midi"))

    @staticmethod
    def _example_roll(tokens: np.ndarray, title: str, width: int) -> np.ndarray:
        return image(pianoroll.plot_pianoroll(tokens, title=title, width_px=width, height_px=260))

    def example_run(self, bars: int = EXAMPLE_BARS, seed: int = 0) -> dict:
        """A Generate run at the tab's settings, shown before any click so the page is never empty."""
        trace = demo.RefinementTrace(self.pipe, self.reference, bars, points=16, stages=4)
        res = self.pipe.generate(1, bars, DEFAULT_SAMPLER, GENERATE_STEPS, seed, callback=trace)
        tokens = res.tokens[0]
        cv = metric_frame(trace.rows())
        midi_path = request_dir() / f"symdiff_example_{bars}bars_seed{seed}.mid"  # gradio keeps its copy
        melody.tokens_to_midi(tokens, midi_path, melody.DEFAULT_QPM)
        return {"midi": str(midi_path),
                "status": f"An example: {bars} bars the model wrote ({DEFAULT_SAMPLER.upper()} {GENERATE_STEPS} steps, "
                          f"seed {seed}). Press **Generate** for your own.",
                "tokens": tokens, "trace": trace, "title": f"Example: {bars} bars, seed {seed}",
                "roll": self._example_roll(tokens, f"Example: {bars} bars, seed {seed}", WIDTH_PX),
                "stages": self._stages(trace, WIDTH_PX),
                "wav": sound(tokens, melody.DEFAULT_QPM), "cv": cv[cv.metric != demo.LATENT_METRIC],
                "settled": metric_frame(trace.settled_rows())}

    # --- infill -----------------------------------------------------------------------------

    @staticmethod
    def _path(midi_file) -> str:
        path = upload_path(midi_file)
        if not path:
            raise _UserError("Upload a MIDI file first (or pick one of the examples).")
        return path

    def _load(self, midi_file, track=None):
        return demo.load_melody(self._path(midi_file), parse_track(track), max_bytes=MAX_UPLOAD_BYTES)

    @staticmethod
    def _range_text(found: melody.MidiMelodies, first: int, last: int) -> str:
        return (f"Bars **{first}-{last}** (the dashed red box) will be regenerated; the file has "
                f"{found.bars.describe()}. Every other bar stays yours.")

    @user_errors
    def load_midi(self, midi_file, whole: bool = False, request: gr.Request = None):  # type: ignore[assignment]
        """A new file: its tracks, the bar sliders fitted to the default melody (with `whole`, all
        of it up to one window: the Vary tab), and a preview."""
        if upload_path(midi_file) is None:
            return (gr.Dropdown(choices=[("auto: the most melodic track", "auto")], value="auto"), 1, 1,
                    None, "Upload a MIDI file or pick an example.", None)
        choices, first, last, img, text, geo = self._file_view(midi_file, whole, self.width(request))
        return gr.Dropdown(choices=choices, value="auto"), first, last, img, text, geo

    def _file_view(self, midi_file, whole: bool, width: int = WIDTH_PX):
        """A file's track choices, default range and its preview -> (choices, first, last, image,
        range text, geometry)."""
        found, cand = self._load(midi_file)
        auto = "auto: the most melodic track" if not cand.chordal else \
            f"auto: track {cand.index}, in chords (this file has no single-line melody)"
        choices = [(auto, "auto")] + [(demo.track_label(found, c), str(c.index)) for c in found.candidates]
        first, last = demo.whole_range(found.bars, self.pipe.seq_len) if whole else demo.default_range(found.bars)
        return choices, first, last, *self._preview(found, cand, first, last, width)

    def opening(self, whole: bool = False) -> dict:
        """What the Infill (or, `whole`, the Vary) tab shows before any click: an example file
        loaded, its default range picked and previewed, so the tab opens on music, not on empty boxes."""
        names = {p.name: p for p in self.examples}
        path = names.get(OPENING_EXAMPLE) or next(iter(names.values()), None)
        if path is None:
            return {}
        choices, first, last, preview, text, geo = self._file_view(str(path), whole)
        return {"file": str(path), "choices": choices, "first": first, "last": last, "preview": preview,
                "range": text, "geo": geo}

    def _view(self, found: melody.MidiMelodies, plan, tokens: np.ndarray):
        """What a picture shows: the model's window around the range (a long song is not drawn
        whole) -> (steps, box in model bars, barlines)."""
        v0, v1 = plan.window_steps[0], min(plan.window_steps[1], len(tokens))
        box = tuple((s - v0) / melody.STEPS_PER_BAR for s in plan.steps)
        return slice(v0, v1), box, demo.barlines(found.bars, v0, v1)

    def _preview(self, found: melody.MidiMelodies, cand: melody.Candidate, first: int, last: int, width: int):
        plan, tokens = demo.plan_bars(found, cand, first, last, self.pipe.seq_len)
        crop, box, lines = self._view(found, plan, tokens)
        shown = f"bars {found.bars.number_at(crop.start)}-{found.bars.number_at(crop.stop - 1)}"
        fig = pianoroll.plot_pianoroll(tokens[crop], box_bars=box, width_px=width, height_px=240, barlines=lines,
                                       title=f"Track {cand.index}, {shown} of {found.bars.describe()}. Click the "
                                             "roll to pick the first and then the last bar.")
        pos = fig.axes[0].get_position()
        geo = {"x0": pos.x0, "x1": pos.x1, "width": width, "steps": crop.stop - crop.start, "starts": lines[0],
               "numbers": lines[1]}
        return image(fig, counted=True), self._range_text(found, first, last), geo

    @user_errors
    def preview(self, midi_file, track, first_bar, last_bar, request: gr.Request = None):  # type: ignore[assignment]
        """The preview of a range; a range that cannot be regenerated is said at the range field
        (the picture keeps the last good range)."""
        found, cand = self._load(midi_file, track)
        try:
            first = whole("first bar", first_bar, 0, melody.BAR_MAP_STEPS)
            last = whole("last bar", last_bar, 0, melody.BAR_MAP_STEPS)
            return self._preview(found, cand, first, last, self.width(request))
        except SymdiffError as e:
            return gr.skip(), f"**This range cannot be regenerated:** {e}.", gr.skip()

    def phone_preview(self, midi_file, track, first_bar, last_bar,
                      request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """The opening preview drawn again for a phone's width (a laptop keeps the one drawn at start)."""
        if self.width(request) == WIDTH_PX:
            return gr.skip(), gr.skip(), gr.skip()
        return self.preview(midi_file, track, first_bar, last_bar, request)

    @user_errors
    def pick_bar(self, geo, first_bar, last_bar, clicks, evt: gr.SelectData):
        """A click on the preview: the first click sets the first bar, the next the last bar."""
        if not geo or evt is None or not isinstance(evt.index, (list, tuple)):
            return gr.skip(), gr.skip(), gr.skip()
        x = float(evt.index[0]) / geo.get("width", WIDTH_PX)
        frac = (x - geo["x0"]) / max(1e-9, geo["x1"] - geo["x0"])
        step = min(max(frac, 0.0), 0.999999) * geo["steps"]
        bar = int(geo["numbers"][max(0, int(np.searchsorted(geo["starts"], step, side="right")) - 1)])
        clicks = int(clicks or 0) + 1
        if clicks % 2:
            return bar, max(bar, int(last_bar or bar)), clicks
        first = int(first_bar or bar)
        return min(first, bar), max(first, bar), clicks

    @user_errors
    def infill(self, midi_file, track, first_bar, last_bar, sampler, steps, seed, style=PIECE_STYLE,
               density=DENSITY_REPLACED, notes_per_bar=4.0,
               request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        style = self._style(style)
        if density not in DENSITY_LABELS:
            raise _UserError(f"unknown note rate {density!r}; choose from {', '.join(DENSITY_LABELS)}")
        rate: str | float | None = DENSITY_LABELS[density]
        if rate is None:
            rate = float(notes_per_bar) if isinstance(notes_per_bar, (int, float)) else math.nan
            if not 0 < rate <= melody.STEPS_PER_BAR:
                raise _UserError(f"notes per bar must be above 0 and at most {melody.STEPS_PER_BAR}, "
                                 f"got {notes_per_bar}")
        steps = whole("steps", steps, 1, MAX_STEPS)
        seed = whole("seed", seed, 0, MAX_SEED)
        self.pipe.sampler(sampler, steps)  # the one check of sampler settings
        found, cand = self._load(midi_file, track)
        t0 = time.perf_counter()
        plan, tokens = demo.plan_bars(found, cand, first_bar, last_bar, self.pipe.seq_len)
        first, last = int(first_bar), int(last_bar)
        stop, ticks = self._session_stop(request), queue.Queue[tuple[int, int, str]]()
        reached = [0, steps]

        def report(done: int, total: int, stage: str) -> None:
            if stop.is_set():
                raise demo.Cancelled()
            reached[:] = [done, total]
            ticks.put((done, total, stage))

        chords = (f" Track {cand.index} plays chords: its top line is rewritten and the notes under it are kept "
                  "(pick another track above for a single line)." if cand.chordal else "")
        yield f"Infilling bars {first}-{last} ...{chords}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            res = yield from threaded(
                self.cores.on_free_cores(lambda: self.pipe.infill(
                    tokens, plan.steps, sampler, steps, seed, density=rate, keys=found.keys,
                    pickup=found.bars.onset_pickup, style=style, progress=Progress(report))), ticks, stop,
                lambda t: (f"Infilling: {t[2]}, step {t[0]} of {t[1]} ...", gr.skip(), gr.skip(), gr.skip(),
                           gr.skip()),
                self.time_limit_s)
        except demo.Cancelled:  # Stop was pressed
            yield (f"**Stopped** at step {reached[0]} of {reached[1]}: your file is unchanged (an infill stopped "
                   "halfway has no bars to give).", gr.skip(), gr.skip(), gr.skip(), gr.skip())
            return
        result = res.tokens[0]
        base = demo.baseline_infills(self.pipe, tokens, plan, seed)
        crop, box, lines = self._view(found, plan, tokens)  # the model's window, not a whole long song
        rows = [("original", tokens[crop]), ("diffusion", result[crop])]
        if (between := base["interpolation"]) is not None:
            rows.append(("interpolation", between[crop]))
        if (prior := base["prior"]) is not None:
            rows.append(("prior", prior[crop]))
        shown = f"bars {found.bars.number_at(crop.start)}-{found.bars.number_at(crop.stop - 1)}"
        fig = pianoroll.plot_rows(rows, box_bars=box, width_px=self.width(request), row_height_px=130, barlines=lines,
                                  title=f"Bars {first}-{last} infilled ({shown} of {found.bars.describe()})")
        qpm = found.qpm
        out = request_dir() / f"infilled_bars{first}-{last}_seed{seed}.mid"
        remarks = write_arrangement(self._path(midi_file), cand, result, plan.steps, out)  # atomic
        heard = " (heard in your piece)" if style is None and self.pipe.styles else ""
        text = (f"Done in {time.perf_counter() - t0:.1f} s. Track {cand.index}, bars {first}-{last} "
                f"regenerated by diffusion ({sampler.upper()}, {steps} steps, {res.style} style{heard}); the rows "
                "below show the same "
                "bars filled by interpolation between the neighbouring latents and by random latents from "
                "the VAE prior. The MIDI file is your whole arrangement with only these bars of this track new.")
        text += "".join(f" Note: {r}." for r in res.remarks + remarks)
        if audio.playback_qpm(qpm) != qpm:
            text += f" The audio plays at {audio.playback_qpm(qpm):.0f} qpm (the file's {qpm:.1f} qpm is outside " \
                    f"{audio.PLAYBACK_QPM[0]:.0f}-{audio.PLAYBACK_QPM[1]:.0f})."
        yield (text, image(fig, counted=True), sound(tokens[crop], qpm), sound(result[crop], qpm), str(out))

    # --- vary -------------------------------------------------------------------------------

    @user_errors
    def vary(self, midi_file, track, first_bar, last_bar, strength, num, sampler, steps, seed,
             request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """Variations of the chosen bars: the status, the rows (original and each variation), the
        original's audio, then audio and MIDI of each of MAX_VARIATIONS slots (None past `num`)."""
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise _UserError(f"the strength must be a number, got {strength!r}") from None
        if not 0.0 < strength <= 1.0:
            raise _UserError(f"the strength must be above 0 and at most 1, got {strength:g}")
        num = whole("variations", num, 1, MAX_VARIATIONS)
        steps = whole("steps", steps, 1, MAX_STEPS)
        seed = whole("seed", seed, 0, MAX_SEED)
        self.pipe.sampler(sampler, steps)  # the one check of sampler settings
        found, cand = self._load(midi_file, track)
        t0 = time.perf_counter()
        plan, tokens = demo.plan_bars(found, cand, first_bar, last_bar, self.pipe.seq_len)
        first, last = int(first_bar), int(last_bar)
        stop, ticks = self._session_stop(request), queue.Queue[tuple[int, int, str]]()
        slots = [gr.skip()] * (2 * MAX_VARIATIONS)
        reached = [0, steps]

        def report(done: int, total: int, stage: str) -> None:
            if stop.is_set():
                raise demo.Cancelled()
            reached[:] = [done, total]
            ticks.put((done, total, stage))

        yield f"Varying bars {first}-{last} at strength {strength:g} ...", gr.skip(), gr.skip(), *slots
        try:
            res = yield from threaded(
                self.cores.on_free_cores(lambda: self.pipe.vary(
                    tokens, strength, plan.steps, num, sampler, steps, seed, keys=found.keys,
                    pickup=found.bars.onset_pickup, progress=Progress(report))), ticks, stop,
                lambda t: (f"Varying: {t[2]}, step {t[0]} of {t[1]} ...", gr.skip(), gr.skip(), *slots),
                self.time_limit_s)
        except demo.Cancelled:  # Stop was pressed
            yield (f"**Stopped** at step {reached[0]} of {reached[1]}: no variations written (a chain stopped "
                   "halfway has no bars to give).", gr.skip(), gr.skip(), *slots)
            return
        crop, box, lines = self._view(found, plan, tokens)
        span = slice(*plan.steps)
        close = [melody.agreement(out[span], tokens[span]) for out in res.tokens]
        rows = [("original", tokens[crop])] + [(f"variation {i + 1} ({c:.0%} as the original)", out[crop])
                                               for i, (out, c) in enumerate(zip(res.tokens, close, strict=True))]
        shown = f"bars {found.bars.number_at(crop.start)}-{found.bars.number_at(crop.stop - 1)}"
        fig = pianoroll.plot_rows(rows, box_bars=box, width_px=self.width(request), row_height_px=110, barlines=lines,
                                  share_pitch=True, title=f"Bars {first}-{last} varied at strength {strength:g} "
                                                          f"({shown} of {found.bars.describe()})")
        qpm, folder, remarks = found.qpm, request_dir(), list(res.remarks)
        outputs: list[Any] = []
        for i in range(MAX_VARIATIONS):
            if i < num:
                path = folder / f"variation{i + 1}_bars{first}-{last}_strength{strength:g}_seed{seed}.mid"
                remarks += [r for r in write_arrangement(self._path(midi_file), cand, res.tokens[i], plan.steps,
                                                         path) if r not in remarks]  # atomic
                outputs += [sound(res.tokens[i][crop], qpm), str(path)]
            else:
                outputs += [None, None]
        heard = " (heard in your piece)" if self.pipe.styles else ""
        text = (f"Done in {time.perf_counter() - t0:.1f} s. Track {cand.index}, bars {first}-{last}: {num} "
                f"variation{'s' * (num > 1)} at strength {strength:g} ({sampler.upper()}, {steps} steps, {res.style} "
                f"style{heard}); of their 16th notes {', '.join(f'{c:.0%}' for c in close)} sound the original's "
                "pitch. Each MIDI file is your whole arrangement with only these bars of this track new.")
        text += "".join(f" Note: {r}." for r in remarks)
        yield (text, image(fig, counted=True), sound(tokens[crop], qpm), *outputs)

    # --- learn ------------------------------------------------------------------------------

    def _learn_tokens(self, example):
        names = {p.name: p for p in self.examples}
        if example not in names:
            raise _UserError(f"unknown example {example!r}; choose from {', '.join(names)}")
        _, cand = demo.load_melody(names[example])
        return demo.learn_melody(cand.tokens)

    def _panels(self, panels, width: int, ncols: int = 1, title: str | None = None, pitches=None):
        """(label, latents, tokens) panels drawn as latents over their melody (`pianoroll.plot_latent_rolls`),
        one under another on a phone."""
        shown = [(label, demo.shown_latents(self.pipe, x), t) for label, x, t in panels]
        ncols = ncols if width >= WIDTH_PX else 1
        return image(pianoroll.plot_latent_rolls(shown, ncols=ncols, title=title, pitches=pitches, width_px=width,
                                                 panel_height_px=230 if ncols == 1 else 200))

    @user_errors
    def learn_noise(self, example, t, seed, request: gr.Request = None):  # type: ignore[assignment]
        n = self.pipe.schedule.num_steps
        t = whole("noise step", t, 0, n)
        seed = whole("seed", seed, 0, MAX_SEED)
        tokens = self._learn_tokens(example)
        noisy, x_t = demo.forward_noise(self.pipe, tokens, t, seed)
        clean = self.pipe.codec.encode(tokens)
        kept, vae = demo.agreement(noisy, tokens), demo.agreement(demo.reconstruction(self.pipe, tokens), tokens)
        pitches = pianoroll.shared_pitches([tokens, noisy])
        img = self._panels([("the melody and its latents (step 0)", clean, tokens),
                            (f"noised to step {t} of {n}: the latents, and what they decode to ({kept:.0%} of the "
                             "sixteenths as in the melody)", x_t, noisy)], self.width(request), pitches=pitches)
        return img, sound(noisy, melody.DEFAULT_QPM), demo.noise_caption(self.pipe, t, kept, vae)

    def _frame(self, frames, i, tokens, width: int):
        f = frames[i]
        vae = demo.agreement(demo.reconstruction(self.pipe, tokens), tokens)
        pitches = pianoroll.shared_pitches([tokens] + [g.x_t for g in frames])
        panels = [(f"the noisy sample at noise step {f.t}", f.latents, f.x_t)]
        if f.x0 is not None and f.x0_latents is not None:
            panels.append(("the model's guess of the finished melody", f.x0_latents, f.x0))
        return (self._panels(panels, width, pitches=pitches), sound(f.x_t, melody.DEFAULT_QPM),
                demo.reverse_caption(frames, i, tokens, vae))

    def _filmstrip(self, frames, tokens, width: int, count: int = 5):
        """`count` frames of the run, start to end, as latents over their melody."""
        pick = sorted({round(j * (len(frames) - 1) / (count - 1)) for j in range(count)})
        pitches = pianoroll.shared_pitches([tokens] + [frames[j].x_t for j in pick])
        start, end = (demo.agreement(frames[j].x_t, tokens) for j in (0, -1))
        return self._panels([(f"noise step {frames[j].t}", frames[j].latents, frames[j].x_t) for j in pick],
                            width, ncols=len(pick), pitches=pitches,
                            title=f"The reverse run from noise step {frames[0].t}: the latents over what they decode "
                                  f"to; {start:.0%} -> {end:.0%} of the sixteenths as in the melody")

    @user_errors
    def learn_reverse(self, example, start_t, steps, seed, request: gr.Request = None):  # type: ignore[assignment]
        n = self.pipe.schedule.num_steps
        start_t = whole("start step", start_t, 1, n)
        steps = whole("steps", steps, 1, 100)
        seed = whole("seed", seed, 0, MAX_SEED)
        tokens = self._learn_tokens(example)
        frames = demo.reverse_trace(self.pipe, tokens, start_t, min(steps, start_t), seed)
        run, width = {"frames": frames, "tokens": tokens}, self.width(request)
        return (run, gr.Slider(minimum=0, maximum=len(frames) - 1, value=0, step=1),
                self._filmstrip(frames, tokens, width), *self._frame(frames, 0, tokens, width))

    @staticmethod
    def _run(run):
        if not run:
            raise _UserError("Run the reverse process first.")
        return run["frames"], run["tokens"]

    @user_errors
    def learn_step(self, run, i, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        frames, tokens = self._run(run)
        i = whole("step", i, 0, len(frames) - 1)
        return self._frame(frames, i, tokens, self.width(request))

    @user_errors
    def learn_play(self, run, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """The run's frames one after another (the slider follows), about three a second."""
        frames, tokens = self._run(run)
        width = self.width(request)
        for i in range(len(frames)):
            img, _, caption = self._frame(frames, i, tokens, width)
            yield i, img, caption
            if i < len(frames) - 1:
                time.sleep(0.3)

    def measured_curve(self, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """The committed restoration curve (RESTORE_FIGURE) drawn again for a phone's width."""
        width = self.width(request)
        if width == WIDTH_PX or not RESTORE_DATA.is_file():
            return gr.skip()
        return image(demo.restoration_figure(json.loads(RESTORE_DATA.read_text()), width))

    @user_errors
    def learn_curve(self, example, request: gr.Request = None):  # type: ignore[assignment]  # gradio fills it in
        """How much of this melody reverse runs from several start steps bring back (3 seeds each)."""
        tokens = self._learn_tokens(example)
        runs = demo.restoration(self.pipe, tokens, RESTORE_STARTS, seeds=[0, 1, 2])
        noisy = [float(np.mean([r.start for r in runs if r.start_t == t])) for t in RESTORE_STARTS]
        end = [float(np.mean([r.end for r in runs if r.start_t == t])) for t in RESTORE_STARTS]
        vae = demo.agreement(demo.reconstruction(self.pipe, tokens), tokens)
        fig = pianoroll.plot_restoration([(Path(example).stem.split("_")[0], RESTORE_STARTS, noisy, end, vae)],
                                         title=f"{example}: reverse runs (DDIM 20 steps, mean of 3 seeds)",
                                         width_px=self.width(request))
        cells = ", ".join(f"from {t}: {a:.0%} -> {b:.0%}" for t, a, b in zip(RESTORE_STARTS, noisy, end, strict=True))
        return image(fig), (f"Sixteenths as in the melody, noisy start -> end of the run: {cells}. The VAE's own "
                            f"reconstruction keeps {vae:.0%}: a run that found its latents exactly.")


INTRO = """# symdiff: a model that writes melodies by removing noise
**Generate** a new melody, **Infill** bars of your own MIDI file or **Vary** them, or **Learn** how it works.
"""
ABOUT = """**How it works.** A [MusicVAE](https://magenta.tensorflow.org/music-vae) turns every 2 bars of a
melody into a list of numbers (its latents); a transformer diffusion model learnt sequences of 32
of them (64 bars) and writes new ones by removing noise step by step, after Mittal et al.,
*Symbolic Music Generation with Diffusion Models* (ISMIR 2021). Code, model cards and licences:
see the repository's README. Uploads and results stay in a temporary folder, are deleted within
20 minutes and are never kept.
"""


def default_steps(sampler: str, ddpm: int = DEFAULT_STEPS["ddpm"]) -> int:
    """A newly picked sampler's step count (DDPM `ddpm`, the others their library default: DDIM 50, DPM-Solver++ 20)."""
    return ddpm if sampler == "ddpm" else DEFAULT_STEPS.get(sampler, DEFAULT_STEPS[DEFAULT_SAMPLER])


def vary_slots(num) -> list:
    """The Vary tab's audio and MIDI slots shown for `num` variations."""
    shown = [i < int(num) for i in range(MAX_VARIATIONS)]
    return [gr.update(visible=v) for v in shown for _ in range(2)]


def style_dropdown(styles: tuple[str, ...], elem_id: str, heard: bool = False) -> gr.Dropdown:
    """The style picker (shown only for a model trained with style labels); with `heard`, its
    default is the style the rest of the piece is heard in."""
    first = [("from your piece", PIECE_STYLE)] if heard else []
    return gr.Dropdown([*first, ANY_STYLE, *styles], value=first[0][1] if heard else ANY_STYLE, label="Style",
                       visible=bool(styles), elem_id=elem_id,
                       info=("from your piece: the style the model hears in the bars you keep; " if heard else "")
                       + "which of the corpus' styles to write in; any: the model's own mix.")


def file_and_bars(app: SymdiffApp, tab: str, opening: dict) -> tuple[gr.File, gr.Dropdown, gr.Number, gr.Number]:
    """A tab's MIDI file (with the examples), track and bar range, elem_ids `{tab}-file` and so on,
    set to `opening` (`SymdiffApp.opening`). Numbers, not sliders: files of any length; 0 is a pickup bar."""
    file = gr.File(opening.get("file"), label="MIDI file", file_types=[".mid", ".midi"], type="filepath",
                   elem_id=f"{tab}-file")
    if app.examples:
        gr.Examples([[str(p)] for p in app.examples], inputs=[file], label="Examples")
    choices = opening.get("choices", [("auto: the most melodic track", "auto")])
    track = gr.Dropdown(choices, value="auto", label="Track", allow_custom_value=True, elem_id=f"{tab}-track")
    with gr.Row():
        first = gr.Number(opening.get("first", 1), precision=0, minimum=0, label="First bar", elem_id=f"{tab}-first")
        last = gr.Number(opening.get("last", 1), precision=0, minimum=0, label="Last bar", elem_id=f"{tab}-last")
    return file, track, first, last


def range_and_status(tab: str, button: str, verb: str, opening: dict) -> tuple[gr.Markdown, gr.Image, gr.Markdown]:
    """A tab's range text, the preview to pick bars on and the status, set to `opening`
    (`SymdiffApp.opening`); elem_ids `{tab}-range` and so on."""
    text = gr.Markdown(opening.get("range", "Upload a MIDI file or pick an example."), label="Range",
                       elem_id=f"{tab}-range")
    preview = roll_image(f"Your melody: pick the bars to {verb}", elem_id=f"{tab}-preview",
                         value=opening.get("preview"))
    status = gr.Markdown(f"An example is loaded: press **{button}**, {CLEAR_TO_UPLOAD}" if opening else "",
                         label="Status", elem_id=f"{tab}-status")
    return text, preview, status


def build(app: SymdiffApp) -> gr.Blocks:
    n_steps = app.pipe.schedule.num_steps
    example_names = [p.name for p in app.examples]
    with gr.Blocks(title="symdiff: symbolic music diffusion", analytics_enabled=False) as ui:
        gr.Markdown(INTRO)
        with gr.Tabs():
            # --- Generate ---
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        with gr.Row():  # first: above the fold on a laptop and on a phone
                            g_run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                            g_stop = gr.Button("Stop", variant="secondary", elem_id="generate-stop")
                        with gr.Accordion("Settings", open=False, elem_id="generate-settings"):  # the result first
                            g_bars = gr.Slider(1, MAX_BARS, value=DEFAULT_BARS, step=1, label="Bars")
                            g_sampler = gr.Radio(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler",
                                                 info="DDPM (the paper's): 80-200 steps. DPM-Solver++ SDE: 20 "
                                                      "steps, far faster, a little less close to the piece "
                                                      "(docs/sampler.md). DDIM: 50 steps, more rests.")
                            g_steps = gr.Slider(1, MAX_STEPS, value=GENERATE_STEPS, step=1,
                                                label="Diffusion steps", elem_id="generate-steps")
                            g_seed = gr.Number(0, precision=0, label="Seed")
                            g_style = style_dropdown(app.pipe.styles, "generate-style")
                            g_context = gr.Slider(1, 4, value=CONTEXT_GUIDANCE, step=0.5, label="Context guidance",
                                                  info="How closely each 2 bars follow the rest of the melody. "
                                                       "1: the paper's sampler, which drifts in key and register; "
                                                       "higher: tighter, with more repetition.",
                                                  elem_id="generate-context")
                        g_status = gr.Markdown("Drawing an example ...", label="Status", elem_id="generate-status")
                    with gr.Column(scale=3):
                        g_roll = roll_image("Piano roll", elem_id="generate-roll")
                        with gr.Row():
                            g_audio = gr.Audio(label="Listen", type="numpy", interactive=False,
                                               elem_id="generate-audio")
                            g_midi = gr.File(label="MIDI", interactive=False,
                                             elem_id="generate-midi")
                gr.Markdown("**While it samples:** every few steps the model guesses the finished melody (x0). "
                            "Left: that guess measured against real music from the training data, framewise "
                            "*Consistency* and *Variance* of pitch and duration (1 = like the data). Right: how "
                            "much of the guess is already decided, the share of its sixteenths unchanged since "
                            "the last look (100% = nothing changes any more).")
                # (the plots start empty, as None: gradio's LinePlot draws no lines after an update of
                # a plot that started with an empty frame)
                with gr.Row():
                    with gr.Column():
                        gr.HTML(legend(demo.METRIC_NAMES))
                        g_cv = gr.LinePlot(None, x="step", y="value", color="metric", y_lim=[0, 1],
                                           x_lim=[0, GENERATE_STEPS],
                                           color_map=METRIC_COLORS, title="Consistency / Variance of the guess",
                                           x_title="diffusion step", y_title="1 = like the data", height=280,
                                           label="Consistency / Variance", elem_id="generate-cv")
                    with gr.Column():
                        gr.HTML(legend([demo.SETTLED]))
                        g_settled = gr.LinePlot(None, x="step", y="value", color="metric",
                                                y_lim=[0, 1], x_lim=[0, GENERATE_STEPS], color_map=METRIC_COLORS,
                                                title="How much of the melody is decided",
                                                x_title="diffusion step", y_title="share unchanged", height=280,
                                                label="Decided", elem_id="generate-settled")
                gr.Markdown("**Refinement stages:** the x0 estimate, decoded to notes, at a few steps of the run.")
                g_stages = roll_image("Refinement stages", elem_id="generate-stages")
                g_outputs = [g_status, g_cv, g_settled, g_roll, g_stages, g_audio, g_midi]
                g_run.click(app.generate, [g_bars, g_sampler, g_steps, g_seed, g_style, g_context], g_outputs,
                            api_name="generate", concurrency_id="generate", concurrency_limit=QUEUE_SIZE)
                # the page's width first (a phone gets figures drawn for it), then the example
                page_width = gr.Number(visible=False, elem_id="page-width")
                opened = ui.load(None, None, page_width, js="() => document.documentElement.clientWidth",
                                 api_visibility="private", queue=False)
                opened = opened.then(app.set_width, page_width, None, api_visibility="private", queue=False)
                opened.then(app.shown_example, None, g_outputs, api_visibility="private", concurrency_limit=None)
                g_stop.click(app.stop, None, None, api_visibility="private", concurrency_id="light")
                g_sampler.input(functools.partial(default_steps, ddpm=GENERATE_STEPS), g_sampler, g_steps,
                                api_visibility="private")
                g_sampler.input(context_guidance_for, g_sampler, g_context, api_visibility="private")

            # --- Infill ---
            with gr.Tab("Infill", id="infill"):
                opening = app.opening()
                geo = gr.State(opening.get("geo"))  # where the preview's plot area lies, for clicks on it
                clicks = gr.State(0)
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        i_file, i_track, i_first, i_last = file_and_bars(app, "infill", opening)
                        i_sampler = gr.Radio(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler")
                        i_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS[DEFAULT_SAMPLER], step=1,
                                            label="Diffusion steps")
                        i_seed = gr.Number(0, precision=0, label="Seed")
                        i_style = style_dropdown(app.pipe.styles, "infill-style", heard=True)
                        with gr.Row():
                            i_density = gr.Dropdown(list(DENSITY_LABELS), value=DENSITY_REPLACED, label="Note rate",
                                                    elem_id="infill-density")
                            i_rate = gr.Number(4.0, minimum=0.25, maximum=melody.STEPS_PER_BAR, step=0.25,
                                               label="notes per bar", elem_id="infill-rate")
                        with gr.Row():
                            i_run = gr.Button("Infill", variant="primary", elem_id="infill-button")
                            i_stop = gr.Button("Stop", variant="secondary", elem_id="infill-stop")
                    with gr.Column(scale=3):
                        i_range, i_preview, i_status = range_and_status("infill", "Infill", "regenerate", opening)
                        i_rows = roll_image("Original / diffusion / interpolation / prior", elem_id="infill-rows")
                        with gr.Row():
                            i_audio_orig = gr.Audio(label="Original", type="numpy", interactive=False)
                            i_audio_new = gr.Audio(label="Infilled", type="numpy", interactive=False)
                            i_midi = gr.File(label="Infilled MIDI", interactive=False, elem_id="infill-midi")
                i_file.change(app.load_midi, [i_file], [i_track, i_first, i_last, i_preview, i_range, geo],
                              api_name="load_midi", concurrency_id="light")
                preview_args = dict(fn=app.preview, inputs=[i_file, i_track, i_first, i_last],
                                    outputs=[i_preview, i_range, geo], concurrency_id="light")
                i_track.input(api_name="preview", **preview_args)
                i_first.input(api_visibility="private", trigger_mode="always_last", **preview_args)
                i_last.input(api_visibility="private", trigger_mode="always_last", **preview_args)
                i_preview.select(app.pick_bar, [geo, i_first, i_last, clicks], [i_first, i_last, clicks],
                                 api_visibility="private").then(api_visibility="private", **preview_args)
                i_run.click(app.infill,
                                           [i_file, i_track, i_first, i_last, i_sampler, i_steps, i_seed, i_style,
                                            i_density, i_rate],
                                           [i_status, i_rows, i_audio_orig, i_audio_new, i_midi], api_name="infill",
                                           concurrency_id="model")
                i_stop.click(app.stop, None, None, api_visibility="private", concurrency_id="light")
                i_sampler.input(default_steps, i_sampler, i_steps, api_visibility="private")
                opened.then(app.phone_preview, preview_args["inputs"], preview_args["outputs"],
                            api_visibility="private", concurrency_id="light")

            # --- Vary ---
            with gr.Tab("Vary", id="vary"):
                v_opening = app.opening(whole=True)
                v_geo = gr.State(v_opening.get("geo"))
                v_clicks = gr.State(0)
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        v_file, v_track, v_first, v_last = file_and_bars(app, "vary", v_opening)
                        v_strength = gr.Slider(0.05, 1.0, value=VARY_STRENGTH, step=0.05, label="Strength",
                                               elem_id="vary-strength",
                                               info="How far the variations may go: the share of the diffusion's "
                                                    "noise added to your bars before the model takes it away "
                                                    "again. Low: close to yours; 1: new bars.")
                        v_num = gr.Slider(1, MAX_VARIATIONS, value=VARY_NUM, step=1, label="Variations",
                                          elem_id="vary-num")
                        v_sampler = gr.Radio(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler")
                        v_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS[DEFAULT_SAMPLER], step=1,
                                            label="Diffusion steps (a strength of s runs s of them)",
                                            elem_id="vary-steps")
                        v_seed = gr.Number(0, precision=0, label="Seed")
                        with gr.Row():
                            v_run = gr.Button("Vary", variant="primary", elem_id="vary-button")
                            v_stop = gr.Button("Stop", variant="secondary", elem_id="vary-stop")
                    with gr.Column(scale=3):
                        v_range, v_preview, v_status = range_and_status("vary", "Vary", "vary", v_opening)
                        v_rows = roll_image("Original and its variations", elem_id="vary-rows")
                        v_audio_orig = gr.Audio(label="Original", type="numpy", interactive=False)
                        v_slots = []
                        with gr.Row():
                            for i in range(MAX_VARIATIONS):
                                with gr.Column(min_width=160):
                                    v_slots += [gr.Audio(label=f"Variation {i + 1}", type="numpy", interactive=False,
                                                         visible=i < VARY_NUM, elem_id=f"vary-audio-{i + 1}"),
                                                gr.File(label=f"Variation {i + 1} MIDI", interactive=False,
                                                        visible=i < VARY_NUM, elem_id=f"vary-midi-{i + 1}")]
                v_file.change(functools.partial(app.load_midi, whole=True), [v_file],
                              [v_track, v_first, v_last, v_preview, v_range, v_geo], api_name="load_midi_vary",
                              concurrency_id="light")
                v_preview_args = dict(fn=app.preview, inputs=[v_file, v_track, v_first, v_last],
                                      outputs=[v_preview, v_range, v_geo], concurrency_id="light")
                v_track.input(api_visibility="private", **v_preview_args)
                v_first.input(api_visibility="private", trigger_mode="always_last", **v_preview_args)
                v_last.input(api_visibility="private", trigger_mode="always_last", **v_preview_args)
                v_preview.select(app.pick_bar, [v_geo, v_first, v_last, v_clicks], [v_first, v_last, v_clicks],
                                 api_visibility="private").then(api_visibility="private", **v_preview_args)
                v_run.click(app.vary, [v_file, v_track, v_first, v_last, v_strength, v_num, v_sampler, v_steps, v_seed],
                            [v_status, v_rows, v_audio_orig, *v_slots], api_name="vary", concurrency_id="model")
                v_stop.click(app.stop, None, None, api_visibility="private", concurrency_id="light")
                v_sampler.input(default_steps, v_sampler, v_steps, api_visibility="private")
                opened.then(app.phone_preview, v_preview_args["inputs"], v_preview_args["outputs"],
                            api_visibility="private", concurrency_id="light")
                v_num.change(vary_slots, v_num, v_slots, api_visibility="private")

            # --- Learn ---
            with gr.Tab("Learn", id="learn") as learn_tab:
                gr.Markdown("## How a diffusion model makes music\n"
                            "The model never sees notes. A VAE turns every 2 bars of a melody into a list of "
                            f"{app.pipe.codec.dim} numbers, its *latents*, drawn below as a coloured column (blue "
                            "below 0, red above); the diffusion model works on those columns, and the VAE turns "
                            "them back into notes.\n\n"
                            "**1. The forward process** adds noise to the latents, a little at every step, until "
                            "nothing of the melody is left. Move the slider.")
                with gr.Row():
                    # (min widths: on a phone the row wraps, and the name is not cut under the arrow)
                    l_example = gr.Dropdown([(Path(n).stem.replace("_", " "), n) for n in example_names],
                                            value=(example_names[-1] if example_names else None),
                                            label="Melody (its first 16 bars)", scale=2, min_width=300)
                    l_seed = gr.Number(0, precision=0, label="Seed", scale=1, min_width=120)
                l_t = gr.Slider(0, n_steps, value=300, step=10, label="Noise step t")
                l_caption = gr.Markdown(label="Explanation", elem_id="learn-caption")
                l_roll = roll_image("Latents and piano roll", elem_id="learn-noise-roll")
                l_audio = gr.Audio(label="Listen to the noised melody", type="numpy", interactive=False)
                gr.Markdown("**2. The reverse process** is what the model learnt: start from noisy latents and "
                            "remove a little noise at every step. Start at step 1000 for a brand-new melody, or "
                            "lower to let the model restore the melody above from its noised version.")
                with gr.Row():
                    r_start = gr.Slider(1, n_steps, value=n_steps, step=1, label="Start from noise step",
                                        elem_id="learn-start")
                    r_steps = gr.Slider(1, 100, value=20, step=1, label="Steps of the reverse run")
                    r_run = gr.Button("Run the reverse process", variant="primary", elem_id="learn-run")
                run_state = gr.State(None)
                r_film = roll_image("Filmstrip of the reverse run", elem_id="learn-film")
                with gr.Row():
                    r_step = gr.Slider(0, 1, value=0, step=1, label="Step of the reverse run", elem_id="learn-step",
                                       scale=4)
                    r_play = gr.Button("Play", elem_id="learn-play", scale=1)
                r_caption = gr.Markdown(label="Explanation", elem_id="learn-step-caption")
                r_roll = roll_image("Reverse run at this step", elem_id="learn-reverse-roll")
                r_audio = gr.Audio(label="Listen to the sample at this step", type="numpy", interactive=False)
                gr.Markdown("**3. Does the model bring a melody back?** The curve below, for every example "
                            "melody: the share of sixteenths that sound as in the melody, at the noisy start "
                            "(dashed) and at the end of the reverse run (solid), against the step the run starts "
                            "from; dotted: the VAE's own reconstruction, what a run that found the latents exactly "
                            "gives (`eval/restoration.md`).")
                c_run = gr.Button("Measure it for the melody above", elem_id="learn-curve-run")
                c_caption = gr.Markdown(elem_id="learn-curve-caption")
                c_img = roll_image("Restoration curve", elem_id="learn-curve",
                                   value=str(RESTORE_FIGURE) if RESTORE_FIGURE.is_file() else None)
                noise_args = dict(fn=app.learn_noise, inputs=[l_example, l_t, l_seed],
                                  outputs=[l_roll, l_audio, l_caption], concurrency_id="light")
                l_t.input(api_name="learn_noise", trigger_mode="always_last", **noise_args)
                l_example.input(api_visibility="private", **noise_args)
                l_seed.submit(api_visibility="private", **noise_args)
                learn_tab.select(api_visibility="private", **noise_args)
                learn_tab.select(app.measured_curve, None, c_img, api_visibility="private", concurrency_id="light")
                r_run.click(app.learn_reverse, [l_example, r_start, r_steps, l_seed],
                            [run_state, r_step, r_film, r_roll, r_audio, r_caption], api_name="learn_reverse",
                            concurrency_id="model")
                r_step.input(app.learn_step, [run_state, r_step], [r_roll, r_audio, r_caption],
                             api_name="learn_step", concurrency_id="light", trigger_mode="always_last")
                r_play.click(app.learn_play, [run_state], [r_step, r_roll, r_caption], api_name="learn_play",
                             concurrency_id="light")
                c_run.click(app.learn_curve, [l_example], [c_img, c_caption], api_name="learn_curve",
                            concurrency_id="model")
        gr.Markdown(ABOUT)
    return ui


def load(
    diffusion: str | Path = DEFAULT_DIFFUSION, reference_windows: int = 300, latent_windows: int = 32,
    device: str = "cpu",
) -> SymdiffApp:
    """The model on `device`, the reference statistics, and the example drawn in the background
    (also the warm-up, so the first visitor waits less)."""
    t0 = time.perf_counter()
    pipe = MelodyDiffusion.from_pretrained(diffusion, device=device)
    ref = demo.reference_stats(pipe, num_windows=reference_windows, latent_windows=latent_windows)
    app = SymdiffApp(pipe, ref)
    app.draw_example()
    log.info("model and reference (%d windows) ready in %.1f s", ref.num_windows, time.perf_counter() - t0)
    return app


def _stop(signum, frame):
    raise KeyboardInterrupt  # gradio's launch() closes the server on it; atexit then cleans up


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--diffusion", default=str(DEFAULT_DIFFUSION), help="diffusion checkpoint folder")
    p.add_argument("--reference-windows", type=int, default=300, help="training windows for the reference statistics")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help="requests served at once (their model runs take turns on one thread)")
    p.add_argument("--threads", type=int, help="torch threads of a model run at most (default: the idle cores)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds a model run may take")
    p.add_argument("--max-age", type=float, default=REQUEST_MAX_AGE_S, help="seconds uploads and outputs are kept")
    p.add_argument("--sweep-every", type=float, default=SWEEP_EVERY_S, help="seconds between sweeps of old files")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the model runs: auto (the default: cuda where torch sees a GPU, else cpu), cpu or cuda")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except SymdiffError as e:
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("temporary files (uploads, outputs) live in %s, removed at exit", TMP_ROOT)
    signal.signal(signal.SIGTERM, _stop)  # a stopped Space/container: close cleanly, remove TMP_ROOT
    torch.set_num_threads(1)  # every thread's default but a model run's (`ModelThread`)
    app = load(args.diffusion, args.reference_windows, device=device)
    app.time_limit_s = args.time_limit
    app.cores.most = args.threads
    ui = build(app)
    threading.Thread(target=sweep_forever, args=(TMP_ROOT, args.sweep_every, args.max_age, ui), name="symdiff-sweep",
                     daemon=True).start()
    ui.queue(default_concurrency_limit=args.concurrency, max_size=QUEUE_SIZE)
    ui.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD_BYTES, show_error=True,
              ssr_mode=False, allowed_paths=[str(demo.EXAMPLES_DIR)], css=CSS)


if __name__ == "__main__":
    main(sys.argv[1:])
