"""The paper's TransformerDDPM (Mittal et al. 2021, sec. 3.1) and its latent preprocessing.

Network (the official `models/ncsn.py` TransformerDDPM, input (B, k = 32, d = 42)):

    h = Dense(128)(x) + sinusoidal_position(k, 128)                      # paper eq. 8
    L x: h = h + SelfAttention(LN(h), 8 heads)                          # pre-LN, bidirectional
         h = h + Dense(128)(gelu(Dense(2048)(LN(h))))
    h = Dense(2048)(LN(h))
    K x: scale, shift = FiLM(noise_encoding(sqrt(alpha_bar))); h = DenseResBlock(h, scale, shift)
    eps = Dense(d)(LN(h))

The transformer trunk never sees the noise level; only the K FiLM-modulated residual blocks do.
A key-padding mask lets one batch hold windows of different lengths (<= seq_len chunks); the
trunk is the only place positions mix, so masking the attention keys is enough for padding to
leave real positions untouched. Initialisation follows flax's defaults (lecun-normal kernels,
zero biases, LayerNorm eps 1e-6) as the official code used them. The trunk (`LatentTransformer`:
input projection, positions, encoder layers, Dense(2048)(LN(h))) and the checkpoint storage are
shared with the autoregressive TransformerMDN baseline (`symdiff.baselines`).

`LatentScaler` is the paper's preprocessing of MusicVAE latents: keep the active dims, scale
them to [-1, 1] with one global min/max fitted on the training set, and invert (rebuilding a full
z with N(0, 1) noise in the collapsed dims). It is saved inside the diffusion checkpoint so a
model is never used with a transform it was not trained with.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .atomic import read_config, read_tensors, save_tensors, state_dict_mismatch, write_text
from .schedulers import NoiseSchedule

LN_EPS = 1e-6  # flax LayerNorm default


class ConfigIO:
    """JSON storage shared by the latent models' config dataclasses."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path):
        return cls(**read_config(path, cls))


@dataclass
class DiffusionConfig(ConfigIO):
    """Architecture (paper sec. 3.1), noise schedule and training recipe (docs/paper_notes.md sec. 4)."""

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
    # schedule
    beta_start: float = 1e-6
    beta_end: float = 0.01
    num_steps: int = 1000
    # training recipe: Adam lr * decay^(step // decay_every), global-norm clip, no EMA
    learning_rate: float = 1e-3
    lr_decay: float = 0.98
    lr_decay_every: int = 10_000  # the official code; the paper's text says 4000
    grad_clip: float = 1.0
    batch_size: int = 64
    max_steps: int = 500_000
    extra: dict = field(default_factory=dict)  # provenance: VAE checkpoint, data, ...

    def __post_init__(self) -> None:
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {self.prediction!r}")

    def schedule(self) -> NoiseSchedule:
        """The noise schedule (built once per setting: the training loss asks every step)."""
        return _schedule(self.beta_start, self.beta_end, self.num_steps)

    def loss_weight(self, noise_level: torch.Tensor) -> torch.Tensor | None:
        """Per-example weight of the eps MSE that makes it this config's objective: None for
        eps, 1 / alpha_bar for v (MSE(v) = MSE(eps) / alpha_bar at a fixed x_t)."""
        return None if self.prediction == "eps" else noise_level.float().pow(-2)


@functools.lru_cache(maxsize=8)
def _schedule(beta_start: float, beta_end: float, num_steps: int) -> NoiseSchedule:
    return NoiseSchedule(beta_start, beta_end, num_steps)


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
}


