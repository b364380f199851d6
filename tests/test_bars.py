"""Bars as the musician counts them (issue 12, part 2): the file's own meter, pickups as bar 0,
meter changes, on real files; and a song of 800+ bars in the library."""
from pathlib import Path

import mido
import numpy as np
import pytest

from symdiff import demo, melody, pianoroll

MIDI = Path(__file__).parent / "data" / "midi"


@pytest.mark.parametrize("name, meter, bars, first", [
    ("oneills_020_jig_6-8.mid", "6/8", 16, 1),  # two 8-bar strains (the 4/4 grid said 12)
    ("m21_test14_6-8_melody.mid", "6/8", 3, 0),  # a pickup written after a bar's rest: bar 0
    ("schubert_lindenbaum_3-4_triplets.mid", "3/4", 82, 1),  # the score's 82 measures (4/4 grid: 62)
    ("m21_test02_satb_pickup_ts_change.mid", "4/4", 9, 0),  # a 1/4 pickup bar, then 4/4
    ("m21_test03_piano_4-4_to_3-4.mid", "4/4 then 3/4", 129, 1),  # a meter change
])
def test_bar_counts_in_the_files_meter(name, meter, bars, first):
    found = melody.read_midi(MIDI / name)
    assert (found.bars.meter, found.bars.num_bars, found.bars.first_number) == (meter, bars, first)


def test_waltz_bar_9_and_a_meter_change():
    waltz = melody.read_midi(MIDI / "schubert_lindenbaum_3-4_triplets.mid").bars
    assert waltz.steps(9, 9) == (96, 108) and waltz.number_at(100) == 9
    changed = melody.read_midi(MIDI / "m21_test03_piano_4-4_to_3-4.mid").bars  # 4/4 for one bar, then 3/4
    assert changed.steps(1, 1) == (0, 16) and changed.steps(2, 3) == (16, 40)
    jig = melody.read_midi(MIDI / "oneills_020_jig_6-8.mid").bars
    ends = r"the music ends at bar 16 \(16 bars of 6/8\); choose bars 9-16$"
    with pytest.raises(melody.BarRangeError, match=ends) as e:
        jig.steps(9, 17)
    assert e.value.valid == (1, 16)  # the bars a caller may offer instead
    with pytest.raises(melody.BarRangeError, match="no pickup") as e:
        jig.steps(0, 4)
    assert e.value.valid == (1, 16)


def test_a_meter_off_the_16th_grid_is_refused(tmp_path):
    mid = mido.MidiFile(MIDI / "oneills_003_4-4_melody.mid")
    for track in mid.tracks:
        for i, m in enumerate(track):
            if m.type == "time_signature":
                track[i] = m.copy(numerator=3, denominator=32)
    mid.save(tmp_path / "odd.mid")
    with pytest.raises(melody.MelodyError, match="meter 3/32 .* not whole 16th notes"):
        melody.read_midi(tmp_path / "odd.mid")


def test_the_picture_numbers_the_files_bars():
    found, cand = demo.load_melody(MIDI / "oneills_020_jig_6-8.mid")
    lines = demo.barlines(found.bars, 0, 16 * 12)
    fig = pianoroll.plot_pianoroll(found.tokens(cand), barlines=lines)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:4] == ["1", "5", "9", "13"]
    assert list(fig.axes[0].get_xticks()[:3]) == [0, 4 * 12 / 16, 8 * 12 / 16]  # every 4 bars of 12 steps


def long_song(path: Path, times: int = 52) -> Path:
    """A real 16-bar tune repeated `times` times (832 bars) with mido."""
    src = mido.MidiFile(MIDI / "oneills_003_4-4_melody.mid")
    out = mido.MidiFile(ticks_per_beat=src.ticks_per_beat)
    for track in src.tracks:
        notes = [m for m in track if not m.is_meta or m.type != "end_of_track"]
        length = 16 * 4 * src.ticks_per_beat
        new, now, tick = mido.MidiTrack(), 0, 0
        for k in range(times):
            tick = 0
            for m in notes:
                tick += m.time
                if m.is_meta and k:
                    continue
                at = k * length + tick
                new.append(m.copy(time=at - now))
                now = at
        out.tracks.append(new)
    out.save(path)
    return path


def test_an_800_bar_song_loads_and_infills_in_the_library(pipe, tmp_path):
    found, cand = demo.load_melody(long_song(tmp_path / "long.mid"))
    assert found.bars.num_bars == 832
    first, last = demo.default_range(found.bars)
    assert (first, last) == (9, 16)
    plan, tokens = demo.plan_bars(found, cand, 700, 707)
    res = pipe.infill(tokens, plan.steps, steps=4, seed=0)
    assert res.plan.window[1] - res.plan.window[0] == 32
    lo, hi = plan.steps
    assert np.array_equal(res.tokens[0][: lo - 1], tokens[: lo - 1]) and (res.tokens[0][lo:hi] >= 2).any()
