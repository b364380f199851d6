"""What the Gradio app (`app.py`) computes, kept free of Gradio so that it can be tested and reused.

- Reading a user's MIDI file (`load_melody`, parsed once per file and kept in a small cache),
  a sensible default range of any song (`default_range`) and a range of the file's bars as the
  model's plan (`plan_bars`).
- The bars a variation varies by default (`whole_range`: the melody, at most one window).
- The infilling baselines of the paper's Figure 2 on the same window and splice as
  `MelodyDiffusion.infill`: interpolation between the known latents and latents from the VAE
  prior (`baseline_infills`).
- Reference statistics, computed once at start-up from training windows of the corpus
  (`reference_stats`), and `RefinementTrace`, a sampler callback that measures the x0 estimate
  every few steps while a chain runs: framewise Consistency/Variance of the decoded melody
  against the reference (pitch and duration, `metrics.consistency_variance`) and the polynomial
  MMD of its latents to the reference latents (`metrics.mmd_polynomial`), plus the decoded
  melody at a few refinement stages.
- The "Learn" tab: the forward process applied to a melody at any noise step (`forward_noise`,
  `noise_caption`) and a reverse run traced step by step (`reverse_trace`).

Bars in this module are the file's bars as numbered (`melody.BarMap`: its own meter, 1 = the
first full bar, 0 = a pickup); ranges on the model's grid are token steps, end exclusive.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from . import fit, melody, metrics, pianoroll
from .baselines import interpolate_infill, prior_latents
from .dataset import random_windows
from .generate import GenerateError, InfillPlan, MelodyDiffusion, plan_infill, splice_bars
from .schedulers import Callback

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO / "assets" / "examples"
LEARN_BARS = 16  # the Learn tab works on the first 16 bars of a melody: quick to decode and hear
METRIC_NAMES = ("pitch consistency", "pitch variance", "duration consistency", "duration variance")
LATENT_METRIC = "latent MMD"
SETTLED = "sixteenths kept from the last look"


# --- melodies from files -----------------------------------------------------------------------

def list_examples(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """The example MIDI files shipped in assets/examples, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.mid") if p.is_file()) if folder.is_dir() else []


PARSED_CACHE_SIZE = 32  # files kept parsed; an upload is previewed many times while a range is picked
_parsed: OrderedDict[tuple, melody.MidiMelodies | melody.MelodyError] = OrderedDict()
_parsed_lock = threading.Lock()


def _read_cached(path: Path, st: os.stat_result) -> melody.MidiMelodies:
    """`melody.read_midi(path)`, parsed once per (path, size, mtime): every preview, range change
    and infill of one upload reuses it (a bad file's error too; callers must not change what it
    returns); the least recently used go first."""
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _parsed_lock:
        if key in _parsed:
            _parsed.move_to_end(key)
            found = _parsed[key]
        else:
            found = None
    if found is None:
        try:
            found = melody.read_midi(path)
        except melody.MelodyError as e:
            found = e
        with _parsed_lock:
            _parsed[key] = found
            while len(_parsed) > PARSED_CACHE_SIZE:
                _parsed.popitem(last=False)
    if isinstance(found, melody.MelodyError):  # a fresh one of its class (reading raises none with more than a message)
        raise type(found)(str(found))
    return found


