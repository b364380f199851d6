"""Tokens <-> the diffusion model's space: what a latent model's numbers mean (paper sec. 3.2,
docs/paper_notes.md sec. 3).

A latent model (TransformerDDPM, TransformerMDN) never sees tokens. Between the two stand
- the MusicVAE whose 2-bar latents it models, named by the sha256 of its weights;
- the `LatentScaler`: the active dims and the map from z to model space;
- the silence rule: a silent 2-bar chunk is written as `silence_value` in every dim and read
  back as silent below `silence_threshold` ("token"), or the model space gets one more dim, a
  silence flag ("flag", below); why silence is written at all and not the paper's dropped
  windows: `symdiff.data.latents`;
- the samplers' x0 clip and whether the model learnt sampled z or the posterior mean mu.
`CodecConfig` holds all but the VAE's weights and the scaler's tensors, typed and versioned, in
the "codec" section of the checkpoint's config.json (`symdiff.checkpoint`); the scaler is
scaler.safetensors beside it. `LatentCodec` joins them: tokens -> (n, d) model space -> tokens.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import melody
from .atomic import CheckpointError, read_tensors, save_tensors
from .checkpoint import ConfigIO, read_checkpoint_config
from .vae import MusicVAE, vae_hash

CODEC_VERSION = 1
SILENCE_VALUE = -1.0  # the silence latent of the paper's [-1, 1] model space: a corner of the box
# The silence latent of a standardized model space (`LatentScaler.standardize`): every dim at
# -4 global stds, far from the real latents (their chunk means sit at 0) and inside the clip.
STANDARD_SILENCE_VALUE = -4.0
# The "flag" rule: one extra dim, +1 at a silent chunk (its other dims at the centre, 0) and -1
# at music, read as silent above 0 (an "analog bit", Chen et al. 2022). Why not the point at -4:
# the schedule's last alpha_bar (0.0067) leaves that point sqrt(0.0067) * 4 * 16 = 5 noise stds
# from pure noise along the all-ones direction, so a chain started from N(0, I) never reaches
# it (measured: 1 silent chunk in 2,048 against 5% in real windows); the flag's two values are
# 0.16 stds apart there, as the schedule expects of data.
FLAG_SILENT = 1.0


@dataclass
class CodecConfig(ConfigIO):
    """How a latent model's numbers map to music (stored with the model, checked on load)."""

    vae_path: str = ""  # the VAE's folder at training time (a shipped checkpoint: its name)
    vae_sha256: str = ""  # the VAE's weights: a codec is only used with these
    z_size: int = 256
    silence_rule: str = "token"  # "token": the silence latent; "flag": a silence dim; "drop": none seen
    silence_value: float = SILENCE_VALUE
    silence_threshold: float = 0.5 * SILENCE_VALUE
    clip: float = 1.0  # the samplers' x0 clip: the training set's largest |value|
    posterior: str = "sample"  # what the model learnt: sampled z (the paper) or the posterior mean mu
    version: int = CODEC_VERSION

    def __post_init__(self) -> None:
        if self.version != CODEC_VERSION:
            raise CheckpointError(f"codec version {self.version} is not the one this symdiff reads ({CODEC_VERSION})")
        if self.silence_rule not in ("token", "flag", "drop") or self.posterior not in ("sample", "mean"):
            raise CheckpointError(f"codec: unknown silence rule {self.silence_rule!r} or posterior {self.posterior!r}")

    @property
    def flag(self) -> bool:
        return self.silence_rule == "flag"

    def join(self, music: torch.Tensor, silent: torch.Tensor) -> torch.Tensor:
        """Scaled latents (..., d) and a silent mask (...) -> model space (..., d, + 1 with the
        flag): silent positions become the silence latent (the flag rule: the centre, flag up)."""
        silent = torch.as_tensor(silent, dtype=torch.bool, device=music.device)[..., None]
        if not self.flag:
            return torch.where(silent, torch.full_like(music, self.silence_value), music)
        flag = torch.where(silent, FLAG_SILENT, -FLAG_SILENT).to(music)
        return torch.cat([torch.where(silent, torch.zeros_like(music), music), flag], -1)

    def music(self, x: torch.Tensor) -> torch.Tensor:
        """Model space (..., dim) -> the scaled latents (..., d) (without the flag)."""
        return x[..., :-1] if self.flag else x

    def is_silent(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) model-space latents -> (...) bool: decoded as a rest."""
        x = torch.as_tensor(x).float()
        if self.flag:
            return x[..., -1] > self.silence_threshold
        return x.mean(-1) < self.silence_threshold


def chunks_of(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A line as the VAE's input chunks (n, 32), as MusicVAE's converter slices them, and their
    silent mask (no note onset in the 2 bars)."""
    chunks = melody.as_vae_input(melody.to_chunks(np.asarray(tokens, dtype=np.uint8)))
    return chunks, melody.silent_chunks(chunks)


