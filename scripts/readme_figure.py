"""The README's picture: a real melody with bars 17-48 infilled by the diffusion model and by the
two baselines, drawn as the rows of the paper's Figure 2.

    python scripts/readme_figure.py [--file F] [--bars 17-48] [--seed 1] [--out assets/infill_example.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from symdiff import demo, melody, pianoroll
from symdiff.generate import MelodyDiffusion, parse_bar_range

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", type=Path, default=ROOT / "tests/data/midi/foster_brown_hair_lead_sheet.mid")
    ap.add_argument("--bars", default="17-48")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "assets/infill_example.png")
    args = ap.parse_args()

    pipe = MelodyDiffusion.from_pretrained()
    found = melody.read_midi(args.file)
    tokens = found.tokens(found.chosen)[: 64 * melody.STEPS_PER_BAR]
    span = found.bars.steps(*parse_bar_range(args.bars))  # the file's bars (the lead sheet's pickup is bar 0)
    res = pipe.infill(tokens, span, seed=args.seed)
    base = demo.baseline_infills(pipe, tokens, res.plan, seed=args.seed)
    rows = [("original", tokens), ("diffusion", res.tokens[0]), ("interpolation", base["interpolation"]),
            ("N(0, I) prior", base["prior"])]
    fig = pianoroll.plot_rows(rows, box_bars=tuple(s / melody.STEPS_PER_BAR for s in span),
                              barlines=demo.barlines(found.bars, 0, len(tokens)),
                              title=f"{args.file.stem}: bars {args.bars} infilled in the {res.style} style it heard "
                                    f"(seed {args.seed})")
    pianoroll.save_png(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
