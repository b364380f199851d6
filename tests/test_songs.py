"""Real multi-track songs as users upload them (tests/data/songs, labelled by hand in its
labels.json, issue 25): every one is read whole, at its true length in the file's own bars, with
the labelled tune as its default track or named as having no single-line melody; the last bars
of the longest can be chosen; a file that must be cut says so wherever its length shows; a bar
range the file does not have is answered with what can be chosen."""
from __future__ import annotations

import json
from pathlib import Path

import mido
import pytest

from symdiff import cli, demo
from symdiff import melody as M

SONGS = Path(__file__).resolve().parent / "data" / "songs"
LABELS = {e["file"]: e for e in json.loads((SONGS / "labels.json").read_text())["files"]}


@pytest.fixture(scope="module")
def found() -> dict[str, M.MidiMelodies]:
    return {name: M.read_midi(SONGS / name) for name in LABELS}


@pytest.fixture(scope="module")
def mido_files() -> dict[str, mido.MidiFile]:
    """Each song as mido reads it, our reader aside."""
    return {name: mido.MidiFile(SONGS / name) for name in LABELS}


def note_events(mid: mido.MidiFile, drums: bool) -> int:
    return sum(m.type in ("note_on", "note_off") and (m.channel == 9) == drums for t in mid.tracks for m in t)


def test_the_set_is_labelled_small_and_has_long_songs_with_drums(mido_files):
    assert sorted(LABELS) == sorted(p.name for p in SONGS.glob("*.mid"))
    assert sum((SONGS / name).stat().st_size for name in LABELS) < 3 << 20
    long_with_drums = [name for name, e in LABELS.items() if e["bars"] >= 200 and note_events(mido_files[name], True)]
    assert len(long_with_drums) >= 5, long_with_drums
    for e in LABELS.values():
        assert e["licence"] in ("GPL-2.0-only", "GPL-3.0-or-later", "Apache-2.0") and e["why"], e["file"]


@pytest.mark.parametrize("name", LABELS)
def test_every_song_is_read_whole_at_its_true_length(found, name):
    e, bars = LABELS[name], found[name].bars
    assert (bars.num_bars, bars.meter, bars.first_number == 0) == (e["bars"], e["meter"], e["pickup"])
    assert bars.cut_at is None and "cut" not in bars.describe()


def test_songs_keep_a_third_of_the_event_budget_at_most(mido_files):
    """What a song costs to read is its kept events (bench/bench_read_midi.py): the longest and
    densest real songs stay far inside MAX_EVENTS, and drum notes are not kept."""
    for name, mid in mido_files.items():
        kept = sum(len(t) for t in M.bounded_midi((SONGS / name).read_bytes()).midi.tracks)
        pitched, drums = note_events(mid, False), note_events(mid, True)
        assert kept < M.MAX_EVENTS / 3, (name, kept)
        assert kept < pitched + 200, (name, kept, pitched, drums)  # the pitched notes and the meta events


@pytest.mark.parametrize("name", LABELS)
def test_the_default_track_is_the_tune_or_the_file_is_named_chordal(found, name):
    e, f = LABELS[name], found[name]
    assert [f.candidates[i].name.strip() for i in e["tune"]] == e["names"]
    assert all(f.candidates[i].chordal for i in e["chords"]), [(c.index, c.polyphony) for c in f.candidates]
    if e["single_line"]:
        assert f.chosen.index in e["tune"] and not f.chosen.chordal, (f.chosen.index, f.chosen.name)
    else:  # no single-line melody: the default plays chords, and says so
        assert f.chosen.chordal and (not e["tune"] or f.chosen.index in e["tune"]), (f.chosen.index, f.chosen.name)


