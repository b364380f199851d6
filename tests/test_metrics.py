"""symdiff.metrics: framewise overlapping area, Frechet distance, MMD, copy detection.

Expected values are worked out by hand (Gaussian overlaps in closed form, melodies built bar by
bar), checked against `statistics.NormalDist` and a SCHmUBERT-style per-note loop through
note_seq, against brute-force kernels and searches, and on the real corpus (data/corpus.npz).
"""
from __future__ import annotations

import itertools
import statistics
import time
from statistics import NormalDist

import note_seq_reference as ref
import numpy as np
import pytest
from note_seq import quantize_note_sequence
from scipy.stats import norm

from symdiff import melody as M
from symdiff.dataset import Lines
from symdiff.metrics import (
    CopyIndex,
    CopyMatch,
    consistency_variance,
    copy_report,
    frame_overlaps,
    frechet_distance,
    gaussian_overlap,
    melody_notes,
    mmd_polynomial,
    overlap_stats,
)

BAR = M.STEPS_PER_BAR
T = M.pitch_to_token


def bar(*notes: tuple[int, int], off: int | None = None) -> np.ndarray:
    """One bar: (step, pitch) onsets, and a note-off at step `off`."""
    out = np.zeros(BAR, np.uint8)
    for step, pitch in notes:
        out[step] = T(pitch)
    if off is not None:
        out[off] = M.NOTE_OFF
    return out


REST = np.zeros(BAR, np.uint8)
QUARTERS = bar((0, 60), (4, 64), (8, 67), (12, 72))  # four quarter notes, each 4 steps


