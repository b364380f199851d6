"""The dataset file (monophonic lines with metadata) and the views built on it. In the inference
layer, not in `symdiff.data` (which builds such files), because the app reads the shipped corpus
for its reference windows (`random_windows`, `demo.reference_stats`).

A dataset is a set of *lines*: one monophonic melody each (a voice of a chorale, a folk tune,
a MIDI track) as tokens on the model grid (see `melody`), with metadata. It is stored as one
compressed `.npz` (no pickles): the tokens of all lines concatenated, their offsets, and one
string column per metadata field. The split (train/valid/test) is by piece, never by window.

Views for training:
- `vae_chunks`: bar-aligned 2-bar chunks (MusicVAE slices at a 1-bar hop), silent ones
  dropped, for the VAE; transposition is done on the fly by `transpose_chunks`.
- `line_chunks` / `windows`: each line as non-overlapping 2-bar chunks, and windows of up to
  32 chunks (64 bars) at a stride of one chunk for the diffusion model.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import melody
from .atomic import save_npz, write_text

FIELDS = ("source", "piece", "voice", "meter", "key", "split")
SPLITS = ("train", "valid", "test")
WINDOW_CHUNKS = 32  # 64 bars, the diffusion model's sequence length
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "corpus.npz"  # the checkout's data/


def split_of(piece: str, valid: float = 0.05, test: float = 0.05) -> str:
    """Deterministic split of a piece id: the same piece always lands in the same split."""
    u = int(hashlib.sha1(piece.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if u < test else "valid" if u < test + valid else "train"


@dataclass
class Lines:
    """Monophonic lines (uint8 tokens) with one metadata dict each."""

    tokens: list[np.ndarray] = field(default_factory=list)
    meta: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, tokens: np.ndarray, **meta: str) -> None:
        meta.setdefault("split", split_of(meta["piece"]))
        self.tokens.append(np.asarray(tokens, dtype=np.uint8))
        self.meta.append({k: str(meta.get(k, "")) for k in FIELDS})

    def extend(self, other: Lines) -> None:
        self.tokens += other.tokens
        self.meta += other.meta

    def select(self, split: str | None = None, sources: set[str] | None = None) -> Lines:
        keep = [
            i for i, m in enumerate(self.meta)
            if (split is None or m["split"] == split) and (sources is None or m["source"] in sources)
        ]
        return Lines([self.tokens[i] for i in keep], [self.meta[i] for i in keep])

    # --- storage ---
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)
        cols = {k: np.array([m[k] for m in self.meta], dtype=str) for k in FIELDS}
        save_npz(  # atomic: never a half-written dataset
            path,
            compressed=True,
            tokens=np.concatenate(self.tokens) if self.tokens else np.zeros(0, np.uint8),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            **cols,
        )
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Lines:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no dataset here; build one with `symdiff data build`")
        with np.load(path, allow_pickle=False) as z:
            flat, offsets = z["tokens"], z["offsets"]
            cols = {k: z[k].tolist() for k in FIELDS}
        tokens = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        meta = [dict(zip(FIELDS, vals, strict=True)) for vals in zip(*(cols[k] for k in FIELDS), strict=True)]
        return cls(tokens, meta)

    # --- views ---
    def vae_chunks(self, hop_bars: int = 1, dedupe: bool = True) -> np.ndarray:
        """Non-silent bar-aligned 2-bar chunks of every line, (N, 32) uint8."""
        parts = [melody.windows(t, melody.BARS_PER_CHUNK, hop_bars) for t in self.tokens]
        chunks = np.concatenate(parts) if parts else np.zeros((0, melody.CHUNK_STEPS), np.uint8)
        chunks = chunks[~melody.silent_chunks(chunks)]
        return np.unique(chunks, axis=0) if dedupe and len(chunks) else chunks

    def line_chunks(self) -> list[np.ndarray]:
        """Each line as non-overlapping 2-bar chunks, (n_i, 32)."""
        return [melody.to_chunks(t) for t in self.tokens]

    def stats(self) -> dict:
        """Counts per source and split: pieces, lines, bars, non-empty chunks, 64-bar windows."""
        rows: dict = defaultdict(Counter)
        pieces: dict = defaultdict(set)
        for toks, m in zip(self.tokens, self.meta, strict=True):
            chunks = melody.to_chunks(toks)
            n = len(chunks)
            for key in ((m["source"], m["split"]), (m["source"], "all"), ("all", m["split"]), ("all", "all")):
                r = rows[key]
                r["lines"] += 1
                r["bars"] += len(toks) // melody.STEPS_PER_BAR
                r["chunks"] += int((~melody.silent_chunks(chunks)).sum())
                r["lines_64_bars"] += int(n >= WINDOW_CHUNKS)
                r["windows_64_bars"] += max(0, n - WINDOW_CHUNKS + 1)
                pieces[key].add(m["piece"])
        out: dict = {}
        for (source, split), r in sorted(rows.items()):
            out.setdefault(source, {})[split] = {"pieces": len(pieces[(source, split)]), **r}
        return out


def window_starts(num_chunks: int, size: int = WINDOW_CHUNKS) -> range:
    """Start chunks of the windows of a line: stride 1; a short line is one window."""
    return range(max(1, num_chunks - size + 1))


def transpose_chunks(
    chunks: np.ndarray, rng: np.random.Generator, max_shift: int = 5
) -> np.ndarray:
    """Transpose each chunk by a random shift in -max_shift..max_shift that keeps it in range."""
    chunks = np.asarray(chunks)
    notes = melody.is_onset(chunks)
    big = np.where(notes, chunks, 255).min(axis=1).astype(np.int64)
    top = np.where(notes, chunks, 0).max(axis=1).astype(np.int64)
    lo = np.maximum(-max_shift, 2 - big)  # lowest shift that stays >= token 2
    hi = np.minimum(max_shift, melody.NUM_CLASSES - 1 - top)
    lo = np.minimum(lo, 0)  # silent chunks: 255/0 sentinels give lo>hi; shift 0 then
    hi = np.maximum(hi, 0)
    shifts = lo + np.floor(rng.random(len(chunks)) * (hi - lo + 1)).astype(np.int64)
    return np.where(notes, chunks + shifts[:, None], chunks).astype(chunks.dtype)


def save_stats(stats: dict, path: str | Path) -> None:
    write_text(path, json.dumps(stats, indent=1) + "\n")


def random_windows(lines: Lines, split: str, num: int, seed: int, chunks: int = WINDOW_CHUNKS) -> list[np.ndarray]:
    """`num` random chunk-aligned windows of `chunks` 2-bar chunks (64 bars by default) from a
    split's lines: uniform over all such windows, without replacement while there are enough."""
    sel = lines.select(split)
    cands = [(i, s) for i, t in enumerate(sel.tokens) for s in range(0, len(t) // melody.CHUNK_STEPS - chunks + 1)]
    if not cands:
        raise ValueError(f"no {chunks * melody.BARS_PER_CHUNK}-bar window in the {split} split")
    pick = np.random.default_rng(seed).choice(len(cands), num, replace=num > len(cands))
    size = chunks * melody.CHUNK_STEPS
    return [sel.tokens[cands[j][0]][cands[j][1] * melody.CHUNK_STEPS :][:size].copy() for j in pick]
