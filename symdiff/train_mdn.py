"""`symdiff train mdn`: the TransformerMDN baseline on MusicVAE latents, resumable, DDP-ready.

The same data as `symdiff train diffusion` (the cached latent dataset of `symdiff.latents`,
windows of up to 32 chunks at a stride of one, model space, silent chunks as the silence
latent or windows with silence dropped) and the same loop (`training.train_loop`): padded
batches with a key padding mask, bf16 autocast with fp32 weights, `OUT/last` every
`save_minutes` and at the end, `OUT/best` at the lowest held-out NLL on a fixed sample of
valid windows, a JSON-lines log, `--minutes`.

Objective (official `train_mdn.py`): negative log-likelihood of each latent under the mixture
predicted from the latents before it, averaged over real positions (nats per latent, summed
over the d dims). Adam, lr = 3e-4 * 0.98^(step // 4000), global-norm clip 1.0, batch 128,
250k steps in the paper config.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .baselines import MDNConfig, TransformerMDN, mdn_loss
from .train_diffusion import Objective, train_on_latents
from .training import Runtime


def mdn_step_loss(net, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, rt: Runtime,
                  bf16: bool) -> torch.Tensor:
    """Mean NLL per real latent under the mixture predicted from the latents before it."""
    with rt.autocast(bf16):
        mix = net(x0)
    return mdn_loss(mix, x0, mask)


MDN = Objective(TransformerMDN, mdn_step_loss, "valid_nll", "held-out NLL {:.3f} nats per latent", "train mdn")


def train_mdn(cfg: MDNConfig, vae: Path, out: Path, **kwargs) -> dict:
    """Train a TransformerMDN (`train_diffusion.train_on_latents` takes the options)."""
    return train_on_latents(MDN, cfg, vae, out, **kwargs)
