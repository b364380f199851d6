"""The metric wiring of `symdiff evaluate` pinned on known values, not ranges.

Every figure here goes through the functions the evaluation itself calls (Table 1's
`row_metrics`, `figure_point`, `figure_steps`, `to_space` and the table layout; fidelity's fit
figures of a row, the repetition row and the per-style average; the coherence figures), on inputs
whose answers are worked out by hand in the comments: hand-built melodies (tokens: 0 = no event,
1 = note-off, 2.. = MIDI pitch 21..), real 64-bar windows of the corpus, and the shipped
checkpoints' codecs. Gaussian overlaps are checked against `statistics.NormalDist`, latent
distances against closed forms; every assertion is exact or rel 1e-6 or tighter.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from statistics import NormalDist, fmean, pvariance

import numpy as np
import pytest
import torch
from conftest import PHI_MINUS_1, bar

from symdiff import metrics
from symdiff.codec import FLAG_SILENT
from symdiff.evaluation import fidelity, table1
from symdiff.generate import MelodyDiffusion
from symdiff.melody import NOTE_OFF, STEPS_PER_BAR

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus.npz"
CHECKPOINTS = REPO / "checkpoints"


def line(*bars: np.ndarray) -> np.ndarray:
    return np.concatenate(bars)


HOLD = np.zeros(STEPS_PER_BAR, np.uint8)  # no event: a held note goes on sounding, a rest stays one
REST = bar()
REST[0] = NOTE_OFF


def overlap(mu1: float, var1: float, mu2: float, var2: float) -> float:
    """The overlap area of two fitted Gaussians as the metrics define them (std + 1e-6), by the stdlib."""
    return NormalDist(mu1, math.sqrt(var1) + 1e-6).overlap(NormalDist(mu2, math.sqrt(var2) + 1e-6))


def cv(mu: float, var: float, mu_gt: float, var_gt: float) -> dict[str, float]:
    """Consistency and Variance as the paper defines them (docs/paper_notes.md sec. 7)."""
    return {"consistency": max(0.0, 1 - abs(mu - mu_gt) / mu_gt), "variance": max(0.0, 1 - abs(var - var_gt) / var_gt)}


def silence(codec) -> tuple[float, float]:
    """A codec's silence latent value and threshold."""
    return codec.config.silence_value, codec.config.silence_threshold


@pytest.fixture(scope="module")
def pipe() -> MelodyDiffusion:
    return MelodyDiffusion.from_pretrained(CHECKPOINTS / "diffusion-cond")


# --- Table 1: row_metrics ---------------------------------------------------------------------

def test_a_row_of_the_reference_itself_scores_as_the_reference():
    """The "train data" row's construction with the reference's own windows: C = V = 1 exactly,
    FD 0, MMD 0, and every window copies itself from its first to its last bar with a note."""
    ref = table1.held_out_melodies(8, seed=0, split="train", data=CORPUS)  # what evaluate's real_set draws
    assert len(ref) == 8 and all(len(w) == 64 * STEPS_PER_BAR for w in ref)
    latents = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 32, 6)))
    gt = metrics.overlap_stats(ref)
    index = metrics.CopyIndex(ref)
    got = table1.row_metrics(table1.Row("reference", ref, latents, seconds=1.2345), gt, latents, index)
    assert set(got) == {"pitch", "duration", "fd", "mmd", "copy", "seconds"}
    assert got["pitch"] == {"consistency": 1.0, "variance": 1.0}
    assert got["duration"] == {"consistency": 1.0, "variance": 1.0}
    assert got["fd"] == pytest.approx(0.0, abs=1e-9)
    assert got["mmd"] == 0.0
    spans = []
    for w in ref:
        onset_bars = np.flatnonzero((w.reshape(64, STEPS_PER_BAR) >= 2).any(axis=1))
        spans.append(int(onset_bars[-1] - onset_bars[0] + 1) if len(onset_bars) else 0)
    assert got["copy"] == {"longest_mean": pytest.approx(np.mean(spans), rel=1e-12), "longest_max": max(spans),
                           "share_copying": pytest.approx(np.mean(np.array(spans) >= 8), rel=1e-12)}
    assert got["seconds"] == 1.23