def load_melody(source: str | Path | bytes, track: int | None = None,
                max_bytes: int = melody.MAX_FILE_BYTES) -> tuple[melody.MidiMelodies, melody.Candidate]:
    """Read a MIDI file (a path or its bytes; nothing is written anywhere) and pick a track
    (None = the most melodic); a path is parsed once while it stays unchanged. Raises
    `melody.MelodyError` with a message for the user."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise melody.UnreadableMidiError("no file was given")
        st = path.stat()
        if st.st_size > max_bytes:
            raise melody.UnreadableMidiError(f"{path.name}: the file is larger than {max_bytes / 2**20:.0f} MB")
        found = _read_cached(path, st)
    elif len(source) > max_bytes:
        raise melody.UnreadableMidiError(f"the file is larger than {max_bytes / 2**20:.0f} MB")
    else:
        found = melody.read_midi(source)
    return found, found.pick(track)


def track_label(found: melody.MidiMelodies, c: melody.Candidate) -> str:
    """One line per candidate track, for a dropdown: what tells the tune from the rest at a
    glance (name, General MIDI instrument, register, where it plays)."""
    lo_hi = c.pitch_range
    rng = f", {pianoroll.pitch_name(lo_hi[0])}-{pianoroll.pitch_name(lo_hi[1])}" if lo_hi else ""
    name = f" {c.name.strip()}," if c.name.strip() else ""
    return (f"{c.index}:{name} {c.instrument_name}{rng}, {c.num_notes} notes to bar {found.track_bars(c)}"
            + (", chords (its top line is rewritten)" if c.chordal else ""))


def barlines(bars: melody.BarMap, lo: int, hi: int) -> tuple[list[int], list[int]]:
    """Where the file's bars begin within steps lo..hi (relative to lo) and their numbers, for
    `pianoroll`'s `barlines`."""
    first, last = bars.number_at(lo), bars.number_at(max(lo, hi - 1)) + 1
    numbers = list(range(first, last + 1))
    return [bars.start(n) - lo for n in numbers], numbers


DEFAULT_RANGE_BARS = 8


def default_range(bars: melody.BarMap) -> tuple[int, int]:
    """A few bars to start from, whatever the song's length: bars 9-16 when there are 16,
    else 8 (or all) in the middle."""
    n, k = bars.num_bars, DEFAULT_RANGE_BARS
    if n >= 2 * k:
        return k + 1, 2 * k
    first = 1 + (n - min(n, k)) // 2
    return first, first + min(n, k) - 1


def plan_bars(found: melody.MidiMelodies, cand: melody.Candidate, first_bar, last_bar,
              seq_len: int = 32) -> tuple[InfillPlan, np.ndarray]:
    """The file's bars first..last (inclusive, as numbered) -> the model's plan for exactly their
    steps, and the track's tokens padded to the file's end (what the plan is for). Raises
    `GenerateError` or `melody.MelodyError` with a message for the user."""
    for name, v in (("first bar", first_bar), ("last bar", last_bar)):
        if v is None or not float(v).is_integer():
            raise GenerateError(f"the {name} must be a whole number, got {v!r}")
    span = found.bars.steps(int(first_bar), int(last_bar))
    tokens = found.tokens(cand)
    return plan_infill(len(tokens), span, seq_len, fit.section(found.keys, span, len(tokens))), tokens


class Baselines(TypedDict):
    """`baseline_infills`' melodies: interpolation is None when no bar of the window is known."""

    interpolation: np.ndarray | None
    prior: np.ndarray


