"""The names and defaults the command line and the app offer (samplers, precisions, devices,
default checkpoints, guidance weights), kept in a module that imports nothing heavy: argparse
needs them to build `symdiff --help`, and `symdiff inspect` must start without loading torch.
The modules that use them (`generate`, `schedulers`, `precision`, `vae`) import them from here."""
from __future__ import annotations

import os
from pathlib import Path


def checkpoints_dir() -> Path:
    """Where the shipped checkpoints are: $SYMDIFF_CHECKPOINTS, else the checkout's checkpoints/
    (a clone, or an editable install), else ./checkpoints. A wheel (`pip install .`) does not
    carry the weights: run it from a clone or point the variable at one."""
    if os.environ.get("SYMDIFF_CHECKPOINTS"):
        return Path(os.environ["SYMDIFF_CHECKPOINTS"])
    beside = Path(__file__).resolve().parent.parent / "checkpoints"
    return beside if beside.is_dir() else Path.cwd() / "checkpoints"


DEFAULT_VAE = checkpoints_dir() / "musicvae-mel2bar-small"
DEFAULT_DIFFUSION = checkpoints_dir() / "diffusion-cond"
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")  # auto: cuda where there is one, else cpu
# The keys of `schedulers.SAMPLERS`, which registers their classes (tests/test_layers.py checks both agree).
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp", "dpmpp-sde")
# The ancestral sampler at 200 respaced steps, for new melodies and infills alike. Measured on the
# default model: DDIM 50's deterministic chain overshoots silence (19% of a sample's bars silent,
# real music 12.5%; DDPM 200: 15%, DDPM 1000 the same as 200), and DDPM 200 infills fit their
# pieces better in 8 of the 12 fidelity figures (docs/evaluation.md, "Does the music hold together?").
DEFAULT_SAMPLER = "ddpm"
# How an infill uses the known music. "replace" is the paper's Algorithm 1: after every step the
# known chunks of x_t are overwritten by a noised copy of them, and the net must read the context
# from those noisy copies. "conditioned" does the same and also hands the net the clean known
# chunks (a model trained with `DiffusionConfig.conditional`).
INFILL_METHODS = ("conditioned", "replace")
# Classifier-free guidance weight of a conditioned infill (`MelodyDiffusion.guided_eps`).
DEFAULT_GUIDANCE = 3.0
# Context guidance of new melodies (`MelodyDiffusion.guided_eps`): the weight w of
# eps_alone + w (eps_piece - eps_alone), eps_alone being the net's prediction for each chunk seen on
# its own. Chosen on 64 DDPM-200 samples (docs/evaluation.md, "Does the music hold together?"): with the shipped
# model, key stability 0.912 at w = 2.25 on seed 0 (real windows 0.936) and 0.924, 0.933, 0.931 at
# w = 2.5 on seeds 0, 1, 2 (real 0.936, 0.925, 0.934), with silent bars 10-15% (real 11-14%). The
# cost of more: fewer distinct phrases (18-21% of 2-bar chunks restated at 2.5; real windows 1-4%).
CONTEXT_GUIDANCE = 2.5
# A chain of few steps takes less from the same weight: DPM-Solver++ SDE at 20 steps and w = 2.5
# repeats 11.7% of its chunks and holds key stability 0.914 (seeds 0-2; DDPM 200: 19.8%, 0.929),
# so a sampler may have a weight of its own (`generate.context_guidance_for`).
SAMPLER_CONTEXT_GUIDANCE = {"dpmpp-sde": 3.0}