# 6-bar melodies: frames of 4 bars at a hop of 2 (bars 0-3 and 2-5), so exactly one OA per feature.
QUARTERS = bar((0, 60), (4, 64), (8, 60), (12, 64))  # C4 E4 C4 E4, 4 steps each
UP = bar((0, 64), (4, 68), (8, 64), (12, 68))  # E4 G#4 E4 G#4
D1 = bar((0, 60), (4, 64), (8, 67))  # C4 E4 (4 steps) G4 (8 steps, to the next bar's onset)
D2 = bar((0, 60), (8, 64))  # C4 E4, 8 steps each (the last note of a melody lasts to its end)
FLAT = line(*[QUARTERS] * 6)  # both frames: pitches 60, 64 (mean 62, std 2), durations all 4: OA 1 and 1
LIFT = line(*[QUARTERS] * 4, UP, UP)  # frame 2: 60 x4, 64 x8, 68 x4: mean 64, var 8; durations all 4
MIXED = line(*[D1] * 4, D2, D2)
# MIXED frame 1 (D1 x4): pitches {60, 64, 67} x4: mean 191/3, var 74/9; durations {4, 4, 8} x4: mean 16/3, var 32/9
# MIXED frame 2 (D1 D1 D2 D2): pitches 60 x4, 64 x4, 67 x2: mean 63, var 7.2; durations 4 x4, 8 x6: mean 6.4, var 3.84
OA_FLAT = (1.0, 1.0)  # (pitch, duration)
OA_LIFT = (overlap(62, 4, 64, 8), 1.0)
OA_MIXED = (overlap(191 / 3, 74 / 9, 63, 7.2), overlap(16 / 3, 32 / 9, 6.4, 3.84))


def test_overlaps_of_the_hand_melodies():
    for tokens, (pitch, duration) in ((FLAT, OA_FLAT), (LIFT, OA_LIFT), (MIXED, OA_MIXED)):
        oa = metrics.frame_overlaps(tokens)
        assert len(oa["pitch"]) == 1 and len(oa["duration"]) == 1
        assert oa["pitch"][0] == pytest.approx(pitch, rel=1e-9)
        assert oa["duration"][0] == pytest.approx(duration, rel=1e-9)
    assert 0.5 < OA_LIFT[0] < 0.9 and 0.5 < OA_MIXED[0] < 0.99 and 0.5 < OA_MIXED[1] < 0.99  # none trivial


MIXED8 = line(*[D1] * 4, D2, D2, D1, D1)  # MIXED, then a third frame (D2 D2 D1 D1) with frame 2's very notes: OA 1, 1


def test_row_consistency_variance_from_hand_worked_overlaps():
    """gt stats = mean and population variance of all OA values of the reference set (every frame
    pair of every melody, not per melody); the row's C and V are max(0, 1 - |x - x_GT| / x_GT) per feature."""
    gt_set, row_set = [LIFT, FLAT, MIXED], [MIXED8, FLAT]
    assert [len(metrics.frame_overlaps(t)["pitch"]) for t in row_set] == [2, 1]
    gt = metrics.overlap_stats(gt_set)
    hand_gt = {}
    for f, feat in enumerate(("pitch", "duration")):
        values = [OA_LIFT[f], OA_FLAT[f], OA_MIXED[f]]
        hand_gt[feat] = (fmean(values), pvariance(values))
        assert gt[feat] == pytest.approx(hand_gt[feat], rel=1e-9)
    latents = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 4)))
    got = table1.row_metrics(table1.Row("hand", row_set, latents, seconds=0.126), gt, latents,
                             metrics.CopyIndex(gt_set))
    # the row's OA values: pitch {o_p, 1, 1}, duration {o_d, 1, 1}
    values = [OA_MIXED[0], 1.0, 1.0]
    assert got["pitch"] == pytest.approx(cv(fmean(values), pvariance(values), *hand_gt["pitch"]), rel=1e-9)
    # duration: the row's values {o_d, 1, 1} are the reference's {1, 1, o_d}: the same mean and variance
    assert got["duration"] == pytest.approx({"consistency": 1.0, "variance": 1.0}, rel=1e-9)
    # MIXED8 copies MIXED's 6 bars, FLAT copies itself: 6 bars each, none 8 or more
    assert got["copy"] == {"longest_mean": 6.0, "longest_max": 6, "share_copying": 0.0}
    assert got["seconds"] == 0.13