def whole_range(bars: melody.BarMap, seq_len: int = 32) -> tuple[int, int]:
    """The bars a variation varies unless told: the whole melody, or from its start as many bars
    as one window of the model holds (64 of 4/4)."""
    first, last = bars.first_number, bars.num_bars
    while last > first:
        lo, hi = bars.steps(first, last)
        if -(-hi // melody.CHUNK_STEPS) - lo // melody.CHUNK_STEPS <= seq_len:
            break
        last -= 1
    return first, last


def baseline_infills(pipe: MelodyDiffusion, tokens: np.ndarray, plan: InfillPlan,
                     seed: int | None = 0) -> Baselines:
    """The paper's two baselines for the same infilling task, spliced like the diffusion result:
    'interpolation' (slerp between the known latents on either side; None when no bar of the
    window is known) and 'prior' (independent N(0, I) latents from the VAE prior)."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    full = np.zeros(plan.num_chunks * melody.CHUNK_STEPS, dtype=np.uint8)
    full[: len(tokens)] = tokens
    w0, w1 = plan.window_steps
    known = pipe.codec.encode(full[w0:w1])
    mask = torch.from_numpy(plan.mask())
    interpolation = None
    if bool((~mask).any()):
        x = interpolate_infill(known, mask, pipe.codec.scaler, config=pipe.codec.config)
        interpolation = splice_bars(tokens, pipe.decode(x[None])[0], plan)
    g = torch.Generator().manual_seed(seed if seed is not None else 0)
    prior = prior_latents(1, len(known), pipe.codec.scaler, generator=g, config=pipe.codec.config)[0]
    x = torch.where(mask[:, None], prior.float(), known)
    return {"interpolation": interpolation, "prior": splice_bars(tokens, pipe.decode(x[None])[0], plan)}


# --- reference statistics and the refinement trace ---------------------------------------------

@dataclass
class Reference:
    """What samples are compared with: `metrics.overlap_stats` of real 64-bar windows and
    model-space latents of real chunks (sampled z, as the diffusion model was trained on)."""

    oa: dict[str, tuple[float, float]]
    latents: np.ndarray  # (M, d)
    num_windows: int


def reference_stats(pipe: MelodyDiffusion, lines=None, num_windows: int = 300, latent_windows: int = 32,
                    seed: int = 0) -> Reference:
    """Reference statistics from `num_windows` 64-bar training windows (`lines` defaults to the
    shipped corpus); the latents come from the first `latent_windows` of them, encoded in one
    batch (32 chunks each)."""
    if lines is None:
        from .dataset import Lines

        lines = Lines.load()
    wins = random_windows(lines, "train", num_windows, seed)
    oa = metrics.overlap_stats(wins)
    take = wins[: max(1, min(latent_windows, len(wins)))]
    lat = pipe.codec.encode(np.concatenate(take), sample=True, seed=seed)
    return Reference(oa, lat.numpy().astype(np.float64), len(wins))


def sample_metrics(tokens: np.ndarray, latents: torch.Tensor | np.ndarray, ref: Reference) -> dict[str, float]:
    """The app's metrics of one melody and its (k, d) latents; the framewise ones are NaN when the
    melody is too short for two frames (6 bars)."""
    out = {name: float("nan") for name in METRIC_NAMES}
    try:
        cv = metrics.consistency_variance(metrics.overlap_stats([tokens]), ref.oa)
    except ValueError:
        cv = None
    if cv is not None:
        for feat in metrics.FEATURES:
            out[f"{feat} consistency"] = cv[feat]["consistency"]
            out[f"{feat} variance"] = cv[feat]["variance"]
    out[LATENT_METRIC] = metrics.mmd_polynomial(np.asarray(latents, dtype=np.float64), ref.latents)
    return out


def checkpoints(total: int, count: int) -> list[int]:
    """`count` step indices spread evenly over 0..total-1, always including the last one."""
    count = max(1, min(count, total))
    return sorted({int(round(total * (j + 1) / count)) - 1 for j in range(count)})


class Cancelled(Exception):
    """Raised inside a sampler callback to stop a chain that nobody waits for any more."""


@dataclass
class TracePoint:
    step: int  # 1-based: after this many reverse steps
    total: int
    values: dict[str, float]
    tokens: np.ndarray  # the x0 estimate of the first melody, decoded
    latents: np.ndarray  # (chunks, dim) the first melody's noisy sample x_t after this step, model space
    settled: float  # `agreement` of `tokens` with the previous point's (NaN at the first point)


@dataclass
class RefinementTrace:
    """Sampler callback: every few steps decodes the x0 estimate of the first melody and measures
    it (`sample_metrics`); keeps the decoded melody at `stages` of those points. `on_point`
    (optional) is called with each new point, e.g. to stream it to a UI; `stop` (a
    threading.Event) cancels the chain at the next step."""

    pipe: MelodyDiffusion
    reference: Reference
    bars: int
    points: int = 8
    stages: int = 4
    on_point: Callable[[TracePoint], None] | None = None
    stop: threading.Event | None = None
    trace: list[TracePoint] = field(default_factory=list)
    reached: int = 0  # the reverse steps done so far (where a stopped chain stopped)
    stage_tokens: list[tuple[str, np.ndarray]] = field(default_factory=list)
    _when: set[int] | None = None
    _stage_at: set[int] | None = None

    def __call__(self, i: int, total: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if self.due(i, total):
            self.record(i, total, x_t[0], x0_hat[0], self.pipe.decode(x0_hat[:1])[0])

    def due(self, i: int, total: int) -> bool:
        """Step i is done: is it one of the points? (Raises `Cancelled` once `stop` is set.)"""
        if self.stop is not None and self.stop.is_set():
            raise Cancelled()
        self.reached = i + 1
        if self._when is None or self._stage_at is None:  # the first step: both set together
            self._stage_at = {0} | (set(checkpoints(total, self.stages - 1)) if self.stages > 1 else set())
            self._when = set(checkpoints(total, self.points)) | self._stage_at
        return i in self._when

    def record(self, i: int, total: int, x_t: torch.Tensor, x0: torch.Tensor, decoded: np.ndarray) -> None:
        """The point after step i: `x_t` and `x0` (k, d) of the first melody, `decoded` its x0."""
        tokens = decoded[: self.bars * melody.STEPS_PER_BAR]
        settled = agreement(tokens, self.trace[-1].tokens) if self.trace else math.nan
        point = TracePoint(i + 1, total, sample_metrics(tokens, x0, self.reference), tokens,
                           x_t.detach().float().cpu().numpy(), settled)
        self.trace.append(point)
        if self._stage_at is not None and i in self._stage_at:
            self.stage_tokens.append((f"x0 estimate after step {i + 1}/{total}", tokens))
        if self.on_point is not None:
            self.on_point(point)

    def rows(self) -> list[dict]:
        """Long-format rows (step, metric, value) for a line plot; NaN values left out."""
        return [{"step": p.step, "metric": k, "value": v}
                for p in self.trace for k, v in p.values.items() if not math.isnan(v)]

    def settled_rows(self) -> list[dict]:
        """(step, metric, value) rows of SETTLED: how much of the melody each point keeps of the last."""
        return [{"step": p.step, "metric": SETTLED, "value": p.settled}
                for p in self.trace if not math.isnan(p.settled)]


def traced_together(pipe: MelodyDiffusion, traces: Sequence[RefinementTrace | None], rows: Sequence[int]) -> Callback:
    """One sampler callback for the traces of a batch of requests (`rows[j]` melodies each, in
    order): the x0 estimates due at a step are decoded in one VAE call, not one a request. Why:
    20 Generates at once spent a quarter of the server's time decoding their traces one by one.
    A trace whose `stop` is set is left out; the batch goes on for the others."""
    starts = np.cumsum([0, *rows])[:-1]
    live = [True] * len(traces)

    def call(i: int, total: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        due = []
        for j, (t, a) in enumerate(zip(traces, starts, strict=True)):
            if t is not None and live[j]:
                try:
                    if t.due(i, total):
                        due.append((t, int(a)))
                except Cancelled:
                    live[j] = False
        if due:
            decoded = pipe.decode(x0_hat[[a for _, a in due]])
            for (t, a), tokens in zip(due, decoded, strict=True):
                t.record(i, total, x_t[a], x0_hat[a], tokens)
    return call


# --- learn: the forward and the reverse process ------------------------------------------------

def learn_melody(tokens: np.ndarray, bars: int = LEARN_BARS) -> np.ndarray:
    """The first `bars` bars of a melody (padded with rests when shorter)."""
    size = bars * melody.STEPS_PER_BAR
    out = np.zeros(size, dtype=np.uint8)
    tokens = np.asarray(tokens, dtype=np.uint8)[:size]
    out[: len(tokens)] = tokens
    return out


def noise_level(pipe: MelodyDiffusion, t: int) -> float:
    """sqrt(alpha_bar_t) of the model's schedule for a step t in 0..N (0 = clean)."""
    schedule = pipe.schedule
    if not 0 <= t <= schedule.num_steps:
        raise GenerateError(f"the noise step must be between 0 and {schedule.num_steps}, got {t}")
    return schedule.noise_level(t)


def forward_noise(pipe: MelodyDiffusion, tokens: np.ndarray, t: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """The forward process q(x_t | x_0) on a melody's latents at step t (the same noise for every
    t with one seed, so a slider over t shows one path) -> (decoded tokens, x_t)."""
    t = int(t)
    level = noise_level(pipe, t)
    x0 = pipe.codec.encode(tokens)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)))
    x_t = pipe.schedule.q_sample(x0, level, eps)
    return pipe.decode(x_t[None])[0][: len(tokens)], x_t


