"""The paper's baselines (Mittal et al. 2021, sec. 4; docs/paper_notes.md sec. 6), all in model space so
their output decodes through the same `LatentCodec` as the diffusion model's.

TransformerMDN (the official `models/autoregressive.py`): an autoregressive model of latent
sequences, p(x_i | x_<i) a mixture of K diagonal Gaussians over the d dims:

    h = trunk(shift_right(x))       # the TransformerDDPM trunk, causal attention, zero start vector
    R x: h = DenseResBlock(h)       # no FiLM: scale 1, shift 0
    h = LN(h)
    means = Dense(K d)(h), log_sigmas = clamp(Dense(K d)(h)), mixture logits = Dense(K)(h)

Loss: negative log-likelihood of x_i under its mixture (log-sum-exp over components, in
float32), averaged over real positions. The paper: K = 100, 6 layers, Adam 3e-4, batch 128,
250k steps (about 38M parameters at d = 42: the 2048-wide head holds most of them). Sampling
draws one latent at a time at temperature 1.0 (`TransformerMDN.sample`; clipped to [-1, 1]
like the diffusion samples), optionally continuing a given prefix.

Log-sigma is clamped to [min_log_sigma, max_log_sigma] (default [-5, 2]). The floor matters
here: the silence latent (`codec.SILENCE_VALUE` in every dim) is one exact point, on which
the likelihood grows without bound as a component's sigma shrinks; at sigma = e^-5 = 0.007 a
silent chunk is already modelled far more finely than the spread of real latents (~0.1), and
the loss stays finite.

Interpolation (`interpolate_infill`): the gap between two known latents filled by spherical
interpolation. Slerp is meant for Gaussian latents, so it runs on the unscaled z (the active
dims, `LatentScaler.unscale`) and is mapped back; without a scaler it runs in model space.
The paper's interpolation baseline keeps the real latents 0-7 and 24-31 and slerps between
latents 7 and 24 (`PAPER_INFILL_MASK`); its unconditional row uses the same construction on
held-out sequences.

Prior (`prior_latents`): z ~ N(0, I) in all z_size dims, mapped to model space by the scaler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import ConfigIO
from .codec import CodecConfig, LatentScaler
from .transformer import LN_EPS, DenseResBlock, LatentTransformer, flax_init


@dataclass
class MDNConfig(ConfigIO):
    """Architecture of the TransformerMDN (official `configs/mdn-*.cfg`; its training recipe is
    `symdiff.train.mdn.RECIPES`)."""

    name: str = "paper"
    data_dim: int = 42  # set from the latent dataset (LatentScaler.dim)
    seq_len: int = 32
    width: int = 128
    layers: int = 6
    heads: int = 8
    mlp: int = 2048  # transformer feed-forward
    dense: int = 2048  # residual blocks and the head's input
    res_blocks: int = 2
    mixtures: int = 100
    min_log_sigma: float = -5.0
    max_log_sigma: float = 2.0


MDN_CONFIGS = {
    "paper": MDNConfig(),
    # the same code, small enough to train on CPU: at d = 256 (our VAE) 2,180,234 parameters and
    # a bf16 training step of batch 64 x 32 in ~0.3 s of one core (mixtures=20: 3.5M, ~0.55 s;
    # the head's K x 2d outputs dominate). At d = 42: 1.05M.
    "cpu": MDNConfig(name="cpu", layers=4, mlp=256, dense=256, mixtures=10),
}


class Mixture(NamedTuple):
    """p(x_i | x_<i) at every position: mixture logits (..., K), means and log-sigmas
    (..., K, d). `log_sigma` is the head's raw output; the model's log sigma is that clamped to
    `bounds` (`sigma()`; the loss clamps inside its own gradient)."""

    logits: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor
    bounds: tuple[float, float] = (-math.inf, math.inf)

    def sigma(self) -> torch.Tensor:
        return torch.exp(self.log_sigma.float().clamp(*self.bounds))


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """(B, k, d) -> [0, x_0, ..., x_{k-2}]: position i holds what came before it."""
    return F.pad(x, (0, 0, 1, 0))[:, :-1]


class _DiagonalGaussianLogDensity(torch.autograd.Function):
    """sum_d [-((x_d - mu_d) / sigma_d)^2 / 2 - log sigma_d] for every component, (..., K), with
    log sigma = clamp(raw_log_sigma, lo, hi) and the gradient written out: two (..., K, d)
    buffers and a mask instead of autograd's many passes over them (2.4x faster on the CPU
    at K = 20, d = 256). Computed in float32 (float64 inputs stay float64)."""

    @staticmethod
    def forward(ctx, x, mu, raw_log_sigma, lo, hi):
        dtype = torch.promote_types(torch.promote_types(mu.dtype, raw_log_sigma.dtype), torch.float32)
        raw = raw_log_sigma.to(dtype)
        log_sigma = raw.clamp(lo, hi)  # a new tensor: the in-place ops below leave the input alone
        clamped = log_sigma != raw  # where the clamp passes no gradient
        del raw
        total = log_sigma.sum(-1)
        inv = log_sigma.neg_().exp_()  # 1 / sigma
        z = torch.sub(x.to(dtype).unsqueeze(-2), mu).mul_(inv)
        out = torch.einsum("...d,...d->...", z, z).mul_(-0.5).sub_(total)
        ctx.save_for_backward(z, inv, clamped)
        ctx.dtypes = (mu.dtype, raw_log_sigma.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        z, inv, clamped = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        gz = z * g
        grad_log_sigma = (gz * z).sub_(g).masked_fill_(clamped, 0.0)  # d/d log_sigma = z^2 - 1
        grad_mu = gz.mul_(inv)  # d/d mu = z / sigma
        return None, grad_mu.to(ctx.dtypes[0]), grad_log_sigma.to(ctx.dtypes[1]), None, None


def gaussian_log_density(x: torch.Tensor, mu: torch.Tensor, raw_log_sigma: torch.Tensor,
                         lo: float = -math.inf, hi: float = math.inf) -> torch.Tensor:
    """x (..., d), mu and raw log-sigma (..., K, d) -> (..., K): each diagonal Gaussian's log
    density without the -d/2 log(2 pi), log sigma clamped to [lo, hi]. No gradient to x."""
    return _DiagonalGaussianLogDensity.apply(x.detach(), mu, raw_log_sigma, float(lo), float(hi))


def mixture_log_prob(mix: Mixture, x: torch.Tensor) -> torch.Tensor:
    """log p(x) under the mixture, (..., d) -> (...), in float32 (log-sum-exp over components).
    No gradient flows to x (it is data)."""
    comp = gaussian_log_density(x, mix.mu, mix.log_sigma, *mix.bounds)
    log_w = F.log_softmax(mix.logits.to(comp.dtype), dim=-1)
    return torch.logsumexp(log_w + comp, dim=-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


def mdn_loss(mix: Mixture, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood per latent (nats, summed over the d dims), averaged over the real
    positions of a (B, k) padding mask (True = real), or over all positions."""
    nll = -mixture_log_prob(mix, x)
    if mask is None:
        return nll.mean()
    m = mask.to(nll.dtype)
    return (nll * m).sum() / m.sum().clamp_min(1.0)


