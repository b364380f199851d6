"""MusicVAE's 2-bar melody model (Roberts et al. 2018) in PyTorch, readable in one place.

Encoder: a bidirectional LSTM over the 32 one-hot steps; the last forward and backward
hidden states give mu = Dense(z) and sigma = softplus(Dense(z)).
Decoder: a stack of LSTM cells whose initial state is tanh(Dense(z)) split as (c, h) per
layer, and whose first layer sees [previous token one-hot ; z] at every step (zeros for the
previous token at step 0); a Dense(90) gives the logits.

The decoder is written as an explicit step loop over `nn.LSTMCell` weights because training
uses scheduled sampling (each step may feed back the model's own sample). The one-hot part
of the first layer's input is a row lookup and the z part is computed once per sequence,
which keeps the loop cheap on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import melody
from .atomic import sha256_file
from .checkpoint import ConfigIO, Pretrained


@dataclass
class VAEConfig(ConfigIO):
    """MusicVAE's architecture (magenta `configs.py`; its training recipe is
    `symdiff.train.vae.VAERecipe`)."""

    name: str = "cat-mel_2bar_small"
    num_classes: int = melody.NUM_CLASSES
    seq_len: int = melody.CHUNK_STEPS
    enc_size: int = 512  # units per direction of the bidirectional LSTM
    dec_sizes: tuple[int, ...] = (256, 256)
    z_size: int = 256


CONFIGS = {
    "cat-mel_2bar_small": VAEConfig(),
    "cat-mel_2bar_big": VAEConfig(name="cat-mel_2bar_big", enc_size=2048, dec_sizes=(2048, 2048, 2048), z_size=512),
}


def vae_hash(vae_dir: str | Path) -> str:
    """The sha256 of a VAE checkpoint's weights file: what names a VAE in caches and codecs."""
    path = Path(vae_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{vae_dir}: no model.safetensors (not a symdiff VAE checkpoint)")
    return sha256_file(path)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.lstm = nn.LSTM(cfg.num_classes, cfg.enc_size, batch_first=True, bidirectional=True)
        self.mu = nn.Linear(2 * cfg.enc_size, cfg.z_size)
        self.sigma = nn.Linear(2 * cfg.enc_size, cfg.z_size)
        for layer in (self.mu, self.sigma):  # magenta: N(0, 0.001) kernels, zero biases
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.one_hot(tokens.long(), self.lstm.input_size).to(self.mu.weight.dtype)
        _, (h, _) = self.lstm(x)  # h: (2, B, H) = last forward, last backward
        last = torch.cat([h[0], h[1]], dim=-1)
        return self.mu(last), F.softplus(self.sigma(last))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.num_classes, self.seq_len = cfg.num_classes, cfg.seq_len
        sizes = cfg.dec_sizes
        self.cells = nn.ModuleList(
            nn.LSTMCell(cfg.num_classes + cfg.z_size if i == 0 else sizes[i - 1], n)
            for i, n in enumerate(sizes)
        )
        self.z_to_initial_state = nn.Linear(cfg.z_size, 2 * sum(sizes))
        self.output_projection = nn.Linear(sizes[-1], cfg.num_classes)

    @property
    def lstm_cells(self) -> list[nn.LSTMCell]:
        """`cells` typed as what they hold (nn.ModuleList types its items as plain Modules)."""
        return cast("list[nn.LSTMCell]", list(self.cells))

    def initial_state(self, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        flat = torch.tanh(self.z_to_initial_state(z))
        state, at = [], 0
        for cell in self.lstm_cells:  # magenta order: c0, h0, c1, h1, ...
            n = cell.hidden_size
            state.append((flat[:, at + n : at + 2 * n], flat[:, at : at + n]))  # (h, c)
            at += 2 * n
        return state

    def run(
        self,
        z: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_prob: float = 1.0,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode 32 steps from z -> (logits (B, T, C), tokens (B, T)).

        With `targets`, each step's previous token is the target with probability
        `teacher_prob` and the model's own sample otherwise (scheduled sampling); without,
        the model feeds back its argmax (temperature 0) or a tempered sample.
        """
        cells = self.lstm_cells
        cell0 = cells[0]
        c = self.num_classes
        # First-layer input [one-hot ; z]: one-hot rows are columns of W_ih; z's part is fixed.
        tok_w = torch.cat([cell0.weight_ih[:, :c].t(), cell0.weight_ih.new_zeros(1, 4 * cell0.hidden_size)])
        z_gates = F.linear(z, cell0.weight_ih[:, c:], cell0.bias_ih + cell0.bias_hh)
        state = self.initial_state(z)
        prev = torch.full((z.shape[0],), c, dtype=torch.long, device=z.device)  # row c = zeros
        logits_all, tokens_all = [], []
        for t in range(self.seq_len):
            x: torch.Tensor | None = None  # the output of the layer below
            for i, cell in enumerate(cells):
                h, cs = state[i]
                if i == 0:
                    gates = tok_w[prev] + z_gates + F.linear(h, cell.weight_hh)
                else:
                    assert x is not None
                    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
                ig, fg, gg, og = gates.chunk(4, dim=-1)
                cs = torch.sigmoid(fg) * cs + torch.sigmoid(ig) * torch.tanh(gg)
                h = torch.sigmoid(og) * torch.tanh(cs)
                state[i] = (h, cs)
                x = h
            logits = self.output_projection(x)
            with torch.no_grad():
                if targets is None:
                    nxt = logits.argmax(-1) if temperature <= 0 else _sample(logits / temperature, generator)
                elif teacher_prob >= 1.0:
                    nxt = targets[:, t].long()
                else:  # scheduled sampling: the model's own sample, as magenta's helper
                    keep = torch.rand(prev.shape, generator=generator, device=z.device) < teacher_prob
                    nxt = torch.where(keep, targets[:, t].long(), _sample(logits, generator))
            logits_all.append(logits)
            tokens_all.append(nxt if targets is None else logits.argmax(-1))
            prev = nxt
        return torch.stack(logits_all, 1), torch.stack(tokens_all, 1)


class MusicVAE(Pretrained, nn.Module):
    """Storage: `save_pretrained` / `from_pretrained` (`symdiff.checkpoint`)."""

    kind = "vae"
    config_class = VAEConfig

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 32) tokens -> mu, sigma of q(z | x)."""
        return self.encoder(tokens)

    def forward(self, tokens: torch.Tensor, teacher_prob: float = 1.0, generator: torch.Generator | None = None):
        """Training pass -> (logits, mu, sigma); z is sampled with the reparameterisation."""
        mu, sigma = self.encode(tokens)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + sigma * eps
        logits, _ = self.decoder.run(z, targets=tokens, teacher_prob=teacher_prob, generator=generator)
        return logits, mu, sigma

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, z) -> (B, 32) tokens; temperature 0 is argmax (the paper decodes at 0.001)."""
        return self.decoder.run(z, temperature=temperature, generator=generator)[1]


def _sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.multinomial(F.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per example, summed over dims."""
    return 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma.clamp_min(1e-8))).sum(-1)