def noise_caption(pipe: MelodyDiffusion, t: int, kept: float, vae: float) -> str:
    """Plain words for a noise step, from what is shown: `kept`, the share of sixteenths the
    decoded noisy melody keeps of the melody (`agreement`), and `vae`, what step 0 keeps."""
    n = pipe.schedule.num_steps
    a = noise_level(pipe, t)
    signal = a * a
    if t == 0:
        return (f"**Step 0 of {n}: the melody's own latents, no noise yet.** The image shows them: one column "
                f"per 2 bars, {pipe.codec.dim} numbers each. Decoded by the VAE they give back {kept:.0%} of the "
                "melody's sixteenths: the VAE's own loss, before the diffusion model does anything.")
    text = (f"**Step {t} of {n}:** the latents are {a:.2f} x melody + {math.sqrt(1 - signal):.2f} x random "
            f"noise ({100 * signal:.0f}% of their variance is melody). Decoded, {kept:.0%} of the sixteenths "
            f"still sound as in the melody (step 0: {vae:.0%}).")
    if signal < 0.1:
        text += (" The image is speckle, the same in every row: noise. The decoder still writes a tidy tune from "
                 "any latent, so the notes look like music, but they are no longer this melody.")
    return text + " Training teaches the model to predict the noise added at every such step."