def sinusoid(values: torch.Tensor, channels: int) -> torch.Tensor:
    """[sin(v w), cos(v w)] with w_k = exp(-k log(10000) / (channels/2 - 1)), k = 0..channels/2-1
    (paper eq. 8; WaveGrad's noise encoding with v = 5000 sqrt(alpha_bar)). Always float32."""
    half = channels // 2
    freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    arg = values.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def _flax_init(module: nn.Module) -> None:
    """flax defaults: lecun-normal (truncated) kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            std = math.sqrt(1.0 / m.in_features) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(m.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused q, k, v projection, with biases), bidirectional or causal."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        b, k, w = h.shape
        q, key, v = self.qkv(h).view(b, k, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if h.device.type == "cpu" and q.dtype != torch.float32:
            # On CPU the fused kernel's bf16 backward is ~4x slower than the plain math path for
            # these tiny heads (32 x 16); fp32 and GPUs keep the default choice.
            with sdpa_kernel(SDPBackend.MATH):
                o = F.scaled_dot_product_attention(q, key, v, attn_mask=attn_mask, is_causal=causal)
        else:
            o = F.scaled_dot_product_attention(q, key, v, attn_mask=attn_mask, is_causal=causal)
        return self.out(o.transpose(1, 2).reshape(b, k, w))


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: h + Attn(LN(h)), then h + Dense(gelu(Dense(LN(h)))).

    With `cond_dim`, adaLN-Zero (Peebles & Xie 2023, DiT): a per-example embedding gives a shift,
    scale and gate for each half, h + gate * Attn(LN(h) (1 + scale) + shift); the gates start at
    zero, so every layer starts as the identity."""

    def __init__(self, width: int, heads: int, mlp: int, cond_dim: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width, eps=LN_EPS)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)
        self.modulation = nn.Linear(cond_dim, 6 * width) if cond_dim else None

    def zero_modulation(self) -> None:
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulation is None:
            h = h + self.attn(self.ln1(h), attn_mask, causal)
            return h + self.fc2(F.gelu(self.fc1(self.ln2(h)), approximate="tanh"))  # flax gelu is the tanh form
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).unsqueeze(1).chunk(6, dim=-1)
        h = h + gate1 * self.attn(self.ln1(h) * (1 + scale1) + shift1, attn_mask, causal)
        return h + gate2 * self.fc2(F.gelu(self.fc1(self.ln2(h) * (1 + scale2) + shift2), approximate="tanh"))


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


class DenseResBlock(nn.Module):
    """LN -> scale*h+shift -> swish -> Dense -> LN -> scale*h+shift -> swish -> Dense, + shortcut.
    The raw FiLM scale multiplies (not 1 + scale), as in the official code; without FiLM (the
    MDN baseline's blocks) scale = 1 and shift = 0, the official defaults."""

    def __init__(self, dense: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dense, eps=LN_EPS)
        self.fc1 = nn.Linear(dense, dense)
        self.ln2 = nn.LayerNorm(dense, eps=LN_EPS)
        self.fc2 = nn.Linear(dense, dense)

    def forward(self, h: torch.Tensor, scale: torch.Tensor | float = 1.0, shift: torch.Tensor | float = 0.0) -> torch.Tensor:
        out = self.fc1(F.silu(scale * self.ln1(h) + shift))
        out = self.fc2(F.silu(scale * self.ln2(out) + shift))
        return h + out


