"""The whole arrangement back (`symdiff.arrangement`) and no spill across the range's edges
(`generate.splice_bars`), on real multi-track files and the shipped model."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from symdiff import arrangement, melody
from symdiff.cli import main
from symdiff.generate import sounding

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
ALOHA = REPO / "assets" / "examples" / "liliuokalani_aloha_oe_voice_piano.mid"  # conductor + 7 tracks
BAR = melody.STEPS_PER_BAR


def absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    tick, out = 0, []
    for msg in track:
        tick += msg.time
        out.append((tick, msg.copy(time=0)))
    return out


def notes_of(events: list, channel: int) -> list[tuple[int, int, int, int]]:
    """(start, end, pitch, velocity) of a channel's notes, paired first in, first out."""
    open_, out = {}, []
    for tick, msg in events:
        if getattr(msg, "channel", None) != channel or msg.type not in ("note_on", "note_off"):
            continue
        if msg.type == "note_on" and msg.velocity > 0:
            open_.setdefault(msg.note, []).append((tick, msg.velocity))
        elif open_.get(msg.note):
            start, vel = open_[msg.note].pop(0)
            out.append((start, tick, msg.note, vel))
    return sorted(out)


def top_and_under(notes: list, tpq: int) -> tuple[list, list]:
    """A chord part's notes split as a musician reads them: the highest of each 16th's onsets
    (its top line), and the notes under it."""
    top: dict[int, int] = {}
    for s, _, p, _ in notes:
        top[round(s / tpq)] = max(top.get(round(s / tpq), p), p)
    return [n for n in notes if n[2] == top[round(n[0] / tpq)]], [n for n in notes if n[2] < top[round(n[0] / tpq)]]


def check_only_range_changed(src: Path, out: Path, track: int, channel: int, lo: int, hi: int,
                             tokens: np.ndarray, chords: bool = False) -> None:
    """Everything but `channel`'s notes in `track` is message for message as in `src`; those
    notes are the source's outside the range (one sounding into it cut at its start) and the
    tokens' notes inside it, at the median velocity of the neighbours. With `chords`, only the
    top line is the melody replaced: the notes under it stay as they were, but for those starting
    in the range at or above a new note then sounding, which keep their pitch class just under it."""
    a, b = mido.MidiFile(src), mido.MidiFile(out)
    assert (b.type, b.ticks_per_beat, len(b.tracks)) == (a.type, a.ticks_per_beat, len(a.tracks))
    for t, (ta, tb) in enumerate(zip(a.tracks, b.tracks, strict=True)):
        if t != track:
            assert list(ta) == list(tb), f"track {t} changed"
    ea, eb = absolute(a.tracks[track]), absolute(b.tracks[track])

    def others(events: list) -> list:
        return [(tick, m) for tick, m in events if m.type != "end_of_track"
                and not (m.type in ("note_on", "note_off") and m.channel == channel)]

    assert others(ea) == others(eb)  # names, programs, controllers, other channels: same ticks, same order
    tpq = a.ticks_per_beat // melody.STEPS_PER_QUARTER
    t_lo, t_hi = lo * tpq, hi * tpq
    old, new = notes_of(ea, channel), notes_of(eb, channel)
    want = [(s * tpq, e * tpq, p) for s, e, p in arrangement.token_notes(tokens, lo, hi)]
    if chords:  # the harmony stays, but for a note the new line plays at the same time (one channel)
        top, under = top_and_under(old, tpq)
        harmony = [n for n in under if not any(p == n[2] and a < n[1] and b > n[0] for a, b, p in want)]

        def voiced(n: tuple) -> tuple:
            over = [p for a, b, p in want if a <= n[0] < b]
            if not t_lo <= n[0] < t_hi or not over or n[2] < min(over):
                return n
            return (n[0], n[1], max(p for p in range(min(over)) if p % 12 == n[2] % 12), n[3])
        harmony = [voiced(n) for n in harmony]
        assert len(harmony) > len(under) / 2 and set(harmony) <= set(new)
        top_of = {}  # the file heard: the new line is the top wherever it plays
        for a, _, p, _ in new:
            top_of[a] = max(top_of.get(a, p), p)
        assert all(top_of[a] == p for a, _, p in want)
        old, new = [n for n in old if n not in harmony], [n for n in new if n not in harmony]
    kept = [(s, min(e, t_lo) if s < t_lo else e, p, v) for s, e, p, v in old if not t_lo <= s < t_hi]
    made = [n for n in new if t_lo <= n[0] < t_hi]
    assert sorted(n for n in new if not t_lo <= n[0] < t_hi) == sorted(kept)
    assert [(s, e, p) for s, e, p, _ in made] == want and made
    assert all(e <= t_hi for _, e, _, _ in made)  # no spill into the user's bars
    near = [v for s, _, _, v in old if t_lo - 4 * BAR * tpq <= s < t_hi + 4 * BAR * tpq] or [v for *_, v in old]
    assert {v for *_, v in made} == {int(np.median(near))}


@pytest.mark.parametrize("track, bars", [(0, (4, 12)), (5, (8, 13))])  # the soprano; the piano's chords
def test_infill_changes_only_the_chosen_track_in_the_range(pipe, tmp_path, track, bars):
    found = melody.read_midi(ALOHA)
    line = found.pick(track)
    res = pipe.infill(line.tokens, tuple(b * BAR for b in bars), steps=5, seed=7)
    lo, hi = bars[0] * BAR, bars[1] * BAR
    remarks = arrangement.write_arrangement(ALOHA, line, res.tokens[0], (lo, hi), tmp_path / "out.mid")
    where = arrangement._find_line(mido.MidiFile(ALOHA), ALOHA.read_bytes(), line)
    assert where == ((1, 0) if track == 0 else (6, 4))  # track 6 of the file shares channel 4 with track 7
    check_only_range_changed(ALOHA, tmp_path / "out.mid", *where, lo, hi, res.tokens[0], chords=line.chordal)
    back = melody.read_midi(tmp_path / "out.mid")
    assert [c.name for c in back.candidates] == [c.name for c in found.candidates]
    if track == 0:
        assert remarks == []
        np.testing.assert_array_equal(back.pick(track).tokens, res.tokens[0])
    else:
        assert line.chordal and len(remarks) == 1
        assert remarks[0].startswith("track 5 plays chords: the new bars replace its top line, and the ")


