"""What new bars must keep of the user's piece (`symdiff.fit`), read from real files: the note
rate, no erased bars, the section's key, the cadence and the pickup; and the bar map's pickup."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from symdiff import fit, melody
from symdiff.generate import plan_infill

MIDI = Path(__file__).parent / "data" / "midi"
BAR = melody.STEPS_PER_BAR


def line(name: str) -> tuple[melody.MidiMelodies, np.ndarray]:
    found = melody.read_midi(MIDI / name)
    return found, found.tokens(found.chosen)


@pytest.mark.parametrize("name, key", [
    ("oneills_003_4-4_melody.mid", "G minor"), ("oneills_020_jig_6-8.mid", "D major"),
    ("nottingham_cuckoos_nest_reel.mid", "D major"), ("bach_bwv26.6_chorale.mid", "A minor"),
])
def test_the_key_of_real_tunes(name, key):
    assert str(fit.find_key(line(name)[1])) == key


def test_a_key_section_is_bounded_by_the_files_key_changes():
    """Der Lindenbaum turns from E major to E minor at step 288 and back at 432 (its key
    signatures); a file whose key never changes is one section."""
    found, tokens = line("schubert_lindenbaum_3-4_triplets.mid")
    assert {k for _, k in found.keys} == {4, 16}  # E major, E minor
    assert fit.section(found.keys, (300, 340), len(tokens)) == (288, 432)
    assert fit.section(found.keys, (200, 300), len(tokens)) == (0, 432)  # a range across a change
    assert fit.section(found.keys, (500, 520), len(tokens)) == (432, len(tokens))
    reel, reel_tokens = line("nottingham_cuckoos_nest_reel.mid")
    assert len(reel.keys) > 1 and fit.section(reel.keys, (200, 240), len(reel_tokens)) == (0, len(reel_tokens))


def test_the_models_window_stays_inside_the_key_section():
    plan = plan_infill(82 * 48, (300, 340), bounds=(288, 432))
    assert plan.window == (9, 13) and plan.chunk_range == (9, 11)
    whole = plan_infill(82 * 48, (300, 340))
    assert whole.window == (0, 32)
    odd = plan_infill(3 * BAR, (0, BAR), bounds=(0, 3 * BAR))  # a partial last chunk stays in
    assert odd.window == (0, 2)


def test_the_replaced_bars_set_the_rate_and_the_rests_allowed():
    """A reel of steady eighths: bars 5-8 hold 8 notes a bar and no rest; a range of rests takes
    the rate of the nearest bars that play."""
    _, tokens = line("nottingham_cuckoos_nest_reel.mid")
    span = (4 * BAR, 8 * BAR)
    goal = fit.targets(tokens, span)
    assert goal.rate == fit.onsets(tokens, *span) / 4 and goal.max_silent == 0
    assert fit.faults(tokens, goal) == []  # the tune itself meets what its bars ask
    erased = tokens.copy()
    erased[5 * BAR : 6 * BAR] = melody.NO_EVENT
    erased[5 * BAR] = melody.NOTE_OFF
    missed = fit.faults(erased, goal)
    assert "silence" in {f.what for f in missed} and fit.erases(missed)
    sparse = tokens.copy()  # every bar still plays, at a third of the rate: a lesser miss than an erased bar
    for b in range(4, 8):
        bar = sparse[b * BAR : (b + 1) * BAR]
        bar[np.flatnonzero(bar >= 2)[1:]] = melody.NO_EVENT
    off_rate = fit.faults(sparse, goal)
    assert {f.what for f in off_rate} == {"density"} and not fit.erases(off_rate)
    assert fit.badness(off_rate) < fit.badness(missed)
    rests = tokens.copy()
    rests[4 * BAR : 8 * BAR] = melody.NO_EVENT
    rests[4 * BAR] = melody.NOTE_OFF
    near = fit.targets(rests, span)
    assert near.max_silent is None and near.rate == fit.near_rate(rests, *span) > 4
    assert fit.targets(tokens, span, 2.5).rate == 2.5
    with pytest.raises(ValueError, match="notes per bar"):
        fit.targets(tokens, span, 17.0)
    piece = fit.targets(tokens, (4 * BAR, 6 * BAR), "piece", (0, len(tokens)))
    assert piece.rate is None  # two bars against the whole piece: too few to judge


def test_a_draw_off_its_sections_key_is_a_fault():
    """Der Lindenbaum's first section (E major up to step 288): bars 9-12 moved a semitone up
    leave its key; a tune of one key (the reel) has no key target, its window holds the key, but
    for bars that continue it."""
    found, tokens = line("schubert_lindenbaum_3-4_triplets.mid")
    span = (96, 192)
    goal = fit.targets(tokens, span, keys=found.keys)
    assert goal.key is not None and fit.faults(tokens, goal) == []  # (its nearby bars sit on the dominant, B)
    shifted = tokens.copy()
    notes = shifted[span[0] : span[1]] >= 2
    shifted[span[0] : span[1]][notes] += 1
    assert "key" in [f.what for f in fit.faults(shifted, goal)]
    reel, reel_tokens = line("nottingham_cuckoos_nest_reel.mid")
    assert fit.targets(reel_tokens, (4 * BAR, 8 * BAR), keys=reel.keys).key is None
    # continued by 8 bars: the new bars are held to the key of the 8 before them, D major
    longer = np.concatenate([reel_tokens, np.zeros(8 * BAR, dtype=reel_tokens.dtype)])
    goal = fit.targets(longer, (len(reel_tokens), len(longer)), keys=reel.keys)
    assert str(goal.key) == "D major" and goal.key == fit.find_key(reel_tokens[-8 * BAR :])


def test_a_range_that_ends_the_tune_keeps_its_final_pitch_class():
    _, tokens = line("oneills_003_4-4_melody.mid")
    span = (12 * BAR, 16 * BAR)
    goal = fit.targets(tokens, span)
    assert goal.final_pitch_class == 7  # G
    assert fit.targets(tokens, (4 * BAR, 8 * BAR)).final_pitch_class is None
    last = int(np.flatnonzero(tokens >= 2)[-1])
    off = tokens.copy()
    off[last] += 2  # ends on A
    assert [f.what for f in fit.faults(off, goal)] == ["cadence"]
    mended = fit.end_on(off, goal)
    assert fit.faults(mended, goal) == [] and mended[last] == tokens[last]
    assert np.array_equal(np.delete(mended, last), np.delete(off, last))


def test_a_pickup_after_a_bar_of_rest_is_bar_0_from_its_first_beat(late_pickup):
    """A bar of rest, then a one-beat pickup: bar 0 is that beat alone, so new bars there never
    fill the rest before it."""
    found = melody.read_midi(late_pickup)
    assert found.bars.first_number == 0 and found.bars.onset_pickup == (12, 16)
    assert found.bars.steps(0, 3) == (12, 4 * BAR)
    goal = fit.targets(found.tokens(found.chosen), found.bars.steps(0, 3), pickup=found.bars.onset_pickup)
    assert goal.pickup == (12, 16)
    empty = found.tokens(found.chosen).copy()
    empty[12:16] = melody.NO_EVENT
    assert "pickup" in [f.what for f in fit.faults(empty, goal)]
