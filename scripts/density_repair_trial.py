"""Trial of a density repair for the default infill, measured before it is built into the
library (`eval/tried-density-repair/`). Why: pooled over three seeds, chorale's mean density
figure trails interpolation's only because of a few infills whose note rate is far off their
piece's. The repair: a middle whose notes per bar differ from the rest of its piece by more than
exp(MARGIN) times is drawn again with new noise, up to ROUNDS times, keeping the draw closest in
density; it reads only the bars the user keeps, as the register repair does.

It redraws the fidelity task's default row (guidance 3, the heard style) for the committed seed
runs, the same batches and noise as `symdiff evaluate --task fidelity`, so the first draw
reproduces their figures, and compares before and after with interpolation piece by piece.

    python scripts/density_repair_trial.py eval/fidelity.json eval/fidelity-seed[12]/fidelity.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from symdiff.data.dataset import DEFAULT_PATH, Lines
from symdiff.evaluation.fidelity import FIT, fit_figures, select_pieces
from symdiff.generate import DEFAULT_DIFFUSION, DEFAULT_GUIDANCE, MelodyDiffusion, plan_infill, splice_bars
from symdiff.melody import CHUNK_STEPS, STEPS_PER_BAR

FIGURES = [k for k in FIT if k != "restated_chunks"]
MARGIN = 0.5  # abs log ratio of notes per bar, region against the rest: 1.65 times off
ROUNDS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="fidelity.json files of the default model")
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_DIFFUSION)
    args = ap.parse_args()
    lines = Lines.load(DEFAULT_PATH)
    pipe = MelodyDiffusion.from_pretrained(args.checkpoint, precision="auto")
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    redrawn: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # style -> [pieces redrawn, extra draws]
    for run in args.runs:
        report = json.loads(run.read_text())
        seed, smp = report["settings"]["seed"], pipe.sampler(report["settings"]["sampler"], report["settings"]["steps"])
        for style, group in report["groups"].items():
            items = group["items"]
            pieces = select_pieces(lines, style, len(items), seed)
            assert [p.piece for p in pieces] == [it["piece"] for it in items], f"{run}: other pieces than the run's"
            batches = defaultdict(list)  # as infill_rows batches them: by length, then by heard style
            for i, (p, it) in enumerate(zip(pieces, items, strict=True)):
                batches[(p.chunks, it["heard_style"])].append(i)
            for (chunks, heard), idx in sorted(batches.items()):
                first, end = pieces[idx[0]].region
                plan = plan_infill(chunks * CHUNK_STEPS, (first * STEPS_PER_BAR, end * STEPS_PER_BAR), pipe.seq_len)
                mask = torch.from_numpy(plan.mask())
                known = torch.stack([pipe.codec.encode(pieces[i].tokens) for i in idx])
                best: dict[int, dict[str, float]] = {}
                todo = list(range(len(idx)))
                for r in range(ROUNDS + 1):
                    redrawn[style][1] += len(todo) if r else 0
                    x = pipe.sample_latents(len(todo), chunks, smp, seed=seed + 1000 * r, mask=mask, known=known[todo],
                                            method="conditioned", guidance=DEFAULT_GUIDANCE, style=heard)
                    for k, t in zip(todo, pipe.decode(x), strict=True):
                        fig = fit_figures(splice_bars(pieces[idx[k]].tokens, t, plan), pieces[idx[k]].region)
                        if r == 0:
                            rows[style]["before"].append([fig[q] for q in FIGURES])
                        if k not in best or fig["density_log_ratio"] < best[k]["density_log_ratio"]:
                            best[k] = fig
                    todo = [k for k in todo if best[k]["density_log_ratio"] > MARGIN]
                    redrawn[style][0] += len(todo) if r == 0 else 0
                    if not todo:
                        break
                for k, i in enumerate(idx):
                    rows[style]["after"].append([best[k][q] for q in FIGURES])
                    rows[style]["interpolation"].append([items[i]["rows"]["interpolation"][q] for q in FIGURES])
    print(f"Density repair trial (margin {MARGIN}, up to {ROUNDS} redraws) on {', '.join(map(str, args.runs))}: "
          "means over every piece, and the paired difference to interpolation (standard error).\n")
    print("| style | pieces | row | " + " | ".join(FIT[k].split(" (")[0] for k in FIGURES) + " |")
    print("|---|---|---|" + "---|" * len(FIGURES))
    for style, r in rows.items():
        interp = np.array(r["interpolation"])
        for name in ("before", "after"):
            x = np.array(r[name])
            diff = x - interp
            se = diff.std(0, ddof=1) / np.sqrt(len(x))
            cells = [f"{m:.3f} ({d:+.3f} +- {s:.3f})" for m, d, s in zip(x.mean(0), diff.mean(0), se, strict=True)]
            print(f"| {style} | {len(x)} | {name} | " + " | ".join(cells) + " |")
        print(f"| {style} | {len(interp)} | interpolation | " + " | ".join(f"{m:.3f}" for m in interp.mean(0)) + " |")
    print("\nRedrawn (pieces, extra draws): "
          + "; ".join(f"{style} {n} ({extra})" for style, (n, extra) in redrawn.items()) + ".")


if __name__ == "__main__":
    main()
