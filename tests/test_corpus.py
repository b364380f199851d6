"""symdiff.data.corpus: repeat expansion, music21 parts -> notes -> tokens, whole score files.

Hand-made ABC goes through music21's real ABC parser; real tunes come from the corpus in the
music21 wheel, with the expected bar orders and notes worked out from their ABC/kern text.
"""
from __future__ import annotations

import warnings

import music21
import numpy as np
import pytest

from symdiff.data import corpus as C
from symdiff.dataset import split_of

warnings.filterwarnings("ignore")  # music21 warns about every odd ABC header

B = C.Bar
S = B(start_repeat=True)


def E(times=2, endings=()):
    return B(end_repeat=times, endings=frozenset(endings))


def N(*numbers):  # a bar under an ending bracket
    return B(endings=frozenset(numbers))


# --- expand_repeats ------------------------------------------------------------------------

@pytest.mark.parametrize("bars, order", [
    ([], []),
    ([B(), B()], [0, 1]),
    # |: 1 2 :| after an intro bar
    ([B(), S, B(), E(), B()], [0, 1, 2, 3, 1, 2, 3, 4]),
    # a lone :| goes back to the start
    ([B(), B(), E(), B()], [0, 1, 2, 0, 1, 2, 3]),
    # a lone :| after a finished repeat goes back to the bar after it
    ([B(), E(), B(), E()], [0, 1, 0, 1, 2, 3, 2, 3]),
    ([S, E(), B(), B(), E(), B()], [0, 1, 0, 1, 2, 3, 4, 2, 3, 4, 5]),
    # 1st/2nd endings
    ([S, B(), E(endings={1}), N(2), B()], [0, 1, 2, 0, 1, 3, 4]),
    # a 1st ending two bars long
    ([S, N(1), E(endings={1}), N(2), B()], [0, 1, 2, 0, 3, 4]),
    # after the 2nd ending, a lone :| goes back to the bar after the endings
    ([B(), E(endings={1}), N(2), B(), E()], [0, 1, 0, 2, 3, 4, 3, 4]),
    # :|: back to back
    ([S, E(), S, E()], [0, 1, 0, 1, 2, 3, 2, 3]),
    ([S, B(), B(end_repeat=2, start_repeat=False), S, E(), B()], [0, 1, 2, 0, 1, 2, 3, 4, 3, 4, 5]),
    # played three times, and three times with endings 1-2 / 3
    ([S, E(times=3)], [0, 1, 0, 1, 0, 1]),
    ([B(), E(times=3, endings={1, 2}), N(3)], [0, 1, 0, 1, 0, 2]),
])
def test_expand_repeats(bars, order):
    assert C.expand_repeats(bars) == order


@pytest.mark.parametrize("bars", [
    [S, E(times=100)],                 # 100 passes of two bars
    [B(), B(), E(times=9)],            # a lone :| played 9 times
])
def test_expand_repeats_gives_up_on_nonsense(bars):
    assert C.expand_repeats(bars) is None


def test_expansion_limit_is_four_times_the_length():
    # 4 passes of the whole piece are allowed, 5 are not
    assert C.expand_repeats([S, B(), E(times=4)]) == [0, 1, 2] * 4
    assert C.expand_repeats([S, B(), E(times=5)]) is None


# --- hand-made ABC through music21 ----------------------------------------------------------

def parse_abc(body: str, meter="4/4", length="1/8", key="C"):
    score = music21.converter.parse(f"X:1\nT:t\nM:{meter}\nL:{length}\nK:{key}\n{body}\n", format="abc")
    return score, score.parts[0]


def test_abc_repeats_and_endings_are_played():
    score, part = parse_abc("|:G A B|c d e:|\n|:f g a|[1 b3:|[2 b2 g|]", meter="3/4", length="1/4", key="G")
    assert C.expand_repeats(C._bar_marks(part, score)) == [0, 1, 0, 1, 2, 3, 2, 4]
    notes, info = C.part_notes(part, score)
    assert info["repeats"] == "expanded" and info["meter"] == "3/4" and info["key"] == "G major"
    starts = [n[0] for n in notes]
    pitches = [n[2] for n in notes]
    assert starts == [float(i) for i in range(16)] + [18.0, 19.0, 20.0, 21.0, 23.0]
    gabc, def_ = [67, 69, 71, 72], [74, 76]
    assert pitches == (gabc + def_) * 2 + [78, 79, 81, 83] + [78, 79, 81, 83, 79]
    assert notes[15] == (15.0, 18.0, 83)  # b3 (1st ending) then the repeat
    assert notes[-2] == (21.0, 23.0, 83)  # b2 of the 2nd ending


