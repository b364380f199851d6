"""Does the reverse process bring a noised melody back? For every example melody (its first 16
bars, as the app's Learn tab), the melody's latents are noised to a start step and the model's
reverse run (DDIM, 20 steps, `demo.reverse_trace`'s chain) goes back to step 0; both ends are
decoded and compared with the melody, sixteenth by sixteenth (`demo.agreement`), beside the VAE's
own reconstruction, and the RMS distance of both ends from the melody's latents. Writes
eval/restoration.{json,md,png}; the app's Learn tab shows the PNG.

    python scripts/restoration_curve.py [--seeds 20] [--out eval/restoration]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from symdiff import demo, pianoroll
from symdiff.atomic import write_text
from symdiff.generate import MelodyDiffusion

ROOT = Path(__file__).resolve().parent.parent
STARTS = (10, 20, 50, 100, 200, 300, 500, 700, 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "restoration")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = MelodyDiffusion.from_pretrained()
    seeds = list(range(args.seeds))
    rows = []
    for path in demo.list_examples():
        tokens = demo.learn_melody(demo.load_melody(path)[1].tokens)
        vae = demo.agreement(demo.reconstruction(pipe, tokens), tokens)
        runs = demo.restoration(pipe, tokens, STARTS, seeds, steps=args.steps)
        at = {t: [r for r in runs if r.start_t == t] for t in STARTS}
        noisy = [float(np.mean([r.start for r in at[t]])) for t in STARTS]
        end = [float(np.mean([r.end for r in at[t]])) for t in STARTS]
        gain_se = [float(np.std([r.end - r.start for r in at[t]], ddof=1) / np.sqrt(len(seeds))) for t in STARTS]
        rows.append({"melody": path.name, "vae": vae, "starts": list(STARTS), "noisy": noisy, "end": end,
                     "gain_se": gain_se, "end_min": [min(r.end for r in at[t]) for t in STARTS],
                     "start_error": [float(np.mean([r.start_error for r in at[t]])) for t in STARTS],
                     "end_error": [float(np.mean([r.end_error for r in at[t]])) for t in STARTS]})
        print(path.name, f"VAE {vae:.3f}", " ".join(f"{t}:{a:.2f}->{b:.2f}" for t, a, b in zip(STARTS, noisy, end,
                                                                                               strict=True)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"sampler": "ddim", "steps": args.steps, "seeds": seeds, "bars": demo.LEARN_BARS, "melodies": rows}
    write_text(args.out.with_suffix(".json"), json.dumps(data, indent=1))
    head = "| melody | VAE | " + " | ".join(f"from {t}" for t in STARTS) + " |"
    lines = [f"# Reverse runs from a noised melody (DDIM {args.steps} steps, seeds {seeds[0]}-{seeds[-1]}, "
             f"first {demo.LEARN_BARS} bars)", "",
             "Share of sixteenths that sound as in the melody (same pitch or both silent), mean over seeds: "
             "the noisy start -> the end of the reverse run, then the end's gain over its start and the standard "
             "error of that gain (paired by seed), in points; VAE: the melody's own reconstruction, what a run "
             "that found its latents exactly would give. Written by `scripts/restoration_curve.py`.", "", head,
             "|---|---|" + "---|" * len(STARTS)]
    for r in rows:
        cells = " | ".join(f"{a:.1%} -> **{b:.1%}** ({100 * (b - a):+.1f} ± {100 * se:.1f})"
                           for a, b, se in zip(r["noisy"], r["end"], r["gain_se"], strict=True))
        lines.append(f"| {r['melody']} | {r['vae']:.1%} | {cells} |")
    lines += ["", "RMS distance from the melody's latents (model space, where the data has std 1): the noisy "
              "start's x_t / sqrt(alpha_bar) -> the run's end.", "", head, "|---|---|" + "---|" * len(STARTS)]
    for r in rows:
        cells = " | ".join(f"{a:.3f} -> **{b:.3f}**" for a, b in zip(r["start_error"], r["end_error"], strict=True))
        lines.append(f"| {r['melody']} | 0 | {cells} |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    pianoroll.save_png(demo.restoration_figure(data), args.out.with_suffix(".png"))
    print(f"wrote {args.out}.json, .md, .png")


if __name__ == "__main__":
    main()
