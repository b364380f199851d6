"""The paper's metrics: framewise overlapping area, latent-space distances, copying of training data.
In the inference layer because the app shows the first two live (`demo.RefinementTrace`);
`symdiff.evaluation` reports them over sets.

- Framewise overlapping area (OA, paper sec. 4.4, docs/paper_notes.md sec. 7, as SCHmUBERT re-implemented Mittal et
  al.): notes belong to the bar where they start; frames of 4 bars at a hop of 2 bars; per frame
  one Gaussian of the pitches and one of the durations (std + 1e-6; an empty frame is
  N(1, 1e-6)); OA of adjacent frames is the overlap of their Gaussians
  (`statistics.NormalDist.overlap`, vectorised here by `gaussian_overlap`). Two choices differ
  from SCHmUBERT's code on purpose:
  * the frames cover the whole token array (a 64-bar melody has 31 frames even when it ends
    in rests); SCHmUBERT counts bars up to the end of the last note only;
  * a frame's std is computed exactly from integer sums. SCHmUBERT's `np.std` can give two
    frames with equal variances (e.g. the same notes transposed) sigmas one ulp apart, and
    `NormalDist.overlap` is only exact for exactly equal sigmas: its general formula divides by
    the difference of the variances, so such pairs get an arbitrary OA (e.g. 0.91 instead of
    0.20); this hit 4 of 12,000 OA values of 200 real 64-bar windows.
  The set statistics are the mean and variance of all OA values of the set (docs/paper_notes.md sec. 7);
  `per_melody=True` gives SCHmUBERT's variant (mean and variance of the per-melody mean OA).
- Latent metrics: Frechet distance and the polynomial-kernel MMD between two sets of latent
  vectors; the MMD is computed from d x d second-moment matrices, never an N x N kernel.
- Copying (beyond the paper): `CopyIndex` finds, for a sample, the longest run of consecutive
  bars that appears verbatim (same tokens, bar-aligned) as consecutive bars of a training line.
  Rule for rests: a copied span must start and end on a bar with a note onset; bars without
  an onset (rests, held notes) count only inside such a span. Otherwise silence alone would
  "copy" (any sample with rests matches any training line with rests), and a copied phrase
  would be inflated by the rests around it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from math import sqrt

import numpy as np

from .melody import NO_EVENT, STEPS_PER_BAR, is_onset, token_to_pitch

FRAME_BARS = 4
HOP_BARS = 2
STD_EPS = 1e-6  # SCHmUBERT adds this to every frame's std
EMPTY_FRAME = (1.0, 1e-6)  # SCHmUBERT's Gaussian for a frame without notes
FEATURES = ("pitch", "duration")
_SQRT2 = sqrt(2.0)
_QUERY_CHUNK = 1 << 21  # symbols of sample windows searched at once (bounds the memory)
_ERF = np.frompyfunc(math.erf, 1, 1)


# --- notes ------------------------------------------------------------------------------------

def melody_notes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, start step, duration in steps) of each note: a note lasts until the next onset
    or note-off, or the end of the melody (as `melody.tokens_to_note_sequence` plays it)."""
    pitches, starts, durations, _ = _notes([tokens])
    return pitches, starts, durations


