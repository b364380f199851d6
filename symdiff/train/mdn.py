"""`symdiff train mdn`: the TransformerMDN baseline on MusicVAE latents, resumable, DDP-ready.

The same data as `symdiff train diffusion` (the cached latent dataset of `symdiff.data.latents`,
windows of up to 32 chunks at a stride of one, model space, silent chunks as the silence
latent or windows with silence dropped) and the same loop (`symdiff.train.latents`): padded
batches with a key padding mask, bf16 autocast with fp32 weights, `OUT/last` every
`save_minutes` and at the end, `OUT/best` at the lowest held-out NLL on a fixed sample of
valid windows, a JSON-lines log, `--minutes`.

Objective (official `train_mdn.py`): negative log-likelihood of each latent under the mixture
predicted from the latents before it, averaged over real positions (nats per latent, summed
over the d dims). Adam, lr = 3e-4 * 0.98^(step // 4000), global-norm clip 1.0, batch 128,
250k steps in the paper's recipe (`PRESETS`: architecture and recipe per `--config`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..baselines import MDN_CONFIGS, MDNConfig, TransformerMDN, mdn_loss
from .latents import Objective, train_on_latents
from .loop import Recipe, Runtime

# The official train_mdn.py recipe; the CPU preset halves the batch.
PAPER_RECIPE = Recipe(learning_rate=3e-4, lr_decay=0.98, lr_decay_every=4000, grad_clip=1.0, batch_size=128,
                      max_steps=250_000)
PRESETS = {"paper": (MDN_CONFIGS["paper"], PAPER_RECIPE),
           "cpu": (MDN_CONFIGS["cpu"], Recipe(**{**PAPER_RECIPE.to_dict(), "batch_size": 64}))}


def mdn_step_loss(net, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, rt: Runtime,
                  bf16: bool) -> torch.Tensor:
    """Mean NLL per real latent under the mixture predicted from the latents before it."""
    with rt.autocast(bf16):
        mix = net(x0)
    return mdn_loss(mix, x0, mask)


MDN = Objective(TransformerMDN, mdn_step_loss, "valid_nll", "held-out NLL {:.3f} nats per latent", "train mdn")


def train_mdn(cfg: MDNConfig, recipe: Recipe, vae: Path, out: Path, **kwargs) -> dict:
    """Train a TransformerMDN (`train_on_latents` takes the options)."""
    return train_on_latents(MDN, cfg, recipe, vae, out, **kwargs)
