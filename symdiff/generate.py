"""Generation with a trained TransformerDDPM: unconditional melodies, infilling, continuation.

`MelodyDiffusion` joins a diffusion model, the `LatentCodec` it was trained with (VAE + scaler
+ silence rule) and a sampler from `symdiff.schedulers`; the CLI, the evaluation and the app
all go through it.

Bars and chunks. The model works on 2-bar chunks of 4/4 (32 token steps, one latent each). A
range is given in token steps (a file's bars, in its own meter, map to steps through
`melody.BarMap.steps`) and snapped *outward* to whole chunks: every chunk that holds a step of
the range is generated (`InfillPlan.chunk_range`). Only the steps asked for are taken from the
result: the melody's tokens outside the range are copied back exactly, so the user's notes
outside it are untouched (not their VAE reconstruction) and the generated notes are spliced in
at the range's barlines, wherever they fall in a chunk. No note crosses a splice point: a user's
note sounding into the range ends where it begins, and a generated note sounding at its end ends
there (`splice_bars`).

Windows. The model sees at most `seq_len` chunks (32 = 64 bars). A longer melody is infilled in
a window of 32 chunks centred on the range (clamped to the melody); a shorter one is used as
it is. Continuation appends the new bars as masked chunks after the melody and infills them
(the window then ends at the melody's new end).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import melody
from .codec import LatentCodec
from .diffusion import TransformerDDPM
from .errors import SymdiffError
from .precision import autocast, resolve_precision
from .schedulers import Callback, Sampler, ScheduleConfig, make_sampler
from .vae import checkpoints_dir

DEFAULT_DIFFUSION = checkpoints_dir() / "diffusion-cond"
# The ancestral sampler at 200 respaced steps, for new melodies and infills alike. Measured on the
# default model: DDIM 50's deterministic chain overshoots silence (19% of a sample's bars silent,
# real music 12.5%; DDPM 200: 15%, DDPM 1000 the same as 200), and DDPM 200 infills fit their
# pieces better in 8 of the 12 fidelity figures (README, "Does the music hold together?").
DEFAULT_SAMPLER = "ddpm"
DEFAULT_STEPS = {"ddpm": 200, "ddim": 50, "dpmpp": 20, "dpmpp-sde": 20}
# How an infill uses the known music. "replace" is the paper's Algorithm 1: after every step the
# known chunks of x_t are overwritten by a noised copy of them, and the net must read the context
# from those noisy copies. "conditioned" does the same and also hands the net the clean known
# chunks (a model trained with `DiffusionConfig.conditional`).
INFILL_METHODS = ("conditioned", "replace")
# Classifier-free guidance weight of a conditioned infill (`MelodyDiffusion.guided_eps`).
DEFAULT_GUIDANCE = 3.0
# Context guidance of new melodies (`MelodyDiffusion.guided_eps`): the weight w of
# eps_alone + w (eps_piece - eps_alone), eps_alone being the net's prediction for each chunk seen on
# its own. Chosen on 64 DDPM-200 samples (README, "Does the music hold together?"): with the shipped
# model, key stability 0.912 at w = 2.25 on seed 0 (real windows 0.936) and 0.924, 0.933, 0.931 at
# w = 2.5 on seeds 0, 1, 2 (real 0.936, 0.925, 0.934), with silent bars 10-15% (real 11-14%). The
# cost of more: fewer distinct phrases (18-21% of 2-bar chunks restated at 2.5; real windows 1-4%).
CONTEXT_GUIDANCE = 2.5
# A chain of few steps takes less from the same weight: DPM-Solver++ SDE at 20 steps and w = 2.5
# repeats 11.7% of its chunks and holds key stability 0.914 (seeds 0-2; DDPM 200: 19.8%, 0.929),
# so a sampler may have a weight of its own (`context_guidance_for`).
SAMPLER_CONTEXT_GUIDANCE = {"dpmpp-sde": 3.0}
# Register repair of new melodies (`MelodyDiffusion.repair_register`): a chunk holding a note more
# than REGISTER_MARGIN semitones outside its melody's 10-90% pitch band is regenerated from the
# rest of the melody, up to REPAIR_ROUNDS times (two rounds left stray chunks in 2 of 32 styled
# samples, four none); melodies of fewer than REPAIR_MIN_CHUNKS chunks have too few notes for a band.
REGISTER_MARGIN = 7
REPAIR_ROUNDS = 4
REPAIR_MIN_CHUNKS = 4
# Density repair of infills (`MelodyDiffusion.repair_density`): a range whose notes per bar differ
# from the kept bars' by more than exp(DENSITY_MARGIN) = 1.65 times is drawn again with new noise,
# up to DENSITY_ROUNDS times, and the draw closest in note rate is kept. Why: a few infills come out
# far sparser or busier than their piece, and those few decided a style's mean (README, "Does the
# music hold together?": on the fidelity task's three seeds it redraws 6 of 270 default infills and
# takes chorale's mean density figure from 0.124 to 0.100, interpolation's being 0.111).
# Only ranges of DENSITY_MIN_BARS or more are checked: over a bar or two a note rate says little (a
# cadence bar of half notes in a tune of quarters is 2 times off, and right). Measured on 4-bar
# middles (`--region-bars 4`, seed 0), it redraws 9 of 30 vocal infills and 3 of 30 chorale ones,
# and vocal goes from 0.625 / 0.681 / 0.305 / 0.514 to 0.718 / 0.752 / 0.235 / 0.225 (pitch overlap
# / key / rhythm / density; interpolation 0.676 / 0.742 / 0.315 / 0.377).
DENSITY_MARGIN = 0.5
DENSITY_ROUNDS = 3
DENSITY_MIN_BARS = 4
DENSITY_FLOOR = 0.5  # notes: a silent side's count, so the log ratio stays finite
# No style label: the model's own mix of the corpus' styles. An infill asked for no style at all
# (None) writes in the style its piece is heard in (`MelodyDiffusion.infer_style`).
ANY_STYLE = "any"
# How a piece's style is heard: the net denoises the known chunks under every label at these noise
# levels (fractions of the schedule), STYLE_PROBE_DRAWS draws each, the same draws for every label.
# Measured on the 30 fidelity test pieces of each style: from t/N = 0.3 up the right label wins for
# 80% of folk, 83% of chorale and all vocal pieces; below it, where detail is decided rather than
# style, chorale falls to 23%.
STYLE_PROBE = tuple(float(f) for f in np.arange(0.325, 1.0, 0.05))
STYLE_PROBE_DRAWS = 8


def stray_chunks(tokens: np.ndarray, margin: int = REGISTER_MARGIN) -> np.ndarray:
    """(chunks,) bool: the 2-bar chunks of a melody that hold a note more than `margin` semitones
    outside the melody's 10-90% pitch band (none where it has fewer than REPAIR_MIN_CHUNKS chunks)."""
    tokens = np.asarray(tokens)
    chunks = -(-len(tokens) // melody.CHUNK_STEPS)
    out = np.zeros(chunks, dtype=bool)
    onsets = np.flatnonzero(tokens >= 2)
    if chunks < REPAIR_MIN_CHUNKS or not len(onsets):
        return out
    pitches = melody.tokens_pitches(tokens)
    lo, hi = np.percentile(pitches, [10, 90])
    out[onsets[(pitches < lo - margin) | (pitches > hi + margin)] // melody.CHUNK_STEPS] = True
    return out


def context_guidance_for(sampler: str) -> float:
    """The default context guidance of new melodies drawn by `sampler` (see SAMPLER_CONTEXT_GUIDANCE)."""
    return SAMPLER_CONTEXT_GUIDANCE.get(sampler, CONTEXT_GUIDANCE)


class GenerateError(SymdiffError):
    """A request that cannot be served (bad range, too many bars, ...); the message is for the user."""


def parse_bar_range(text: str) -> tuple[int, int]:
    """'17-48' -> (17, 48): bars as numbered in the file (inclusive; 0 is a pickup), for
    `melody.BarMap.steps`."""
    first, sep, last = text.replace(" ", "").partition("-")
    try:
        a, b = int(first), int(last) if sep else int(first)
    except ValueError:
        raise GenerateError(f"bar range {text!r}: expected FIRST-LAST, e.g. 17-48 (bars count from 1)") from None
    if a < 0 or b < a:
        raise GenerateError(f"bar range {text!r}: bars count from 1 (0 is a pickup) and LAST must not be before FIRST")
    return a, b


@dataclass
class InfillPlan:
    """Where a range of token steps lands on the model's chunks."""

    steps: tuple[int, int]  # the range replaced, token steps, end exclusive
    chunk_range: tuple[int, int]  # chunks generated (end exclusive), in the whole melody
    window: tuple[int, int]  # chunks the model sees (end exclusive), in the whole melody
    num_chunks: int  # chunks of the melody (after any extension)

    @property
    def window_steps(self) -> tuple[int, int]:
        """The token steps of the model's window."""
        return self.window[0] * melody.CHUNK_STEPS, self.window[1] * melody.CHUNK_STEPS

    def mask(self) -> np.ndarray:
        """(window length,) bool over the window's chunks, True = generate."""
        pos = np.arange(*self.window)
        return (pos >= self.chunk_range[0]) & (pos < self.chunk_range[1])


def plan_infill(num_steps: int, steps: tuple[int, int], seq_len: int = 32) -> InfillPlan:
    """Check a range of token steps (end exclusive) against a melody of `num_steps` steps and
    place the model's window (see the module docstring)."""
    lo, hi = steps
    if not 0 <= lo < hi:
        raise GenerateError(f"the range (steps {lo}-{hi}) is empty")
    if hi > num_steps:
        raise GenerateError(f"the range (steps {lo}-{hi}) lies outside the melody, which has {num_steps} steps")
    size = melody.CHUNK_STEPS
    n = -(-num_steps // size)
    c0, c1 = lo // size, -(-hi // size)
    if c1 - c0 > seq_len:
        raise GenerateError(f"at most {seq_len * size // melody.STEPS_PER_QUARTER} quarter notes "
                            f"({seq_len * melody.BARS_PER_CHUNK} bars of 4/4) can be generated at once; "
                            f"this range reaches over {(c1 - c0) * size // melody.STEPS_PER_QUARTER}")
    if n <= seq_len:
        window = (0, n)
    else:
        start = min(max(0, (c0 + c1 - seq_len) // 2), n - seq_len)
        window = (start, start + seq_len)
    return InfillPlan((lo, hi), (c0, c1), window, n)


def sounding(tokens: np.ndarray, step: int) -> bool:
    """Whether a note is still sounding when `step` begins: the last event before it is a note-on."""
    events = np.flatnonzero(np.asarray(tokens)[:step] != melody.NO_EVENT)
    return bool(len(events)) and int(tokens[events[-1]]) >= 2


def splice_bars(full: np.ndarray, made: np.ndarray, plan: InfillPlan) -> np.ndarray:
    """The melody `full` with the plan's steps (the user's range, not the snapped one) taken from
    `made`, the decoded tokens of the plan's window; every other token stays as it was. Nothing
    crosses the range's edges: a user's note sounding into the range ends at its start, and a
    generated note sounding at its end ends there, also when the user's bars after it are silent
    or hold a note (a note-off where they have no event of their own). A generated note-off with
    no note sounding is dropped, so the melody reads back from a MIDI file token for token."""
    out = np.array(full, dtype=np.uint8, copy=True)
    s0 = plan.window[0] * melody.CHUNK_STEPS
    lo, hi = plan.steps
    out[lo:hi] = made[lo - s0 : hi - s0]
    for step in np.flatnonzero(out[lo:hi] == melody.NOTE_OFF) + lo:  # a note-off with nothing sounding is no event
        if not sounding(out, int(step)):
            out[step] = melody.NO_EVENT
    if out[lo] == melody.NO_EVENT and sounding(full, lo):
        out[lo] = melody.NOTE_OFF
    if hi < len(out) and out[hi] == melody.NO_EVENT and sounding(out, hi):
        out[hi] = melody.NOTE_OFF
    return out


def density_log_ratio(notes_a: int, bars_a: float, notes_b: int, bars_b: float) -> float:
    """|log| of the ratio of notes per bar of two stretches, note counts floored at `DENSITY_FLOOR`."""
    return float(abs(np.log(max(notes_a, DENSITY_FLOOR) / bars_a) - np.log(max(notes_b, DENSITY_FLOOR) / bars_b)))


def density_gap(tokens: np.ndarray, plan: InfillPlan) -> float:
    """`density_log_ratio` of the plan's range of the spliced melody `tokens` against the other
    bars of the model's window (what the model was shown); 0 where those hold no note onset, as
    there is then no note rate to keep."""
    w0, w1 = plan.window_steps
    onsets = np.asarray(tokens)[w0:w1] >= 2
    lo, hi = plan.steps
    inside = int(onsets[lo - w0 : hi - w0].sum())
    outside = int(onsets.sum()) - inside
    if not outside:
        return 0.0
    bar = melody.STEPS_PER_BAR
    return density_log_ratio(inside, (hi - lo) / bar, outside, (len(onsets) - (hi - lo)) / bar)


@dataclass
class Result:
    """What a generation returns: tokens of each melody, and its model-space latents."""

    tokens: list[np.ndarray]
    latents: torch.Tensor  # (B, k, d) model space
    seconds: float
    plan: InfillPlan | None = None
    style: str = ANY_STYLE  # the style written in: one of the model's, or ANY_STYLE


class MelodyDiffusion:
    """Model + codec + sampler: the one way to generate in symdiff."""

    def __init__(self, model: TransformerDDPM, codec: LatentCodec, precision: str = "fp32",
                 schedule: ScheduleConfig | None = None):
        """`precision`: 'fp32' by default (one melody at a time, this model's matmuls are too
        small for bf16 units to pay), 'bf16', or 'auto' (bf16 where the hardware has it natively,
        see `symdiff.precision`; what the CLI uses). `self.precision` is the resolved one.
        `schedule`: the noise schedule the model was trained with (default: its checkpoint's)."""
        self.model, self.codec = model.eval(), codec
        if schedule is None:
            schedule = ScheduleConfig.from_dict(model.sections.get("schedule", {}))
        self.schedule = schedule.build()
        self.precision = resolve_precision(precision, next(model.parameters()).device)
        if model.config.data_dim != codec.dim:
            raise ValueError(f"the model has {model.config.data_dim} dims, the codec {codec.dim}")

    @classmethod
    def from_pretrained(cls, diffusion_dir: str | Path = DEFAULT_DIFFUSION, vae_dir: str | Path | None = None,
                        precision: str = "fp32") -> MelodyDiffusion:
        diffusion_dir = Path(diffusion_dir)
        if not (diffusion_dir / "model.safetensors").is_file():
            raise FileNotFoundError(f"{diffusion_dir}: no diffusion checkpoint (model.safetensors) there")
        return cls(TransformerDDPM.from_pretrained(diffusion_dir), LatentCodec.from_pretrained(diffusion_dir, vae_dir),
                   precision)

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    def sampler(self, name: str = DEFAULT_SAMPLER, steps: int | None = None) -> Sampler:
        """A sampler on this model's schedule and clip (`schedulers.make_sampler` checks the settings)."""
        steps = DEFAULT_STEPS.get(name) if steps is None else steps
        return make_sampler(name, self.schedule, steps, self.codec.config.clip)

    @property
    def infill_methods(self) -> tuple[str, ...]:
        """The `INFILL_METHODS` this model serves, its default first."""
        return INFILL_METHODS if self.model.config.conditional else ("replace",)

    def check_method(self, method: str | None) -> str:
        """`method`, or the model's default for None; a method the model cannot serve is refused."""
        if method is None:
            return self.infill_methods[0]
        if method not in self.infill_methods:
            raise GenerateError(f"infill method {method!r} is not served by this model; choose from "
                                f"{', '.join(self.infill_methods)}")
        return method

    @property
    def styles(self) -> tuple[str, ...]:
        """The styles this model can be asked for (`DiffusionConfig.styles`; none for most)."""
        return self.model.config.styles

    @torch.no_grad()
    def eps(self, x: torch.Tensor, level: torch.Tensor, known: torch.Tensor | None = None,
            keep: torch.Tensor | None = None, style: torch.Tensor | None = None,
            alone: torch.Tensor | None = None) -> torch.Tensor:
        """The noise prediction the samplers call (under `self.precision`); `known`/`keep`
        condition a conditional model on the known chunks, `style` (B,) labels a model with styles,
        `alone` (B,) marks rows whose chunks are each seen as a piece of their own."""
        with autocast(self.precision, x.device.type):
            return self.model(x, level, known=known, keep=keep, style=style, alone=alone).float()

    def guided_eps(self, cond: dict[str, torch.Tensor], guidance: float = 1.0,
                   context_guidance: float = 1.0) -> Callable:
        """The eps_fn of a generation conditioned on `cond` (known chunks: `known` and `keep`;
        style labels: `style`; may be empty), one batched model call per step whatever it mixes.

        `guidance` w != 1: classifier-free guidance (Ho & Salimans 2022), eps_uncond + w (eps_cond
        - eps_uncond); the unconditional view knows no chunk and no style (a conditional model was
        trained with nothing known a quarter of the time, a styled one with its style dropped a fifth).

        `context_guidance` c != 1: context guidance, eps_alone + c (eps - eps_alone), where
        eps_alone is the net run on every chunk as a piece of its own (in the same style, knowing
        nothing else). Why: the net has learnt what a 2-bar chunk looks like far better than how
        the chunks of one piece belong together, so its samples drift like chunks of unrelated
        pieces (issue 11); the difference between seeing the piece and seeing the chunk alone is
        what the rest of the piece says, and c > 1 stresses it. This is guidance by a weaker view
        of the same model, as autoguidance guides by a weaker model (Karras et al. 2024). The
        chunks-alone view is a row of the same batch (`TransformerDDPM`'s `alone`), not k rows
        of one chunk."""
        known, keep, style = cond.get("known"), cond.get("keep"), cond.get("style")
        views = ["piece"] + (["uncond"] if guidance != 1.0 else []) + (["alone"] if context_guidance != 1.0 else [])
        if views == ["piece"]:
            return functools.partial(self.eps, **cond)

        def eps_fn(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            b, n = x.shape[0], len(views)
            nothing = torch.zeros((b, x.shape[1]), dtype=torch.bool, device=x.device)
            out = self.eps(
                x.repeat(n, 1, 1), level.repeat(n),
                None if known is None else known.repeat(n, 1, 1),
                None if keep is None else torch.cat([keep if v == "piece" else nothing for v in views]),
                None if style is None else torch.cat([torch.zeros_like(style) if v == "uncond" else style
                                                      for v in views]),
                None if "alone" not in views else torch.cat([torch.full((b,), v == "alone", device=x.device)
                                                             for v in views]),
            ).reshape(n, *x.shape)
            e = dict(zip(views, out, strict=True))
            eps = e["piece"]
            if "uncond" in e:
                eps = e["uncond"] + guidance * (eps - e["uncond"])
            if "alone" in e:
                eps = e["alone"] + context_guidance * (eps - e["alone"])
            return eps

        return eps_fn

    def sample_latents(self, num: int, chunks: int, sampler: Sampler, seed: int | None = None,
                       callback: Callback | None = None, mask: torch.Tensor | None = None,
                       known: torch.Tensor | None = None, method: str | None = None,
                       guidance: float = DEFAULT_GUIDANCE, style: str | None = None,
                       context_guidance: float = 1.0) -> torch.Tensor:
        """(num, chunks, d) model-space latents from the reverse chain (infilling with mask/known,
        by `method`, see `INFILL_METHODS`; in a `style` of `self.styles`, None or ANY_STYLE for any). `guidance`
        weighs what the chain is conditioned on, known music ("conditioned") and style, see
        `guided_eps`; a plain unconditional sample has nothing to weigh. `context_guidance` != 1
        weighs what each chunk takes from the rest of the piece (`guided_eps`)."""
        if not 1 <= chunks <= self.seq_len:
            raise GenerateError(f"the model generates 1 to {self.seq_len} chunks at once, got {chunks}")
        for name, w in (("guidance", guidance), ("context guidance", context_guidance)):
            if not 0.0 <= w <= 10.0:
                raise GenerateError(f"{name} must be between 0 and 10, got {w}")
        cond: dict[str, torch.Tensor] = {}
        if known is not None and self.check_method(method) == "conditioned":
            cond["keep"] = ~torch.as_tensor(mask, dtype=torch.bool).expand(num, chunks)
            cond["known"] = torch.as_tensor(known).expand(num, chunks, -1)
        if style not in (None, ANY_STYLE):
            try:
                label = self.model.config.style_index(style)
            except ValueError as e:
                raise GenerateError(str(e)) from None
            cond["style"] = torch.full((num,), label, dtype=torch.long)
        eps_fn = self.guided_eps(cond, guidance if cond else 1.0,
                                 context_guidance if chunks > 1 else 1.0)  # a single chunk is its own whole piece
        return sampler.sample(eps_fn, (num, chunks, self.codec.dim), seed=seed, callback=callback,
                              mask=mask, known=known)

    def repair_register(self, x: torch.Tensor, sampler: Sampler, seed: int | None = None,
                        style: str | None = None) -> torch.Tensor:
        """New melodies (B, k, d) with their stray chunks (`stray_chunks`) regenerated from the
        rest of each melody, up to REPAIR_ROUNDS times. Why: a sample's chunks agree on a
        register less well than real music does; the extra range of our samples came from single
        notes far outside it (measured: 18 such chunks in 64 DDPM samples, none in 64 real
        windows), which the conditioned infill replaces with notes that fit."""
        x = x.clone()
        for r in range(REPAIR_ROUNDS):
            stray = torch.from_numpy(np.stack([stray_chunks(t) for t in self.decode(x)]))
            rows = torch.nonzero(stray.any(1)).flatten()
            if not len(rows):
                break
            x[rows] = self.sample_latents(len(rows), x.shape[1], sampler, None if seed is None else seed + 1 + r,
                                          mask=stray[rows], known=x[rows], style=style)
        return x

    def repair_density(self, x: torch.Tensor, melodies: list[np.ndarray], plan: InfillPlan, sampler: Sampler,
                       seed: int | None = None, known: torch.Tensor | None = None, **sample: Any) -> torch.Tensor:
        """Infills `x` (B, k, d) of the plan's window of `melodies`, each one whose range (of
        DENSITY_MIN_BARS or more) is off its kept bars' note rate by more than DENSITY_MARGIN
        (`density_gap`) drawn again, the same way
        (`known` (B, k, d) and the `sample_latents` keywords `sample` as for `x`), up to
        DENSITY_ROUNDS times with new noise (seed + 1000 r), keeping the draw closest in density.
        Why: see DENSITY_MARGIN; the repair reads only the user's bars, never a reference."""
        def gaps(latents: torch.Tensor, rows: list[int]) -> list[float]:
            return [density_gap(splice_bars(melodies[i], t, plan), plan)
                    for i, t in zip(rows, self.decode(latents), strict=True)]

        if plan.steps[1] - plan.steps[0] < DENSITY_MIN_BARS * melody.STEPS_PER_BAR:
            return x
        x = x.clone()
        gap = gaps(x, list(range(len(x))))
        todo = [i for i, g in enumerate(gap) if g > DENSITY_MARGIN]
        mask = torch.from_numpy(plan.mask())
        for r in range(1, DENSITY_ROUNDS + 1):
            if not todo:
                break
            redo = self.sample_latents(len(todo), x.shape[1], sampler, None if seed is None else seed + 1000 * r,
                                       mask=mask, known=None if known is None else known[todo], **sample)
            for j, (i, g) in enumerate(zip(todo, gaps(redo, todo), strict=True)):
                if g < gap[i]:
                    x[i], gap[i] = redo[j], g
            todo = [i for i in todo if gap[i] > DENSITY_MARGIN]
        return x

    @torch.no_grad()
    def infer_style(self, known: torch.Tensor, keep: torch.Tensor) -> str:
        """The style the known chunks `known[keep]` ((k, d) model space; `keep` (k,) bool) are
        heard in: the label, ANY_STYLE among them, under which the net best denoises them seen as
        a piece of their own, by the mean eps error over `STYLE_PROBE` (the diffusion model as a
        zero-shot classifier, Li et al. 2023). ANY_STYLE, the corpus' mix, wins where no one style
        explains the music better; it is also the answer of a model without styles or where
        nothing is known."""
        x0 = torch.as_tensor(known)[torch.as_tensor(keep, dtype=torch.bool)].float()
        if not self.styles or not len(x0):
            return ANY_STYLE
        n = len(STYLE_PROBE) * STYLE_PROBE_DRAWS
        steps = self.schedule.num_steps
        level = torch.tensor([self.schedule.noise_level(round(f * steps)) for f in STYLE_PROBE],
                             dtype=torch.float64).repeat_interleave(STYLE_PROBE_DRAWS)
        eps = torch.randn((n, *x0.shape), generator=torch.Generator().manual_seed(0))
        x_t = self.schedule.q_sample(x0.expand(n, -1, -1), level, eps)
        labels = (ANY_STYLE, *self.styles)
        err = [(self.eps(x_t, level, style=torch.full((n,), i)) - eps).pow(2).mean()  # one label at a time:
               for i in range(len(labels))]  # a 64-bar piece's probe batch holds 0.5 GB of activations
        return labels[int(torch.stack(err).argmin())]

    def decode(self, latents: torch.Tensor, seed: int | None = 0) -> list[np.ndarray]:
        """(B, k, d) model space -> B token arrays of 2k bars (argmax decoding), all chunks in
        one batched pass."""
        b, k, _ = latents.shape
        flat = self.codec.decode(latents.reshape(b * k, -1), seed=seed)
        return list(flat.reshape(b, k * melody.CHUNK_STEPS))

    def generate(self, num: int = 1, bars: int = 64, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
                 seed: int | None = None, callback: Callback | None = None, style: str | None = None,
                 guidance: float = DEFAULT_GUIDANCE, repair: bool = True,
                 context_guidance: float | None = None) -> Result:
        """`num` new melodies of `bars` bars (up to 2 * seq_len), in `style` (None or ANY_STYLE: any), with
        `context_guidance` (`guided_eps`; 1 = none; None: the sampler's, `context_guidance_for`); with
        `repair`, stray chunks regenerated (`repair_register`)."""
        max_bars = self.seq_len * melody.BARS_PER_CHUNK
        if not 1 <= bars <= max_bars:
            raise GenerateError(f"bars must be between 1 and {max_bars}, got {bars}")
        if not 1 <= num <= 4096:
            raise GenerateError(f"num must be between 1 and 4096, got {num}")
        t0 = time.perf_counter()
        chain = self.sampler(sampler, steps)
        if context_guidance is None:
            context_guidance = context_guidance_for(sampler)
        x = self.sample_latents(num, -(-bars // melody.BARS_PER_CHUNK), chain, seed, callback, guidance=guidance,
                                style=style, context_guidance=context_guidance)
        if repair:
            x = self.repair_register(x, chain, seed, style)
        tokens = [t[: bars * melody.STEPS_PER_BAR] for t in self.decode(x)]
        return Result(tokens, x, time.perf_counter() - t0, style=style or ANY_STYLE)

    def infill(self, tokens: np.ndarray, span: tuple[int, int], sampler: str = DEFAULT_SAMPLER,
               steps: int | None = None, seed: int | None = None, callback: Callback | None = None,
               extend_bars: int = 0, method: str | None = None, guidance: float = DEFAULT_GUIDANCE,
               style: str | None = None, repair: bool = True) -> Result:
        """Regenerate the token steps `span` (end exclusive; `melody.BarMap.steps` turns a file's
        bars into them) of a melody (`method` from `infill_methods`, the model's default when
        None); with `extend_bars`, the melody first gets that many empty 4/4 bars appended
        (continuation). `style` None: the style the rest of the piece is heard in (`infer_style`).
        Why: told the style, infills fit their pieces better (README, "Does the music hold
        together?"), and the user's piece says what it is. With `repair`, a range far off the
        piece's note rate is drawn again (`repair_density`)."""
        tokens = np.asarray(tokens, dtype=np.uint8)
        melody.check_tokens(tokens)
        if len(tokens) % melody.STEPS_PER_BAR:
            raise GenerateError("the melody's length must be whole bars")
        if not 0 <= extend_bars <= self.seq_len * melody.BARS_PER_CHUNK:
            raise GenerateError(f"a melody can be extended by 0 to {self.seq_len * melody.BARS_PER_CHUNK} bars")
        t0 = time.perf_counter()
        full = np.concatenate([tokens, np.zeros(extend_bars * melody.STEPS_PER_BAR, dtype=np.uint8)])
        plan = plan_infill(len(full), span, self.seq_len)
        w0, w1 = plan.window_steps  # only the window is encoded: memory stays bounded however long the file
        known = self.codec.encode(full[w0:w1])
        mask = torch.from_numpy(plan.mask())
        if style is None:
            style = self.infer_style(known, ~mask)
        chain = self.sampler(sampler, steps)
        x = self.sample_latents(1, len(known), chain, seed, callback, mask, known[None], method, guidance, style)
        if repair:
            x = self.repair_density(x, [full], plan, chain, seed, known[None], callback=callback, method=method,
                                    guidance=guidance, style=style)
        return Result([splice_bars(full, self.decode(x)[0], plan)], x, time.perf_counter() - t0, plan, style)

    def extend(self, tokens: np.ndarray, bars: int, **kwargs) -> Result:
        """Continue a melody by `bars` new bars."""
        if bars < 1:
            raise GenerateError(f"bars to add must be at least 1, got {bars}")
        n = len(tokens)
        return self.infill(tokens, (n, n + bars * melody.STEPS_PER_BAR), extend_bars=bars, **kwargs)