def test_consistency_variance_of_a_row_by_hand():
    """The same wiring with the reference's stats given: a row of MIXED and FLAT (duration OA
    {o, 1}, variance (1 - o)^2 / 4) against GT {1, 1, o} (variance 2 (1 - o)^2 / 9)."""
    gt = {"pitch": (fmean([OA_LIFT[0], 1.0, OA_MIXED[0]]), pvariance([OA_LIFT[0], 1.0, OA_MIXED[0]])),
          "duration": (fmean([1.0, 1.0, OA_MIXED[1]]), pvariance([1.0, 1.0, OA_MIXED[1]]))}
    latents = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 3, 4)))
    got = table1.row_metrics(table1.Row("hand", [MIXED, FLAT], latents), gt, latents, metrics.CopyIndex([LIFT]))
    o = OA_MIXED[1]
    assert got["duration"]["variance"] == pytest.approx(1 - 1 / 8, rel=1e-9)  # whatever o is
    assert got["duration"]["consistency"] == pytest.approx(1 - ((1 - o) / 6) / ((2 + o) / 3), rel=1e-9)
    # copies from the one training line LIFT: MIXED none of its bars, FLAT its first 4 bars of C4 E4 quarters
    assert got["copy"] == {"longest_mean": 2.0, "longest_max": 4, "share_copying": 0.0}
    assert got["fd"] == pytest.approx(0.0, abs=1e-9) and got["mmd"] == 0.0


def test_row_latent_distances_in_closed_form():
    """FD and MMD of a row are taken over all N * k latents as vectors: a shift c gives FD |c|^2,
    a scaling by s about the mean gives FD (1 - s)^2 tr C, MMD is the biased (x . y)^2 estimate."""
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 10, 5)) * np.array([1.0, 2.0, 0.5, 1.5, 3.0]) + 0.3
    flat = ref.reshape(-1, 5)
    mean = flat.mean(axis=0)
    trace_cov = ((flat - mean) ** 2).sum() / (len(flat) - 1)
    tokens = [FLAT, MIXED]
    gt, index = metrics.overlap_stats(tokens), metrics.CopyIndex(tokens)
    shift = np.array([0.5, -1.0, 2.0, 0.0, 0.25])
    scaled = mean + 3.0 * (ref - mean)
    for latents, fd in ((ref + shift, 0.25 + 1 + 4 + 0 + 0.0625), (scaled, 4.0 * trace_cov)):
        got = table1.row_metrics(table1.Row("r", tokens, torch.from_numpy(latents)), gt, torch.from_numpy(ref), index)
        assert got["fd"] == pytest.approx(fd, rel=1e-9)
        a = latents.reshape(-1, 5)
        mmd = ((a @ a.T) ** 2).mean() + ((flat @ flat.T) ** 2).mean() - 2 * ((a @ flat.T) ** 2).mean()
        assert got["mmd"] == pytest.approx(mmd, rel=1e-9)
        assert got["pitch"] == {"consistency": 1.0, "variance": 1.0}  # the tokens are the reference's


# --- Table 1: Figure 3 and the MDN's latents ------------------------------------------------------

def test_figure_steps_are_rounded_even_points_of_the_chain():
    assert table1.figure_steps(200, 5) == {0, 50, 100, 149, 199}  # linspace 0, 49.75, 99.5, 149.25, 199
    assert table1.figure_steps(8, 3) == {0, 4, 7}
    assert table1.figure_steps(1000, 2) == {0, 999}