def test_cli_infill_and_extend_give_the_whole_file_back(tmp_path, capsys):
    src = REPO / "tests" / "data" / "midi" / "schubert_lindenbaum_3-4_triplets.mid"  # voice + piano, 3/4
    assert main(["infill", str(src), "--bars", "9-12", "--steps", "5", "--seed", "1", "--out",
                 str(tmp_path / "i.mid"), "--quiet"]) == 0
    assert "your file with only these bars new" in capsys.readouterr().out
    a, b = mido.MidiFile(src), mido.MidiFile(tmp_path / "i.mid")
    meta = lambda f: [(m.type, getattr(m, "tempo", None), getattr(m, "numerator", None), getattr(m, "key", None))
                      for t in f.tracks for m in t if m.is_meta]  # noqa: E731
    assert meta(a) == meta(b)
    assert sum(list(x) != list(y) for x, y in zip(a.tracks, b.tracks, strict=True)) == 1
    piano = REPO / "tests" / "data" / "midi" / "joplin_maple_leaf_rag_2-4_piano.mid"
    assert main(["extend", str(piano), "--bars", "4", "--steps", "5", "--seed", "1", "--out",
                 str(tmp_path / "e.mid"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "note: track 0 plays chords: the new bars replace its top line" in out  # said before and after
    assert "note: track 0 plays chords; its top line is rewritten" in out and "added bars 130-133 (2/4)" in out
    found, longer = melody.read_midi(piano), melody.read_midi(tmp_path / "e.mid")
    assert found.bars.num_bars < longer.bars.num_bars <= found.bars.num_bars + 4
    assert all(np.array_equal(x.tokens, y.tokens)
               for x, y in zip(found.candidates[1:], longer.candidates[1:], strict=True))


def test_type0_file_keeps_the_other_channels(pipe, tmp_path, m21_midi):
    src = m21_midi("k525short.mid")  # five string parts; merged to one track with five channels
    mid = mido.MidiFile(src)
    merged = mido.MidiFile(type=0, ticks_per_beat=mid.ticks_per_beat)
    merged.tracks.append(mido.merge_tracks(mid.tracks))
    merged.save(tmp_path / "type0.mid")
    found = melody.read_midi(tmp_path / "type0.mid")
    line = found.chosen
    res = pipe.infill(line.tokens, (2 * BAR, 4 * BAR), steps=5, seed=3)
    arrangement.write_arrangement(tmp_path / "type0.mid", line, res.tokens[0], (2 * BAR, 4 * BAR), tmp_path / "o.mid")
    track, channel = arrangement._find_line(merged, (tmp_path / "type0.mid").read_bytes(), line)
    check_only_range_changed(tmp_path / "type0.mid", tmp_path / "o.mid", track, channel, 2 * BAR, 4 * BAR,
                             res.tokens[0])


def rests_after(tokens: np.ndarray, length: int = 2) -> list[tuple[int, int]]:
    """Bar ranges of `length` bars after which the melody is silent (no note sounding, no onset)."""
    bars = len(tokens) // BAR
    return [(b, b + length) for b in range(1, bars - length)
            if tokens[(b + length) * BAR] == melody.NO_EVENT and not sounding(tokens, (b + length) * BAR)]


def test_no_generated_note_sounds_past_the_range_nor_a_users_note_into_it(pipe, tmp_path):
    """Over many seeds and real files, ranges followed by a rest: the last new note ends at the
    range's end, in the tokens and in the written file, and the user's note sounding into the
    range ends at its start."""
    midi = REPO / "tests" / "data" / "midi"
    files = [ALOHA, midi / "schubert_lindenbaum_3-4_triplets.mid", midi / "m21_test09_piano_6-8_tempo_changes.mid",
             midi.parent / "melody_set" / "m21_handel_lascia_chio_pianga.mid",
             midi.parent / "melody_set" / "m21_mozart_k155_mvt2.mid"]
    cut = 0
    for src in files:
        line = melody.read_midi(src).chosen
        ranges = rests_after(line.tokens)
        assert len(ranges) >= 2, src.name
        for seed in range(8):
            bars = ranges[seed * len(ranges) // 8]
            lo, hi = bars[0] * BAR, bars[1] * BAR
            out = pipe.infill(line.tokens, tuple(b * BAR for b in bars), steps=4, seed=seed).tokens[0]
            assert out[hi] != melody.NO_EVENT or not sounding(out, hi), (src.name, seed)
            assert out[lo] != melody.NO_EVENT or not sounding(out, lo), (src.name, seed)
            assert np.array_equal(out[hi + 1 :], line.tokens[hi + 1 :]) and np.array_equal(out[:lo], line.tokens[:lo])
            cut += int(out[hi] == melody.NOTE_OFF)
            if seed == 0:
                arrangement.write_arrangement(src, line, out, (lo, hi), tmp_path / "o.mid")
                where = arrangement._find_line(mido.MidiFile(src), src.read_bytes(), line)
                check_only_range_changed(src, tmp_path / "o.mid", *where, lo, hi, out, chords=line.chordal)
    assert cut >= 3  # the model did hold notes to the range's end, and they were cut there