def sounding_pitch(tokens: np.ndarray) -> np.ndarray:
    """(steps,) int: the pitch token sounding at each sixteenth, -1 where nothing sounds."""
    tokens = np.asarray(tokens)
    idx = np.where(tokens != melody.NO_EVENT, np.arange(len(tokens)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    held = tokens[np.maximum(last, 0)].astype(np.int64)
    return np.where((last >= 0) & (held >= 2), held, -1)


def agreement(tokens: np.ndarray, original: np.ndarray) -> float:
    """The share of sixteenths at which `tokens` sound what `original` sounds (the same pitch,
    or both silent): how much of a melody a noised or restored version keeps."""
    a, b = sounding_pitch(tokens), sounding_pitch(original)
    n = min(len(a), len(b))
    return float((a[:n] == b[:n]).mean()) if n else 1.0


def reconstruction(pipe: MelodyDiffusion, tokens: np.ndarray) -> np.ndarray:
    """The melody as the VAE gives it back from its own latents (step 0 of every run): what a
    reverse run that found the melody's latents exactly would give."""
    return pipe.decode(pipe.codec.encode(tokens)[None])[0][: len(tokens)]


_orders: dict[int, np.ndarray] = {}


def latent_order(pipe: MelodyDiffusion) -> np.ndarray:
    """The model space's dims by how much they vary over the example melodies' chunks, most
    first: drawn in this order (`shown_latents`), a melody's latents are strong at the top and
    pale at the bottom, as the data is, and noise, the same in every dim, is speckle everywhere."""
    key = id(pipe.codec)
    if key not in _orders:
        x = torch.cat([pipe.codec.encode(load_melody(p)[1].tokens) for p in list_examples()])
        _orders[key] = np.argsort(-x.var(0).numpy(), kind="stable") if len(x) > 1 else np.arange(pipe.codec.dim)
    return _orders[key]


def shown_latents(pipe: MelodyDiffusion, latents: torch.Tensor | np.ndarray) -> np.ndarray:
    """(chunks, dim) latents with their dims in `latent_order`, for `pianoroll.draw_latents`."""
    return np.asarray(latents, dtype=np.float32)[:, latent_order(pipe)]


def reverse_steps(start_t: int, steps: int) -> list[int]:
    """The timesteps of a reverse run of `steps` steps from `start_t` (evenly spaced, both ends kept)."""
    return sorted({int(round(v)) for v in np.linspace(1, start_t, steps)} | {start_t})


@dataclass
class ReverseFrame:
    t: int  # the noise step the sample is at after this frame
    x_t: np.ndarray  # decoded tokens of the noisy sample
    x0: np.ndarray | None  # decoded tokens of the model's x0 estimate (None for the start)
    latents: np.ndarray  # (chunks, dim) the noisy sample itself, model space
    x0_latents: np.ndarray | None  # (chunks, dim) the x0 estimate (None for the start)


def reverse_trace(pipe: MelodyDiffusion, tokens: np.ndarray, start_t: int, steps: int, seed: int = 0,
                  sampler: str = "ddim") -> list[ReverseFrame]:
    """A reverse run from `tokens` noised to step `start_t` (1000 = from almost pure noise: a new
    melody; smaller = the model restores a melody close to the given one), on `steps` evenly
    spaced steps down to 0, every frame decoded (all in one batch). The chain is the pipeline's
    own (`MelodyDiffusion.sampler`: its clip), unguided and in no style."""
    schedule = pipe.schedule
    n = schedule.num_steps
    start_t, steps = int(start_t), int(steps)
    if not 1 <= start_t <= n:
        raise GenerateError(f"the start step must be between 1 and {n}, got {start_t}")
    if not 1 <= steps <= start_t:
        raise GenerateError(f"the number of steps must be between 1 and the start step ({start_t}), got {steps}")
    chain = pipe.sampler(sampler, reverse_steps(start_t, steps))
    g = torch.Generator().manual_seed(int(seed))
    x0 = pipe.codec.encode(tokens)[None]
    eps = torch.randn(x0.shape, generator=g)
    x = schedule.q_sample(x0, schedule.noise_level(start_t), eps)
    xs, x0s, levels = [x], [], [start_t]
    with torch.no_grad():
        for i in range(chain.num_steps):
            out = chain.step(pipe.eps(x, chain.noise_levels(i, 1)), i, x, g)
            x = out.prev_sample
            xs.append(x)
            x0s.append(out.pred_original_sample)
            levels.append(chain.timesteps[i + 1] if i + 1 < chain.num_steps else 0)
    decoded = pipe.decode(torch.cat(xs + x0s))
    size = len(tokens)
    k = len(xs)
    frames = [ReverseFrame(levels[0], decoded[0][:size], None, xs[0][0].numpy(), None)]
    for j in range(1, k):
        frames.append(ReverseFrame(levels[j], decoded[j][:size], decoded[k + j - 1][:size], xs[j][0].numpy(),
                                   x0s[j - 1][0].numpy()))
    return frames


@dataclass
class Restoration:
    """One reverse run from a noised melody: how much of the melody its start and its end keep."""

    start_t: int
    seed: int
    start: float  # `agreement` of the decoded noisy start with the melody
    end: float  # ... of the run's end
    start_error: float  # RMS distance of the start's x0 (x_t / sqrt(alpha_bar)) from the melody's latents
    end_error: float  # ... of the run's end: the model restores when this is below `start_error`


def restoration(pipe: MelodyDiffusion, tokens: np.ndarray, starts: Sequence[int], seeds: Sequence[int],
                steps: int = 20, sampler: str = "ddim") -> list[Restoration]:
    """`reverse_trace`'s run from every start step with every seed (all seeds of a start in one
    batch), measured: does the model bring a noised melody back? (Issue 27: with the x0 clip of
    [-1, 1] instead of the model space's, every run ended further from the melody than its start.)"""
    schedule = pipe.schedule
    x0 = pipe.codec.encode(tokens)[None]
    out = []
    for start_t in starts:
        chain = pipe.sampler(sampler, reverse_steps(int(start_t), min(steps, int(start_t))))
        eps = torch.cat([torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        x = schedule.q_sample(x0.expand(len(seeds), -1, -1), schedule.noise_level(int(start_t)), eps)
        noisy = pipe.decode(x)
        start_err = (x / schedule.noise_level(int(start_t)) - x0).pow(2).mean((1, 2)).sqrt()
        g = torch.Generator().manual_seed(int(seeds[0]))
        with torch.no_grad():
            for i in range(chain.num_steps):
                x = chain.step(pipe.eps(x, chain.noise_levels(i, len(seeds))), i, x, g).prev_sample
        end_err = (x - x0).pow(2).mean((1, 2)).sqrt()
        for s, a, b, ea, eb in zip(seeds, noisy, pipe.decode(x), start_err, end_err, strict=True):
            out.append(Restoration(int(start_t), int(s), agreement(a[: len(tokens)], tokens),
                                   agreement(b[: len(tokens)], tokens), float(ea), float(eb)))
    return out


def restoration_figure(data: dict, width_px: int = 1000):
    """The restoration curve of every melody in `data` (what `scripts/restoration_curve.py`
    writes to eval/restoration.json: sampler, steps, seeds, and per melody its start steps and
    agreements), drawn `width_px` wide (`pianoroll.plot_restoration`)."""
    curves = [(m["melody"].split("_")[0], m["starts"], m["noisy"], m["end"], m["vae"]) for m in data["melodies"]]
    return pianoroll.plot_restoration(curves, width_px=width_px, title=(
        f"A noised melody, restored by the model ({data['sampler'].upper()} {data['steps']} steps, mean of "
        f"{len(data['seeds'])} seeds)"))


def reverse_caption(frames: list[ReverseFrame], index: int, original: np.ndarray, vae: float) -> str:
    """Plain words for a frame of a reverse run, from what is shown: how much of the original
    melody the noisy sample and the model's guess keep (`agreement`), against the run's start
    and the VAE's own reconstruction (`vae`)."""
    f, count = frames[index], len(frames) - 1
    start = agreement(frames[0].x_t, original)
    if index == 0:
        return (f"**Start (step {f.t}):** the melody noised to step {f.t}; decoded, {start:.0%} of its "
                "sixteenths still sound as in it. Move the slider or press Play to run the model step by step.")
    now = agreement(f.x_t, original)
    if f.t == 0:
        if frames[0].t >= 900:
            return (f"**Done ({index}/{count}):** all noise removed: a new melody. It shares {now:.0%} of its "
                    "sixteenths with the melody, which the run started too noisy to remember.")
        return (f"**Done ({index}/{count}):** all noise removed: {now:.0%} of the sixteenths sound as in the "
                f"melody (its noisy start: {start:.0%}; the VAE's own reconstruction: {vae:.0%}).")
    guess = agreement(f.x0, original) if f.x0 is not None else math.nan
    return (f"**Step {index} of {count} (noise step {f.t}):** the model predicts the noise in the latents and "
            f"removes part of it. Top: the noisy sample, {now:.0%} like the melody; bottom: the model's guess "
            f"of the finished melody, {guess:.0%} like it.")