class LatentTransformer(nn.Module):
    """The trunk both latent-sequence models share (TransformerDDPM here, TransformerMDN in
    `symdiff.baselines`), and their storage:

        h = Dense(width)(x) + sinusoidal_position(k, width)
        L x pre-LN EncoderLayer (bidirectional, or causal for the autoregressive MDN)
        h = Dense(dense)(LN(h))

    A subclass builds its head after calling this `__init__` and then `_flax_init(self)`; the
    attribute names are the state-dict keys. `config_class` loads its config, `kind` names the
    checkpoint format. `scaler` is the `LatentScaler` the model was trained with, carried by
    the checkpoint (None until set).
    """

    config_class: type = None  # set by subclasses
    kind: str = ""

    def __init__(self, cfg, in_dim: int | None = None, cond_dim: int = 0):
        super().__init__()
        self.config = cfg
        self.scaler: LatentScaler | None = None
        self.input = nn.Linear(in_dim or cfg.data_dim, cfg.width)
        self.layers = nn.ModuleList(EncoderLayer(cfg.width, cfg.heads, cfg.mlp, cond_dim) for _ in range(cfg.layers))
        self.ln_trunk = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.to_dense = nn.Linear(cfg.width, cfg.dense)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def trunk(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
              cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, k, in_dim) -> (B, k, dense). Bidirectional: `mask` (B, k) bool, True at real
        positions, masks the attention keys, so padding never reaches a real position. Causal:
        position i sees positions <= i only; padding must follow the real positions (as
        `gather_windows` builds batches), so a real position never sees it and `mask` is not
        needed. `cond` (B, cond_dim): the adaLN embedding, for layers built with one."""
        k = x.shape[1]
        pos = sinusoid(torch.arange(k, device=x.device), self.config.width)
        h = self.input(x) + pos.to(x.dtype)
        attn_mask = None
        if mask is not None and not causal:
            attn_mask = mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, k): real keys only
        for layer in self.layers:
            h = layer(h, attn_mask, causal, cond)
        return self.to_dense(self.ln_trunk(h))

    # --- storage ---
    def save_pretrained(self, directory: str | Path, scaler: "LatentScaler | None" = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """directory/ model.safetensors + config.json, scaler.safetensors (the `scaler` argument,
        else `self.scaler`, if any) and extra.safetensors (`extra_tensors`, if any). Never pickles;
        every file is written to a temporary name and renamed, so a kill leaves the old one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        save_tensors(state, directory / "model.safetensors", f"symdiff-{self.kind}")
        scaler = scaler if scaler is not None else self.scaler
        if scaler is not None:
            scaler.save(directory / "scaler.safetensors")
        if extra_tensors:
            extra = {k: v.detach().contiguous().cpu() for k, v in extra_tensors.items()}
            save_tensors(extra, directory / "extra.safetensors", f"symdiff-{self.kind}-extra")
        write_text(directory / "config.json", self.config.to_json())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        """The model in eval mode, with `.scaler` loaded when the checkpoint has one."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no config.json (not a symdiff {cls.kind} checkpoint)")
        model = cls(cls.config_class.load(directory / "config.json"))
        weights = directory / "model.safetensors"
        try:
            model.load_state_dict(read_tensors(weights))
        except RuntimeError as e:  # missing, unexpected or misshapen tensors
            raise state_dict_mismatch(weights, e) from None
        if (directory / "scaler.safetensors").is_file():
            model.scaler = LatentScaler.load(directory / "scaler.safetensors")
        return model.eval()


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
            self.noise_embed = nn.Sequential(nn.Linear(cfg.noise_dim, cfg.film), nn.SiLU(), nn.Linear(cfg.film, cfg.film))
        self.films = nn.ModuleList(DenseFiLM(cfg.noise_dim, cfg.film, cfg.dense) for _ in range(cfg.res_blocks))
        self.blocks = nn.ModuleList(DenseResBlock(cfg.dense) for _ in range(cfg.res_blocks))
        self.ln_out = nn.LayerNorm(cfg.dense, eps=LN_EPS)
        self.output = nn.Linear(cfg.dense, cfg.data_dim)
        _flax_init(self)
        for layer in self.layers:
            layer.zero_modulation()

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor | float, mask: torch.Tensor | None = None,
                known: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, k, d); noise_level sqrt(alpha_bar), (B,) or a scalar; mask (B, k) bool, True at
        real positions (each row needs at least one). A conditional config also takes `known`
        (B, k, d) and `keep` (B, k) bool, True where `known` holds the music (both None:
        nothing is known, unconditional generation). Returns eps; zero at padded positions."""
        b = x.shape[0]
        # The encoding multiplies by 5000: keep the level in float32 whatever the input dtype.
        level = torch.as_tensor(noise_level, device=x.device).float().reshape(-1)
        level = level.expand(b) if level.numel() == 1 else level
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
        enc = sinusoid(self.config.noise_scale * level, self.config.noise_dim).to(x.dtype)
        inp = x
        if self.config.conditional:
            if keep is None:
                keep = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            flag = torch.as_tensor(keep, device=x.device).to(torch.bool).expand(x.shape[:2]).unsqueeze(-1)
            ctx = torch.zeros_like(x) if known is None else torch.as_tensor(known, device=x.device).to(x.dtype) * flag
            inp = torch.cat([x, ctx, flag.to(x.dtype)], dim=-1)
        elif known is not None or keep is not None:
            raise ValueError("this diffusion model was not trained to see known latents (config.conditional)")
        h = self.trunk(inp, mask, cond=self.noise_embed(enc) if self.config.trunk_noise else None)
        for film, block in zip(self.films, self.blocks):
            scale, shift = film(enc)
            h = block(h, scale, shift)
        eps = self.output(self.ln_out(h))
        if self.config.prediction == "v":  # eps = sqrt(ab) v + sqrt(1 - ab) x_t, in float32
            a = level.reshape(b, 1, 1)
            eps = a * eps.float() + (1.0 - a * a).clamp_min(0.0).sqrt() * x.float()
        if mask is not None:
            eps = eps.masked_fill(~mask.unsqueeze(-1), 0.0)
        return eps