def noise_bars(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bars with a random onset at every other step: no training line has them."""
    out = np.zeros(n * BAR, np.uint8)
    out[::2] = rng.integers(2, M.NUM_CLASSES, len(out[::2]))
    return out


# --- notes ---------------------------------------------------------------------------------

def test_melody_notes_by_hand():
    tokens = np.concatenate([bar((0, 60), (8, 62), (12, 64)), bar((4, 65), off=6), bar((15, 67))])
    pitches, starts, durations = melody_notes(tokens)
    assert pitches.tolist() == [60, 62, 64, 65, 67]
    assert starts.tolist() == [0, 8, 12, 20, 47]
    # 64 holds over the barline until 65's onset; 65 stops at the note-off; 67 at the end
    assert durations.tolist() == [8, 4, 8, 2, 1]


def test_melody_notes_of_silence_is_empty():
    assert all(len(a) == 0 for a in melody_notes(np.zeros(64, np.uint8)))


# --- Gaussian overlap ------------------------------------------------------------------------

def test_gaussian_overlap_known_values():
    assert gaussian_overlap(0.0, 1.0, 1.0, 1.0) == pytest.approx(2 * norm.cdf(-0.5), abs=1e-15)  # 0.6171
    assert gaussian_overlap(0.0, 1.0, 1.0, 1.0) == pytest.approx(0.6170750774519738, abs=1e-15)
    assert gaussian_overlap(3.0, 2.0, 3.0, 2.0) == 1.0
    assert gaussian_overlap(60.0, 1e-6, 61.0, 1e-6) == 0.0
    # unequal sigmas, same mean: the densities cross at +-x with x^2 = 2 ln(s2/s1) s1^2 s2^2 / (s2^2 - s1^2)
    s1, s2 = 1.0, 2.0
    x = np.sqrt(2 * np.log(s2 / s1) * s1**2 * s2**2 / (s2**2 - s1**2))
    expected = 1 - 2 * (norm.cdf(x / s1) - norm.cdf(x / s2))
    assert gaussian_overlap(5.0, s1, 5.0, s2) == pytest.approx(expected, abs=1e-14)


def test_gaussian_overlap_equals_normaldist_on_random_pairs():
    rng = np.random.default_rng(0)
    n = 20000
    mu1, mu2 = rng.uniform(-20, 110, n), rng.uniform(-20, 110, n)
    s1, s2 = rng.uniform(1e-6, 20, n), rng.uniform(1e-6, 20, n)
    s2[:3000] = s1[:3000]  # equal sigmas: NormalDist's special case
    s1[3000:6000] = 1e-6  # SCHmUBERT's degenerate sigma, against anything ...
    s2[5000:8000] = 1e-6  # ... and against itself (5000..6000)
    mu2[5500:9000] = mu1[5500:9000]  # equal means
    mu2[9000:10000] = mu1[9000:10000] + rng.uniform(0, 1e-5, 1000)  # nearly equal means
    got = gaussian_overlap(mu1, s1, mu2, s2)
    want = np.array([NormalDist(a, b).overlap(NormalDist(c, d)) for a, b, c, d in zip(mu1, s1, mu2, s2, strict=True)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, gaussian_overlap(mu2, s2, mu1, s1))  # symmetric


def test_gaussian_overlap_rejects_zero_sigma():
    with pytest.raises(ValueError):
        gaussian_overlap(0.0, 0.0, 1.0, 1.0)


# --- framewise overlapping area ----------------------------------------------------------------

@pytest.mark.parametrize("bars,pairs", [(64, 30), (63, 29), (8, 2), (6, 1), (5, 0), (3, 0)])
def test_frame_and_pair_counts(bars, pairs):
    oa = frame_overlaps(np.tile(QUARTERS, bars))
    assert len(oa["pitch"]) == len(oa["duration"]) == pairs  # 64 bars: 31 frames, 30 pairs


def test_same_notes_in_every_frame_gives_overlap_one():
    oa = frame_overlaps(np.tile(QUARTERS, 64))
    np.testing.assert_array_equal(oa["pitch"], np.ones(30))
    np.testing.assert_array_equal(oa["duration"], np.ones(30))


def empty_tail_melody() -> np.ndarray:
    """Bars 0-3: a whole note C4 each (16 steps, the last stopped by a note-off); bars 4-15 silent."""
    notes = np.tile(bar((0, 60)), 4)
    return np.concatenate([notes, bar(off=0), np.zeros(11 * BAR, np.uint8)])


def test_empty_frames_are_n_1_1e_6():
    # 16 bars -> 7 frames: bars 0-3, 2-5 hold the same notes (N(60, 1e-6) and N(16, 1e-6)),
    # frames from bar 4 on are empty, N(1, 1e-6): equal sigmas 1e-6, means 59 (15) apart -> 0
    oa = frame_overlaps(empty_tail_melody())
    np.testing.assert_array_equal(oa["pitch"], [1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(oa["duration"], [1, 0, 1, 1, 1, 1])


def test_equal_variances_are_recognised_exactly():
    # frame 0 = bars 0-3 holds pitches 60 60 67, frame 1 = bars 2-5 holds 62 62 69 (the same
    # notes a tone up), all of 8 steps; np.std gives these sigmas an ulp apart, which sends
    # NormalDist.overlap down its general formula (dividing by the variance difference)
    first = np.concatenate([bar((0, 60), (8, 60)), bar((0, 67), off=8)])
    second = np.concatenate([bar((0, 62), (8, 62)), bar((0, 69), off=8)])
    oa = frame_overlaps(np.concatenate([first, REST, REST, second]))
    sigma = np.sqrt(98 / 9) + 1e-6  # population std of (60, 60, 67), + SCHmUBERT's 1e-6
    assert oa["pitch"][0] == pytest.approx(2 * norm.cdf(-1.0 / sigma), abs=1e-14)  # means 2 apart
    assert oa["duration"][0] == 1.0


def schmubert_overlaps(tokens: np.ndarray) -> np.ndarray:
    """SCHmUBERT's per-note loop (notes through note_seq quantization, NormalDist per frame),
    with the frames over the whole token array and the exact population std (pstdev)."""
    quantized = quantize_note_sequence(ref.tokens_to_note_sequence(tokens), 4)
    by_bar = [[] for _ in range(len(tokens) // BAR)]
    for note in quantized.notes:
        by_bar[note.quantized_start_step // BAR].append(note)
    frames = []
    for f in range((len(by_bar) - 4) // 2 + 1):
        notes = list(itertools.chain(*by_bar[2 * f : 2 * f + 4]))
        fit = lambda x: NormalDist(np.mean(x), statistics.pstdev(x) + 1e-6) if x else NormalDist(1, 1e-6)
        durations = [n.quantized_end_step - n.quantized_start_step for n in notes]
        frames.append((fit([n.pitch for n in notes]), fit(durations)))
    return np.array([[frames[i][j].overlap(frames[i + 1][j]) for j in (0, 1)] for i in range(len(frames) - 1)])


@pytest.fixture(scope="module")
def corpus() -> Lines:
    return Lines.load()


@pytest.fixture(scope="module")
def train(corpus) -> Lines:
    return corpus.select("train")


def real_windows(lines: Lines, n: int, seed: int = 0) -> list[np.ndarray]:
    """n random bar-aligned 64-bar windows of the lines long enough for one."""
    rng = np.random.default_rng(seed)
    long = [t for t in lines.tokens if len(t) >= 64 * BAR]
    out = []
    for _ in range(n):
        t = long[rng.integers(len(long))]
        start = rng.integers(0, len(t) // BAR - 64 + 1) * BAR
        out.append(t[start : start + 64 * BAR])
    return out


def test_frame_overlaps_match_the_per_note_reference_on_real_melodies(train):
    for tokens in real_windows(train, 25):
        oa = frame_overlaps(tokens)
        ref = schmubert_overlaps(tokens)
        np.testing.assert_allclose(np.stack([oa["pitch"], oa["duration"]], 1), ref, rtol=0, atol=1e-12)


def test_overlap_stats_pooled_and_per_melody_by_hand():
    steady = np.tile(QUARTERS, 16)  # 6 pairs, all OA 1
    tail = empty_tail_melody()  # 6 pairs: 1 0 1 1 1 1
    pooled = overlap_stats([steady, tail])
    for name in ("pitch", "duration"):
        mean, var = pooled[name]
        assert mean == pytest.approx(11 / 12) and var == pytest.approx(11 / 144)  # Bernoulli(11/12)
    per_melody = overlap_stats([steady, tail], per_melody=True)
    for name in ("pitch", "duration"):
        mean, var = per_melody[name]
        assert mean == pytest.approx(11 / 12) and var == pytest.approx(1 / 144)  # means 1 and 5/6


def test_overlap_stats_needs_a_frame_pair():
    with pytest.raises(ValueError):
        overlap_stats([np.tile(QUARTERS, 5)])


def test_consistency_variance_of_identical_sets_is_one(train):
    stats = overlap_stats(real_windows(train, 50))
    scores = consistency_variance(stats, stats)
    assert scores == {name: {"consistency": 1.0, "variance": 1.0} for name in ("pitch", "duration")}


def test_consistency_variance_by_hand():
    gt = {"pitch": (0.6, 0.01), "duration": (0.8, 0.04)}
    stats = {"pitch": (0.5, 0.02), "duration": (0.9, 0.05)}
    scores = consistency_variance(stats, gt)
    assert scores["pitch"]["consistency"] == pytest.approx(1 - 0.1 / 0.6)
    assert scores["pitch"]["variance"] == 0.0  # 1 - 0.01 / 0.01, clipped at 0 ...
    assert consistency_variance({"pitch": (0.5, 0.03), "duration": (0.9, 0.05)}, gt)["pitch"]["variance"] == 0.0
    assert scores["duration"]["consistency"] == pytest.approx(1 - 0.1 / 0.8)
    assert scores["duration"]["variance"] == pytest.approx(1 - 0.01 / 0.04)


def test_overlap_stats_of_1000_melodies_is_fast(train):
    melodies = real_windows(train, 1000, seed=1)
    start = time.process_time()  # CPU time: a loaded machine does not make it grow
    overlap_stats(melodies)
    assert time.process_time() - start < 5.0  # ~0.1 s measured; a per-note Python loop takes minutes


# --- latent metrics -----------------------------------------------------------------------------

def with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n vectors whose sample mean and covariance (ddof 1) are exactly `mean` and `cov`."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T  # sample cov = I
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((400, 16, 8))
    assert abs(frechet_distance(x, x)) < 1e-9


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    s = 1.7
    q = rng.standard_normal((d, d))
    c2 = q @ q.T + 0.5 * np.eye(d)
    a = with_moments(rng, 3000, m1, s**2 * np.eye(d)).reshape(100, 30, d)  # (N, k, d) is accepted
    b = with_moments(rng, 2000, m2, c2)
    # C1 = s^2 I commutes with C2: tr (C1 C2)^(1/2) = s tr C2^(1/2) = s sum sqrt(eig C2)
    expected = np.sum((m1 - m2) ** 2) + d * s**2 + np.trace(c2) - 2 * s * np.sqrt(np.linalg.eigvalsh(c2)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    a1 = with_moments(rng, 500, np.array([2.0]), np.array([[4.0]]))
    b1 = with_moments(rng, 700, np.array([-1.0]), np.array([[9.0]]))
    assert frechet_distance(a1, b1) == pytest.approx(9.0 + 1.0, rel=1e-9)


def test_mmd_of_identical_sets_is_zero():
    x = np.random.default_rng(2).standard_normal((300, 32, 4)).astype(np.float32)
    assert mmd_polynomial(x, x) == 0.0


def test_mmd_matches_the_kernel_matrices():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((60, 7))
    b = 1.3 * rng.standard_normal((5, 9, 7)) + 0.2
    bb = b.reshape(-1, 7)
    k_aa, k_bb, k_ab = (a @ a.T) ** 2, (bb @ bb.T) ** 2, (a @ bb.T) ** 2
    expected = k_aa.mean() + k_bb.mean() - 2 * k_ab.mean()
    assert mmd_polynomial(a, b) == pytest.approx(expected, rel=1e-10)
    assert mmd_polynomial(b, a) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("metric", [frechet_distance, mmd_polynomial])
def test_latent_metrics_reject_different_sizes(metric):
    with pytest.raises(ValueError):
        metric(np.zeros((10, 4)), np.zeros((10, 5)))


# --- copying ---------------------------------------------------------------------------------

A, B = bar((0, 60), (8, 62)), bar((0, 64), off=12)


def test_copy_span_starts_and_ends_on_onset_bars():
    index = CopyIndex([np.concatenate([REST, B]), np.concatenate([A, REST, REST, B, REST, REST, REST])])
    rng = np.random.default_rng(4)
    sample = np.concatenate([noise_bars(rng, 1), REST, A, REST, REST, B, REST, REST, noise_bars(rng, 1)])
    # the run REST A REST REST B REST REST matches line 1 from bar 0 except its leading REST;
    # the copy is cut to A .. B: the rests after B do not count
    assert index.longest(sample) == CopyMatch(bars=4, sample_bar=2, line=1, line_bar=0)
    # silence alone copies nothing, though the training lines have runs of rests
    assert index.longest(np.zeros(6 * BAR, np.uint8)) == CopyMatch(0, -1, -1, -1)
    # a held note looks like a rest bar to the tokens and counts inside a span only
    assert index.longest(np.concatenate([REST, REST, A, REST])) == CopyMatch(1, 2, 1, 0)
    assert index.longest(noise_bars(rng, 3)) == CopyMatch(0, -1, -1, -1)


def brute_force_copy(lines: list[np.ndarray], sample: np.ndarray) -> int:
    """Longest onset-bounded span by comparing every start pair."""
    q = [sample[i * BAR : (i + 1) * BAR].tobytes() for i in range(len(sample) // BAR)]
    onset = [(sample[i * BAR : (i + 1) * BAR] >= 2).any() for i in range(len(q))]
    best = 0
    for line in lines:
        t = [line[i * BAR : (i + 1) * BAR].tobytes() for i in range(len(line) // BAR)]
        for i, j in itertools.product(range(len(q)), range(len(t))):
            k = 0
            while onset[i] and i + k < len(q) and j + k < len(t) and q[i + k] == t[j + k]:
                k += 1
                if onset[i + k - 1]:
                    best = max(best, k)
    return best


def test_copy_index_agrees_with_brute_force_on_a_small_alphabet():
    rng = np.random.default_rng(5)
    alphabet = np.stack([REST, A, B, bar((4, 72))])  # few symbols: many long repeats
    for _ in range(15):
        lines = [alphabet[rng.integers(0, 4, rng.integers(0, 25))].reshape(-1) for _ in range(rng.integers(1, 12))]
        if not sum(len(t) for t in lines):
            continue
        index = CopyIndex(lines)
        samples = [alphabet[rng.integers(0, 4, rng.integers(0, 14))].reshape(-1) for _ in range(8)]
        for sample, match in zip(samples, index.longest_many(samples), strict=True):
            assert match.bars == brute_force_copy(lines, sample)
            if match.bars:
                got = sample[match.sample_bar * BAR : (match.sample_bar + match.bars) * BAR]
                there = lines[match.line][match.line_bar * BAR : (match.line_bar + match.bars) * BAR]
                np.testing.assert_array_equal(got, there)


@pytest.fixture(scope="module")
def index(train) -> CopyIndex:
    return CopyIndex(train.tokens)


def occurrences(lines: list[np.ndarray], segment: np.ndarray) -> list[tuple[int, int]]:
    """Every bar-aligned (line, bar) where `segment` occurs."""
    seg = segment.tobytes()
    out = []
    for i, t in enumerate(lines):
        raw, at = t.tobytes(), -1
        while (at := raw.find(seg, at + 1)) >= 0:
            if at % BAR == 0:
                out.append((i, at // BAR))
    return out


def test_ten_copied_bars_of_a_real_line_are_found(train, index):
    rng = np.random.default_rng(6)
    onset = lambda t, b: (t[b * BAR : (b + 1) * BAR] >= 2).any()
    while True:  # a 10-bar stretch that starts and ends on onset bars and occurs once
        line = int(rng.integers(len(train)))
        t = train.tokens[line]
        if len(t) < 12 * BAR:
            continue
        start = int(rng.integers(0, len(t) // BAR - 10 + 1))
        segment = t[start * BAR : (start + 10) * BAR]
        if onset(t, start) and onset(t, start + 9) and occurrences(train.tokens, segment) == [(line, start)]:
            break
    sample = np.concatenate([noise_bars(rng, 23), segment, noise_bars(rng, 31)])
    assert index.longest(sample) == CopyMatch(bars=10, sample_bar=23, line=line, line_bar=start)


def test_random_melodies_copy_fewer_than_8_bars(train, index):
    rng = np.random.default_rng(7)
    bars = np.concatenate(train.tokens).reshape(-1, BAR)
    shuffled = [bars[rng.integers(len(bars), size=64)].reshape(-1) for _ in range(50)]  # real bars, random order
    matches = index.longest_many(shuffled + [noise_bars(rng, 64)])
    assert all(m.bars < 8 for m in matches)
    assert matches[-1] == CopyMatch(0, -1, -1, -1)
    assert max(m.bars for m in matches[:-1]) >= 1  # single real bars are found


def test_training_windows_copy_themselves(train, index):
    windows = real_windows(train, 20, seed=8)
    for w, m in zip(windows, index.longest_many(windows), strict=True):
        onsets = np.flatnonzero((w.reshape(-1, BAR) >= 2).any(axis=1))
        assert m.bars == onsets[-1] - onsets[0] + 1  # the whole window, cut to its onset bars
        there = train.tokens[m.line][m.line_bar * BAR : (m.line_bar + m.bars) * BAR]
        np.testing.assert_array_equal(w[m.sample_bar * BAR : (m.sample_bar + m.bars) * BAR], there)


def test_copy_report_by_hand():
    index = CopyIndex([np.tile(np.concatenate([A, B]), 6)])  # A B A B ... 12 bars
    rng = np.random.default_rng(9)
    samples = [
        np.concatenate([noise_bars(rng, 2), A, B, A, B, noise_bars(rng, 2)]),  # 4 bars
        noise_bars(rng, 8),  # 0
        np.concatenate([B, A, B, A, B, A, B, A, B, A, noise_bars(rng, 1)]),  # 10
    ]
    assert [m.bars for m in index.longest_many(samples)] == [4, 0, 10]
    assert copy_report(samples, index, min_bars=8) == {"longest_mean": 14 / 3, "longest_max": 10,
                                                       "share_copying": 1 / 3}
