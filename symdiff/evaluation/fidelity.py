"""Does the music hold together? Infill fidelity and sample coherence (issue 11), beside Table 1.

Table 1's framewise Consistency/Variance compares adjacent 4-bar frames only: a melody that
drifts in register and key a little at every step passes it. These two tasks measure what a
musician hears instead.

Fidelity (`symdiff evaluate --task fidelity`): regenerate the middle of held-out pieces and ask
how well the new middle fits the rest of its piece.
- Pieces: lines of the *test* split (a folk tune, or one voice of a chorale or a mass: a
  "piece" here is one melody) with at least 16 bars, per style. Styles are the corpus' own
  (`corpus.SUBCORPORA`): folk = essenFolksong, oneills1850, ryansMammoth, airdsAirs, miscFolk;
  chorale = bach; vocal (Renaissance vocal polyphony, with its late-medieval and early-Baroque
  neighbours) = palestrina, monteverdi, trecento, josquin, ciconia, luca, lusitano. Lines are
  drawn at random (seeded), one voice per work first, then second voices, and so on: the test
  split has only 9 chorales with a voice of 16 bars or more, so 30 chorale lines come from them.
- Window and region: the piece's whole 2-bar chunks, at most 32 (64 bars; a longer line gives
  its centred 32-chunk window, an odd last bar is left out). With c chunks the region is the
  middle c // 2 chunks, starting at chunk (c - c // 2) // 2 (64 bars: bars 17-48, the paper's
  task); with `--region-bars N`, the middle N bars (whole chunks), as a musician picks a few.
  Everything outside it is the context, copied back exactly (`generate.plan_infill`,
  `generate.splice_bars`, as `symdiff infill` does).
- Rows: the real middle (the ceiling); the real middle decoded from its VAE latents (what the
  latent space can carry); each infilling method the pipeline serves (`pipe.infill_methods`;
  "replace" is the paper's Algorithm 1), batched over pieces of equal chunk count, known
  latents = the VAE's mu, in the style each piece's context is heard in
  (`MelodyDiffusion.infer_style`, as `symdiff infill` does by default), an infill that misses
  what its range must keep drawn again (`MelodyDiffusion.repair`, as `symdiff infill` does, with
  the note rate of the piece: the middle is hidden, so `fit.targets(density="piece")`;
  the default infill's first draw, before that repair, is a row of its own; Table 1's infill
  rows are the plain chains); for a model with styles also in any style (no label) and told the
  pieces' style; interpolation
  (`baselines.interpolate_infill`, silent chunks by the codec's rule); the N(0, I) prior
  (`baselines.prior_latents`) in the region; repetition: the P = min(region, context before
  it) bars right before the region copied into it cyclically.
- Figures, region against context of the same (spliced) melody; a note belongs to the bar
  where it starts (`metrics.melody_notes`), each note counts once whatever its length:
  * pitch overlap (higher is better): overlapping area of the Gaussians fitted to the region's
    pitches and the context's (mean, population std + 1e-6 as in `metrics`' framewise OA,
    `metrics.gaussian_overlap`); 0 when a side has no note.
  * pitch-class cosine (key, higher is better): cosine of the 12-bin pitch-class count
    histograms; 0 when a side has no note.
  * onset-position distance (rhythm, lower is better): total variation distance (half the L1
    distance) between the normalised histograms of onset positions within the bar (16 steps
    of the grid's 4/4 bar); 1 when a side has no note.
  * abs log note-density ratio (lower is better): |log(d_region / d_context)| with d = notes
    per bar, a side's note count floored at 0.5 so that a silent region stays finite.
  * restated 2-bar chunks (neither better nor worse: the real middle's share is what the pieces
    do): share of the region's chunks that hold a note onset and equal a chunk of the context
    token for token. Folk tunes and chorales restate whole phrases (AABA forms, the chorale's
    repeated opening), so a middle that fits them restates some.
  Per piece, then the plain mean over a style's pieces (the json also has the standard error).

Coherence (`--task coherence`): per-melody figures of unconditional 64-bar samples
(`pipe.generate`, in any style; the same without its context guidance; the plain chain, with
neither that nor the register repair: the paper's sampler) next to real
64-bar test windows (`dataset.random_windows`, all styles, as Table 1's test data):
  * pitch range: max - min pitch in semitones (0 without notes);
  * silent bars: share of bars without a note onset (the codec's silence rule, `melody.silent_chunks`);
  * key stability: cosine of the pitch-class histograms of the two halves (bars 1-32, 33-64);
  * repeated chunks: share of the 2-bar chunks that hold a note onset and equal an earlier chunk
    of the same melody token for token (rests repeating rests are not a repeated phrase);
  * chunk pitch spread: std over the chunks with notes of their mean pitch (register drift);
  * over a quarter of bars silent: share of melodies with more than `generate.SILENT_SHARE` of
    their bars without a note onset (the floor of `generate.repair_samples`);
  * longest held note: the longest run of bars without an onset under one held note;
  * ends on its tonic: share of melodies whose last note is the tonic of the key its pitch
    classes say (`fit.find_key`).
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import fit
from ..atomic import write_text
from ..baselines import interpolate_infill, prior_latents
from ..data.corpus import STYLES, style_of
from ..dataset import DEFAULT_PATH, WINDOW_CHUNKS, Lines, random_windows
from ..fit import density_log_ratio, find_key
from ..generate import (
    ANY_STYLE,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    SILENT_SHARE,
    MelodyDiffusion,
    Request,
    context_guidance_for,
    longest_held,
    plan_infill,
    splice_bars,
)
from ..melody import BARS_PER_CHUNK, CHUNK_STEPS, NOTE_OFF, STEPS_PER_BAR
from ..metrics import STD_EPS, gaussian_overlap, melody_notes
from . import MIN_BARS

DEFAULT_PIECES = 30  # per style
DEFAULT_SAMPLES = 64
FIT = {  # key -> column title
    "pitch_overlap": "pitch overlap",
    "pitch_class_cosine": "pitch-class cosine (key)",
    "onset_distance": "onset-position distance (rhythm, lower is better)",
    "density_log_ratio": "abs log note-density ratio (lower is better)",
    "restated_chunks": "restated 2-bar chunks",
}
COHERENCE = {
    "pitch_range": "pitch range (semitones)",
    "silent_bars": "silent bars",
    "key_stability": "key stability (halves' pitch-class cosine)",
    "repeated_chunks": "repeated 2-bar chunks",
    "chunk_pitch_spread": "chunk pitch spread (semitones)",
    "mostly_silent": "over a quarter of bars silent",
    "longest_held": "longest held note (bars)",
    "tonic_ending": "ends on its tonic",
}
SHARES = ("silent_bars", "repeated_chunks", "restated_chunks", "mostly_silent", "tonic_ending")  # shown in percent

NOTES = {  # under each table: what its rows are
    "fidelity": "The {region} of each test piece (whole 2-bar chunks, at most a 64-bar window) regenerated, "
                "the rest kept; each figure compares the region with the rest of its piece. Rows: the real middle "
                "(the ceiling), decoded from its VAE latents, each infilling method (replace = the paper's "
                "Algorithm 1; a middle far off its piece's note rate drawn again, as `symdiff infill` does, \"no "
                "density repair\" the default's first draws), interpolation, the N(0, I) prior, the bars before "
                "the region repeated.",
    "coherence": "Unconditional 64-bar samples against real 64-bar windows of the test split; per melody, then "
                 "averaged. Rows: the samples as `generate` gives them (context guidance, then the register "
                 "repair), without the context guidance, and the plain chain (the paper's sampler). Silent bars: "
                 "no note onset; repeated chunks: 2-bar chunks with notes that equal an earlier chunk exactly.",
}


# --- figures ----------------------------------------------------------------------------------

def pitch_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap area of the Gaussians fitted to two sets of pitches; 0 when one is empty."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(gaussian_overlap(a.mean(), a.std() + STD_EPS, b.mean(), b.std() + STD_EPS))


def pitch_class_histogram(pitches: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(pitches, np.int64) % 12, minlength=12).astype(np.float64)


def onset_histogram(starts: np.ndarray) -> np.ndarray:
    """Counts of onsets per position within the bar (16 steps)."""
    return np.bincount(np.asarray(starts, np.int64) % STEPS_PER_BAR, minlength=STEPS_PER_BAR).astype(np.float64)


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine similarity; 0 when either vector is zero (no notes: nothing in common)."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    return float(np.dot(u, v) / (nu * nv)) if nu > 0 and nv > 0 else 0.0


def total_variation(u: np.ndarray, v: np.ndarray) -> float:
    """Total variation distance of two count histograms after normalising; 1 when either is empty."""
    su, sv = float(np.sum(u)), float(np.sum(v))
    if su == 0 or sv == 0:
        return 1.0
    return float(0.5 * np.abs(np.asarray(u) / su - np.asarray(v) / sv).sum())


def phrases(tokens: np.ndarray) -> list[bytes | None]:
    """Each whole 2-bar chunk as a key that equal chunks share; None for a chunk without a note
    onset (rests repeating rests are not a repeated phrase)."""
    chunks = np.asarray(tokens)[: len(tokens) // CHUNK_STEPS * CHUNK_STEPS].reshape(-1, CHUNK_STEPS)
    return [c.tobytes() if (c > NOTE_OFF).any() else None for c in chunks]


def fit_figures(tokens: np.ndarray, region: tuple[int, int]) -> dict[str, float]:
    """The fit figures of the 0-indexed, end-exclusive bar `region` against the rest of `tokens`."""
    pitches, starts, _ = melody_notes(tokens)
    lo, hi = (b * STEPS_PER_BAR for b in region)
    inside = (starts >= lo) & (starts < hi)
    keys = phrases(tokens)
    ours = [lo <= i * CHUNK_STEPS < hi for i in range(len(keys))]
    context = {k for k, o in zip(keys, ours, strict=True) if not o}
    restated = sum(k is not None and k in context for k, o in zip(keys, ours, strict=True) if o)
    bars_in = region[1] - region[0]
    bars_out = len(tokens) // STEPS_PER_BAR - bars_in
    return {
        "pitch_overlap": pitch_overlap(pitches[inside], pitches[~inside]),
        "pitch_class_cosine": cosine(pitch_class_histogram(pitches[inside]), pitch_class_histogram(pitches[~inside])),
        "onset_distance": total_variation(onset_histogram(starts[inside]), onset_histogram(starts[~inside])),
        "density_log_ratio": density_log_ratio(int(inside.sum()), bars_in, int((~inside).sum()), bars_out),
        "restated_chunks": restated / max(sum(ours), 1),
    }


def coherence_figures(tokens: np.ndarray) -> dict[str, float]:
    """Per-melody coherence figures (see the module docstring)."""
    tokens = np.asarray(tokens)
    pitches, starts, _ = melody_notes(tokens)
    bars = len(tokens) // STEPS_PER_BAR
    onset_bars = np.zeros(bars, dtype=bool)
    onset_bars[starts // STEPS_PER_BAR] = True
    half = bars // 2 * STEPS_PER_BAR
    first = starts < half
    keys = phrases(tokens)
    seen: set[bytes | None] = set()
    repeats = 0
    for key in keys:
        repeats += key is not None and key in seen
        seen.add(key)
    chunk_of = starts // CHUNK_STEPS
    means = [pitches[chunk_of == c].mean() for c in np.unique(chunk_of)]
    tonic = find_key(tokens)
    return {
        "pitch_range": float(pitches.max() - pitches.min()) if len(pitches) else 0.0,
        "silent_bars": float(1.0 - onset_bars.mean()),
        "key_stability": cosine(pitch_class_histogram(pitches[first]), pitch_class_histogram(pitches[~first])),
        "repeated_chunks": repeats / len(keys),
        "chunk_pitch_spread": float(np.std(means)) if means else 0.0,
        "mostly_silent": float(1.0 - onset_bars.mean() > SILENT_SHARE),
        "longest_held": float(longest_held(tokens)),
        "tonic_ending": float(tonic is not None and int(pitches[np.argmax(starts)]) % 12 == tonic.tonic),
    }


def repetition_infill(tokens: np.ndarray, region: tuple[int, int]) -> np.ndarray:
    """`tokens` with the bar `region` filled by the P = min(region, bars before it) bars right
    before it, repeated cyclically (repetition alone, the baseline every melody can reach)."""
    a, b = region
    if a == 0:
        raise ValueError("repetition needs bars before the region")
    period = min(b - a, a) * STEPS_PER_BAR
    out = np.array(tokens, dtype=np.uint8, copy=True)
    lo, hi = a * STEPS_PER_BAR, b * STEPS_PER_BAR
    out[lo:hi] = np.resize(out[lo - period : lo], hi - lo)
    return out


# --- pieces -----------------------------------------------------------------------------------

@dataclass
class Piece:
    """One test melody as evaluated: its window of whole chunks and the region regenerated."""

    source: str
    piece: str
    voice: str
    start_bar: int  # of the window in the line
    tokens: np.ndarray  # the window
    region: tuple[int, int]  # bars of the window, 0-indexed, end exclusive

    @property
    def chunks(self) -> int:
        return len(self.tokens) // CHUNK_STEPS

    def info(self) -> dict:
        return {"source": self.source, "piece": self.piece, "voice": self.voice, "start_bar": self.start_bar,
                "bars": self.chunks * BARS_PER_CHUNK, "region": list(self.region)}


def middle_region(chunks: int, region_bars: int | None = None) -> tuple[int, int]:
    """Bars of the middle chunks // 2 chunks of a window of `chunks` chunks, or of its middle
    `region_bars` bars (whole chunks, at most half of a MIN_BARS piece)."""
    m = chunks // 2 if region_bars is None else region_bars // BARS_PER_CHUNK
    r0 = (chunks - m) // 2
    return r0 * BARS_PER_CHUNK, (r0 + m) * BARS_PER_CHUNK


def make_piece(tokens: np.ndarray, meta: dict[str, str], region_bars: int | None = None) -> Piece:
    """The line's whole chunks, its centred 32-chunk window when longer, and the middle region
    (`middle_region`)."""
    total = len(tokens) // CHUNK_STEPS
    c = min(total, WINDOW_CHUNKS)
    s = (total - c) // 2
    window = np.asarray(tokens[s * CHUNK_STEPS : (s + c) * CHUNK_STEPS], dtype=np.uint8)
    return Piece(meta["source"], meta["piece"], meta["voice"], s * BARS_PER_CHUNK, window,
                 middle_region(c, region_bars))


def check_region_bars(region_bars: int | None) -> None:
    """A region the fidelity task can cut from every piece: whole chunks, leaving half of the
    shortest piece (MIN_BARS bars) as its context."""
    if region_bars is not None and not (region_bars % BARS_PER_CHUNK == 0 and 0 < region_bars <= MIN_BARS // 2):
        raise ValueError(f"the region must be {BARS_PER_CHUNK} to {MIN_BARS // 2} bars, in steps of "
                         f"{BARS_PER_CHUNK}, got {region_bars}")


def select_pieces(lines: Lines, style: str, num: int, seed: int, split: str = "test",
                  region_bars: int | None = None) -> list[Piece]:
    """`num` random lines of a style with at least `MIN_BARS` bars, one voice per work first, each
    with its middle region (`middle_region`)."""
    cands = [i for i, (t, m) in enumerate(zip(lines.tokens, lines.meta, strict=True))
             if m["split"] == split and style_of(m["source"]) == style and len(t) // STEPS_PER_BAR >= MIN_BARS]
    taken: dict[str, int] = defaultdict(int)
    keyed: list[tuple[int, int, int]] = []
    for j in np.random.default_rng(seed).permutation(len(cands)):
        i = cands[j]
        work = lines.meta[i]["piece"]
        keyed.append((taken[work], len(keyed), i))  # (voices of this work already drawn, draw order)
        taken[work] += 1
    return [make_piece(lines.tokens[i], lines.meta[i], region_bars) for _, _, i in sorted(keyed)[:num]]


# --- the runs ---------------------------------------------------------------------------------

@dataclass
class Report:
    """A fidelity or coherence result: per-item rows and their means, as json and markdown."""

    task: str
    settings: dict
    groups: dict[str, dict] = field(default_factory=dict)  # style (or "all") -> {"items", "rows"}

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "settings": self.settings, "groups": self.groups}, indent=1)

    def markdown(self) -> str:
        fit = self.task == "fidelity"
        cols = FIT if fit else COHERENCE
        lines = [f"| {'style: row' if fit else 'row'} | {'pieces' if fit else 'melodies'} | "
                 + " | ".join(cols.values()) + " |", "|" + "---|" * (len(cols) + 2)]
        for group, g in self.groups.items():
            for name, r in g["rows"].items():
                cells = ["-" if k not in r["mean"] else f"{r['mean'][k]:.1%}" if k in SHARES else f"{r['mean'][k]:.2f}"
                         for k in cols]  # "-": a figure added after the run
                lines.append(f"| {f'{group}: {name}' if fit else name} | {r['n']} | " + " | ".join(cells) + " |")
        heard = {group: g["heard_styles"] for group, g in self.groups.items() if "heard_styles" in g}
        if heard:
            said = [f"{group} pieces: " + ", ".join(f"{h} {n}" for h, n in counts.items())
                    for group, counts in heard.items()]
            lines += ["", "Styles the default infill heard in each piece's context: " + "; ".join(said) + "."]
        s = self.settings
        region = f"middle {s['region_bars']} bars" if s.get("region_bars") else "middle half"
        note = NOTES[self.task].format(region=region)
        lines += ["", note, "", f"Diffusion: {s['checkpoint']}, {s['sampler']} sampler, {s['steps']} "
                  f"steps, seed {s['seed']}; {s['seconds']:.0f} s in all. "
                  "Definitions: `symdiff/evaluation/fidelity.py`."]
        return "\n".join(lines) + "\n"


def summarize(per_item: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    """Mean and standard error of each figure per row."""
    out = {}
    for name, rows in per_item.items():
        keys = rows[0].keys()
        vals = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in keys}
        sem = {k: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0 for k, v in vals.items()}
        out[name] = {"n": len(rows), "mean": {k: float(v.mean()) for k, v in vals.items()}, "sem": sem}
    return out


def _shown(path: str | Path) -> str:
    """A path as the repository names it when it lies below the working folder (committed results)."""
    full = Path(path).absolute()
    return str(full.relative_to(Path.cwd()) if path and full.is_relative_to(Path.cwd()) else path)


def _settings(pipe: MelodyDiffusion, checkpoint: str | Path, data: Path, sampler: str, steps: int | None,
              seed: int) -> dict:
    return {"checkpoint": _shown(checkpoint), "data": _shown(data), "model": pipe.model.config.name, "sampler": sampler,
            "steps": pipe.sampler(sampler, steps).num_steps, "seed": seed}


Run = tuple[str, float, str | None, bool]  # infill method, guidance, style (None: heard), density repair


def method_runs(pipe: MelodyDiffusion, guidance: tuple[float, ...] = (DEFAULT_GUIDANCE,),
                style: str | None = None) -> dict[str, Run]:
    """Row name -> how its infills are drawn: every method the pipeline serves, "conditioned" at
    each guidance weight (`MelodyDiffusion.guided_eps`; the default weight's row has no suffix),
    in the style each piece is heard in (None, as `pipe.infill` does by default), with the density
    repair (`MelodyDiffusion.repair`, as `pipe.infill` does, on the piece's note rate); the default infill's first
    draw, before that repair; for a model with styles, the default infill in any style (no
    label), and, where the model knows the pieces' `style`, told that style (what a user who
    names it gets)."""
    default = pipe.infill_methods[0]
    runs: dict[str, Run] = {}
    for m in pipe.infill_methods:
        for w in (guidance if m == "conditioned" else (DEFAULT_GUIDANCE,)):
            name = f"diffusion ({m})" if w == DEFAULT_GUIDANCE else f"diffusion ({m}, guidance {w:g})"
            runs[name] = (m, w, None, True)
            if (m, w) == (default, DEFAULT_GUIDANCE):
                runs[f"diffusion ({m}, no density repair)"] = (m, w, None, False)
    if pipe.styles:
        runs[f"diffusion ({default}, any style)"] = (default, DEFAULT_GUIDANCE, ANY_STYLE, True)
    if style in pipe.styles:
        runs[f"diffusion ({default}, style given)"] = (default, DEFAULT_GUIDANCE, style, True)
    return runs


def heard_styles(pipe: MelodyDiffusion, pieces: list[Piece]) -> list[str]:
    """The style each piece's context is heard in (`MelodyDiffusion.infer_style`), as `infill` hears it."""
    heard = []
    for p in pieces:
        a, b = p.region
        plan = plan_infill(p.chunks * CHUNK_STEPS, (a * STEPS_PER_BAR, b * STEPS_PER_BAR), pipe.seq_len)
        heard.append(pipe.infer_style(pipe.codec.encode(p.tokens), ~torch.from_numpy(plan.mask())))
    return heard


def infill_rows(pipe: MelodyDiffusion, pieces: list[Piece], sampler: str, steps: int | None, seed: int,
                progress: bool = True, desc: str = "fidelity", guidance: tuple[float, ...] = (DEFAULT_GUIDANCE,),
                style: str | None = None, heard: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Every row's spliced melodies, in the order of `pieces` (all of one `style`); the rows in the
    style each piece is heard in take it from `heard` (`heard_styles`; default: any style). Pieces
    of one length heard in one style are one batch; rows that draw a batch the same way (method,
    guidance, style; the seed is the same for all) share its chain."""
    runs = method_runs(pipe, guidance, style)
    heard = heard or [ANY_STYLE] * len(pieces)
    names = ["real middle, VAE-decoded", *runs, "interpolation", "N(0,I) prior"]
    spliced: dict[str, dict[int, np.ndarray]] = {name: {} for name in names}  # row -> piece index -> melody
    by_chunks: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(pieces):
        by_chunks[p.chunks].append(i)
    batches: dict[int, dict[str, list[tuple[str, tuple[bool, ...]]]]] = {}  # chunks -> row -> (style, pieces)
    for c, idx in by_chunks.items():
        batches[c] = {}
        for name, (_, _, st, _) in runs.items():
            styles = [heard[i] if st is None else st for i in idx]
            batches[c][name] = [(one, tuple(s == one for s in styles)) for one in sorted(set(styles))]
    chains = sum(len({(*runs[name][:2], *batch) for name, row in per.items() for batch in row})
                 for per in batches.values())  # distinct (method, guidance, style, pieces)
    smp = pipe.sampler(sampler, steps)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=chains * smp.num_steps, desc=desc, unit="step", disable=not progress, leave=False)

    def tick(*_: object) -> None:
        bar.update(1)

    for c, idx in sorted(by_chunks.items()):
        first, end = pieces[idx[0]].region
        plan = plan_infill(c * CHUNK_STEPS, (first * STEPS_PER_BAR, end * STEPS_PER_BAR), pipe.seq_len)
        mask = torch.from_numpy(plan.mask())
        known = torch.stack([pipe.codec.encode(pieces[i].tokens) for i in idx])
        prior = prior_latents(len(idx), c, pipe.codec.scaler, gen, config=pipe.codec.config)
        made = {"real middle, VAE-decoded": known,
                "interpolation": interpolate_infill(known, mask, pipe.codec.scaler, config=pipe.codec.config),
                "N(0,I) prior": torch.where(mask[None, :, None], prior, known)}
        drawn: dict[tuple, torch.Tensor] = {}  # (method, guidance, style, pieces) -> first draws
        repaired: dict[tuple, torch.Tensor] = {}  # the same after the density repair
        for name, (m, w, _, repair) in runs.items():
            made[name] = torch.empty_like(known)
            for one, sel in batches[c][name]:
                kw: dict[str, Any] = {"method": m, "guidance": w, "style": one}
                pick, key = torch.tensor(sel), (m, w, one, sel)
                if key not in drawn:
                    drawn[key] = pipe.sample_latents(int(pick.sum()), c, smp, seed=seed, mask=mask, known=known[pick],
                                                     callback=tick, **kw)
                if repair and key not in repaired:
                    melodies = [pieces[i].tokens for i, s in zip(idx, sel, strict=True) if s]
                    goals = [fit.targets(m, plan.steps, "piece", plan.window_steps) for m in melodies]
                    repaired[key] = pipe.repair(drawn[key], melodies, plan, goals, smp, seed, known[pick], **kw)[0]
                made[name][pick] = (repaired if repair else drawn)[key]
        for name, x in made.items():
            for i, t in zip(idx, pipe.decode(x), strict=True):
                spliced[name][i] = splice_bars(pieces[i].tokens, t, plan)
    bar.close()
    rows = {"real middle": [p.tokens for p in pieces]}
    rows.update({name: [spliced[name][i] for i in range(len(pieces))] for name in names})
    rows["repetition"] = [repetition_infill(p.tokens, p.region) for p in pieces]
    return rows


def fidelity(pipe: MelodyDiffusion, num: int = DEFAULT_PIECES, styles: tuple[str, ...] = STYLES,
             sampler: str = DEFAULT_SAMPLER, steps: int | None = None, seed: int = 0, data: Path = DEFAULT_PATH,
             checkpoint: str | Path = "", progress: bool = True, log: Callable[[str], None] = print,
             guidance: tuple[float, ...] = (DEFAULT_GUIDANCE,), region_bars: int | None = None) -> Report:
    """Regenerate the middle half (or the middle `region_bars` bars) of `num` test pieces per style
    by every row (module docstring); the conditioned infill at each `guidance` weight."""
    check_region_bars(region_bars)
    t0 = time.perf_counter()
    lines = Lines.load(data)
    report = Report("fidelity", {**_settings(pipe, checkpoint, data, sampler, steps, seed), "pieces_per_style": num})
    if region_bars is not None:
        report.settings["region_bars"] = region_bars
    for style in styles:
        pieces = select_pieces(lines, style, num, seed, region_bars=region_bars)
        if not pieces:
            log(f"no {style} test piece of {MIN_BARS} bars or more")
            continue
        heard = heard_styles(pipe, pieces)
        rows = infill_rows(pipe, pieces, sampler, steps, seed, progress, desc=f"fidelity: {style}", guidance=guidance,
                           style=style, heard=heard)
        figs = {name: [fit_figures(t, p.region) for t, p in zip(tokens, pieces, strict=True)]
                for name, tokens in rows.items()}
        items = [{**p.info(), "heard_style": h, "rows": {name: figs[name][i] for name in rows}}
                 for i, (p, h) in enumerate(zip(pieces, heard, strict=True))]
        counts = {h: heard.count(h) for h in sorted(set(heard))}
        report.groups[style] = {"items": items, "rows": summarize(figs), "heard_styles": counts}
    report.settings["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def coherence(pipe: MelodyDiffusion, num: int = DEFAULT_SAMPLES, sampler: str = DEFAULT_SAMPLER,
              steps: int | None = None, seed: int = 0, data: Path = DEFAULT_PATH, checkpoint: str | Path = "",
              progress: bool = True, context_guidance: float | None = None) -> Report:
    """Coherence figures of `num` unconditional 64-bar samples (as `generate` gives them, with
    `context_guidance`, by default the sampler's; without it; the plain chain, with neither that
    nor `repair_samples`) and `num` real 64-bar test windows."""
    t0 = time.perf_counter()
    if context_guidance is None:
        context_guidance = context_guidance_for(sampler)
    bars = WINDOW_CHUNKS * BARS_PER_CHUNK
    real = random_windows(Lines.load(data), "test", num, seed)
    chain = pipe.sampler(sampler, steps)
    bar = tqdm(total=2 * chain.num_steps, desc="coherence", unit="step", disable=not progress, leave=False)
    made = {cg: pipe.generate(num, bars, sampler, steps, seed, callback=lambda *_: bar.update(1), repair=False,
                              context_guidance=cg).latents for cg in (context_guidance, 1.0)}
    bar.close()
    alone = [Request(num, seed)]
    melodies = {"real test windows": real,
                "diffusion samples": pipe.decode(pipe.repair_samples(made[context_guidance], chain, alone)),
                "diffusion samples, no context guidance": pipe.decode(pipe.repair_samples(made[1.0], chain, alone)),
                "diffusion samples, plain chain": pipe.decode(made[1.0])}
    figs = {name: [coherence_figures(t) for t in tokens] for name, tokens in melodies.items()}
    report = Report("coherence", {**_settings(pipe, checkpoint, data, sampler, steps, seed), "melodies": num,
                                  "bars": bars, "context_guidance": context_guidance})
    report.groups["all"] = {"items": [{"row": name, "index": i, **f} for name, rows in figs.items()
                                      for i, f in enumerate(rows)], "rows": summarize(figs)}
    report.settings["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def write_report(report: Report, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{report.task}.json", out / f"{report.task}.md"]
    write_text(paths[0], report.to_json())
    write_text(paths[1], report.markdown())
    return paths
