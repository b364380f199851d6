"""Pool `symdiff evaluate --task fidelity` runs of several seeds (each draws its own test pieces and
noise) and judge issue 11's targets on all of them at once: per style and figure, the default
infill's mean (and its first draws', before the density repair) against interpolation's and the
real middle's, and the paired difference (default minus interpolation, piece by piece) with its
standard error, which is far tighter than either mean's own because both rows fill the same middles.

    python scripts/fidelity_seeds.py eval/fidelity.json eval/fidelity-seed1/fidelity.json ... > eval/fidelity-seeds.md
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from symdiff.evaluation.fidelity import FIT

DEFAULT, RIVAL, CEILING = "diffusion (conditioned)", "interpolation", "real middle"
FIRST = "diffusion (conditioned, no density repair)"  # the default's first draws, before its density repair
LOWER_IS_BETTER = ("onset_distance", "density_log_ratio")
NINETY = ("pitch_overlap", "pitch_class_cosine")  # the default must reach 90% of the real middle's


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0


def verdict(key: str, default: float, ceiling: float, diff: float, se: float) -> str:
    sign = -1 if key in LOWER_IS_BETTER else 1
    if sign * diff > 0:
        word = "beats interpolation"
    elif sign * (default - ceiling) >= 0:
        word = "as good as the real middle"
    else:
        word = "short"
    close = " (within 2 SE)" if abs(diff) < 2 * se else ""
    ninety = f"; {default / ceiling:.0%} of the real" if key in NINETY else ""
    return word + close + ninety


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="fidelity.json files, one per seed")
    args = ap.parse_args()
    reports = [json.loads(p.read_text()) for p in args.runs]
    seeds = [r["settings"]["seed"] for r in reports]
    checkpoints = {r["settings"]["checkpoint"] for r in reports}
    print(f"Fidelity pooled over {', '.join(map(str, args.runs))}: seeds {', '.join(map(str, seeds))} "
          f"({', '.join(sorted(checkpoints))}, "
          f"{reports[0]['settings']['sampler']} {reports[0]['settings']['steps']} steps): the default infill "
          f"(\"{DEFAULT}\"), interpolation and the real middle, means over every piece of every seed; "
          "the difference is default minus interpolation, piece by piece, with its standard error; "
          f"first draw: \"{FIRST}\", the default before it draws again a middle far off its piece's note rate.\n")
    print("| style | figure | pieces | default infill | first draw | interpolation | real middle | difference (SE) "
          "| verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for style in reports[0]["groups"]:
        items = [it for r in reports for it in r["groups"][style]["items"]]
        for key, title in FIT.items():
            if key == "restated_chunks":
                continue
            d, f, r, c = ([it["rows"][row][key] for it in items] for row in (DEFAULT, FIRST, RIVAL, CEILING))
            diff, se = mean_se([a - b for a, b in zip(d, r, strict=True)])
            md, mf, mr, mc = (sum(v) / len(v) for v in (d, f, r, c))
            print(f"| {style} | {title.split(' (')[0]} | {len(items)} | {md:.3f} | {mf:.3f} | {mr:.3f} | {mc:.3f} | "
                  f"{diff:+.3f} ({se:.3f}) | {verdict(key, md, mc, diff, se)} |")


if __name__ == "__main__":
    main()