def load_extra_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The `extra_tensors` a checkpoint was saved with ({} when none)."""
    path = Path(directory) / "extra.safetensors"
    return read_tensors(path) if path.is_file() else {}


class LatentScaler:
    """MusicVAE z (..., z_size) <-> model space (..., d).

    transform: keep the active dims (mean posterior sigma < 0.98), then
    x -> 2 (x - min) / (max - min) - 1 with ONE global scalar min and max over the sliced training
    set (the paper's [-1, 1] scaling, sec. 3.2), then, when the scaler is standardized,
    x -> (x - center) / std with a per-dim center and ONE global std (`standardized`).
    inverse: undo it and rebuild a full z with N(0, 1) in the collapsed dims (the decoder
    ignores them). The official code fits a second min/max on the eval split ("a hack"); here
    there is one transform, fitted on training data and stored with the checkpoint.

    Why standardize: with 256 active dims a global min/max is set by outliers and leaves each
    dim a std of ~0.15, so the diffusion's signal-to-noise ratio is ~44x lower than the schedule
    was made for: the chain is almost pure noise until its last steps, where each chunk is
    finished locally. One global std keeps the dims' relative sizes (what the decoder cares about).
    """

    def __init__(self, dims: torch.Tensor | Iterable[int], z_size: int, min: float, max: float,
                 center: torch.Tensor | None = None, std: float | None = None):
        self.dims = torch.as_tensor(list(dims) if not torch.is_tensor(dims) else dims, dtype=torch.long).reshape(-1)
        self.z_size, self.min, self.max = int(z_size), float(min), float(max)
        if not self.max > self.min:
            raise ValueError(f"degenerate range [{self.min}, {self.max}]")
        if len(self.dims) and (int(self.dims.min()) < 0 or int(self.dims.max()) >= self.z_size):
            raise ValueError("active dims out of range")
        if (center is None) != (std is None):
            raise ValueError("a standardized scaler needs both center and std")
        self.center = None if center is None else torch.as_tensor(center, dtype=torch.float32).reshape(-1)
        self.std = None if std is None else float(std)
        if self.center is not None and (len(self.center) != len(self.dims) or not self.std > 0):
            raise ValueError(f"center has {len(self.center)} dims for {len(self.dims)}, std {self.std}")

    @property
    def standardized(self) -> bool:
        return self.center is not None

    def standardize(self, x: np.ndarray) -> "LatentScaler":
        """This scaler, standardized on `x` (N, d): [-1, 1]-scaled training latents (no silence)."""
        x = np.asarray(x, dtype=np.float32)
        center = x.mean(0, dtype=np.float64)
        std = float(np.sqrt(((x - center.astype(np.float32)) ** 2).mean(dtype=np.float64)))
        return LatentScaler(self.dims, self.z_size, self.min, self.max, torch.from_numpy(center).float(), std)

    @property
    def dim(self) -> int:
        """d, the diffusion model's data_dim."""
        return len(self.dims)

    def __repr__(self) -> str:
        std = f", std={self.std:.4f}" if self.standardized else ""
        return f"LatentScaler(dim={self.dim}, z_size={self.z_size}, min={self.min:.4f}, max={self.max:.4f}{std})"

    @staticmethod
    def active_dims(sigma: torch.Tensor | np.ndarray, threshold: float = 0.98) -> torch.Tensor:
        """Indices whose posterior sigma, averaged over the data, is below `threshold`.
        sigma: (N, z_size) per-example sigmas or (z_size,) already averaged."""
        s = torch.as_tensor(np.asarray(sigma) if not torch.is_tensor(sigma) else sigma).double()
        if s.dim() > 1:
            s = s.reshape(-1, s.shape[-1]).mean(0)
        return torch.nonzero(s < threshold).reshape(-1)

    @classmethod
    def fit(cls, latents: torch.Tensor | np.ndarray | Iterable, sigma: torch.Tensor | np.ndarray,
            threshold: float = 0.98) -> "LatentScaler":
        """Fit on training z's: (..., z_size) array, or an iterable of such batches (streams a
        corpus too large for memory). `sigma` chooses the dims (see `active_dims`)."""
        sig = torch.as_tensor(np.asarray(sigma) if not torch.is_tensor(sigma) else sigma)
        z_size = sig.shape[-1]
        dims = cls.active_dims(sig, threshold)
        if len(dims) == 0:
            raise ValueError(f"no dim has mean sigma < {threshold}: the VAE has collapsed")
        batches = [latents] if torch.is_tensor(latents) or isinstance(latents, np.ndarray) else latents
        lo, hi = math.inf, -math.inf
        for z in batches:
            z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z)
            if z.shape[-1] != z_size:
                raise ValueError(f"latents have {z.shape[-1]} dims, sigma {z_size}")
            if z.numel() == 0:
                continue
            part = z[..., dims]
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        return cls(dims, z_size, lo, hi)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        x = 2.0 * (x - self.min) / (self.max - self.min) - 1.0
        return x if self.center is None else (x - self.center.to(x)) / self.std

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        if self.center is not None:
            x = x * self.std + self.center.to(x)
        return (x + 1.0) * 0.5 * (self.max - self.min) + self.min

    def transform(self, z: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(..., z_size) -> (..., d) in [-1, 1] on the training set."""
        z = torch.as_tensor(z)
        return self.scale(z[..., self.dims.to(z.device)])

    def inverse(self, x: torch.Tensor, generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        """(..., d) -> full (..., z_size): unscaled values at the active dims, N(0, 1) elsewhere
        (seeded by `generator` or `seed`)."""
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(seed) if seed is not None else generator.seed()
        shape = (*x.shape[:-1], self.z_size)
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(x.device, x.dtype)
        z[..., self.dims.to(x.device)] = self.unscale(x)
        return z

    # --- storage: plain tensors, for safetensors ---
    def to_dict(self) -> dict[str, torch.Tensor]:
        out = {
            "dims": self.dims.clone(),
            "z_size": torch.tensor([self.z_size], dtype=torch.long),
            "range": torch.tensor([self.min, self.max], dtype=torch.float64),
        }
        if self.center is not None:
            out.update(center=self.center.clone(), std=torch.tensor([self.std], dtype=torch.float64))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> "LatentScaler":
        std = float(d["std"].reshape(-1)[0]) if "std" in d else None
        return cls(d["dims"], int(d["z_size"].reshape(-1)[0]), float(d["range"][0]), float(d["range"][1]),
                   d.get("center"), std)

    def save(self, path: str | Path) -> None:
        save_tensors(self.to_dict(), Path(path), "symdiff-latent-scaler")

    @classmethod
    def load(cls, path: str | Path) -> "LatentScaler":
        return cls.from_dict(read_tensors(path))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "LatentScaler":
        """The scaler stored in a diffusion checkpoint directory."""
        return cls.load(Path(directory) / "scaler.safetensors")