def test_key_labels_are_the_files_key_signatures(found, mido_files):
    for name, e in LABELS.items():
        mid, keys = mido_files[name], []
        for track in mid.tracks:
            tick = 0
            for m in track:
                tick += m.time
                if m.type == "key_signature":
                    keys.append((tick, m.key))
        bars = found[name].bars
        changes = []
        for tick, key in sorted(keys):
            if not changes or changes[-1][1] != key:
                changes.append([bars.number_at(tick * M.STEPS_PER_QUARTER // mid.ticks_per_beat), key])
        assert changes == e["keys"], name


def inspect_json(capsys, path: Path) -> dict:
    assert cli.main(["inspect", str(path), "--json"]) in (0, None)
    return json.loads(capsys.readouterr().out)


def test_inspect_shows_the_true_length_and_names_a_file_without_a_single_line_melody(capsys):
    report = inspect_json(capsys, SONGS / "blupi_music001.mid")
    assert (report["bars"], report["cut_at_bar"], report["single_line_melody"]) == (877, None, False)
    assert inspect_json(capsys, SONGS / "arr_sax_drops_out.mid")["single_line_melody"] is True
    cli.main(["inspect", str(SONGS / "openmsx_moo_redfarn.mid")])
    out = capsys.readouterr().out
    assert "72 bars of 4/4 and a pickup (bar 0)" in out
    assert "no single-line melody: the default track 0 plays chords" in out


def test_the_last_bars_of_the_longest_song_can_be_chosen(found):
    name = max(LABELS, key=lambda n: LABELS[n]["bars"])
    f = found[name]
    last = f.bars.num_bars
    plan, tokens = demo.plan_bars(f, f.chosen, last - 7, last)
    assert plan.steps == f.bars.steps(last - 7, last) and plan.steps[1] <= len(tokens)
    assert any((f.tokens(c)[slice(*plan.steps)] >= 2).any() for c in f.candidates)  # the song plays there


def test_the_last_bars_of_the_longest_song_infill_and_it_comes_back_whole(tmp_path, capsys):
    name = max(LABELS, key=lambda n: LABELS[n]["bars"])
    last = LABELS[name]["bars"]
    assert cli.main(["infill", str(SONGS / name), "--bars", f"{last - 3}-{last}", "--sampler", "ddim", "--steps",
                     "4", "--seed", "0", "--out", str(tmp_path / "end.mid"), "--quiet"]) == 0
    assert f"infilled bars {last - 3}-{last} of {last} bars of 4/4" in capsys.readouterr().out
    back = M.read_midi(tmp_path / "end.mid")
    assert back.bars.num_bars == last and back.bars.cut_at is None


def test_a_song_cut_by_the_event_limit_says_so_everywhere(monkeypatch, capsys):
    """The densest song read with the old limit (20,000 events): the cut and where it falls are in
    the description, the bar-range errors and `inspect`."""
    monkeypatch.setattr(M, "MAX_EVENTS", 20_000)
    path = SONGS / "blupi_music005.mid"
    bars = M.read_midi(path).bars
    assert bars.cut_at is not None and bars.num_bars <= bars.cut_at < LABELS[path.name]["bars"]
    why = "symdiff reads the first 20,000 notes and events of a file"
    assert bars.describe() == f"{bars.num_bars} bars of 4/4, cut at bar {bars.cut_at} (the file goes on; {why})"
    with pytest.raises(M.MelodyError) as err:
        bars.steps(300, 303)
    assert str(err.value) == (f"bars 300-303: the file is cut at bar {bars.cut_at} (it goes on; {why}); "
                              f"choose bars within 1-{bars.num_bars}")
    report = inspect_json(capsys, path)
    assert (report["bars"], report["cut_at_bar"], report["cut_why"]) == (bars.num_bars, bars.cut_at, why)
    cli.main(["inspect", str(path)])
    assert f"cut at bar {bars.cut_at} (the file goes on" in capsys.readouterr().out


def test_a_song_past_the_bar_limit_says_so():
    bars = M.read_midi(SONGS / "blupi_music003.mid", max_bars=100).bars
    assert (bars.num_bars, bars.cut_at, bars.cut_why) == (100, 100, "symdiff reads at most 100 bars")


def test_range_messages_say_where_the_music_ends_and_what_can_be_chosen(found):
    bars = found["arr_sax_drops_out.mid"].bars  # 36 bars of 4/4, no pickup
    cases = {(1, 40): "bars 1-40: the music ends at bar 36 (36 bars of 4/4); choose bars 1-36",
             (37, 40): "bars 37-40: the music ends at bar 36 (36 bars of 4/4); choose bars within 1-36",
             (0, 4): "bars 0-4: this file has no pickup, so it has no bar 0 (bar 0 is a pickup, the short bar "
                     "before bar 1); its bars are 1-36",
             (9, 4): "bars 9-4: the last bar comes before the first"}
    for (first, last), message in cases.items():
        with pytest.raises(M.MelodyError) as err:
            bars.steps(first, last)
        assert str(err.value) == message
    pickup = found["openmsx_moo_redfarn.mid"].bars
    # bar 0 exists where there is a pickup; one found by its notes (a bar of rest before it) starts
    # at its first beat, so new bars never fill the rest before it
    assert pickup.onset_pickup == (12, M.STEPS_PER_BAR) and pickup.steps(0, 1) == (12, 2 * M.STEPS_PER_BAR)
    with pytest.raises(M.MelodyError, match="choose bars 70-72$"):
        pickup.steps(70, 75)