@torch.no_grad()
def evaluate(model: MusicVAE, chunks: torch.Tensor, batch_size: int = 512) -> dict:
    """Held-out figures: argmax reconstruction accuracy from mu (free-running, what a user
    hears), teacher-forced accuracy, mean KL, and the active dims (mean sigma < 0.98)."""
    model.eval()
    hits_free: float = 0
    hits_tf: float = 0
    kl = 0.0
    sigma_sum: torch.Tensor | None = None
    for i in range(0, len(chunks), batch_size):
        x = chunks[i : i + batch_size].long()
        mu, sigma = model.encode(x)
        hits_free += (model.decode(mu) == x).sum().item()
        logits, _ = model.decoder.run(mu, targets=x)
        hits_tf += (logits.argmax(-1) == x).sum().item()
        kl += kl_divergence(mu.float(), sigma.float()).sum().item()
        s = sigma.float().sum(0)
        sigma_sum = s if sigma_sum is None else sigma_sum + s
    n = len(chunks)
    if sigma_sum is None:
        raise ValueError("no chunks to evaluate")
    mean_sigma = sigma_sum / n
    return {
        "accuracy": hits_free / (n * chunks.shape[1]),
        "accuracy_teacher_forced": hits_tf / (n * chunks.shape[1]),
        "kl": kl / n,
        "active_dims": int((mean_sigma < 0.98).sum().item()),
    }


@torch.no_grad()
def reconstruct(model: MusicVAE, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Encode a melody chunk by chunk (mu) and decode it back (argmax); silent chunks stay silent."""
    raw = melody.to_chunks(tokens)
    chunks = melody.as_vae_input(raw)
    # silent chunks as they were: a note-off there ends the note sounding before them
    out = np.where(melody.silent_chunks(chunks)[:, None], raw, 0).astype(np.uint8)
    live = np.flatnonzero(~melody.silent_chunks(chunks))
    for i in range(0, len(live), batch_size):
        idx = live[i : i + batch_size]
        mu, _ = model.encode(torch.from_numpy(chunks[idx]).long())
        out[idx] = model.decode(mu).numpy().astype(np.uint8)
    return melody.from_chunks(out)[: len(tokens)]
