"""The paper's TransformerDDPM (Mittal et al. 2021, sec. 3.1).

Network (the official `models/ncsn.py` TransformerDDPM, input (B, k = 32, d = 42)):

    h = LatentTransformer trunk (`symdiff.transformer`): Dense(128)(x) + positions,
        L pre-LN bidirectional encoder layers, Dense(2048)(LN(h))
    K x: scale, shift = FiLM(noise_encoding(sqrt(alpha_bar))); h = DenseResBlock(h, scale, shift)
    eps = Dense(d)(LN(h))

In the paper's design the transformer trunk never sees the noise level; only the K
FiLM-modulated residual blocks do (`DiffusionConfig.trunk_noise` changes that). The noise
schedule is not part of the network: it is `schedulers.ScheduleConfig`, stored beside the
architecture in the checkpoint; the training recipe lives with the training code.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import ConfigIO
from .transformer import LN_EPS, DenseResBlock, EncoderLayer, LatentTransformer, flax_init, sinusoid


@dataclass
class DiffusionConfig(ConfigIO):
    """The network's architecture (paper sec. 3.1; docs/paper_notes.md sec. 4)."""

    name: str = "paper"
    data_dim: int = 42  # set from the VAE's active dims (LatentScaler.dim)
    seq_len: int = 32  # k latents = 64 bars; the model runs on any length up to this
    width: int = 128  # transformer embedding
    layers: int = 6
    heads: int = 8
    mlp: int = 2048  # transformer feed-forward
    dense: int = 2048  # FiLM'd residual blocks
    res_blocks: int = 2
    film: int = 512
    noise_dim: int = 128  # sinusoidal noise-level encoding
    noise_scale: float = 5000.0
    # What the network's last layer predicts; `forward` returns eps either way. "eps" is the
    # paper. "v" (Salimans & Ho 2022: v = sqrt(ab) eps - sqrt(1 - ab) x0, so eps = sqrt(ab) v +
    # sqrt(1 - ab) x_t) trained on MSE(v) = MSE(eps) / ab: at high noise an eps net must get eps
    # right to ~1e-3 because x0_hat divides its error by sqrt(ab) (0.08 at t = N); a v net's
    # error reaches x0_hat unamplified.
    prediction: str = "eps"
    # Conditioning beyond the paper (both off in the paper's config). `conditional`: the net also
    # sees the known latents (zero where unknown) and a known flag per position, as image
    # inpainting models do, and is trained with random masks; the all-unknown case is
    # unconditional generation, so one model serves both. Algorithm 1 only overwrites x_t at the
    # known positions, so the net must infer the context from noisy copies of it.
    # `trunk_noise`: adaLN-Zero (DiT) in every transformer layer, so attention changes with the
    # noise level; in the paper's design only the dense blocks after the trunk see it.
    conditional: bool = False
    trunk_noise: bool = False
    # `styles`: the style labels the net is also conditioned on (the corpus' styles, e.g. folk,
    # chorale, vocal), as a learnt embedding added to the noise embedding of every trunk layer
    # (so it needs `trunk_noise`). Label 0 is "any style": trained on a share of the windows
    # with the label dropped, it is the unconditional model classifier-free guidance needs.
    styles: tuple[str, ...] = ()
    # `copy`: a pointer to the known chunks (`CopyHead`). Folk tunes and chorales restate whole
    # 2-bar phrases of their piece (44% and 25% of a real middle's chunks); a net that must rebuild
    # a 257-dim latent through its dense layers comes near a restated chunk but never onto it, so
    # this head lets each position take a known chunk's clean latent as its x0 estimate.
    copy: bool = False
    # `guided`: a student distilled from a guided teacher (`symdiff.train.diffusion`, after Meng et
    # al. 2023): it takes the two guidance weights as an input and gives in one row what the
    # teacher mixes from two or three views (`guided_views`), so a guided step is one row.
    guided: bool = False
    # `guided_copy`: a guided student's copy share is scaled by its classifier-free weight w. The
    # teacher's guided x0 moves w times its conditional view's copy toward the known chunk, up to
    # w times the noise std; a student capped at the noise std alone must rebuild the rest through
    # its dense layers, and the first student restated 5.5% of chorale chunks where its teacher
    # restated 39% (docs/sampler.md).
    guided_copy: bool = False

    def __post_init__(self) -> None:
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {self.prediction!r}")
        if self.styles and not self.trunk_noise:
            raise ValueError("style labels enter through the trunk's noise embedding: they need trunk_noise")
        if self.copy and not (self.conditional and self.prediction == "v"):
            raise ValueError("the copy head points at known chunks and mixes into a v prediction: "
                             "it needs conditional and prediction 'v'")
        if self.guided and not self.trunk_noise:
            raise ValueError("the guidance weights enter through the trunk's noise embedding: they need trunk_noise")
        if self.guided_copy and not (self.guided and self.copy):
            raise ValueError("guided_copy scales a guided student's copy share: it needs guided and copy")

    def style_index(self, style: str | None) -> int:
        """The label of `style` (0 for None: any style); an unknown name is refused."""
        if style is None:
            return 0
        if style not in self.styles:
            raise ValueError(f"style {style!r} is not served by this model; "
                             + (f"choose from {', '.join(self.styles)}" if self.styles else "it has no styles"))
        return 1 + self.styles.index(style)

    def loss_weight(self, noise_level: torch.Tensor) -> torch.Tensor | None:
        """Per-example weight of the eps MSE that makes it this config's objective: None for
        eps, 1 / alpha_bar for v (MSE(v) = MSE(eps) / alpha_bar at a fixed x_t)."""
        return None if self.prediction == "eps" else noise_level.float().pow(-2)


