"""The latent dataset the diffusion model trains on (paper sec. 3.1, docs/paper_notes.md sec. 3).

Every line of the corpus is cut into non-overlapping 2-bar chunks (`melody.to_chunks`, sliced
as MusicVAE's converter does with `melody.as_vae_input`) and each non-silent chunk is encoded by
the VAE, batched, under bf16 autocast where the hardware has it (`symdiff.precision`; the
choice is part of the cache key). As in the paper, the sequences hold the *sampled* latent
z = mu + sigma * eps (eps seeded), not mu, unless `LatentSettings.posterior` is "mean".
Training lines are also encoded at several random
transpositions: version 0 is the line as written, versions 1..T-1 are distinct non-zero shifts
in -5..+5 semitones drawn among those that keep the whole line in MIDI 21..108 (a line moves as
a whole by one shift; a line with less room gets fewer versions). Valid and test lines are
encoded once, untransposed.

Active dims and scaling. The mean posterior sigma of every z dim over the untransposed training
chunks picks the dims the model sees (mean sigma < 0.98, the paper's rule); one global min/max
over all training latents at those dims (every version) fits the `LatentScaler`, so the
training set spans [-1, 1] exactly. Nothing is fitted on valid or test data.

Silent chunks (no note onset in the 2 bars) and the decision taken here. The paper drops every
32-chunk window that contains one. Measured on our corpus (`Lines.load()`, the music21 build of
21,643 lines):

    train: 262,630 chunks, 15,069 silent (5.7%), in 5,249 of 19,505 lines.
      64-bar (32-chunk) windows: 28,823, of which 9,765 (33.9%) have no silent chunk;
      by source: palestrina 5,028 / 19,788 (25%), monteverdi 249 / 2,526 (10%),
      trecento 3,834 / 5,605 (68%), folk tunes and chorales 55-100% (few reach 64 bars).
      All windows incl. the one shorter window of each line under 64 bars: 23,745 / 46,602 (51%).
    valid: 64-bar windows 378 / 1,627 kept (23%); all windows 1,161 / 2,603.
    Silent train chunks are 78% rests, 10% a note held through all 2 bars, 11% a held note
    that ends inside the chunk.

The paper's rule would throw away two thirds of the 64-bar material (90% of Monteverdi, 75% of
Palestrina: the Renaissance voices rest for bars at a time), so the default here represents a
silent chunk explicitly: `SILENCE_VALUE` (-1) in every model-space dim, a fixed point at the
corner of the [-1, 1] box that the sampler's x0 clip can reach and that lies far from the
real latents (their per-chunk mean sits near the centre of the box). It is decoded back as a
rest: a chunk that is a note-off at its first step and no events after it (so a note held over
from the previous chunk stops at the chunk boundary; the ~20% of silent chunks that continue a
held note lose that tail). A generated chunk counts as silent when its mean over the dims is
below `silence_threshold`, halfway between -1 and the mean model-space value of the real
training chunks (stored with the data and in the diffusion checkpoint). The paper's rule stays
available: `windows(..., drop_silent=True)` / `symdiff train diffusion --silence drop`.
A point far from the music is hard for a diffusion model to reach, though (`codec.FLAG_SILENT`
says why and what was measured): `--silence flag` gives silence a dim of its own instead, +1 at a
silent chunk (its other dims at the centre) and -1 at music.
(Not the all-zero z of MusicVAE's pipeline: z = 0 is the prior mean, right among the real
latents, so a generated chunk near it could not be told from a note-bearing one.)

Windows: up to 32 chunks (64 bars) at a stride of one chunk (`dataset.window_starts`); a line
shorter than 32 chunks gives one shorter window, so batches are padded (key padding mask) and
the model also serves melodies shorter than 64 bars.

File format (one uncompressed `.npz`, no pickles, written to a temporary name and renamed):
    latents  (N, d) float16  z at the active dims, NOT scaled (zeros at silent chunks)
    silent   (N,) bool       chunk has no note onset
    offsets  (S+1,) int64    sequence s = chunks offsets[s]:offsets[s+1]
    split    (S,) str        train / valid / test
    line     (S,) int64      index of the line in the corpus file
    shift    (S,) int8       transposition in semitones
    dims (d,) int64, sigma_mean (z_size,) float32, z_size, range [min, max] float64,
    silence_threshold float64, key (JSON text: what the cache was built from)
The file lives in a cache folder (default `data/cache/latents/`, git-ignored) under a name
made from the hash of its key: the sha256 of the VAE weights, the sha256 of the corpus file and
the settings. A changed VAE, corpus or setting gives a new file; an unchanged one is reused.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import melody
from ..atomic import save_npz, sha256_file
from ..codec import SILENCE_VALUE, LatentScaler, chunks_of
from ..dataset import DEFAULT_PATH, SPLITS, WINDOW_CHUNKS, Lines, window_starts
from ..errors import SymdiffError
from ..precision import autocast, resolve_precision
from ..vae import MusicVAE, vae_hash

FORMAT = 1
DEFAULT_CACHE = DEFAULT_PATH.parent / "cache" / "latents"


# --- transposition of whole lines -------------------------------------------------------------

def shift_range(tokens: np.ndarray, max_shift: int = 5) -> tuple[int, int]:
    """(lo, hi): the shifts in -max_shift..max_shift that keep every note of a line in range."""
    tokens = np.asarray(tokens)
    notes = tokens[melody.is_onset(tokens)].astype(np.int64)
    if not len(notes):
        return 0, 0
    return max(-max_shift, 2 - int(notes.min())), min(max_shift, melody.NUM_CLASSES - 1 - int(notes.max()))


def transpose_line(tokens: np.ndarray, shift: int) -> np.ndarray:
    """A line moved by `shift` semitones as a whole (it must stay in range, see `shift_range`)."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    if shift == 0:
        return tokens.copy()
    out = tokens.astype(np.int64)
    notes = melody.is_onset(out)
    out[notes] += shift
    if notes.any() and (out[notes].min() < melody.FIRST_PITCH_TOKEN or out[notes].max() > melody.NUM_CLASSES - 1):
        raise ValueError(f"shift {shift} takes the line out of MIDI {melody.MIN_PITCH}..{melody.MAX_PITCH}")
    return out.astype(np.uint8)