class TransformerMDN(LatentTransformer):
    """Autoregressive mixture density network over latent sequences: `model(x)` gives, at
    every position i, the mixture p(x_i | x_<i) (inputs are shifted right inside)."""

    config_class = MDNConfig
    kind = "mdn"

    def __init__(self, cfg: MDNConfig):
        super().__init__(cfg)
        self.blocks = nn.ModuleList(DenseResBlock(cfg.dense) for _ in range(cfg.res_blocks))
        self.ln_out = nn.LayerNorm(cfg.dense, eps=LN_EPS)
        self.mu = nn.Linear(cfg.dense, cfg.mixtures * cfg.data_dim)
        self.log_sigma = nn.Linear(cfg.dense, cfg.mixtures * cfg.data_dim)
        self.logits = nn.Linear(cfg.dense, cfg.mixtures)
        flax_init(self)

    def _hidden(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        h = self.trunk(shift_right(x), causal=True)
        if last_only:
            h = h[:, -1:]
        for block in self.blocks:
            h = block(h)
        return self.ln_out(h)

    def _head(self, h: torch.Tensor) -> Mixture:
        cfg = self.config
        shape = (*h.shape[:-1], cfg.mixtures, cfg.data_dim)
        return Mixture(self.logits(h), self.mu(h).reshape(shape), self.log_sigma(h).reshape(shape),
                       (cfg.min_log_sigma, cfg.max_log_sigma))

    def forward(self, x: torch.Tensor) -> Mixture:
        """x (B, k, d) -> the mixture of x_i given x_<i at each position i. Causal: position i
        never sees x_j for j >= i, so right padding leaves real positions untouched (mask the
        loss with `mdn_loss(..., mask)`)."""
        return self._head(self._hidden(x))

    def loss(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return mdn_loss(self(x), x, mask)

    @torch.no_grad()
    def sample(self, num: int, length: int | None = None, generator: torch.Generator | None = None,
               seed: int | None = None, prompt: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """`num` sequences of `length` latents (default seq_len), (num, length, d) float32 in
        model space, each latent clipped to [-1, 1] before it is fed back. `prompt` (p, d) or
        (num, p, d): a known prefix kept as given, the rest continues it. All randomness comes
        from `generator` (or a new one seeded by `seed`) in a fixed order: a seed gives the same
        samples (draws happen on the generator's device, so a CPU generator gives the same
        numbers for a model on any device). Temperature divides the mixture logits and
        multiplies sigma by sqrt(T).
        Each step reruns the causal trunk on the prefix (no KV cache) and the dense head on the
        new position only: 1000 samples of 32 latents take ~16 s of one CPU core with the cpu
        config at d = 256, most of it in the trunk."""
        cfg = self.config
        length = cfg.seq_len if length is None else int(length)
        device = next(self.parameters()).device
        if generator is None:
            generator = torch.Generator(device=device)
            if seed is None:
                generator.seed()
        if seed is not None:
            generator.manual_seed(seed)
        x = torch.zeros(num, length, cfg.data_dim, device=device)
        start = 0
        if prompt is not None:
            prompt = torch.as_tensor(prompt, dtype=torch.float32, device=device)
            start = prompt.shape[-2]
            if start > length:
                raise ValueError(f"a prompt of {start} latents is longer than length {length}")
            x[:, :start] = prompt.expand(num, start, cfg.data_dim)
        rows = torch.arange(num, device=device)
        for i in range(start, length):
            # x[:, i] is still zero here, and the shift drops it anyway: the output at i sees x_<i.
            mix = self._head(self._hidden(x[:, : i + 1], last_only=True))
            probs = torch.softmax(mix.logits[:, 0].float() / temperature, dim=-1).to(generator.device)
            comp = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
            noise = torch.randn((num, cfg.data_dim), generator=generator, device=generator.device).to(device)
            sigma = mix.sigma()[:, 0][rows, comp] * math.sqrt(temperature)
            x[:, i] = (mix.mu[:, 0][rows, comp].float() + sigma * noise).clamp(-1.0, 1.0)
        return x


# --- interpolation ----------------------------------------------------------------------------

def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (Shoemake; MusicVAE's `_slerp`) between a and b (..., d) at t,
    a scalar or a tensor broadcasting against (..., 1): sin((1-t) w)/sin w a + sin(t w)/sin w b,
    w the angle between a and b; linear interpolation where they are (anti)parallel."""
    a, b = a.float(), b.float()
    t = torch.as_tensor(t, dtype=torch.float32, device=a.device)
    t = t.unsqueeze(-1) if t.dim() else t
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    ok = so > eps
    safe = torch.where(ok, so, torch.ones_like(so))
    wa = torch.where(ok, torch.sin((1.0 - t) * omega) / safe, 1.0 - t)
    wb = torch.where(ok, torch.sin(t * omega) / safe, t)
    return wa * a + wb * b


PAPER_INFILL_MASK = torch.cat([torch.zeros(8), torch.ones(16), torch.zeros(8)]).bool()  # True = generate latents 8-23


def interpolate_infill(known: torch.Tensor, mask: torch.Tensor, scaler: LatentScaler | None = None,
                       silent: torch.Tensor | None = None, config: CodecConfig | None = None) -> torch.Tensor:
    """Fill the generated positions of `known` by slerp between their known neighbours.

    known (B, k, d) or (k, d) model-space latents; mask (k,) or (B, k) bool, True = generate
    (the samplers' convention), each row needs a known position. A run of generated positions
    between the known positions L and R gets slerp(x_L, x_R, (j - L) / (R - L)) at position j;
    with a scaler the slerp runs on the unscaled z (where the latents are Gaussian) and is
    mapped back. A run at the start or end (one neighbour) repeats that neighbour. A silent
    neighbour (`silent` (B, k) bool; by default what the codec `config` reads as silent)
    carries no latent to interpolate: the other neighbour is repeated, and a run with only
    silent neighbours stays silent (the codec's silence latent). Known positions come back
    exactly."""
    config = config or CodecConfig()
    x = torch.as_tensor(known).float()
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    b, k, d = x.shape
    gen = torch.as_tensor(mask, dtype=torch.bool, device=x.device)
    gen = (gen.unsqueeze(0) if gen.dim() == 1 else gen).expand(b, k)
    have = ~gen
    if not bool(have.any(1).all()):
        raise ValueError("every row needs at least one known latent to interpolate from")
    if silent is None:
        silent = config.is_silent(x)
    silent = torch.as_tensor(silent, dtype=torch.bool, device=x.device).expand(b, k)
    music = config.music(x)
    pos = torch.arange(k, device=x.device).expand(b, k)
    # nearest known position at or before / at or after each position (-1 / k when none)
    left = torch.cummax(torch.where(have, pos, -1), dim=1).values
    after = torch.cummax(torch.where(have.flip(1), pos, -1), dim=1).values.flip(1)
    right = torch.where(after >= 0, k - 1 - after, k)
    li, ri = left.clamp(0, k - 1), right.clamp(0, k - 1)
    rows = torch.arange(b, device=x.device)[:, None]
    xl, xr = music[rows, li], music[rows, ri]
    use_l = (left >= 0) & ~silent[rows, li]
    use_r = (right < k) & ~silent[rows, ri]
    t = (pos - left).float() / (right - left).clamp_min(1).float()
    if scaler is not None:
        between = scaler.scale(slerp(scaler.unscale(xl), scaler.unscale(xr), t))
    else:
        between = slerp(xl, xr, t)
    fill = torch.where(use_r[..., None], xr, torch.zeros_like(xr))
    fill = torch.where(use_l[..., None], xl, fill)
    fill = torch.where((use_l & use_r)[..., None], between, fill)
    out = torch.where(gen[..., None], config.join(fill, ~(use_l | use_r)), x)
    return out[0] if squeeze else out


# --- prior ------------------------------------------------------------------------------------

def prior_latents(num: int, length: int, scaler: LatentScaler, generator: torch.Generator | None = None,
                  seed: int | None = None, config: CodecConfig | None = None) -> torch.Tensor:
    """(num, length, dim): z ~ N(0, I) in all z_size dims (the VAE prior, independent per latent)
    mapped to model space by `scaler` (not clipped: values can leave [-1, 1]) and the codec
    `config` (no chunk silent). Decoding rebuilds the collapsed dims with fresh N(0, 1), the same
    distribution."""
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(seed) if seed is not None else generator.seed()
    z = torch.randn((num, length, scaler.z_size), generator=generator, device=generator.device)
    x = scaler.transform(z)
    return (config or CodecConfig()).join(x, torch.zeros(x.shape[:-1], dtype=torch.bool))
