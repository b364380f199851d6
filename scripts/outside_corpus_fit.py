"""Does the heard style help melodies from outside the corpus? The fidelity task's regenerated
middle (`symdiff.evaluation.fidelity`: window, region, fit figures) on a folder of MIDI files,
infilled by `MelodyDiffusion.infill` in any style and in the style heard in the rest of each
melody, over a few seeds.

    python scripts/outside_corpus_fit.py tests/data/melody_set --seeds 0 1
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from symdiff.errors import SymdiffError
from symdiff.evaluation.fidelity import FIT, MIN_BARS, fit_figures, make_piece
from symdiff.generate import ANY_STYLE, DEFAULT_DIFFUSION, MelodyDiffusion
from symdiff.melody import STEPS_PER_BAR, read_midi

FIGURES = [k for k in FIT if k != "restated_chunks"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_DIFFUSION)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    pipe = MelodyDiffusion.from_pretrained(args.checkpoint)
    rows: dict[str, list[np.ndarray]] = {"real middle": [], "any style": [], "heard style": []}
    for path in sorted(args.folder.glob("*.mid")):
        try:
            tokens = read_midi(path).chosen.tokens
        except SymdiffError:
            continue
        if len(tokens) // STEPS_PER_BAR < MIN_BARS:
            continue
        piece = make_piece(tokens, {"source": "", "piece": path.name, "voice": ""})
        a, b = piece.region
        span = (a * STEPS_PER_BAR, b * STEPS_PER_BAR)
        rows["real middle"].append(np.array([fit_figures(piece.tokens, piece.region)[k] for k in FIGURES]))
        heard = ""
        for name, style in (("heard style", None), ("any style", ANY_STYLE)):
            figs = []
            for seed in args.seeds:
                res = pipe.infill(piece.tokens, span, seed=seed, style=style)
                heard = heard or res.style
                figs.append([fit_figures(res.tokens[0], piece.region)[k] for k in FIGURES])
            rows[name].append(np.mean(figs, 0))
        print(f"{path.name}: heard {heard}", flush=True)
    print(f"\n{len(rows['real middle'])} melodies of {MIN_BARS}+ bars; mean (standard error) of "
          + ", ".join(FIT[k] for k in FIGURES))
    for name, v in rows.items():
        m, se = np.mean(v, 0), np.std(v, 0, ddof=1) / np.sqrt(len(v))
        print(f"{name:12s} " + "  ".join(f"{x:.3f} ({e:.3f})" for x, e in zip(m, se, strict=True)))


if __name__ == "__main__":
    main()
