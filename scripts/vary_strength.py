"""How close `symdiff vary` stays to the melody it varies, and how its variations hold together,
against the strength: eval/variations.{md,json,png}.

Melodies: PIECES test-split lines of each style of the corpus, at most their first 32 bars (the fidelity
task's pieces, `evaluation.fidelity.select_pieces`), each varied whole (`MelodyDiffusion.vary`,
the library's defaults: DDPM 200, the heard style, the repair) NUM times at every strength.
Figures per variation, then mean and standard error over all of them:
- agreement: share of 16th notes where the variation sounds the original's pitch (a rest
  agreeing with a rest), `melody.agreement`; the VAE's own reconstruction of the melody
  (decode(encode)) is the row "strength 0", what the latent space can carry back at all;
- notes kept: share of the original's notes (onset step and pitch) the variation plays too;
- between variations: the agreement of the variations of one melody with each other (how
  different the NUM variations are);
- the coherence figures of `symdiff evaluate --task coherence` (`fidelity.coherence_figures`):
  pitch range, silent bars, key stability (halves' pitch-class cosine), repeated chunks, ends on
  its tonic; the originals' own are the row "original".

    python scripts/vary_strength.py    # 23 minutes on one thread of a 2-core machine shared with other jobs
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from symdiff import melody
from symdiff.atomic import write_text
from symdiff.data.corpus import STYLES
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.evaluation.fidelity import coherence_figures, select_pieces, summarize
from symdiff.generate import DEFAULT_STEPS, MelodyDiffusion
from symdiff.options import DEFAULT_SAMPLER

STRENGTHS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
BARS = 32
QUALITY = {"pitch_range": "pitch range (semitones)", "silent_bars": "silent bars",
           "key_stability": "key stability", "repeated_chunks": "repeated 2-bar chunks",
           "tonic_ending": "ends on its tonic"}
CLOSENESS = {"agreement": "agreement with the original", "notes_kept": "notes kept",
             "between": "agreement between variations"}
SHARES = set(CLOSENESS) | {"silent_bars", "repeated_chunks", "tonic_ending"}


def notes_kept(new: np.ndarray, old: np.ndarray) -> float:
    played = old >= 2
    return float((new[played] == old[played]).mean()) if played.any() else float("nan")


def figures(new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    quality = coherence_figures(new)
    return {"agreement": melody.agreement(new, old), "notes_kept": notes_kept(new, old),
            **{k: quality[k] for k in QUALITY}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pieces", type=int, default=2, help="test lines per style")
    p.add_argument("--num", type=int, default=2, help="variations per melody and strength")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS[DEFAULT_SAMPLER])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("eval"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pipe = MelodyDiffusion.from_pretrained()
    lines = Lines.load(DEFAULT_PATH)
    pieces = [pc for style in STYLES for pc in select_pieces(lines, style, args.pieces, args.seed)]
    rows: dict[str, list[dict[str, float]]] = {"original": [], "strength 0 (the VAE's reconstruction)": []}
    for pc in pieces:
        old = pc.tokens[: BARS * melody.STEPS_PER_BAR]
        rows["original"].append({"agreement": 1.0, "notes_kept": 1.0, **{k: coherence_figures(old)[k]
                                                                          for k in QUALITY}})
        rows["strength 0 (the VAE's reconstruction)"].append(figures(pipe.decode(pipe.codec.encode(old)[None])[0], old))
        for s in STRENGTHS:
            res = pipe.vary(old, s, num=args.num, steps=args.steps, seed=args.seed)
            between = np.mean([melody.agreement(a, b) for a, b in itertools.combinations(res.tokens, 2)])
            rows.setdefault(f"strength {s:g}", []).extend(figures(t, old) | {"between": float(between)}
                                                          for t in res.tokens)
        print(f"{pc.source} {pc.piece}: {time.perf_counter() - t0:.0f} s", flush=True)
    lengths = [min(BARS, pc.chunks * melody.BARS_PER_CHUNK) for pc in pieces]
    summary = summarize({k: [{f: v for f, v in r.items() if not np.isnan(v)} for r in rs] for k, rs in rows.items()})
    settings = {"pieces": [pc.info() | {"bars": n} for pc, n in zip(pieces, lengths, strict=True)],
                "variations": args.num, "sampler": DEFAULT_SAMPLER, "steps": args.steps, "seed": args.seed,
                "strengths": STRENGTHS, "seconds": round(time.perf_counter() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "variations.json", json.dumps({"settings": settings, "rows": summary}, indent=1))
    cols = {**CLOSENESS, **QUALITY}
    md = ["| row | melodies | " + " | ".join(cols.values()) + " |", "|" + "---|" * (len(cols) + 2)]
    for name, r in summary.items():
        cells = ["-" if k not in r["mean"] else f"{r['mean'][k]:.1%}" if k in SHARES else f"{r['mean'][k]:.2f}"
                 for k in cols]
        md.append(f"| {name} | {r['n']} | " + " | ".join(cells) + " |")
    md += ["", f"{len(pieces)} test-split melodies ({args.pieces} per style: {', '.join(STYLES)}) of "
           f"{min(lengths)}-{max(lengths)} bars (at most their first {BARS}), "
           f"each varied whole {args.num} times per strength (`MelodyDiffusion.vary`: "
           f"{DEFAULT_SAMPLER} {args.steps} steps, the heard style, the repair), seed {args.seed}; "
           f"{settings['seconds']:.0f} s on one thread. Agreement: share of 16th notes sounding the original's "
           "pitch (or resting with it); notes kept: the original's notes (onset and pitch) played again; "
           "between variations: the variations of one melody against each other. Made by "
           "`python scripts/vary_strength.py`; definitions there."]
    write_text(args.out / "variations.md", "\n".join(md) + "\n")
    plot(summary, args.out / "variations.png")
    print("\n".join(md))


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [0.0] + list(STRENGTHS)
    names = ["strength 0 (the VAE's reconstruction)"] + [f"strength {s:g}" for s in STRENGTHS]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for key, label in CLOSENESS.items():
        pts = [(x, summary[n]["mean"][key], summary[n]["sem"][key]) for x, n in zip(xs, names, strict=True)
               if key in summary[n]["mean"]]
        a.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts], marker="o",
                   ms=3, capsize=2, label=label)
    a.set(xlabel="strength (0 = the VAE's reconstruction)", ylabel="%", ylim=(0, 100),
          title="How close a variation stays")
    a.legend(fontsize=8)
    for key in ("silent_bars", "repeated_chunks", "key_stability"):
        ys = [summary[n]["mean"][key] * 100 for n in names]
        line, = b.plot(xs, ys, marker="o", ms=3, label=QUALITY[key])
        b.axhline(summary["original"]["mean"][key] * 100, color=line.get_color(), ls=":", lw=1)
    b.set(xlabel="strength", ylabel="%", ylim=(0, 100), title="Quality (dotted: the originals)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
