"""Issue 11's figures (`symdiff.evaluation.fidelity`): the fit and coherence figures on hand-made melodies
with answers worked out by hand, the repetition baseline, the pieces drawn from the real
corpus, and a tiny run with the shipped checkpoint through the library and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PHI_MINUS_1, bar

from symdiff import fit
from symdiff.cli import build_parser, main
from symdiff.dataset import Lines
from symdiff.evaluation import fidelity as fd
from symdiff.generate import MelodyDiffusion, plan_infill
from symdiff.melody import NOTE_OFF, STEPS_PER_BAR, read_midi

torch.set_num_threads(1)


MIDI = Path(__file__).parent / "data" / "midi"
REST = bar()
REST[0] = NOTE_OFF


def melody(*bars: np.ndarray) -> np.ndarray:
    return np.concatenate(bars)


# 8 bars: context bars 0, 1, 6, 7 in quarters C4 E4 C4 E4; region bars 2-5 in halves E4 G#4.
QUARTERS = bar((0, 60), (4, 64), (8, 60), (12, 64))
HALVES = bar((0, 64), (8, 68))
HAND = melody(QUARTERS, QUARTERS, HALVES, HALVES, HALVES, HALVES, QUARTERS, QUARTERS)


def test_fit_figures_hand_worked():
    f = fd.fit_figures(HAND, (2, 6))
    # pitches: context mean 62 std 2, region mean 66 std 2: overlap of equal-sigma Gaussians
    # d = 4 apart is 2 * Phi(-d / (2 sigma)) = 2 * Phi(-1)
    assert f["pitch_overlap"] == pytest.approx(2 * PHI_MINUS_1, abs=1e-6)
    # pitch classes: context C 8, E 8; region E 4, G# 4: cosine 32 / (sqrt(128) sqrt(32)) = 0.5
    assert f["pitch_class_cosine"] == pytest.approx(0.5)
    # onsets: context at 0, 4, 8, 12 (1/4 each); region at 0, 8 (1/2 each): TV = 1/2
    assert f["onset_distance"] == pytest.approx(0.5)
    # 2 notes per bar against 4
    assert f["density_log_ratio"] == pytest.approx(math.log(2))
    assert f["restated_chunks"] == 0.0  # halves against quarters


def test_fit_figures_of_a_region_like_its_context():
    same = melody(*[QUARTERS] * 8)
    assert fd.fit_figures(same, (2, 6)) == pytest.approx(
        {"pitch_overlap": 1.0, "pitch_class_cosine": 1.0, "onset_distance": 0.0, "density_log_ratio": 0.0,
         "restated_chunks": 1.0})
    # a transposition by an octave keeps the key and rhythm but not the register
    up = melody(QUARTERS, QUARTERS, *[bar((0, 72), (4, 76), (8, 72), (12, 76))] * 4, QUARTERS, QUARTERS)
    f = fd.fit_figures(up, (2, 6))
    assert f["pitch_class_cosine"] == pytest.approx(1.0) and f["onset_distance"] == 0.0
    assert f["restated_chunks"] == 0.0
    assert f["pitch_overlap"] == pytest.approx(math.erfc(3 / math.sqrt(2)), rel=1e-5)  # 12 apart, sigma 2: 2 Phi(-3)


def test_fit_figures_of_a_silent_region():
    silent = melody(QUARTERS, QUARTERS, REST, REST, REST, REST, QUARTERS, QUARTERS)
    f = fd.fit_figures(silent, (2, 6))
    assert f["pitch_overlap"] == 0.0 and f["pitch_class_cosine"] == 0.0 and f["onset_distance"] == 1.0
    assert f["density_log_ratio"] == pytest.approx(math.log(4 / (0.5 / 4)))  # floored at half a note
    assert f["restated_chunks"] == 0.0  # rests restating rests are not a phrase


def test_restated_chunks_are_whole_context_chunks_token_for_token():
    a, b = bar((0, 62), (8, 65)), bar((0, 69))
    # chunks (2 bars): [Q Q] [Q Q | restated] [a b | new] [a b]: region bars 2-5 = chunks 1 and 2
    assert fd.fit_figures(melody(QUARTERS, QUARTERS, QUARTERS, QUARTERS, a, b, a, b), (2, 6))["restated_chunks"] == 1.0
    assert fd.fit_figures(melody(QUARTERS, QUARTERS, QUARTERS, QUARTERS, b, a, a, b), (2, 6))["restated_chunks"] == 0.5
    # the same bars off the 2-bar grid, or repeated only inside the region, restate nothing
    off_grid = melody(a, QUARTERS, b, a, QUARTERS, b, HALVES, HALVES, a, a, a, a)  # bars 1-2 = bars 4-5
    assert fd.fit_figures(off_grid, (4, 8))["restated_chunks"] == 0.0
    assert fd.fit_figures(melody(a, b, HALVES, HALVES, HALVES, HALVES, b, a), (2, 6))["restated_chunks"] == 0.0


def test_a_note_belongs_to_the_bar_where_it_starts():
    into = bar((0, 60), (4, 64), (8, 60), (12, 64), (14, 71))  # B4 starts in bar 1 ...
    held = melody(QUARTERS, into, *[np.zeros(STEPS_PER_BAR, np.uint8)] * 4, QUARTERS, QUARTERS)  # ... sounds to bar 6
    f = fd.fit_figures(held, (2, 6))
    assert f["pitch_overlap"] == 0.0 and f["onset_distance"] == 1.0  # the region has no note of its own


def test_repetition_copies_the_bars_before_cyclically():
    bars = [bar((0, 60 + b)) for b in range(8)]
    line = melody(*bars)
    out = fd.repetition_infill(line, (2, 6))  # 2 bars before the region: period 2
    expect = melody(bars[0], bars[1], bars[0], bars[1], bars[0], bars[1], bars[6], bars[7])
    assert np.array_equal(out, expect) and np.array_equal(line, melody(*bars))
    out = fd.repetition_infill(line, (4, 6))  # 4 bars before, a 2-bar region: the 2 right before it
    assert np.array_equal(out, melody(*bars[:4], bars[2], bars[3], *bars[6:]))
    with pytest.raises(ValueError):
        fd.repetition_infill(line, (0, 4))


def test_coherence_figures_hand_worked():
    a = melody(bar((0, 60)), bar((0, 67)))
    b = melody(bar((0, 62)), bar((0, 74)))
    c = melody(bar((0, 62)), bar((0, 66)))
    rest = melody(REST, REST)
    line = melody(a, a, b, rest, rest, *[b] * 11, *[c] * 16)
    f = fd.coherence_figures(line)
    assert f["pitch_range"] == 14.0  # 60..74
    assert f["silent_bars"] == pytest.approx(4 / 64)
    # repeats: chunk 1 (a), chunks 5-15 (b again), chunks 17-31 (c); the second rest is no repeat
    assert f["repeated_chunks"] == pytest.approx(27 / 32)
    first = np.zeros(12)  # chunks 0-15: a twice (C, G), b 12 times (D4, D5)
    first[[0, 7]], first[2] = 2, 24
    second = np.zeros(12)  # chunks 16-31: c 16 times (D, F#)
    second[[2, 6]] = 16
    assert f["key_stability"] == pytest.approx(first @ second / np.linalg.norm(first) / np.linalg.norm(second))
    means = [63.5] * 2 + [68.0] * 12 + [64.0] * 16
    assert f["chunk_pitch_spread"] == pytest.approx(np.std(means))


def test_coherence_of_a_silent_melody():
    f = fd.coherence_figures(np.zeros(64 * STEPS_PER_BAR, np.uint8))
    assert f == {"pitch_range": 0.0, "silent_bars": 1.0, "key_stability": 0.0, "repeated_chunks": 0.0,
                 "chunk_pitch_spread": 0.0, "mostly_silent": 1.0, "longest_held": 0.0, "tonic_ending": 0.0}


def test_coherence_of_a_real_tune_that_ends_on_its_tonic():
    """The reel in D ends on D, with no bar silent and no note held over a bar."""
    tune = read_midi(MIDI / "nottingham_cuckoos_nest_reel.mid").chosen.tokens
    f = fd.coherence_figures(tune)
    assert (f["tonic_ending"], f["mostly_silent"], f["longest_held"]) == (1.0, 0.0, 0.0)
    held = tune.copy()
    held[16 * STEPS_PER_BAR + 1 : 28 * STEPS_PER_BAR] = 0  # the note of bar 17 held through bar 28
    assert fd.coherence_figures(held)["longest_held"] == 11.0


def test_middle_region_and_windows():
    assert fd.middle_region(32) == (16, 48)  # the paper's bars 17-48
    assert fd.middle_region(8) == (4, 12)
    assert fd.middle_region(9) == (4, 12)
    assert fd.middle_region(15) == (8, 22)
    meta = {"source": "palestrina", "piece": "p", "voice": "v"}
    long = np.arange(150 * STEPS_PER_BAR, dtype=np.int64) % 90
    p = fd.make_piece(long.astype(np.uint8), meta)
    assert p.start_bar == 42 and p.chunks == 32 and p.region == (16, 48)  # 75 chunks: the centred 32
    assert np.array_equal(p.tokens, long[42 * STEPS_PER_BAR : 106 * STEPS_PER_BAR])
    p = fd.make_piece(long[: 17 * STEPS_PER_BAR].astype(np.uint8), meta)  # an odd last bar is left out
    assert p.start_bar == 0 and p.chunks == 8 and p.region == (4, 12)
    # a short region, as a musician picks: the middle 4 bars
    assert fd.middle_region(32, 4) == (30, 34) and fd.middle_region(8, 4) == (6, 10)
    assert fd.middle_region(9, 8) == (4, 12) == fd.middle_region(9)
    assert fd.make_piece(long.astype(np.uint8), meta, region_bars=2).region == (30, 32)
    for bad in (0, 3, 10):
        with pytest.raises(ValueError, match="the region must be 2 to 8 bars"):
            fd.check_region_bars(bad)
    fd.check_region_bars(None)


@pytest.fixture(scope="module")
def lines() -> Lines:
    return Lines.load()


def test_style_mapping_covers_the_corpus(lines):
    assert {fd.style_of(m["source"]) for m in lines.meta} == set(fd.STYLES)
    assert fd.style_of("bach") == "chorale" and fd.style_of("palestrina") == "vocal"
    assert fd.style_of("oneills1850") == "folk"


def test_pieces_are_test_lines_of_the_style_one_voice_per_work_first(lines):
    pieces = fd.select_pieces(lines, "chorale", 30, 0)
    assert len(pieces) == 30 and all(p.source == "bach" for p in pieces)
    works = [p.piece for p in pieces]
    n = len(set(works))
    assert n == 9 and len(set(works[:n])) == n  # the test split's 9 chorales, each before any second voice
    test = {(m["piece"], m["voice"]): t for t, m in zip(lines.tokens, lines.meta, strict=True) if m["split"] == "test"}
    for p in pieces:
        line = test[(p.piece, p.voice)]
        assert len(line) >= 16 * STEPS_PER_BAR and p.chunks >= 8
        assert np.array_equal(p.tokens, line[p.start_bar * STEPS_PER_BAR :][: len(p.tokens)])
    assert [p.piece for p in fd.select_pieces(lines, "chorale", 30, 0)] == works
    assert [p.piece for p in fd.select_pieces(lines, "chorale", 30, 1)] != works


@pytest.fixture(scope="module")
def pipe() -> MelodyDiffusion:
    return MelodyDiffusion.from_pretrained()


def test_tiny_run_real_middle_and_copied_context(pipe, lines):
    pieces = fd.select_pieces(lines, "folk", 3, 0)
    rows = fd.infill_rows(pipe, pieces, "ddim", 4, 0, progress=False)
    assert list(rows) == ["real middle", "real middle, VAE-decoded", "diffusion (conditioned)",
                          "diffusion (conditioned, no density repair)", "diffusion (replace)",
                          "diffusion (conditioned, any style)", "interpolation", "N(0,I) prior",
                          "repetition"]  # the shipped default serves both methods, with and without style labels
    # heard in no style, the default row is the any-style row; heard as folk, it is the style-given row
    assert all(np.array_equal(a, b) for a, b in zip(rows["diffusion (conditioned)"],
                                                     rows["diffusion (conditioned, any style)"], strict=True))
    heard = fd.infill_rows(pipe, pieces, "ddim", 4, 0, progress=False, style="folk", heard=["folk"] * 3)
    assert all(np.array_equal(a, b) for a, b in zip(heard["diffusion (conditioned)"],
                                                     heard["diffusion (conditioned, style given)"], strict=True))
    for i, p in enumerate(pieces):
        lo, hi = (b * STEPS_PER_BAR for b in p.region)
        for name, tokens in rows.items():
            t = tokens[i]
            assert len(t) == len(p.tokens) and np.array_equal(t[:lo], p.tokens[:lo]), name
            assert np.array_equal(t[hi:], p.tokens[hi:]), name
        assert rows["real middle"][i] is p.tokens
        assert not np.array_equal(rows["diffusion (replace)"][i][lo:hi], p.tokens[lo:hi])
        assert not np.array_equal(rows["diffusion (conditioned)"][i][lo:hi], p.tokens[lo:hi])
        # the default row is its first draw, drawn again only where that misses what the range must
        # keep of the piece, the hidden middle unseen (the piece's note rate, the key around it)
        first, fixed = (rows[r][i] for r in ("diffusion (conditioned, no density repair)", "diffusion (conditioned)"))
        plan = plan_infill(len(p.tokens), (lo, hi))
        goal = fit.targets(p.tokens, (lo, hi), "piece", plan.window_steps)
        missed = fit.faults(first, goal)
        after = fit.badness(fit.faults(fixed, goal))
        assert np.array_equal(first, fixed) if not missed else after < fit.badness(missed)
    report = fd.fidelity(pipe, 3, ("folk",), steps=4, progress=False)
    folk = report.groups["folk"]
    assert [it["piece"] for it in folk["items"]] == [p.piece for p in pieces]
    for it, p in zip(folk["items"], pieces, strict=True):
        assert it["rows"]["real middle"] == fd.fit_figures(p.tokens, p.region)
    real = folk["rows"]["real middle"]["mean"]
    # a real tune's middle fits the rest of it: the same register, key, rhythm and pace
    assert real["pitch_overlap"] > 0.8 and real["pitch_class_cosine"] > 0.8
    assert real["onset_distance"] < 0.2 and real["density_log_ratio"] < 0.3
    assert folk["rows"]["N(0,I) prior"]["mean"]["pitch_class_cosine"] < real["pitch_class_cosine"]


def test_cli_writes_fidelity_and_coherence(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["evaluate", "--task", "fidelity", "coherence", "--num", "2", "--steps", "4", "--styles", "folk",
            "chorale", "--out", str(out), "--quiet", "--seed", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| folk: real middle | 2 |" in printed and "| diffusion samples | 2 |" in printed
    d = json.loads((out / "fidelity.json").read_text())
    assert set(d["groups"]) == {"folk", "chorale"} and d["settings"]["steps"] == 4
    assert d["settings"]["sampler"] == "ddpm" and d["settings"]["checkpoint"] == "checkpoints/diffusion-cond"
    # the default model knows the styles: its default infill told the pieces' style is a row of its own
    assert "diffusion (conditioned, style given)" in d["groups"]["folk"]["rows"]
    # ... and its default infill writes in the style it hears in each piece's context, recorded
    assert sum(d["groups"]["folk"]["heard_styles"].values()) == 2
    assert all(it["heard_style"] in ("any", *fd.STYLES) for it in d["groups"]["folk"]["items"])
    items = d["groups"]["chorale"]["items"]
    assert len(items) == 2 and set(items[0]["rows"]["repetition"]) == set(fd.FIT)
    md = (out / "fidelity.md").read_text()
    assert md.startswith("| style: row | pieces | pitch overlap |") and "| chorale: interpolation | 2 |" in md
    assert "Styles the default infill heard in each piece's context: folk pieces: " in md
    c = json.loads((out / "coherence.json").read_text())
    assert set(c["groups"]["all"]["rows"]) == {"real test windows", "diffusion samples",
                                               "diffusion samples, no context guidance",
                                               "diffusion samples, plain chain"}
    assert len(c["groups"]["all"]["items"]) == 8
    assert (out / "coherence.md").read_text().startswith("| row | melodies | pitch range")


def test_cli_regenerates_a_short_middle(tmp_path, capsys):
    """--region-bars 4: the middle 4 bars of each piece, recorded in the settings and the note."""
    out = tmp_path / "short"
    assert main(["evaluate", "--task", "fidelity", "--region-bars", "4", "--num", "2", "--steps", "3", "--styles",
                 "folk", "--guidance", "1", "--out", str(out), "--quiet"]) == 0
    d = json.loads((out / "fidelity.json").read_text())
    assert d["settings"]["region_bars"] == 4
    assert all(it["region"][1] - it["region"][0] == 4 for it in d["groups"]["folk"]["items"])
    assert "The middle 4 bars of each test piece" in (out / "fidelity.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", "--task", "fidelity", "--region-bars", "5", "--out", str(out)])
    assert "invalid choice: 5" in capsys.readouterr().err


def test_cli_defaults_keep_committed_results(tmp_path, capsys):
    args = build_parser().parse_args(["evaluate", "--task", "fidelity"])
    assert args.out == Path("runs/eval") and args.sampler is None and args.num is None
    assert main(["evaluate", "--task", "fidelity", "--num", "0", "--out", str(tmp_path)]) == 2
    assert "at least 1" in capsys.readouterr().err
