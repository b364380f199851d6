"""Do melodies longer than one window hold together? The coherence figures of `symdiff evaluate
--task coherence` (`evaluation.fidelity.coherence_figures`) of new BARS-bar melodies
(`MelodyDiffusion.generate`: the first 64 bars, then 32 at a time, each window conditioned on the
32 bars before it) beside real lines of the corpus at least that long, cut to their first BARS
bars: eval/long-coherence.{md,json}. Key stability compares the two halves, so at 128 bars it asks
whether the second window's music keeps the first's key; every figure is per melody, then the mean
and standard error.

    python scripts/long_coherence.py --bars 128 --num 4     # about 10 minutes on one core
    python scripts/long_coherence.py --bars 216 --extend-from 16    # 16 real bars extended by 200
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from symdiff import melody
from symdiff.atomic import write_text
from symdiff.data.corpus import style_of
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.evaluation.fidelity import COHERENCE, SHARES, coherence_figures, summarize
from symdiff.generate import DEFAULT_STEPS, MelodyDiffusion
from symdiff.options import DEFAULT_SAMPLER


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bars", type=int, default=128)
    p.add_argument("--num", type=int, default=4, help="new melodies")
    p.add_argument("--real", type=int, default=32, help="real lines at most")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS[DEFAULT_SAMPLER])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("eval"))
    p.add_argument("--extend-from", type=int, default=0,
                   help="extend the first N bars of other real lines to BARS bars instead of new melodies")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    size = args.bars * melody.STEPS_PER_BAR
    lines = Lines.load(DEFAULT_PATH)
    long = [i for i, t in enumerate(lines.tokens) if len(t) >= size]
    order = np.random.default_rng(args.seed).permutation(long).tolist()
    pick = sorted(order[: args.real])
    opening = args.extend_from * melody.STEPS_PER_BAR
    fits = [i for i in np.random.default_rng(args.seed + 1).permutation(len(lines.tokens)).tolist()
            if len(lines.tokens[i]) >= opening and i not in pick]
    openings = [np.asarray(lines.tokens[i][:opening]) for i in fits[: args.num]] if args.extend_from else []
    real = [np.asarray(lines.tokens[i][:size]) for i in pick]
    styles: dict[str, int] = {}
    for i in pick:
        style = style_of(lines.meta[i]["source"])
        styles[style] = styles.get(style, 0) + 1
    pipe = MelodyDiffusion.from_pretrained()
    if openings:
        made = [pipe.extend(t, args.bars - args.extend_from, sampler=DEFAULT_SAMPLER, steps=args.steps,
                            seed=args.seed + j).tokens[0] for j, t in enumerate(openings)]
    else:
        made = pipe.generate(args.num, args.bars, DEFAULT_SAMPLER, args.steps, args.seed).tokens
    gen_seconds = time.perf_counter() - t0
    figs = {f"real lines ({', '.join(f'{s} {n}' for s, n in sorted(styles.items()))})": real,
            (f"{args.extend_from} real bars extended to {args.bars}" if openings
             else f"new {args.bars}-bar melodies"): made}
    summary = summarize({name: [coherence_figures(t) for t in tokens] for name, tokens in figs.items()})
    settings = {"bars": args.bars, "melodies": args.num, "real_lines": len(real), "sampler": DEFAULT_SAMPLER,
                "steps": args.steps, "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1),
                "seconds_per_melody": round(gen_seconds / args.num, 1)}
    stem = f"long-coherence-{args.bars}" + (f"-extended-from-{args.extend_from}" if openings else "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / f"{stem}.json", json.dumps({"settings": settings, "rows": summary}, indent=1))
    md = ["| row | melodies | " + " | ".join(COHERENCE.values()) + " |", "|" + "---|" * (len(COHERENCE) + 2)]
    for name, r in summary.items():
        cells = [(f"{r['mean'][k]:.1%}" if k in SHARES else f"{r['mean'][k]:.2f}") + " ± "
                 + (f"{r['sem'][k]:.1%}" if k in SHARES else f"{r['sem'][k]:.2f}") for k in COHERENCE]
        md.append(f"| {name} | {r['n']} | " + " | ".join(cells) + " |")
    made_by = (f"The first {args.extend_from} bars of {args.num} other real lines extended by "
               f"{args.bars - args.extend_from} bars (`MelodyDiffusion.extend`, as `symdiff extend --bars "
               f"{args.bars - args.extend_from}`, {DEFAULT_SAMPLER} {args.steps} steps, seeds {args.seed}-"
               f"{args.seed + args.num - 1}: 32 bars at a time, each window conditioned on the 32 bars before it)"
               if openings else
               f"New melodies of {args.bars} bars (`MelodyDiffusion.generate`, {DEFAULT_SAMPLER} {args.steps} steps, "
               f"any style, seed {args.seed}: the first 64 bars, then 32 at a time, each window conditioned on the 32 "
               f"bars before it)")
    md += ["", f"{made_by} beside real lines of the corpus (all splits) of at least {args.bars} bars, their first "
           f"{args.bars}; mean ± standard error per melody. Key stability: the pitch-class cosine of the two halves. "
           f"{settings['seconds']:.0f} s on one thread. Made by `python scripts/long_coherence.py --bars "
           f"{args.bars} --num {args.num}{f' --extend-from {args.extend_from}' if openings else ''}`; "
           "figures defined in `symdiff/evaluation/fidelity.py`."]
    write_text(args.out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