@pytest.mark.parametrize("bar_line", [":|:", "::"])
def test_abc_back_to_back_repeats(bar_line):
    score, part = parse_abc(f"|:G A B|c d e{bar_line}f g a|b a g:|", meter="3/4", length="1/4", key="G")
    assert C.expand_repeats(C._bar_marks(part, score)) == [0, 1, 0, 1, 2, 3, 2, 3]
    notes, _ = C.part_notes(part, score)
    assert [n[2] for n in notes] == [67, 69, 71, 72, 74, 76] * 2 + [78, 79, 81, 83, 81, 79] * 2
    assert [n[0] for n in notes] == [float(i) for i in range(24)]


def test_abc_pickup_and_ties():
    # a 1/8 pickup, a tie inside a bar, a tie across a bar line, a repeated note that is not tied
    score, part = parse_abc("G|c2 d2 e2- e2|e4 f2 g2|c8-|c4 z4|]")
    notes, info = C.part_notes(part, score)
    assert info["repeats"] == "none" and info["halved"] is False
    assert notes == [(3.5, 4.0, 67), (4.0, 5.0, 72), (5.0, 6.0, 74), (6.0, 8.0, 76), (8.0, 10.0, 76),
                     (10.0, 11.0, 77), (11.0, 12.0, 79), (12.0, 18.0, 72)]
    tokens = C.notes_to_tokens(notes)
    expected = np.zeros(80, np.uint8)
    for step, t in [(14, 48), (16, 53), (20, 55), (24, 57), (32, 57), (40, 58), (44, 60), (48, 53), (72, 1)]:
        expected[step] = t
    np.testing.assert_array_equal(tokens, expected)


def test_abc_pickup_in_three_four():
    # a quarter pickup in 3/4 ends a model bar of rest: the first full bar starts at step 16
    score, part = parse_abc("D|G A B|c3|]", meter="3/4", length="1/4", key="G")
    notes, _ = C.part_notes(part, score)
    assert notes[:2] == [(3.0, 4.0, 62), (4.0, 5.0, 67)]


def test_notes_to_tokens():
    assert C.notes_to_tokens([]) is None
    tokens = C.notes_to_tokens([(0.0, 1.0, 60), (1.0, 1.5, 62), (2.0, 2.25, 20)])
    assert tokens.tolist() == [41, 0, 0, 0, 43, 0, 1] + [0] * 9  # pitch 20 is out of range: dropped


# --- real tunes from the corpus ----------------------------------------------------------------

def parse_corpus(corpus_root, rel):
    score = music21.converter.parse(corpus_root / rel)
    return score, score.parts[0]


def test_real_reel_with_lone_repeat_and_endings(corpus_root):
    # ryansMammoth/AllTheRageReel.abc (M:C|, L:1/8):
    #   ud|  g2dB g2dB | g2fg afdf | g2dB g2dB | e(gf)(a g2)z2 :|
    #   |: BcdB cBAG | FGAB c2BA | BcdB cBAG |1 (FA)DF G2d2 :|2 (FA)DF G2z2 |]
    # bars: 0 pickup, 1-4 A (a lone :| back to the start), 5-7 B, 8 1st ending, 9 2nd ending
    score, part = parse_corpus(corpus_root, "ryansMammoth/AllTheRageReel.abc")
    assert len(part.getElementsByClass("Measure")) == 10
    order = C.expand_repeats(C._bar_marks(part, score))
    assert order == [0, 1, 2, 3, 4] * 2 + [5, 6, 7, 8, 5, 6, 7, 9]
    notes, info = C.part_notes(part, score)
    assert info["repeats"] == "expanded" and info["meter"] == "2/2"
    assert notes[0] == (3.5, 4.0, 74)  # the pickup d ends a model bar of rest
    assert notes[1] == (4.0, 5.0, 79)