def test_figure_point_is_mean_and_std_over_disjoint_groups(pipe):
    """Five x0 estimates, each the reference set shifted by c_g in every dim, and all below the
    silence threshold (or with the silence flag up): each decodes to rests without the VAE (every
    frame empty, so OA 1 and variance 0), each is its own group, FD_g = 256 c_g^2 and
    MMD_g = ||m c^T + c m^T + c c^T||_F^2 (c_g in the 256 latent dims, 0 in the flag's)."""
    d, flag = pipe.codec.scaler.dim, pipe.codec.config.flag
    assert d == 256 and silence(pipe.codec) in ((-4.0, -2.0), (FLAG_SILENT, 0.0))
    base = -4.0 + 0.5 * np.random.default_rng(3).standard_normal((512, d))
    base = np.concatenate([base, np.full((512, 1), FLAG_SILENT)], 1) if flag else base
    shifts = [0.0, 0.1, 0.2, 0.3, 0.4]
    x0 = torch.from_numpy(np.stack([base + np.r_[np.full(d, c), np.zeros(int(flag))] for c in shifts]))
    assert bool(pipe.codec.is_silent(x0).all())
    gt = {"pitch": (0.9, 0.02), "duration": (0.95, 0.01)}
    got = table1.figure_point(pipe, 7, 10, x0, gt, torch.from_numpy(base[None]))
    assert got["step"] == 8
    # every group: mu 1, var 0 -> C = 1 - 0.1 / 0.9 = 8/9 and 1 - 0.05 / 0.95 = 18/19, V = 0
    assert got["pitch consistency"] == pytest.approx((8 / 9, 0.0), rel=1e-12, abs=1e-12)
    assert got["duration consistency"] == pytest.approx((18 / 19, 0.0), rel=1e-12, abs=1e-12)
    assert got["pitch variance"] == (0.0, 0.0) and got["duration variance"] == (0.0, 0.0)
    m = base.mean(axis=0)
    fds, mmds = [], []
    for c in shifts:
        cc = np.r_[np.full(d, c), np.zeros(int(flag))]
        fds.append(d * c * c)
        delta = np.outer(m, cc) + np.outer(cc, m) + np.outer(cc, cc)
        mmds.append(float((delta * delta).sum()))
    assert got["latent FD"] == pytest.approx((np.mean(fds), np.std(fds)), rel=1e-6)
    assert got["latent MMD"] == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-6)
    assert set(got) == {"step", "pitch consistency", "pitch variance", "duration consistency", "duration variance",
                        "latent FD", "latent MMD"}


def test_to_space_maps_mdn_latents_into_the_diffusion_space_by_hand(pipe):
    """The MDN's latents ([-1, 1] scaling, silence -1.0 below -0.52) into the default model's
    space ([-1, 1] scaling by another range, then standardized; its silence rule): live chunks by
    the two affine maps, silent ones (by the source's threshold) at the target's silence latent."""
    source, target = type(pipe.codec).from_pretrained(CHECKPOINTS / "mdn-cpu"), pipe.codec
    s, t = source.scaler, target.scaler
    assert torch.equal(s.dims, t.dims) and s.dim == s.z_size == 256  # no collapsed dim gets noise
    assert not s.standardized and t.standardized
    assert silence(source) == (-1.0, pytest.approx(-0.5205952, rel=1e-6))
    assert silence(target) in ((-4.0, -2.0), (FLAG_SILENT, 0.0))
    x = torch.from_numpy(np.random.default_rng(4).uniform(-0.4, 0.6, (2, 4, 256)).astype(np.float32))
    x[0, 1] = -1.0  # the silence latent
    x[1, 3] = -0.8  # below the threshold: decoded as a rest, so silent too
    silent = np.zeros((2, 4), bool)
    silent[0, 1] = silent[1, 3] = True
    assert table1.to_space(x, source, source) is x
    out = table1.to_space(x, source, target)
    z = (x.double().numpy() + 1) * 0.5 * (s.max - s.min) + s.min
    y = (2 * (z - t.min) / (t.max - t.min) - 1 - t.center.double().numpy()) / t.std
    if target.config.flag:  # the latent dims at the centre and the flag up where silent, down elsewhere
        y = np.concatenate([np.where(silent[..., None], 0.0, y), np.where(silent, 1.0, -1.0)[..., None]], -1)
    else:
        y[silent] = -4.0
    np.testing.assert_allclose(out.numpy(), y, rtol=1e-5, atol=1e-5)
    assert target.is_silent(out).numpy().tolist() == silent.tolist()
    back = table1.to_space(out, target, source)  # and back: the live chunks return, silence is -1.0
    expect = x.clone()
    expect[torch.from_numpy(silent)] = -1.0
    np.testing.assert_allclose(back.numpy(), expect.numpy(), rtol=1e-5, atol=1e-5)


