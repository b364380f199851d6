"""The transformer trunk the latent-sequence models share (TransformerDDPM in
`symdiff.diffusion`, TransformerMDN in `symdiff.baselines`), after the official
`models/ncsn.py` and `models/transformer.py`:

    h = Dense(width)(x) + sinusoidal_position(k, width)                 # paper eq. 8
    L x: h = h + SelfAttention(LN(h), heads)                            # pre-LN
         h = h + Dense(width)(gelu(Dense(mlp)(LN(h))))
    h = Dense(dense)(LN(h))

A key-padding mask lets one batch hold windows of different lengths (<= seq_len chunks); the
trunk is the only place positions mix, so masking the attention keys is enough for padding to
leave real positions untouched. Initialisation follows flax's defaults (lecun-normal kernels,
zero biases, LayerNorm eps 1e-6) as the official code used them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .checkpoint import Pretrained
from .codec import LatentScaler

LN_EPS = 1e-6  # flax LayerNorm default


def sinusoid(values: torch.Tensor, channels: int) -> torch.Tensor:
    """[sin(v w), cos(v w)] with w_k = exp(-k log(10000) / (channels/2 - 1)), k = 0..channels/2-1
    (paper eq. 8; WaveGrad's noise encoding with v = 5000 sqrt(alpha_bar)). Always float32."""
    half = channels // 2
    freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    arg = values.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def flax_init(module: nn.Module) -> None:
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

    def forward(
        self, h: torch.Tensor, scale: torch.Tensor | float = 1.0, shift: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        out = self.fc1(F.silu(scale * self.ln1(h) + shift))
        out = self.fc2(F.silu(scale * self.ln2(out) + shift))
        return h + out


class LatentTransformer(Pretrained, nn.Module):
    """The trunk both latent-sequence models share (TransformerDDPM here, TransformerMDN in
    `symdiff.baselines`), and their storage:

        h = Dense(width)(x) + sinusoidal_position(k, width)
        L x pre-LN EncoderLayer (bidirectional, or causal for the autoregressive MDN)
        h = Dense(dense)(LN(h))

    A subclass builds its head after calling this `__init__` and then `flax_init(self)`; the
    attribute names are the state-dict keys. `config_class` and `kind` (`checkpoint.Pretrained`)
    name its config and checkpoint kind. `scaler` is the `LatentScaler` the model was trained with, carried by
    the checkpoint (None until set).
    """

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
              cond: torch.Tensor | None = None, alone: torch.Tensor | None = None) -> torch.Tensor:
        """(B, k, in_dim) -> (B, k, dense). Bidirectional: `mask` (B, k) bool, True at real
        positions, masks the attention keys, so padding never reaches a real position. Causal:
        position i sees positions <= i only; padding must follow the real positions (as
        `gather_windows` builds batches), so a real position never sees it and `mask` is not
        needed. `cond` (B, cond_dim): the adaLN embedding, for layers built with one.
        `alone` (B,) bool (bidirectional only): rows whose positions each attend to themselves
        only, at position 0, exactly as k one-position rows would run; so a piece and its chunks
        seen alone share one batch of one shape (context guidance, one model call a step)."""
        k = x.shape[1]
        pos = sinusoid(torch.arange(k, device=x.device), self.config.width).to(x.dtype)
        attn_mask = None
        if mask is not None and not causal:
            attn_mask = mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, k): real keys only
        if alone is not None:
            if causal:
                raise ValueError("`alone` rows need a bidirectional trunk")
            alone = alone.to(device=x.device, dtype=torch.bool)
            pos = torch.where(alone[:, None, None], pos[:1], pos)  # (B, k, width)
            eye = torch.eye(k, dtype=torch.bool, device=x.device)
            rest = attn_mask if attn_mask is not None else torch.ones((), dtype=torch.bool, device=x.device)
            attn_mask = torch.where(alone[:, None, None, None], eye, rest)  # (B, 1, k, k)
        h = self.input(x) + pos
        for layer in self.layers:
            h = layer(h, attn_mask, causal, cond)
        return self.to_dense(self.ln_trunk(h))

    # --- storage: the one checkpoint format (`symdiff.checkpoint`) plus the scaler ---
    def save_pretrained(self, directory: str | Path, sections: dict[str, Any] | None = None,
                        tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                        scaler: LatentScaler | None = None) -> Path:
        """Weights, config.json with `sections`, scaler.safetensors (`scaler`, else
        `self.scaler`, if any) and `tensors` (e.g. {"extra": EMA weights})."""
        scaler = scaler if scaler is not None else self.scaler
        tensors = {**(tensors or {}), **({"scaler": scaler.to_dict()} if scaler is not None else {})}
        return super().save_pretrained(directory, sections, tensors)

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        """The model in eval mode, with `.scaler` loaded when the checkpoint has one."""
        model = super().from_pretrained(directory)
        if (Path(directory) / "scaler.safetensors").is_file():
            model.scaler = LatentScaler.from_pretrained(directory)
        return model