CONFIGS = {
    # 25,579,946 parameters at d = 42 (the paper: 25.58M)
    "paper": DiffusionConfig(),
    # the same code, small enough to train on CPU. Its width must not be below the data dim:
    # at high noise eps is nearly x_t itself, and a trunk narrower than d cannot carry x_t through
    # (a width-128 model on our VAE's 256 active dims stalled at an eps MSE of 0.5 from
    # t = 200 up: half the dims lost). 256 wide, 4 layers: 4.2M parameters at d = 256. It
    # predicts v: an eps model of this size, 9k steps in, predicted x0 at t >= 700 worse than
    # the data mean (x0 MSE 0.56 against a variance of 0.16 at t = N) and its samples came out
    # with 3.4x the data's per-dim std.
    "cpu": DiffusionConfig(name="cpu", width=256, layers=4, mlp=512, dense=512, film=256, prediction="v"),
    # the cpu config that sees the music it continues and the noise level in every layer
    "cpu-cond": DiffusionConfig(name="cpu-cond", width=256, layers=4, mlp=512, dense=512, film=256, prediction="v",
                                conditional=True, trunk_noise=True),
    # ... and also knows which of the corpus' styles it writes in
    "cpu-style": DiffusionConfig(name="cpu-style", width=256, layers=4, mlp=512, dense=512, film=256, prediction="v",
                                 conditional=True, trunk_noise=True, styles=("folk", "chorale", "vocal")),
    # ... and can restate a known chunk exactly (`CopyHead`)
    "cpu-copy": DiffusionConfig(name="cpu-copy", width=256, layers=4, mlp=512, dense=512, film=256, prediction="v",
                                conditional=True, trunk_noise=True, styles=("folk", "chorale", "vocal"), copy=True),
}