def bar_aligned(tokens, pattern) -> list[int]:
    n = len(pattern)
    return [k for k in range(0, len(tokens) - n + 1, 16) if np.array_equal(tokens[k:k + n], pattern)]


def test_real_reel_repeat_of_a_pickup_keeps_the_bar_grid(corpus_root):
    # The A part's last bar is written full (...g2 z2 :|), so the pickup d played again
    # belongs in its closing rest; played after it, every later bar starts an eighth late.
    score, part = parse_corpus(corpus_root, "ryansMammoth/AllTheRageReel.abc")
    tokens = C.notes_to_tokens(C.part_notes(part, score)[0])
    a_bars_1_to_3 = tokens[16:64]  # first time round: bar 1 on step 16
    assert len(bar_aligned(tokens, a_bars_1_to_3)) == 2  # ... and on a bar line the second time
    b_bar = np.array([52, 0, 53, 0, 55, 0, 52, 0, 53, 0, 52, 0, 50, 0, 48, 0], np.uint8)  # BcdB cBAG
    assert len(bar_aligned(tokens, b_bar)) == 4  # bars 5 and 7 of the B part, both times, on bar lines


def test_real_jig_lone_repeats_after_finished_repeats(corpus_root):
    # oneills1850/0731-0731.abc, 6/8: three 8-bar parts, each with a pickup and a lone :|
    #   D|GBG AGE|...|G2 G G2:|  (B/c/)|dBB dBB|...|G2 G G2:|  (d/e/)|f2d edB|...|G2 G G2:|
    score, part = parse_corpus(corpus_root, "oneills1850/0731-0731.abc")
    assert len(part.getElementsByClass("Measure")) == 27
    parts = [list(range(0, 9)), list(range(9, 18)), list(range(18, 27))]
    assert C.expand_repeats(C._bar_marks(part, score)) == [b for p in parts for b in p * 2]
    tokens = C.notes_to_tokens(C.part_notes(part, score)[0])
    # each part is 24 quarters (pickup 1/2 + 7 bars + a 2 1/2-quarter last bar) = 96 steps
    assert tokens[:14].tolist() == [0] * 14 and tokens[14] == 62 - 19  # the pickup D at 3.5 quarters
    np.testing.assert_array_equal(tokens[110:206], tokens[14:110])  # part A twice, same grid
    np.testing.assert_array_equal(tokens[302:398], tokens[206:302])  # part B twice
    assert len(tokens) == 592  # 3.5 + 3 * 48 quarters -> last note-off at step 590, padded


# Gloria_34_b, Cantus (kern, 4/2, 7 bars of 8 quarters):
#   =10 1b 1g#  =11 1.a 2b  =12 1b 1b  =13 2r 2b 2a [2cc  =14 2cc] 2b 1a  =15 [0b  =16 0b]
CANTUS = [(0, 4, 71), (4, 8, 68), (8, 14, 69), (14, 16, 71), (16, 20, 71), (20, 24, 71), (26, 28, 71),
          (28, 30, 69), (30, 34, 72), (34, 36, 71), (36, 40, 69), (40, 56, 71)]


def test_palestrina_4_2_is_halved_and_ties_merge(corpus_root):
    score = music21.converter.parse(corpus_root / "palestrina" / "Gloria_34_b.krn")
    cantus = score.parts[0]
    notes, info = C.part_notes(cantus, score)  # 12 notes in 56 quarters: < 2 per whole note
    assert info == {"meter": "4/2", "key": info["key"], "halved": True, "repeats": "none"}
    assert notes == [(a / 2, b / 2, p) for a, b, p in CANTUS]  # tied cc and tied b: one note each
    tokens = C.notes_to_tokens(notes)
    expected = np.zeros(112, np.uint8)
    for step, t in [(0, 52), (8, 49), (16, 50), (28, 52), (32, 52), (40, 52), (48, 1), (52, 52), (56, 50),
                    (60, 53), (68, 52), (72, 50), (80, 52)]:
        expected[step] = t
    np.testing.assert_array_equal(tokens, expected)

    notes, info = C.part_notes(cantus, score, halve_long_meters=False)
    assert info["halved"] is False
    assert notes == [(float(a), float(b), p) for a, b, p in CANTUS]
    assert len(C.notes_to_tokens(notes)) == 224