# --- Table 1: the table ----------------------------------------------------------------------------

def test_table_row_layout():
    row = {"pitch": {"consistency": 0.987, "variance": 0.5}, "duration": {"consistency": 0.913, "variance": 0.801},
           "fd": 1.23456, "mmd": 0.000123, "copy": {"longest_mean": 2.34, "longest_max": 9, "share_copying": 0.125},
           "seconds": 3.0}
    ev = table1.Evaluation("infill", 2, {"sampler": "ddpm", "steps": 8, "seconds": 3.0},
                           rows={"diffusion": row, "test data": row})
    md = ev.markdown().splitlines()
    assert md[2] == "| infill: diffusion | 0.99 (0.97) | 0.50 (0.87) | 0.91 (0.97) | 0.80 (0.80) | 1.235 | 0.0001 | " \
                    "2.3 (max 9) | 12.5% |"
    assert md[3] == "| infill: test data | 0.99 | 0.50 | 0.91 | 0.80 | 1.235 | 0.0001 | 2.3 (max 9) | 12.5% |"


def _paper_notes_table() -> dict[tuple[str, str], tuple[float, ...]]:
    """docs/paper_notes.md sec. 8: the paper's Table 1, {(task, setting): (pitch C, Var, duration C, Var)}."""
    text = (REPO / "docs" / "paper_notes.md").read_text()
    rows = re.findall(r"^\| (unconditional|infilling): ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                      text, re.M)
    assert len(rows) == 9
    return {("infill" if task == "infilling" else task, name): tuple(map(float, v)) for task, name, *v in rows}


def test_paper_figures_in_brackets_are_the_papers():
    paper = _paper_notes_table()
    for task, rows in table1.PAPER.items():
        for name, values in rows.items():
            assert values == paper[(task, name)], (task, name)


def test_every_paper_row_is_in_brackets():
    """Each row of the paper's Table 1 (docs/paper_notes.md sec. 8) has its figures in PAPER."""
    paper = _paper_notes_table()
    assert {(task, name) for task, rows in table1.PAPER.items() for name in rows} == set(paper)


# --- fidelity: the four fit figures ------------------------------------------------------------------

C_E = bar((0, 60), (4, 64), (8, 60), (12, 64))  # on the beats
OFFBEAT = bar((2, 60), (6, 64), (10, 60), (14, 64))  # the same notes on the off-beats


def test_onset_distance_of_disjoint_and_identical_rhythms():
    f = fidelity.fit_figures(line(C_E, C_E, OFFBEAT, OFFBEAT, C_E, C_E), (2, 4))
    assert f["onset_distance"] == 1.0  # positions {0, 4, 8, 12} against {2, 6, 10, 14}: nothing shared
    assert f["pitch_class_cosine"] == pytest.approx(1.0, rel=1e-12) and f["density_log_ratio"] == 0.0
    assert f["pitch_overlap"] == pytest.approx(1.0, rel=1e-12)  # the same pitches, bit-equal sigmas
    f = fidelity.fit_figures(line(C_E, C_E, C_E, C_E, C_E, C_E), (2, 4))
    assert f["onset_distance"] == 0.0
    f = fidelity.fit_figures(line(C_E, C_E, C_E, C_E, C_E, C_E), (3, 4))  # positions within the bar, not the chunk
    assert f["onset_distance"] == 0.0


@pytest.mark.parametrize("semitones, cosine", [(12, 1.0), (-24, 1.0), (4, 0.5), (7, 0.0), (1, 0.0)])
def test_pitch_class_cosine_of_a_transposed_region(semitones, cosine):
    # context C, E (8 + 8); region transposed: +-12: C, E again; +4: E, G#: one class of two shared; +7, +1: none
    moved = bar(*[(s, p + semitones) for s, p in ((0, 60), (4, 64), (8, 60), (12, 64))])
    f = fidelity.fit_figures(line(C_E, C_E, moved, moved, C_E, C_E), (2, 4))
    assert f["pitch_class_cosine"] == pytest.approx(cosine, abs=1e-12)
    assert f["onset_distance"] == 0.0 and f["density_log_ratio"] == 0.0
    # pitches: mean 62, std 2 against 62 + semitones, std 2: equal sigmas, 2 Phi(-|d| / 4) (sigma 2 + 1e-6)
    assert f["pitch_overlap"] == pytest.approx(overlap(62, 4, 62 + semitones, 4), rel=1e-9)
    assert f["pitch_overlap"] == pytest.approx(math.erfc(abs(semitones) / 4 / math.sqrt(2)), rel=1e-4)


PHRASE = bar((0, 60), (4, 64), (8, 67), (12, 64))  # C E G E in quarters
HALVES = bar((0, 60), (8, 67))  # C G in halves


def test_repetition_row_of_a_piece_by_hand():
    """A 16-bar tune: 8 chunks, region bars 4-11 (the middle half). Repetition copies the 4 bars
    before it twice; the context is bars 0-3 (the phrase) and 12-15 (halves)."""
    middle = bar((0, 74), (2, 78))  # D5 F#5, not in the phrases' C, E, G
    tune = line(*[PHRASE] * 4, *[middle] * 8, *[HALVES] * 4)
    piece = fidelity.make_piece(tune, {"source": "oneills1850", "piece": "hand", "voice": "v"})
    assert piece.region == (4, 12) and piece.start_bar == 0 and np.array_equal(piece.tokens, tune)
    rep = fidelity.repetition_infill(piece.tokens, piece.region)
    assert np.array_equal(rep, line(*[PHRASE] * 4, *[PHRASE] * 8, *[HALVES] * 4))
    # (a middle region never has more bars before it than it has; where it does, P is the region's length:
    # bars 13-14 get bars 11-12)
    assert np.array_equal(fidelity.repetition_infill(tune, (13, 15)), line(*[PHRASE] * 4, *[middle] * 8, HALVES,
                                                                          middle, HALVES, HALVES))
    f = fidelity.fit_figures(rep, piece.region)
    # region: 32 notes, C 8, E 16, G 8 (mean 63.75, var 198/32); context: 24 notes, C 8, E 8, G 8 (mean 191/3, var 74/9)
    assert f["pitch_overlap"] == pytest.approx(overlap(63.75, 198 / 32, 191 / 3, 74 / 9), rel=1e-9)
    assert f["pitch_class_cosine"] == pytest.approx(2 * math.sqrt(2) / 3, rel=1e-12)  # 256 / sqrt(384 * 192)
    # onsets: region 1/4 at each beat; context 8, 4, 8, 4 of 24 at beats 1-4: TV = (1/12 + 1/12 + 1/12 + 1/12) / 2
    assert f["onset_distance"] == pytest.approx(1 / 6, rel=1e-12)
    assert f["density_log_ratio"] == pytest.approx(math.log(4 / 3), rel=1e-12)  # 4 notes a bar against 3
    real = fidelity.fit_figures(piece.tokens, piece.region)  # the "real middle" row of the same piece
    assert real["pitch_class_cosine"] == 0.0  # D, F# against C, E, G
    # onsets: region 1/2 at steps 0 and 2; context 1/3, 1/6, 1/3, 1/6 at the beats: TV (1/6 + 1/2 + 1/6 + 1/3 + 1/6) / 2
    assert real["onset_distance"] == pytest.approx(2 / 3, rel=1e-12)
    assert real["density_log_ratio"] == pytest.approx(math.log(3 / 2), rel=1e-12)  # 2 a bar against 3


def test_a_styles_average_is_the_mean_of_its_pieces():
    """Three pieces of one style with known figures (a region like its context; the hand-worked
    tune of test_fidelity; a silent region), summarised as `fidelity` does: the plain mean over
    the pieces and the standard error sd / sqrt(n); then the table's row."""
    halves = bar((0, 64), (8, 68))
    lines = [line(*[C_E] * 8), line(C_E, C_E, *[halves] * 4, C_E, C_E), line(C_E, C_E, *[REST] * 4, C_E, C_E)]
    known = [(1.0, 1.0, 0.0, 0.0, 1.0), (2 * PHI_MINUS_1, 0.5, 0.5, math.log(2), 0.0),
             (0.0, 0.0, 1.0, math.log(32), 0.0)]
    pieces = [fidelity.make_piece(t, {"source": "oneills1850", "piece": f"p{i}", "voice": "v"}) for i, t in
              enumerate(lines)]
    assert all(p.region == (2, 6) for p in pieces)  # 4 chunks: the middle 2
    per_piece = [fidelity.fit_figures(p.tokens, p.region) for p in pieces]
    for figs, values in zip(per_piece, known, strict=True):
        assert [figs[k] for k in fidelity.FIT] == pytest.approx(values, rel=1e-6, abs=1e-12)
    summary = fidelity.summarize({"real middle": per_piece})["real middle"]
    assert summary["n"] == 3
    for j, key in enumerate(fidelity.FIT):
        values = [v[j] for v in known]
        mean = sum(values) / 3
        sem = math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
        assert summary["mean"][key] == pytest.approx(mean, rel=1e-6)
        assert summary["sem"][key] == pytest.approx(sem, rel=1e-6)
    one = fidelity.summarize({"r": per_piece[:1]})["r"]
    assert one["n"] == 1 and one["sem"] == dict.fromkeys(fidelity.FIT, 0.0)
    report = fidelity.Report("fidelity", {"checkpoint": "c", "sampler": "ddim", "steps": 4, "seed": 0, "seconds": 1.0},
                             {"folk": {"items": [], "rows": {"real middle": summary}}})
    # means: (1 + 2 Phi(-1)) / 3 = 0.439, 1.5 / 3, 1.5 / 3, (log 2 + log 32) / 3 = log 4 = 1.386, 1 / 3
    assert "| folk: real middle | 3 | 0.44 | 0.50 | 0.50 | 1.39 | 33.3% |" in report.markdown().splitlines()


# --- coherence ---------------------------------------------------------------------------------------

P = line(bar((0, 60), (4, 62), (8, 64), (12, 65)), bar((0, 67), (8, 65)))  # C D E F | G F: mean 383/6
T = line(bar((0, 72), (4, 74), (8, 76), (12, 77)), bar((0, 79), (8, 77)))  # P an octave up: mean 455/6
H = line(bar((0, 48)), HOLD)  # C3 held through the second bar: that bar has no onset
R = line(REST, REST)  # a note-off, then nothing: two silent bars


def test_coherence_figures_of_a_hand_built_melody():
    tune = line(P, P, H, R, R, H, *[P] * 10, *[T] * 16)  # 32 chunks, 64 bars
    f = fidelity.coherence_figures(tune)
    assert f["pitch_range"] == 31.0  # C3 (48) .. G5 (79)
    assert f["silent_bars"] == 6 / 64  # the held bar of each H, both bars of each R
    # chunk 1 (P), 5 (H: a held note is still a phrase), 6-15 (P), 17-31 (T); chunk 4 repeats only rests
    assert f["repeated_chunks"] == 27 / 32
    # halves: 12 P and 2 H (C 14, D 12, E 12, F 24, G 12) against 16 T (C 16, D 16, E 16, F 32, G 16)
    assert f["key_stability"] == pytest.approx(98 / math.sqrt(1204 * 8), rel=1e-12)
    assert f["chunk_pitch_spread"] == pytest.approx(np.std([383 / 6] * 12 + [48] * 2 + [455 / 6] * 16), rel=1e-12)
    summary = fidelity.summarize({"hand": [f, fidelity.coherence_figures(line(*[T] * 32))]})["hand"]
    # the second melody: range 7, no silent bar, 31 of 32 chunks repeated
    assert summary["mean"]["pitch_range"] == 19.0 and summary["mean"]["silent_bars"] == 3 / 64
    assert summary["mean"]["repeated_chunks"] == pytest.approx((27 / 32 + 31 / 32) / 2, rel=1e-12)
    report = fidelity.Report("coherence", {"checkpoint": "c", "sampler": "ddim", "steps": 4, "seed": 0, "seconds": 1},
                             {"all": {"items": [], "rows": {"hand": summary}}})
    row = report.markdown().splitlines()[2]
    assert row.startswith("| hand | 2 | 19.00 | 4.7% | ") and "| 90.6% |" in row  # shares in percent