def line_chunks(tokens: np.ndarray, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A line (transposed by `shift`) as the VAE's input chunks (n, 32) and their silent mask."""
    return chunks_of(transpose_line(tokens, shift))


# --- settings, key, cache -----------------------------------------------------------------

@dataclass
class LatentSettings:
    transpositions: int = 4  # versions of each training line: as written + 3 random shifts
    max_shift: int = 5
    seed: int = 0
    threshold: float = 0.98  # active dims: mean posterior sigma below this
    bf16: bool = field(default_factory=lambda: resolve_precision("auto") == "bf16")  # native bf16 CPUs
    splits: tuple[str, ...] = SPLITS
    # "sample": z = mu + sigma eps (the paper); "mean": mu. Our VAE's posterior noise is 2/3 of
    # a sampled z's variance (mean sigma 0.68 over its 256 active dims): in sampled z the
    # structure shared by the chunks of a piece is buried under noise drawn per chunk.
    posterior: str = "sample"

    def __post_init__(self) -> None:
        if self.posterior not in ("sample", "mean"):
            raise SymdiffError(f"posterior must be 'sample' or 'mean', not {self.posterior!r}")

    def key(self, vae_dir: str | Path, data: str | Path) -> dict:
        """What names the cache. `posterior` enters only when it is not the default, so caches
        built before it existed keep their names."""
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if fields["posterior"] == "sample":
            del fields["posterior"]
        return {"format": FORMAT, "vae_sha256": vae_hash(vae_dir), "data_sha256": sha256_file(data), **fields}


def key_name(key: dict) -> str:
    return "latents-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".npz"


def cache_path(vae_dir: str | Path, data: str | Path = DEFAULT_PATH, cache_dir: str | Path = DEFAULT_CACHE,
               settings: LatentSettings | None = None) -> tuple[Path, dict]:
    key = (settings or LatentSettings()).key(vae_dir, data)
    return Path(cache_dir) / key_name(key), key


# --- the dataset --------------------------------------------------------------------------

@dataclass
class LatentDataset:
    latents: np.ndarray  # (N, d) float16, unscaled z at the active dims
    silent: np.ndarray  # (N,) bool
    offsets: np.ndarray  # (S+1,) int64
    split: np.ndarray  # (S,) str
    line: np.ndarray  # (S,) int64
    shift: np.ndarray  # (S,) int8
    dims: np.ndarray  # (d,) int64
    sigma_mean: np.ndarray  # (z_size,) float32
    z_size: int
    range: tuple[float, float]
    silence_threshold: float
    key: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def dim(self) -> int:
        return len(self.dims)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def scaler(self) -> LatentScaler:
        return LatentScaler(torch.from_numpy(self.dims), self.z_size, *self.range)

    def standard_scaler(self) -> LatentScaler:
        """`scaler()` standardized on the non-silent training chunks (every version)."""
        train = np.repeat(self.split == "train", self.lengths()) & ~self.silent
        return self.scaler().standardize(self.model_space()[train])

    def model_space(self, scaler: LatentScaler | None = None) -> np.ndarray:
        """(N, d) float32: latents scaled by `scaler` (default `scaler()`), `SILENCE_VALUE` in every
        dim at silent chunks (a trained model's own silence rule: `codec.CodecConfig.join`)."""
        scaler = scaler or self.scaler()
        x = scaler.scale(torch.from_numpy(self.latents.astype(np.float32))).numpy()
        x[self.silent] = SILENCE_VALUE
        return x

    def sequences(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def windows(self, split: str, size: int = WINDOW_CHUNKS, drop_silent: bool = False) -> np.ndarray:
        """(W, 2) int64 rows (first chunk index into `latents`, length): every window of up to
        `size` chunks at a stride of one chunk of the split's sequences; with `drop_silent` (the
        paper's rule) windows that contain a silent chunk are left out."""
        seqs = self.sequences(split)
        seqs = seqs[self.lengths()[seqs] > 0]  # an empty line has no window
        lengths = self.lengths()[seqs]
        starts = [self.offsets[s] + np.asarray(window_starts(int(n), size), dtype=np.int64)
                  for s, n in zip(seqs, lengths, strict=True)]
        sizes = [np.full(len(w), min(int(n), size), dtype=np.int64) for w, n in zip(starts, lengths, strict=True)]
        if not starts:
            return np.zeros((0, 2), dtype=np.int64)
        out = np.stack([np.concatenate(starts), np.concatenate(sizes)], axis=1)
        if drop_silent:
            cs = np.concatenate([[0], np.cumsum(self.silent)])
            out = out[cs[out[:, 0] + out[:, 1]] - cs[out[:, 0]] == 0]
        return out

    # --- storage ---
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(  # atomic: a kill never leaves a half-written cache under the real name
            path, latents=self.latents, silent=self.silent, offsets=self.offsets, split=self.split.astype(str),
            line=self.line, shift=self.shift, dims=self.dims, sigma_mean=self.sigma_mean,
            z_size=np.array(self.z_size, dtype=np.int64), range=np.array(self.range, dtype=np.float64),
            silence_threshold=np.array(self.silence_threshold, dtype=np.float64),
            key=np.array(json.dumps(self.key, sort_keys=True)),
        )
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatentDataset:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                latents=z["latents"], silent=z["silent"], offsets=z["offsets"], split=z["split"], line=z["line"],
                shift=z["shift"], dims=z["dims"], sigma_mean=z["sigma_mean"], z_size=int(z["z_size"]),
                range=(float(z["range"][0]), float(z["range"][1])), silence_threshold=float(z["silence_threshold"]),
                key=json.loads(str(z["key"])), path=Path(path),
            )

    def summary(self) -> dict:
        lengths = self.lengths()
        out = {"dims": self.dim, "z_size": self.z_size, "range": [round(v, 4) for v in self.range],
               "silence_threshold": round(self.silence_threshold, 4)}
        for split in np.unique(self.split):
            seqs = self.sequences(split)
            n = int(lengths[seqs].sum())
            sil = int((self.silent & np.repeat(self.split == split, lengths)).sum())
            out[str(split)] = {"sequences": len(seqs), "chunks": n, "silent_chunks": sil,
                               "windows": len(self.windows(str(split))),
                               "windows_without_silence": len(self.windows(str(split), drop_silent=True))}
        return out


# --- building -----------------------------------------------------------------------------

@torch.no_grad()
def _encode(vae: MusicVAE, chunks: np.ndarray, rng: np.random.Generator, batch_size: int,
            device: torch.device, bf16: bool, out: np.ndarray, dims: np.ndarray | None,
            sigma_sum: np.ndarray | None, bar, posterior: str = "sample") -> None:
    """Sampled z (or mu, `posterior="mean"`) of `chunks` into `out` (float16; only `dims` when
    given); sum sigma if asked. eps is drawn from `rng` in chunk order either way, so the result
    does not depend on the batch size."""
    for i in range(0, len(chunks), batch_size):
        x = torch.from_numpy(chunks[i : i + batch_size]).long().to(device)
        with autocast("bf16" if bf16 else "fp32", device.type):
            mu_t, sigma_t = vae.encode(x)
        mu, sigma = mu_t.float().cpu().numpy(), sigma_t.float().cpu().numpy()
        eps = rng.standard_normal(mu.shape, dtype=np.float32)
        z = mu + sigma * eps if posterior == "sample" else mu
        if sigma_sum is not None:
            sigma_sum += sigma.sum(0, dtype=np.float64)
        out[i : i + len(x)] = z if dims is None else z[:, dims]
        if bar is not None:
            bar.update(len(x))


def build_latents(vae_dir: str | Path, data: str | Path = DEFAULT_PATH, settings: LatentSettings | None = None,
                  batch_size: int = 512, device: str | torch.device = "cpu", progress: bool = True,
                  key: dict | None = None) -> LatentDataset:
    """Encode the corpus with the VAE (see the module docstring); returns the dataset unsaved."""
    s = settings or LatentSettings()
    if "train" not in s.splits:
        raise SymdiffError("the training split is needed: the active dims and the scaler are fitted on it")
    if s.transpositions < 1:
        raise SymdiffError("transpositions counts the versions of a line, the untransposed one included: >= 1")
    device = torch.device(device)
    vae = MusicVAE.from_pretrained(vae_dir).to(device).eval()
    lines = Lines.load(data)
    split_of = np.array([m["split"] for m in lines.meta])

    # Passes: (split, version, [(line, shift)]); the untransposed training lines come first.
    rng_shift = np.random.default_rng([s.seed, 1])
    train_idx = np.flatnonzero(split_of == "train")
    extra_shifts: list[list[int]] = []
    for i in train_idx:
        lo, hi = shift_range(lines.tokens[i], s.max_shift)
        allowed = [k for k in range(lo, hi + 1) if k != 0]
        k = min(s.transpositions - 1, len(allowed))
        extra_shifts.append([int(v) for v in rng_shift.choice(allowed, k, replace=False)] if k else [])
    passes = [("train", 0, [(int(i), 0) for i in train_idx])]
    for v in range(1, s.transpositions):
        passes.append(("train", v, [(int(i), sh[v - 1]) for i, sh in zip(train_idx, extra_shifts, strict=True)
                                    if len(sh) >= v]))
    for split in s.splits:
        if split != "train":
            passes.append((split, 0, [(int(i), 0) for i in np.flatnonzero(split_of == split)]))

    # Chunks of every pass (silence does not depend on the shift).
    built = []
    for split, v, items in passes:
        parts = [line_chunks(lines.tokens[i], sh) for i, sh in items]
        chunks = np.concatenate([c for c, _ in parts]) if parts else np.zeros((0, melody.CHUNK_STEPS), np.uint8)
        silent = np.concatenate([m for _, m in parts]) if parts else np.zeros(0, bool)
        built.append((split, v, items, chunks, silent, np.array([len(c) for c, _ in parts], dtype=np.int64)))
    total = sum(int((~b[4]).sum()) for b in built)

    bar = tqdm(total=total, desc="encode latents", unit="chunk", disable=not progress)
    z_size = vae.config.z_size
    outs, dims, sigma_mean = [], None, None
    for split, v, items, chunks, silent, counts in built:
        live = chunks[~silent]
        rng = np.random.default_rng([s.seed, 2, SPLITS.index(split) if split in SPLITS else 9, v])
        if dims is None:  # train, untransposed: full z, and the sigma statistics
            full = np.zeros((len(live), z_size), dtype=np.float16)
            sigma_sum = np.zeros(z_size, dtype=np.float64)
            _encode(vae, live, rng, batch_size, device, s.bf16, full, None, sigma_sum, bar, s.posterior)
            if not len(live):
                raise SymdiffError("no non-silent training chunk to fit the active dims on")
            sigma_mean = (sigma_sum / len(live)).astype(np.float32)
            dims = LatentScaler.active_dims(sigma_mean, s.threshold).numpy()
            if not len(dims):
                raise SymdiffError(f"no dim has mean sigma < {s.threshold}: the VAE has collapsed")
            z_live = full[:, dims]
            del full
        else:
            z_live = np.zeros((len(live), len(dims)), dtype=np.float16)
            _encode(vae, live, rng, batch_size, device, s.bf16, z_live, dims, None, bar, s.posterior)
        z = np.zeros((len(chunks), len(dims)), dtype=np.float16)
        z[~silent] = z_live
        outs.append((split, items, z, silent, counts))
    bar.close()

    latents = np.concatenate([o[2] for o in outs])
    silent = np.concatenate([o[3] for o in outs])
    counts = np.concatenate([o[4] for o in outs])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    line_split = np.array([o[0] for o in outs for _ in o[1]], dtype=str)
    line = np.array([i for o in outs for i, _ in o[1]], dtype=np.int64)
    shift = np.array([sh for o in outs for _, sh in o[1]], dtype=np.int8)

    # One global min/max over the training latents (every version) at the active dims, taken
    # from the float16 values stored, so the training set maps onto [-1, 1] exactly.
    assert dims is not None and sigma_mean is not None  # set by the first pass (untransposed train)
    is_train = np.repeat(line_split == "train", counts)
    train_live = latents[is_train & ~silent].astype(np.float32)
    z_min, z_max = float(train_live.min()), float(train_live.max())
    scaler = LatentScaler(torch.from_numpy(dims), z_size, z_min, z_max)
    chunk_means = scaler.scale(torch.from_numpy(train_live)).mean(-1)
    threshold = 0.5 * (SILENCE_VALUE + float(chunk_means.mean()))
    return LatentDataset(latents, silent, offsets, line_split, line, shift, dims.astype(np.int64), sigma_mean,
                         z_size, (z_min, z_max), threshold, key or s.key(vae_dir, data))


def ensure_latents(vae_dir: str | Path, data: str | Path = DEFAULT_PATH, cache_dir: str | Path = DEFAULT_CACHE,
                   settings: LatentSettings | None = None, batch_size: int = 512,
                   device: str | torch.device = "cpu", progress: bool = True) -> LatentDataset:
    """The cached latent dataset for this VAE, corpus and settings: loaded when the cache has it
    (same key), else built and written."""
    path, key = cache_path(vae_dir, data, cache_dir, settings)
    if path.is_file():
        ds = LatentDataset.load(path)
        if ds.key == key:
            return ds
    ds = build_latents(vae_dir, data, settings, batch_size, device, progress, key=key)
    ds.save(path)
    return ds


def wait_for_latents(vae_dir, data=DEFAULT_PATH, cache_dir=DEFAULT_CACHE, settings=None,
                     poll: float = 5.0) -> LatentDataset:
    """For the other ranks of a torchrun job while rank 0 builds the cache (a barrier would time
    out on a long build)."""
    path, key = cache_path(vae_dir, data, cache_dir, settings)
    while True:
        if path.is_file():
            ds = LatentDataset.load(path)
            if ds.key == key:
                return ds
        time.sleep(poll)


# --- batches ------------------------------------------------------------------------------

def gather_windows(x: np.ndarray, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (rows of start, length) of the model-space array x (N, d) -> a batch padded to
    the longest: x (B, L, d) float32 with zeros at padding, mask (B, L) bool, True = real."""
    windows = np.asarray(windows).reshape(-1, 2)
    length = int(windows[:, 1].max())
    pos = np.arange(length)
    mask = pos[None, :] < windows[:, 1:2]
    idx = np.where(mask, windows[:, :1] + pos[None, :], 0)
    out = x[idx] * mask[..., None]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), torch.from_numpy(mask)