def test_dense_two_two_part_is_not_halved():
    # x/2 meter with at least two notes per whole note stays as notated
    score, part = parse_abc("|c d e f|g a b c'|", meter="2/2", length="1/4")
    notes, info = C.part_notes(part, score)
    assert info["halved"] is False and notes[-1] == (7.0, 8.0, 84)


# --- whole files ---------------------------------------------------------------------------

def test_read_score_file_multi_tune_abc(corpus_root):
    lines, counts = C.read_score_file("oneills1850", corpus_root / "oneills1850/0721-0730.abc", corpus_root)
    assert counts["scores"] == 10 and counts["parts"] == 10 and counts["errors"] == 0
    pieces = [m["piece"] for m in lines.meta]
    assert pieces == [f"oneills1850/0721-0730.abc#{n}" for n in range(721, 731)]
    for toks, m in zip(lines.tokens, lines.meta, strict=True):
        assert m["source"] == "oneills1850" and m["split"] == split_of(m["piece"])
        assert toks.dtype == np.uint8 and len(toks) % 16 == 0 and (toks >= 2).any()


def test_read_score_file_single_tune_abc(corpus_root):
    lines, counts = C.read_score_file("oneills1850", corpus_root / "oneills1850/0731-0731.abc", corpus_root)
    assert counts == {"scores": 1, "parts": 1, "errors": 0, "expanded": 1, "repeats_ignored": 0, "halved": 0}
    assert lines.meta[0]["piece"] == "oneills1850/0731-0731.abc"
    assert lines.meta[0]["voice"] == "The Priest with the Collar"
    assert lines.meta[0]["meter"] == "6/8"
    assert len(lines.tokens[0]) == 592


def test_read_score_file_josquin_voices_are_one_piece(corpus_root):
    # josquin ABC files hold one voice per X: tune: one piece for the whole file
    path = corpus_root / "josquin" / "oVenusBant.abc"
    lines, counts = C.read_score_file("josquin", path, corpus_root)
    assert counts["scores"] == 3 and counts["parts"] == 3
    assert {m["piece"] for m in lines.meta} == {"josquin/oVenusBant.abc"}
    assert len({m["split"] for m in lines.meta}) == 1
    assert all(m["source"] == "josquin" for m in lines.meta)


def test_read_score_file_kern_and_halving_switch(corpus_root):
    path = corpus_root / "palestrina" / "Gloria_34_b.krn"
    halved, c1 = C.read_score_file("palestrina", path, corpus_root)
    plain, c2 = C.read_score_file("palestrina", path, corpus_root, halve_long_meters=False)
    assert c1["parts"] == c2["parts"] == 5 and c1["halved"] >= 1 and c2["halved"] == 0
    assert {m["piece"] for m in halved.meta} == {"palestrina/Gloria_34_b.krn"}
    assert [m["voice"] for m in halved.meta][0] == "Soprano"
    assert len(halved.tokens[0]) == 112 and len(plain.tokens[0]) == 224


@pytest.mark.parametrize("name, text", [
    ("broken.krn", "hello\n"),
    ("broken.xml", "<score-partwise><part id='P1'><measure>"),
    ("broken.mxl", "not a zip file"),
])
def test_read_score_file_counts_unreadable_files(tmp_path, name, text):
    (tmp_path / "josquin").mkdir()
    bad = tmp_path / "josquin" / name
    bad.write_text(text)
    lines, counts = C.read_score_file("josquin", bad, tmp_path)
    assert len(lines) == 0
    assert counts == {"scores": 0, "parts": 0, "errors": 1, "expanded": 0, "repeats_ignored": 0, "halved": 0}


def test_score_files_lists_a_subcorpus_largest_first(corpus_root):
    files = C.score_files(corpus_root, ["josquin"])
    assert len(files) == 8 and {s for s, _ in files} == {"josquin"}
    sizes = [p.stat().st_size for _, p in files]
    assert sizes == sorted(sizes, reverse=True)