def silence_chunk() -> np.ndarray:
    """How a silent latent decodes: a rest for 2 bars (a note-off, then no events)."""
    out = np.zeros(melody.CHUNK_STEPS, dtype=np.uint8)
    out[0] = melody.NOTE_OFF
    return out


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
        self.center: torch.Tensor | None = None
        self.std: float | None = None
        if center is not None and std is not None:
            self.center = torch.as_tensor(center, dtype=torch.float32).reshape(-1)
            self.std = float(std)
            if len(self.center) != len(self.dims) or not self.std > 0:
                raise ValueError(f"center has {len(self.center)} dims for {len(self.dims)}, std {self.std}")

    @property
    def standardized(self) -> bool:
        return self.center is not None

    def standardize(self, x: np.ndarray) -> LatentScaler:
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
            threshold: float = 0.98) -> LatentScaler:
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
        if self.center is None or self.std is None:  # set together, or neither
            return x
        return (x - self.center.to(x)) / self.std

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        if self.center is not None and self.std is not None:
            x = x * self.std + self.center.to(x)
        return (x + 1.0) * 0.5 * (self.max - self.min) + self.min

    def transform(self, z: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(..., z_size) -> (..., d) in [-1, 1] on the training set."""
        z = torch.as_tensor(z)
        return self.scale(z[..., self.dims.to(z.device)])

    def inverse(
        self, x: torch.Tensor, generator: torch.Generator | None = None, seed: int | None = None
    ) -> torch.Tensor:
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
    def from_dict(cls, d: dict[str, torch.Tensor]) -> LatentScaler:
        std = float(d["std"].reshape(-1)[0]) if "std" in d else None
        return cls(d["dims"], int(d["z_size"].reshape(-1)[0]), float(d["range"][0]), float(d["range"][1]),
                   d.get("center"), std)

    def save(self, path: str | Path) -> None:
        save_tensors(self.to_dict(), Path(path), "symdiff-latent-scaler")

    @classmethod
    def load(cls, path: str | Path) -> LatentScaler:
        return cls.from_dict(read_tensors(path))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LatentScaler:
        """The scaler stored in a diffusion checkpoint directory."""
        return cls.load(Path(directory) / "scaler.safetensors")


# --- tokens <-> model space: one object -----------------------------------------------------

class LatentCodec:
    """A VAE, the `LatentScaler` and the `CodecConfig` a latent model was trained with:
    melody tokens -> model-space sequences (n, d) -> tokens."""

    def __init__(self, vae: MusicVAE, scaler: LatentScaler, config: CodecConfig, vae_dir: Path | None = None):
        self.vae, self.scaler, self.config = vae.eval(), scaler, config
        self.vae_dir = vae_dir  # names the VAE in the evaluation's caches

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, vae_dir: str | Path | None = None,
                        check_hash: bool = True) -> LatentCodec:
        """From a latent model's checkpoint (DDPM or MDN): its codec config, its scaler, and the
        VAE the config names (or `vae_dir`), which must be the same weights (sha256) unless told
        otherwise."""
        model_dir = Path(model_dir)
        raw = read_checkpoint_config(model_dir, "diffusion", "mdn")
        config = CodecConfig.from_dict(raw.get("codec", {}), f"{model_dir}/config.json codec")
        if vae_dir is None:
            # The path recorded at training time, else a checkpoint of that name beside this one
            # (shipped checkpoints live side by side in checkpoints/).
            recorded = Path(config.vae_path)
            vae_dir = recorded if (recorded / "model.safetensors").is_file() else model_dir.parent / recorded.name
        vae_dir = Path(vae_dir)
        if check_hash and config.vae_sha256 and vae_hash(vae_dir) != config.vae_sha256:
            raise CheckpointError(f"{vae_dir} is not the VAE {model_dir} was trained with (sha256 differs)")
        return cls(MusicVAE.from_pretrained(vae_dir), LatentScaler.from_pretrained(model_dir), config, vae_dir)

    def to(self, device: str | torch.device) -> LatentCodec:
        """The VAE moved to `device` (the scaler follows the tensors it is given)."""
        self.vae.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dim(self) -> int:
        """The model space's dims: the scaler's, and the flag's (the latent model's data_dim)."""
        return self.scaler.dim + int(self.config.flag)

    def is_silent(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) model-space latents -> (...) bool: decoded as a rest."""
        return self.config.is_silent(x)

    @torch.no_grad()
    def encode(self, tokens: np.ndarray, sample: bool = False, seed: int | None = None) -> torch.Tensor:
        """A line -> (n, dim) model space on the CPU: mu (or a sampled z with `sample`), silence at
        silent chunks; the VAE runs on its own device."""
        chunks, silent = chunks_of(tokens)
        x = torch.zeros((len(chunks), self.scaler.dim))
        live = np.flatnonzero(~silent)
        if len(live):
            mu, sigma = (t.cpu() for t in self.vae.encode(torch.from_numpy(chunks[live]).long().to(self.device)))
            z = mu
            if sample:
                g = torch.Generator().manual_seed(seed) if seed is not None else None
                z = mu + sigma * torch.randn(mu.shape, generator=g)
            x[torch.from_numpy(live)] = self.scaler.transform(z).float()
        return self.config.join(x, torch.from_numpy(silent))

    @torch.no_grad()
    def decode(self, x: torch.Tensor, seed: int | None = 0, temperature: float = 0.0,
               batch_size: int = 4096) -> np.ndarray:
        """(n, dim) model space -> tokens (n * 32,) uint8; silent latents become 2-bar rests; the
        collapsed z dims get seeded N(0, 1) noise (`LatentScaler.inverse`)."""
        x = torch.as_tensor(x).float().cpu().reshape(-1, self.dim)  # the noise of the collapsed dims: CPU-seeded
        silent = self.is_silent(x)
        x = self.config.music(x)
        out = np.tile(silence_chunk(), (len(x), 1))
        live = torch.nonzero(~silent).reshape(-1)
        if len(live):
            z = self.scaler.inverse(x[live], seed=seed)
            g = torch.Generator().manual_seed(seed) if seed is not None else None
            idx = live.numpy()
            for i in range(0, len(z), batch_size):  # bounded memory for thousands of chunks
                out[idx[i : i + batch_size]] = self.vae.decode(z[i : i + batch_size].to(self.device),
                                                               temperature=temperature,
                                                               generator=g).cpu().numpy().astype(np.uint8)
        return melody.from_chunks(out)