def _notes(melodies: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`melody_notes` of many melodies at once, plus the melody index of each note."""
    lengths = np.array([len(m) for m in melodies], dtype=np.int64)
    flat = np.concatenate([np.asarray(m).reshape(-1) for m in melodies]) if len(melodies) else np.zeros(0)
    flat = flat.astype(np.int64)
    owner = np.repeat(np.arange(len(melodies)), lengths)
    melody_end = np.cumsum(lengths)
    events = np.flatnonzero(flat != NO_EVENT)
    onset = is_onset(flat[events])
    next_event = np.append(events[1:], len(flat))[onset]
    onsets = events[onset]
    mel = owner[onsets]
    ends = np.minimum(next_event, melody_end[mel])
    starts = onsets - (melody_end - lengths)[mel]
    return token_to_pitch(flat[onsets]), starts, ends - onsets, mel


# --- framewise overlapping area -----------------------------------------------------------

def gaussian_overlap(mu1, sigma1, mu2, sigma2) -> np.ndarray:
    """Overlapping area of N(mu1, sigma1) and N(mu2, sigma2), elementwise: the same arithmetic
    as `statistics.NormalDist.overlap` (its special case for equal sigmas included), vectorised
    because a sample set has tens of thousands of frame pairs."""
    mu1, sigma1, mu2, sigma2 = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (mu1, sigma1, mu2, sigma2)))
    if np.any(sigma1 <= 0) or np.any(sigma2 <= 0):
        raise ValueError("overlap is not defined for sigma <= 0")
    swap = (sigma2 < sigma1) | ((sigma2 == sigma1) & (mu2 < mu1))  # NormalDist's ordering
    xm, xs = np.where(swap, mu2, mu1), np.where(swap, sigma2, sigma1)
    ym, ys = np.where(swap, mu1, mu2), np.where(swap, sigma1, sigma2)
    xv, yv = xs * xs, ys * ys
    dv = yv - xv
    dm = np.abs(ym - xm)
    equal = 1.0 - erf(dm / (2.0 * xs * _SQRT2))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = xm * yv - ym * xv
        b = xs * ys * np.sqrt(dm * dm + dv * np.log(yv / xv))
        x1, x2 = (a + b) / dv, (a - b) / dv
        general = 1.0 - (np.abs(_cdf(x1, ym, ys) - _cdf(x1, xm, xs)) + np.abs(_cdf(x2, ym, ys) - _cdf(x2, xm, xs)))
    return np.where(dv == 0, equal, general)


def erf(x: np.ndarray) -> np.ndarray:
    """math.erf elementwise (float64): the one special function these metrics need, without scipy."""
    return np.asarray(_ERF(x), dtype=np.float64)


def _cdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + erf((x - mu) / (sigma * _SQRT2)))


def _frame_overlaps(
    melodies: Sequence[np.ndarray], frame_bars: int, hop_bars: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """OA of every adjacent frame pair of every melody ({feature: OA}) and each pair's melody."""
    if frame_bars < 1 or hop_bars < 1:
        raise ValueError("frame_bars and hop_bars must be >= 1")
    bars = np.array([-(-len(m) // STEPS_PER_BAR) for m in melodies], dtype=np.int64)
    frames = np.maximum(0, (bars - frame_bars) // hop_bars + 1)
    first_frame = np.concatenate([[0], np.cumsum(frames)])
    pitches, starts, durations, mel = _notes(melodies)
    # a note in bar b lies in frames f with hop*f <= b < hop*f + frame_bars
    bar = starts // STEPS_PER_BAR
    lo = np.maximum(0, -((frame_bars - 1 - bar) // hop_bars))  # ceil((b - frame_bars + 1) / hop)
    hi = np.minimum(frames[mel] - 1, bar // hop_bars)
    count = np.maximum(0, hi - lo + 1)
    note = np.repeat(np.arange(len(bar)), count)
    within = np.arange(len(note)) - np.repeat(np.cumsum(count) - count, count)
    frame = first_frame[mel[note]] + lo[note] + within
    total = int(first_frame[-1])
    # the pair (f, f+1) exists when f is not the last frame of its melody
    owner = np.repeat(np.arange(len(melodies)), frames)
    left = np.flatnonzero(np.append(owner[1:] == owner[:-1], False)) if total else np.zeros(0, np.int64)
    n = np.bincount(frame, minlength=total).astype(np.float64)
    out = {}
    for name, values in zip(FEATURES, (pitches, durations), strict=True):
        v = values[note].astype(np.float64)
        s1 = np.bincount(frame, weights=v, minlength=total)
        s2 = np.bincount(frame, weights=v * v, minlength=total)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.where(n > 0, s1 / n, EMPTY_FRAME[0])
            # exact integer sums: equal variances give bit-equal sigmas (see the module docstring)
            sigma = np.where(n > 0, np.sqrt((n * s2 - s1 * s1) / (n * n)) + STD_EPS, EMPTY_FRAME[1])
        out[name] = gaussian_overlap(mu[left], sigma[left], mu[left + 1], sigma[left + 1])
    return out, owner[left]


def frame_overlaps(tokens: np.ndarray, frame_bars: int = FRAME_BARS, hop_bars: int = HOP_BARS) -> dict[str, np.ndarray]:
    """OA of each adjacent frame pair of one melody, {'pitch': (P,), 'duration': (P,)}
    (64 bars -> 31 frames -> P = 30)."""
    return _frame_overlaps([tokens], frame_bars, hop_bars)[0]


def overlap_stats(
    melodies: Sequence[np.ndarray],
    frame_bars: int = FRAME_BARS,
    hop_bars: int = HOP_BARS,
    per_melody: bool = False,
) -> dict[str, tuple[float, float]]:
    """{feature: (mean, variance)} of all OA values of a set of melodies; with `per_melody`,
    of each melody's mean OA (SCHmUBERT's code; melodies without a frame pair are left out)."""
    oa, owner = _frame_overlaps(melodies, frame_bars, hop_bars)
    if not len(owner):
        raise ValueError(f"no melody is long enough for two frames ({frame_bars + hop_bars} bars)")
    out = {}
    for name, values in oa.items():
        if per_melody:
            counts = np.bincount(owner, minlength=len(melodies))
            values = np.bincount(owner, weights=values, minlength=len(melodies))[counts > 0] / counts[counts > 0]
        out[name] = (float(values.mean()), float(values.var()))
    return out


def consistency_variance(
    stats: dict[str, tuple[float, float]], gt_stats: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Consistency = max(0, 1 - |mu - mu_GT| / mu_GT), Variance = max(0, 1 - |var - var_GT| / var_GT),
    per feature; `gt_stats` are `overlap_stats` of held-out real data."""
    out = {}
    for name in FEATURES:
        (mu, var), (mu_gt, var_gt) = stats[name], gt_stats[name]
        out[name] = {
            "consistency": max(0.0, 1.0 - abs(mu - mu_gt) / mu_gt),
            "variance": max(0.0, 1.0 - abs(var - var_gt) / var_gt),
        }
    return out


# --- latent metrics ---------------------------------------------------------------------

def _vectors(x: np.ndarray) -> np.ndarray:
    """(N, k, d) or (M, d) -> (-1, d) float64 (float32 sums lose digits at N = 32,000)."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(-1, x.shape[-1])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of vectors:
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))."""
    a, b = _vectors(a), _vectors(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"vector sizes differ: {a.shape[1]} and {b.shape[1]}")
    ca = np.atleast_2d(np.cov(a, rowvar=False))
    cb = np.atleast_2d(np.cov(b, rowvar=False))
    # tr (C_a C_b)^(1/2) = sum of the square roots of the eigenvalues of the symmetric PSD matrix
    # C_a^(1/2) C_b C_a^(1/2) (the same spectrum); round-off below zero is clipped
    w, v = np.linalg.eigh(ca)
    half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    root_trace = float(np.sqrt(np.clip(np.linalg.eigvalsh(half @ cb @ half), 0.0, None)).sum())
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2.0 * root_trace)


def mmd_polynomial(a: np.ndarray, b: np.ndarray) -> float:
    """Biased MMD^2 with the kernel (x.y)^2: mean K_aa + mean K_bb - 2 mean K_ab.
    mean_ij (x_i.y_j)^2 = <S_x, S_y>_F with S_x = X^T X / N, so the estimator is
    ||S_a - S_b||_F^2: O(N d^2) time and d x d memory instead of N x N kernels."""
    a, b = _vectors(a), _vectors(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"vector sizes differ: {a.shape[1]} and {b.shape[1]}")
    diff = a.T @ a / len(a) - b.T @ b / len(b)
    return float(np.sum(diff * diff))


# --- copying of training data -----------------------------------------------------------

@dataclass(frozen=True)
class CopyMatch:
    """The longest copied span of a sample: `bars` bars from bar `sample_bar` of the sample equal
    bars `line_bar`.. of training line `line` (one occurrence where there are several);
    bars = 0 (and the positions -1) when the sample copies nothing."""

    bars: int
    sample_bar: int
    line: int
    line_bar: int


def _bars(tokens: np.ndarray) -> np.ndarray:
    """(bars, 16) uint8; a partial last bar is padded with "no event"."""
    tokens = np.asarray(tokens, dtype=np.uint8).reshape(-1)
    padded = np.zeros(-(-len(tokens) // STEPS_PER_BAR) * STEPS_PER_BAR, np.uint8)
    padded[: len(tokens)] = tokens
    return padded.reshape(-1, STEPS_PER_BAR)


def _bar_keys(tokens: np.ndarray) -> np.ndarray:
    """One 16-byte key per bar, comparable and sortable as a whole."""
    return _bars(tokens).view(f"V{STEPS_PER_BAR}").reshape(-1)


def _has_onset(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(is_onset(_bars(tokens)).any(axis=1))


def _suffix_array(seq: np.ndarray) -> np.ndarray:
    """Suffix array of a sequence of small non-negative ints by prefix doubling (numpy sorts,
    about log2 of the longest repeat rounds)."""
    n = len(seq)
    rank = seq.astype(np.int64)
    k = 1
    while True:
        second = np.full(n, -1, np.int64)
        second[: max(0, n - k)] = rank[k:]
        key = rank * (n + 1) + (second + 1)
        order = np.argsort(key)
        sorted_key = key[order]
        rank = np.empty(n, np.int64)
        rank[order] = np.concatenate([[0], np.cumsum(sorted_key[1:] != sorted_key[:-1])])
        if rank[order[-1]] == n - 1:
            return order
        k *= 2


class CopyIndex:
    """Index of training lines for finding verbatim bar-aligned copies in samples.

    The training bars become symbols (one per distinct bar content), the lines one symbol
    sequence with a separator after each line, and that sequence gets a suffix array. For each
    bar i of a sample, a vectorised binary search over the suffix array gives the longest run of
    bars from i found in the training data (and one place where it is); the longest copy
    starting at an onset bar i is that run cut back to its last onset bar.
    """

    _SEPARATOR = 0
    _PAD = -2  # after the end of a sample: matches nothing
    _UNKNOWN = -3  # a sample bar that no training line has

    def __init__(self, lines: Sequence[np.ndarray]):
        keys = [_bar_keys(t) for t in lines]
        lengths = np.array([len(k) for k in keys], dtype=np.int64)
        if not lengths.sum():
            raise ValueError("no training bars to index")
        self._vocab, ids = np.unique(np.concatenate(keys), return_inverse=True)
        # one sequence: symbols 1.. for the bars, a separator 0 after each non-empty line
        separators_before: np.ndarray = np.cumsum(lengths > 0) - (lengths > 0)
        bar_starts = np.cumsum(lengths) - lengths
        self._line_starts = bar_starts + separators_before
        seq = np.zeros(int(lengths.sum() + (lengths > 0).sum()), np.int64)
        seq[np.arange(int(lengths.sum())) + np.repeat(separators_before, lengths)] = ids.reshape(-1) + 1
        self._seq = seq
        sa = _suffix_array(seq)
        self._sa = sa[seq[sa] != self._SEPARATOR]
        self._first = seq[self._sa]  # sorted: the suffixes of each first symbol are contiguous
        self.num_lines = len(lines)
        self.num_bars = int(lengths.sum())

    def _symbols(self, tokens: np.ndarray) -> np.ndarray:
        keys = _bar_keys(tokens)
        at = np.minimum(np.searchsorted(self._vocab, keys), len(self._vocab) - 1)
        return np.where(self._vocab[at] == keys, at + 1, self._UNKNOWN)

    def _windows(self, positions: np.ndarray, width: int) -> np.ndarray:
        """The `width` training symbols from each suffix (separators past the end)."""
        at = np.minimum(positions[:, None] + np.arange(width), len(self._seq) - 1)
        return self._seq[at]

    def _matching(self, query: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """For windows `query` (Q, width): the longest common prefix with any training suffix
        and the position of one such suffix (-1 where nothing matches)."""
        lo = np.searchsorted(self._first, query[:, 0], "left")
        hi = np.searchsorted(self._first, query[:, 0], "right")
        bucket_lo, bucket_hi = lo.copy(), hi.copy()
        # lower bound of each query among the suffixes of its bucket
        for _ in range(int(np.max(hi - lo, initial=0)).bit_length()):
            active = np.flatnonzero(lo < hi)
            if not len(active):
                break
            mid = (lo[active] + hi[active]) // 2
            less, _ = _compare(self._windows(self._sa[mid], width), query[active])
            lo[active] = np.where(less, mid + 1, lo[active])
            hi[active] = np.where(less, hi[active], mid)
        best_len = np.zeros(len(query), np.int64)
        best_pos = np.full(len(query), -1, np.int64)
        for cand in (lo - 1, lo):  # the longest match is a neighbour of the insertion point
            ok = np.flatnonzero((cand >= bucket_lo) & (cand < bucket_hi))
            if not len(ok):
                continue
            pos = self._sa[cand[ok]]
            _, lcp = _compare(self._windows(pos, width), query[ok])
            better = lcp > best_len[ok]
            best_len[ok[better]] = lcp[better]
            best_pos[ok[better]] = pos[better]
        return best_len, best_pos

    def longest_many(self, samples: Sequence[np.ndarray]) -> list[CopyMatch]:
        """`longest` of each sample, all bars searched together."""
        symbols = [self._symbols(s) for s in samples]
        onsets = [_has_onset(s) for s in samples]
        width = max((len(s) for s in symbols), default=0)
        if width == 0:
            return [CopyMatch(0, -1, -1, -1) for _ in samples]
        # one row per sample, padded: a window stops mattering at its first pad
        stride = width + 1
        padded = np.full((len(samples) + 1, stride), self._PAD, np.int64)
        for i, s in enumerate(symbols):
            padded[i, : len(s)] = s
        flat = padded.reshape(-1)
        # only onset bars can start a copy
        rows = np.zeros((len(samples), stride), bool)
        for i, o in enumerate(onsets):
            rows[i, : len(o)] = o
        starts = np.flatnonzero(rows)
        run = np.zeros(len(starts), np.int64)
        where = np.full(len(starts), -1, np.int64)
        step = max(1, _QUERY_CHUNK // width)
        for a in range(0, len(starts), step):
            part = starts[a : a + step]
            run[a : a + step], where[a : a + step] = self._matching(flat[part[:, None] + np.arange(width)], width)
        sample, bar = np.divmod(starts, stride)
        bounds = np.searchsorted(sample, np.arange(len(samples) + 1))
        out = []
        for i, o in enumerate(onsets):
            mine = np.arange(bounds[i], bounds[i + 1])
            last_onset = np.maximum.accumulate(np.where(o, np.arange(len(o)), -1))
            keep = mine[run[mine] > 0]
            if not len(keep):
                out.append(CopyMatch(0, -1, -1, -1))
                continue
            span = last_onset[bar[keep] + run[keep] - 1] - bar[keep] + 1
            k = keep[int(np.argmax(span))]
            line = int(np.searchsorted(self._line_starts, where[k], "right")) - 1
            out.append(CopyMatch(int(span.max()), int(bar[k]), line, int(where[k] - self._line_starts[line])))
        return out

    def longest(self, tokens: np.ndarray) -> CopyMatch:
        """The longest span of the sample's bars copied from one training line (see the module
        docstring for the rule on rests)."""
        return self.longest_many([tokens])[0]


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise lexicographic a < b, and the length of the common prefix."""
    differ = a != b
    first = np.argmax(differ, axis=1)
    rows = np.arange(len(a))
    any_ = differ[rows, first]
    less = any_ & (a[rows, first] < b[rows, first])
    return less, np.where(any_, first, a.shape[1])


def copy_report(samples: Sequence[np.ndarray], index: CopyIndex, min_bars: int = 8) -> dict[str, float]:
    """Summary of copying in a sample set: mean and max longest copied span (bars) and the share
    of samples that copy at least `min_bars` bars."""
    spans = np.array([m.bars for m in index.longest_many(samples)], dtype=np.float64)
    if not len(spans):
        raise ValueError("no samples")
    return {
        "longest_mean": float(spans.mean()),
        "longest_max": int(spans.max()),
        "share_copying": float((spans >= min_bars).mean()),
    }