class DenseFiLM(nn.Module):
    """Noise encoding -> Dense(film) -> swish -> Dense(film) -> (scale, shift) = Dense(dense) each."""

    def __init__(self, noise_dim: int, film: int, dense: int):
        super().__init__()
        self.fc1 = nn.Linear(noise_dim, film)
        self.fc2 = nn.Linear(film, film)
        self.scale = nn.Linear(film, dense)
        self.shift = nn.Linear(film, dense)

    def forward(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fc2(F.silu(self.fc1(enc))).unsqueeze(1)  # (B, 1, film): the same for every position
        return self.scale(e), self.shift(e)


class CopyHead(nn.Module):
    """A pointer to the known chunks, as pointer-generator networks point at their source text
    (See et al. 2017), so that a restatement is one sharp choice instead of 257 numbers rebuilt
    through the dense layers.

    If chunk i restates known chunk j, x_t,i ~ N(sqrt(ab) known_j, (1 - ab) I): that likelihood
    is computed exactly, and with a learnt prior over the sources (query . key of the dense
    stack's features) it gives the posterior over which chunk is restated, so the pointer is
    sharp wherever the noise lets the music be told apart, trained or not. Its proposal is the
    posterior mean of the known latents. The gate, the probability that chunk i restates at all,
    is learnt from the features and from how well the best source explains x_t: the z-score of
    its squared residual, about N(0, 1) for a true restatement and large where none fits."""

    def __init__(self, dense: int, key_dim: int = 64):
        super().__init__()
        self.query = nn.Linear(dense, key_dim)
        self.key = nn.Linear(dense, key_dim)
        self.gate = nn.Linear(dense + 1, 1)

    def close_gate(self) -> None:
        """Start nearly shut (share 0.05 where the best source fits x_t), falling as the fit
        worsens, so a net warm-started from a copy-less one begins as it."""
        nn.init.zeros_(self.gate.weight)
        with torch.no_grad():
            self.gate.weight[0, -1] = -1.0
        nn.init.constant_(self.gate.bias, -3.0)

    def forward(self, h: torch.Tensor, x: torch.Tensor, known: torch.Tensor, keep: torch.Tensor,
                a: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, k, dense) features, x (B, k, d) x_t, known (B, k, d), keep (B, k) bool, a and s
        (B, 1, 1) sqrt(ab) and sqrt(1 - ab) -> the proposed x0 (B, k, d) and the gate's share
        (B, k, 1), both float32; the share is 0 in a row with nothing known."""
        known, x = known.float(), x.float()
        var = (s * s).clamp_min(1e-8)
        resid = torch.cdist(x, a * known).square()  # (B, k, k): ||x_t,i - sqrt(ab) known_j||^2
        resid = resid.masked_fill(~keep[:, None, :], float("inf"))
        q, key = self.query(h).float(), self.key(h).float()
        prior = q @ key.transpose(1, 2) / math.sqrt(q.shape[-1])
        logits = (prior - resid / (2 * var)).masked_fill(~keep[:, None, :], -1e30)  # finite: empty rows stay defined
        proposal = logits.softmax(-1) @ known
        d = x.shape[-1]
        best = resid.min(-1).values.clamp_max(1e30)
        fit = ((best / var[..., 0] - d) / math.sqrt(2 * d)).clamp(-10.0, 50.0).unsqueeze(-1)  # chi-square z-score
        share = torch.sigmoid(self.gate(torch.cat([h.float(), fit], -1)))
        return proposal, share * keep.any(1).float()[:, None, None]


class TransformerDDPM(LatentTransformer):
    """eps_theta(x_t, sqrt(alpha_bar)): (B, k, d) x (B,) -> (B, k, d).

    `model(x, noise_level, mask)` is directly an `eps_fn` for `symdiff.schedulers` samplers
    (use `functools.partial(model, mask=...)` for a padded batch, and `known=`, `keep=` for a
    conditional config). `scaler` is the `LatentScaler` the model was trained with, carried by
    the checkpoint (None until set).
    """

    config_class = DiffusionConfig
    kind = "diffusion"

    def __init__(self, cfg: DiffusionConfig):
        # conditional input per position: x_t, the known latent (zero where unknown), the known flag
        in_dim = 2 * cfg.data_dim + 1 if cfg.conditional else cfg.data_dim
        super().__init__(cfg, in_dim, cfg.film if cfg.trunk_noise else 0)
        if cfg.trunk_noise:
            self.noise_embed = nn.Sequential(
                nn.Linear(cfg.noise_dim, cfg.film), nn.SiLU(), nn.Linear(cfg.film, cfg.film))
        if cfg.styles:
            self.style_embed = nn.Embedding(1 + len(cfg.styles), cfg.film)
        if cfg.guided:  # (noise encoding, classifier-free weight - 1, context weight - 1) -> the trunk's
            # embedding: what guidance adds changes with the noise level
            self.guidance_embed = nn.Sequential(nn.Linear(cfg.noise_dim + 2, cfg.film), nn.SiLU(),
                                                nn.Linear(cfg.film, cfg.film))
        self.films = nn.ModuleList(DenseFiLM(cfg.noise_dim, cfg.film, cfg.dense) for _ in range(cfg.res_blocks))
        self.blocks = nn.ModuleList(DenseResBlock(cfg.dense) for _ in range(cfg.res_blocks))
        self.ln_out = nn.LayerNorm(cfg.dense, eps=LN_EPS)
        self.output = nn.Linear(cfg.dense, cfg.data_dim)
        if cfg.copy:
            self.copy_head = CopyHead(cfg.dense)
        flax_init(self)
        if cfg.copy:
            self.copy_head.close_gate()
        for layer in self.layers:
            assert isinstance(layer, EncoderLayer)  # nn.ModuleList types its items as plain Modules
            layer.zero_modulation()
        if cfg.styles:
            nn.init.zeros_(self.style_embed.weight)  # every label starts as "any style"
        if cfg.guided:  # a student starts as its teacher's unguided view
            last = self.guidance_embed[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor | float, mask: torch.Tensor | None = None,
                known: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                style: torch.Tensor | None = None, alone: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, k, d); noise_level sqrt(alpha_bar), (B,) or a scalar; mask (B, k) bool, True at
        real positions (each row needs at least one). A conditional config also takes `known`
        (B, k, d) and `keep` (B, k) bool, True where `known` holds the music (both None:
        nothing is known, unconditional generation); a config with `styles` takes `style` (B,)
        labels (`DiffusionConfig.style_index`; None: any style). `alone` (B,) bool: rows whose
        chunks are each seen as a piece of their own (`LatentTransformer.trunk`; such a row should
        know no chunk). A `guided` config takes `guidance` (B, 2): each row's classifier-free and
        context guidance weights (None: 1 and 1, no guidance). Returns eps; zero at padded positions."""
        b = x.shape[0]
        # The encoding multiplies by 5000: keep the level in float32 whatever the input dtype.
        level = torch.as_tensor(noise_level, device=x.device).float().reshape(-1)
        level = level.expand(b) if level.numel() == 1 else level
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
        enc = sinusoid(self.config.noise_scale * level, self.config.noise_dim).to(x.dtype)
        inp, seen = x, None
        if self.config.conditional:
            if keep is None:
                keep = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            flag = torch.as_tensor(keep, device=x.device).to(torch.bool).expand(x.shape[:2]).unsqueeze(-1)
            ctx = torch.zeros_like(x) if known is None else torch.as_tensor(known, device=x.device).to(x.dtype) * flag
            inp = torch.cat([x, ctx, flag.to(x.dtype)], dim=-1)
            seen = (ctx, flag[..., 0])
        elif known is not None or keep is not None:
            raise ValueError("this diffusion model was not trained to see known latents (config.conditional)")
        cond = self.noise_embed(enc) if self.config.trunk_noise else None
        if self.config.styles:
            assert cond is not None  # styles need trunk_noise (`DiffusionConfig.__post_init__`)
            label = torch.as_tensor(0 if style is None else style, device=x.device).long().expand(b)
            cond = cond + self.style_embed(label).to(cond.dtype)
        elif style is not None:
            raise ValueError("this diffusion model was not trained with style labels (config.styles)")
        if self.config.guided:
            assert cond is not None  # guided needs trunk_noise (`DiffusionConfig.__post_init__`)
            w = torch.ones(b, 2, device=x.device) if guidance is None else torch.as_tensor(guidance, device=x.device)
            w = w.float().expand(b, 2)
            g = torch.cat([enc.float(), w - 1.0], dim=-1)
            cond = cond + self.guidance_embed(g.to(cond.dtype))
        elif guidance is not None:
            raise ValueError("this diffusion model was not distilled to take guidance weights (config.guided)")
        h = self.trunk(inp, mask, cond=cond, alone=alone)
        for film, block in zip(self.films, self.blocks, strict=True):
            scale, shift = film(enc)
            h = block(h, scale, shift)
        h = self.ln_out(h)
        eps = self.output(h)
        if self.config.prediction == "v":  # eps = sqrt(ab) v + sqrt(1 - ab) x_t, in float32
            a = level.reshape(b, 1, 1)
            s = (1.0 - a * a).clamp_min(0.0).sqrt()
            v, x32 = eps.float(), x.float()
            if self.config.copy:
                # x0 = (1 - g) x0_net + g proposal with g = share * s: the copy claims at most what
                # the noise hides, so its error reaches v = (a x_t - x0) / s bounded at every level:
                # v = v_net + share (a x_t - proposal - s v_net), no division.
                assert seen is not None  # copy needs conditional (`DiffusionConfig.__post_init__`)
                proposal, share = self.copy_head(h, x32, *seen, a, s)
                if self.config.guided_copy:  # as far as the teacher's guided copy reaches (config)
                    share = share * w[:, :1, None]
                v = v + share * (a * x32 - proposal - s * v)
            eps = a * v + s * x32
        if mask is not None:
            eps = eps.masked_fill(~mask.unsqueeze(-1), 0.0)
        return eps


def guided_views(net: Callable[..., torch.Tensor], x: torch.Tensor, level: torch.Tensor,
                 guidance: float | torch.Tensor = 1.0, context: float | torch.Tensor = 1.0,
                 known: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                 style: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The guided eps of `net` (a `TransformerDDPM` or a call with its signature) mixed from the
    views its weights need, all rows of one batched call: classifier-free guidance (`guidance` w
    != 1) eps_uncond + w (eps_piece - eps_uncond), the unconditional view knowing no chunk and
    no style; then context guidance (`context` c != 1) eps_alone + c (eps - eps_alone), the
    chunks-alone view seeing each chunk as a piece of its own (`alone`). Weights are floats or
    (B, 1, 1), one per row. What `MelodyDiffusion.guided_eps` samples with, and what a guided
    student is distilled from."""
    views = (["piece"] + (["uncond"] if bool(torch.any(torch.as_tensor(guidance) != 1.0)) else [])
             + (["alone"] if bool(torch.any(torch.as_tensor(context) != 1.0)) else []))
    b, n = x.shape[0], len(views)
    nothing = torch.zeros((b, x.shape[1]), dtype=torch.bool, device=x.device)
    padded = {} if mask is None else {"mask": mask.repeat(n, 1)}
    out = net(
        x.repeat(n, 1, 1), level.repeat(n), **padded,
        known=None if known is None else known.repeat(n, 1, 1),
        keep=None if keep is None else torch.cat([keep if v == "piece" else nothing for v in views]),
        style=None if style is None else torch.cat([torch.zeros_like(style) if v == "uncond" else style
                                                    for v in views]),
        alone=None if "alone" not in views else torch.cat([torch.full((b,), v == "alone", device=x.device)
                                                           for v in views]),
    ).reshape(n, *x.shape)
    e = dict(zip(views, out, strict=True))
    eps = e["piece"]
    if "uncond" in e:
        eps = e["uncond"] + guidance * (eps - e["uncond"])
    if "alone" in e:
        eps = e["alone"] + context * (eps - e["alone"])
    return eps
