"""Infills of the labelled real songs (`symdiff.evaluation.songs`): never erase the melody, and
the section's key, cadence and pickup over five seeds; writes eval/songs.{md,json}.

    python scripts/songs_infill.py [--out eval] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from symdiff.atomic import write_text
from symdiff.evaluation import songs
from symdiff.generate import DEFAULT_SAMPLER, MelodyDiffusion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("eval"))
    ap.add_argument("--steps", type=int, help="reverse steps (default: the default sampler's)")
    args = ap.parse_args()
    pipe = MelodyDiffusion.from_pretrained()
    t0 = time.perf_counter()
    bar = tqdm(desc="songs", unit="infill")
    tick = lambda _: bar.update(1)  # noqa: E731
    erase = songs.erase_check(pipe, steps=args.steps, progress=tick)
    cases = songs.case_check(pipe, steps=args.steps, progress=tick)
    bar.close()
    steps = pipe.sampler(DEFAULT_SAMPLER, args.steps).num_steps
    settings = f"checkpoints/diffusion-cond, {DEFAULT_SAMPLER} {steps} steps, {time.perf_counter() - t0:.0f} s"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "songs.json", json.dumps({"settings": settings, "erase": erase, "cases": cases}, indent=1))
    write_text(args.out / "songs.md", songs.markdown(erase, cases, settings))
    print(songs.markdown(erase, cases, settings).split("\n\n")[1])


if __name__ == "__main__":
    main()
