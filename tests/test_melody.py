"""symdiff.melody: the token grid, MIDI reading and writing, chunks.

Expected values are worked out by hand from the grid (4 steps per quarter, token = pitch - 19,
1 = note-off, 0 = no event) and from the note times of the files, which are written here
with mido or are the real files music21 ships.
"""
from __future__ import annotations

import io

import mido
import numpy as np
import pytest
from conftest import colleague_bad_files, conductor, notes_track, write_midi
from note_seq import melodies_lib
from note_seq.melody_encoder_decoder import MelodyOneHotEncoding

from symdiff import melody as M


def tok(*pairs, length):
    """Tokens of `length` steps, 0 except {step: token} from (step, token) pairs."""
    out = np.zeros(length, dtype=np.uint8)
    for step, token in pairs:
        out[step] = token
    return out


# --- the token encoding ------------------------------------------------------------------

def test_token_constants_and_pitch_encoding():
    assert (M.NO_EVENT, M.NOTE_OFF, M.NUM_CLASSES, M.CHUNK_STEPS) == (0, 1, 90, 32)
    assert M.pitch_to_token(21) == 2
    assert M.pitch_to_token(60) == 41
    assert M.pitch_to_token(108) == 89
    assert M.tokens_pitches(np.array([0, 1, 2, 41, 89, 0], np.uint8)).tolist() == [21, 60, 108]


def test_encoding_matches_musicvae_one_hot_encoding():
    # MusicVAE's mel_2bar uses note_seq's MelodyOneHotEncoding(21, 109): 0 no event, 1 off.
    enc = MelodyOneHotEncoding(21, 109)
    events = [21, melodies_lib.MELODY_NO_EVENT, melodies_lib.MELODY_NOTE_OFF, 60, 108]
    assert [enc.encode_event(e) for e in events] == [2, 0, 1, 41, 89]
    assert enc.num_classes == M.NUM_CLASSES
    assert [M.pitch_to_token(p) for p in (21, 60, 108)] == [2, 41, 89]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 16), np.uint8), "1-D"),
    (np.array([0, 90], np.int64), "0..89"),
    (np.array([41, -1], np.int64), "0..89"),
])
def test_check_tokens_rejects(bad, message):
    with pytest.raises(M.MelodyError, match=message):
        M.check_tokens(bad)


def test_tokens_to_score_times():
    tokens = tok((0, 41), (4, 1), (8, 45), length=16)  # C4 a quarter, rest, E4 held to the end
    score = M.tokens_to_score(tokens, qpm=120, program=5)
    notes = [(n.pitch, n.start, n.end, n.program) for n in score.notes]
    assert notes == [(60, 0.0, 0.5, 5), (64, 1.0, 2.0, 5)]  # a step is 0.125 s at 120 qpm
    assert score.total_time == 2.0
    assert score.tempos == [(0.0, 120)] and score.meters == [(0.0, 4, 4)]


# --- tokens -> MIDI -> tokens ---------------------------------------------------------------

ROUND_TRIP = {
    # held notes across the bar line, a rest, repeated notes (each a fresh onset)
    "held_and_rest": tok((0, 41), (6, 45), (20, 1), (24, 48), (26, 48), (28, 48), length=32),
    "repeated_16ths": np.array([41] * 16 + [43, 1] * 8, np.uint8),
    "extremes": tok((0, 2), (2, 89), (4, 1), (12, 2), length=16),
    "held_to_the_end": tok((0, 60), length=32),
    "late_start_and_off": tok((40, 50), (47, 1), (50, 52), (63, 1), length=64),
    "legato_scale": np.array([v for p in range(41, 49) for v in (p, 0, 0, 0)], np.uint8),
}


@pytest.mark.parametrize("name", ROUND_TRIP)
@pytest.mark.parametrize("qpm", [120.0, 77.0])
def test_round_trip_through_a_midi_file(name, qpm, tmp_path):
    tokens = ROUND_TRIP[name]
    path = M.tokens_to_midi(tokens, tmp_path / f"{name}.mid", qpm=qpm)
    found = M.read_midi(path)
    assert len(found.candidates) == 1
    np.testing.assert_array_equal(found.chosen.tokens, tokens)
    # the same through bytes
    np.testing.assert_array_equal(M.read_midi(M.tokens_to_midi_bytes(tokens, qpm=qpm)).chosen.tokens, tokens)


def test_redundant_note_offs_are_normalised():
    # Only the first note-off after a note means something; the file cannot keep the rest.
    tokens = np.array([41, 41, 41, 41, 1, 1, 1, 1, 45] + [0] * 7, np.uint8)
    back = M.read_midi(M.tokens_to_midi_bytes(tokens)).chosen.tokens
    assert back.tolist() == [41, 41, 41, 41, 1, 0, 0, 0, 45] + [0] * 7


def test_written_file_keeps_tempo_program_and_meter(tmp_path):
    tokens = ROUND_TRIP["held_and_rest"]
    path = M.tokens_to_midi(tokens, tmp_path / "t.mid", qpm=90.0, program=40)
    mid = mido.MidiFile(path)
    msgs = [m for t in mid.tracks for m in t]
    tempos = [m.tempo for m in msgs if m.type == "set_tempo"]
    assert tempos and all(mido.tempo2bpm(t) == pytest.approx(90, abs=1e-3) for t in tempos)
    assert {m.program for m in msgs if m.type == "program_change"} == {40}
    assert [(m.numerator, m.denominator) for m in msgs if m.type == "time_signature"] == [(4, 4)]
    found = M.read_midi(path)
    assert found.qpm == pytest.approx(90.0, abs=1e-3)
    assert found.chosen.program == 40
    assert found.time_signature == (4, 4) and found.tempo_changes == 0
    # 32 steps at 90 qpm: 8 quarters = 5.333 s
    score = M.load_score(path)
    assert max(n.end for n in score.notes) == pytest.approx(32 * 60 / 90 / 4, abs=1e-3)


def test_real_candidates_round_trip(real_files):
    """Every line read from a real file comes back the same after writing it to MIDI."""
    checked = 0
    for path in real_files:
        if path.stat().st_size > 20_000:  # the big orchestral files add time, not cases
            continue
        found = M.read_midi(path)
        for c in found.candidates:
            back = M.read_midi(M.tokens_to_midi_bytes(c.tokens, qpm=found.qpm, program=c.program))
            assert len(back.candidates) == 1, (path.name, c.index)
            np.testing.assert_array_equal(back.chosen.tokens, c.tokens, err_msg=f"{path.name} {c.index}")
            checked += 1
    assert checked >= 40


# --- chunks and windows ------------------------------------------------------------------

def test_to_chunks_pads_the_last_chunk_and_from_chunks_inverts():
    tokens = np.arange(40, dtype=np.uint8) % 90
    chunks = M.to_chunks(tokens)
    assert chunks.shape == (2, 32) and chunks.dtype == np.uint8
    assert chunks[0].tolist() == list(range(32))
    assert chunks[1].tolist() == list(range(32, 40)) + [0] * 24
    assert M.from_chunks(chunks)[:40].tolist() == tokens.tolist()
    assert M.from_chunks(chunks).shape == (64,)
    assert M.to_chunks(np.zeros(64, np.uint8)).shape == (2, 32)
    assert M.to_chunks(np.zeros(0, np.uint8)).shape == (0, 32)


def test_silent_chunks():
    chunks = np.zeros((4, 32), np.uint8)
    chunks[1, 5] = 1  # only a note-off: silent
    chunks[2, 31] = 2  # a note on the last step (the lowest pitch): not silent
    chunks[3, 0] = 89
    assert M.silent_chunks(chunks).tolist() == [True, True, False, False]
    assert M.silent_chunks(chunks[2]).tolist() is False


def test_windows_blank_a_leading_note_off():
    # A note held over a bar line ends with a note-off in the next bar; a window starting
    # there sees "no event" instead, as MusicVAE's converter slices it. Later note-offs stay.
    tokens = tok((0, 41), (20, 1), (24, 43), (28, 1), (36, 45), (40, 1), length=48)
    w = M.windows(tokens)
    assert w.shape == (2, 32)
    assert w[0].tolist() == tokens[:32].tolist()
    assert w[1].tolist() == tok((8, 43), (12, 1), (20, 45), (24, 1), length=32).tolist()
    assert M.as_vae_input(tokens[16:48]).tolist() == w[1].tolist()
    assert M.as_vae_input(np.array([[1, 0, 1, 41, 1]], np.uint8)).tolist() == [[0, 0, 0, 41, 1]]
    assert M.as_vae_input(np.ones((1, 4), np.uint8)).tolist() == [[0, 0, 0, 0]]  # no note at all
    assert tokens[20] == 1  # the input is not changed


def test_windows_shapes_and_values():
    tokens = np.repeat(np.arange(5, dtype=np.uint8) + 2, 16)  # 5 bars, bar b filled with b+2
    w = M.windows(tokens)
    assert w.shape == (4, 32)
    assert [row[::16].tolist() for row in w] == [[2, 3], [3, 4], [4, 5], [5, 6]]
    assert [row[::16].tolist() for row in M.windows(tokens, hop_bars=2)] == [[2, 3], [4, 5]]
    w4 = M.windows(tokens, bars=4)
    assert w4.shape == (2, 64) and w4[1, ::16].tolist() == [3, 4, 5, 6]
    assert M.windows(tokens[:31]).shape == (0, 32)
    assert M.windows(tokens[:32]).shape == (1, 32)


# --- reading MIDI files written here --------------------------------------------------------

def read_tokens(path) -> np.ndarray:
    found = M.read_midi(path)
    assert len(found.candidates) == 1
    return found.chosen.tokens


def test_lowest_and_highest_pitch_tokens(tmp_path):
    path = write_midi(tmp_path / "x.mid", [conductor(), notes_track([(0, 4, 21), (4, 4, 108), (8, 2, 60)])])
    assert read_tokens(path).tolist() == [2, 0, 0, 0, 89, 0, 0, 0, 41, 0, 1] + [0] * 5


def test_polyphony_highest_note_wins_and_a_new_note_cuts(tmp_path):
    notes = [(0, 8, 60), (0, 8, 64), (0, 8, 67),  # a C major chord: G4 wins
             (4, 4, 55),                           # a lower note starts: it cuts the chord
             (8, 8, 62), (8, 2, 65)]               # F4 wins; its end ends the line (D4 is not resumed)
    found = M.read_midi(write_midi(tmp_path / "chords.mid", [conductor(), notes_track(notes)]))
    c = found.chosen
    assert c.tokens.tolist() == [48, 0, 0, 0, 36, 0, 0, 0, 46, 0, 1, 0, 0, 0, 0, 0]
    assert c.num_source_notes == 6
    assert c.polyphony == pytest.approx(2 / 3)  # onsets at steps 0, 4, 8; two had company


def test_real_file_polyphony(m21_midi):
    # test13.mid: two-note chords at 0, 1 and 2 s (120 qpm), single notes between.
    c = M.read_midi(m21_midi("test13.mid")).chosen
    assert c.tokens.tolist() == tok((0, 45), (8, 48), (16, 47), (24, 52), (32, 53), length=48).tolist()
    assert c.polyphony == pytest.approx(0.6)


def test_notes_outside_the_range_are_dropped(tmp_path):
    # As MusicVAE's converter does: notes outside 21..108 go before the monophonic reduction,
    # so an out-of-range top note of a chord does not hide the note under it.
    pitches = [12, 19, 112, 127, 21, 108, 20, 109]
    notes = [(4 * i, 4, p) for i, p in enumerate(pitches)] + [(32, 4, 118), (32, 4, 72)]
    found = M.read_midi(write_midi(tmp_path / "range.mid", [conductor(), notes_track(notes)]))
    c = found.chosen
    # bar 0 holds only dropped notes: the line starts there with a bar of rest
    assert c.tokens.tolist() == tok((16, 2), (20, 89), (24, 1), (32, 53), (36, 1), length=48).tolist()
    assert c.num_source_notes == 3 and c.polyphony == 0.0  # 21, 108 and the 72 under 118


def test_a_file_with_only_out_of_range_notes_has_no_melody(tmp_path):
    path = write_midi(tmp_path / "x.mid", [conductor(), notes_track([(0, 4, 10), (4, 4, 120), (8, 4, 127)])])
    with pytest.raises(M.MelodyError, match="no melody"):
        M.read_midi(path)


def test_pickup_starts_at_bar_zero_with_rests(tmp_path):
    path = write_midi(tmp_path / "pickup.mid", [conductor(), notes_track([(12, 4, 67), (16, 4, 72)])])
    assert read_tokens(path).tolist() == tok((12, 48), (16, 53), (20, 1), length=32).tolist()
    # a first note in bar 2 keeps its place: two bars of rest before it
    path = write_midi(tmp_path / "late.mid", [conductor(), notes_track([(36, 4, 60)])])
    assert read_tokens(path).tolist() == tok((36, 41), (40, 1), length=48).tolist()


def test_real_pickup_in_6_8(m21_midi):
    # test14.mid: 6/8 at 100 qpm, first note (A3) at 1.5 s = 2.5 quarters = step 10
    found = M.read_midi(m21_midi("test14.mid"))
    assert found.time_signature == (6, 8) and found.qpm == pytest.approx(100)
    t = found.chosen.tokens
    assert t[:10].tolist() == [0] * 10 and t[10] == M.pitch_to_token(57)


def test_triplets_snap_to_the_nearest_sixteenth(tmp_path):
    notes = [(0, 4 / 3, 60), (4 / 3, 4 / 3, 62), (8 / 3, 4 / 3, 64),  # 8th triplet: steps 0, 1.33, 2.67
             (4, 4, 65),
             (8, 8 / 3, 67), (8 + 8 / 3, 8 / 3, 69), (8 + 16 / 3, 8 / 3, 71),  # quarter triplet
             (16, 2 / 3, 72), (16 + 2 / 3, 2 / 3, 74), (16 + 4 / 3, 2 / 3, 76)]  # 16th triplet
    t = read_tokens(write_midi(tmp_path / "triplets.mid", [conductor(), notes_track(notes)]))
    assert t[:16].tolist() == [41, 43, 0, 45, 46, 0, 0, 0, 48, 0, 0, 50, 0, 52, 0, 0]
    # 16th triplet: 74 and 76 both snap to step 17; the higher one is kept
    assert t[16:20].tolist() == [53, 57, 1, 0]


def test_tempo_changes_do_not_move_the_grid(tmp_path):
    # a quarter note on every beat; tempo 120 -> 60 on beat 3 -> 200 in the middle of beat 5
    tempos = ((0, 120.0), (12, 60.0), (22, 200.0))
    path = write_midi(tmp_path / "tempo.mid", [conductor(tempos), notes_track([(4 * i, 4, 60 + i) for i in range(8)])])
    starts = [round(n.start, 3) for n in M.load_score(path).notes]
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.5, 3.5, 4.15, 4.45]  # uneven in seconds
    found = M.read_midi(path)
    assert found.qpm == pytest.approx(120) and found.tempo_changes == 2
    assert found.chosen.tokens.tolist() == [v for i in range(8) for v in (41 + i, 0, 0, 0)]


def test_a_first_tempo_after_the_start_does_not_move_the_grid(tmp_path):
    # no tempo at tick 0 (MIDI's default 120 applies), 60 bpm from beat 4
    late = [(16, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60)))]
    late = [(tick * (480 // 4), msg) for tick, msg in late]
    path = write_midi(tmp_path / "late.mid", [late, notes_track([(4 * i, 4, 60 + i) for i in range(8)])])
    starts = [round(n.start, 3) for n in M.load_score(path).notes]
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    found = M.read_midi(path)
    assert found.qpm == 120.0 and found.tempo_changes == 1
    assert found.chosen.tokens.tolist() == [v for i in range(8) for v in (41 + i, 0, 0, 0)]


def test_time_signatures_reported_and_grid_kept(tmp_path):
    sigs = ((0, 3, 4), (12, 4, 4))  # one bar of 3/4, then 4/4
    path = write_midi(tmp_path / "sig.mid",
                      [conductor(sigs=sigs), notes_track([(0, 12, 60), (12, 4, 62), (16, 4, 64)])])
    found = M.read_midi(path)
    assert found.time_signature == (3, 4) and found.time_signature_changes == 1
    assert found.chosen.tokens.tolist() == tok((0, 41), (12, 43), (16, 45), (20, 1), length=32).tolist()


def test_default_is_the_high_busy_line_whatever_its_program_and_skips_drums(tmp_path):
    melody = [(4 * i, 4, 48 + i % 5) for i in range(8)]  # piano, low
    violin = [(2 * i, 2, 76 + i % 7) for i in range(16)]  # program 40 (violin), high and busier
    drums = [(4 * i, 1, 36) for i in range(8)]
    path = write_midi(tmp_path / "band.mid", [
        conductor(),
        notes_track(violin, channel=1, program=40, name="Violin"),
        notes_track(melody, channel=0, program=0, name="Piano"),
        notes_track(drums, channel=9, program=None, name="Drums"),
    ])
    found = M.read_midi(path)
    assert sorted((c.program, c.name) for c in found.candidates) == [(0, "Piano"), (40, "Violin")]
    assert found.chosen.program == 40  # the high, busy violin: any program may carry the tune
    assert found.pick(None) is found.chosen
    other = next(c for c in found.candidates if c.program == 0)
    assert found.pick(other.index) is other
    with pytest.raises(M.MelodyError, match=r"no melody track 7 .*tracks: 0, 1"):
        found.pick(7)


# --- reading real files -------------------------------------------------------------------

def test_real_choir_file(m21_midi):
    # test12.mid: SATB, program 52 (choir), 100 qpm; 1.2 s = 2 quarters = 8 steps
    found = M.read_midi(m21_midi("test12.mid"))
    assert (found.qpm, found.time_signature, found.tempo_changes) == (100.0, (4, 4), 0)
    assert [c.name for c in found.candidates] == ["SOPRANO", "ALTO", "TENOR", "BASS"]
    assert {c.program for c in found.candidates} == {52}
    assert found.default == 0  # the top line
    soprano = found.candidates[0]
    assert soprano.tokens.tolist() == tok((0, 57), (8, 55), (16, 53), length=32).tolist()  # E5 D5 C5
    assert found.candidates[3].tokens.tolist() == tok((0, 41), (8, 36), (16, 29), length=32).tolist()
    assert soprano.summary() == {"index": 0, "instrument": 0, "program": 52, "instrument_name": "Choir Aahs",
                                 "name": "SOPRANO", "bars": 2, "notes": 3, "pitch_range": (72, 76),
                                 "polyphony": 0.0}


def test_real_one_pitch_file(m21_midi):
    # test01.mid: middle C; notes at 0, 0.125, 0.25-0.531, 0.625 s... (120 qpm)
    c = M.read_midi(m21_midi("test01.mid")).chosen
    assert c.tokens[:8].tolist() == [41, 41, 41, 0, 1, 41, 0, 41]
    assert (c.num_bars, c.num_notes, c.pitch_range) == (2, 18, (60, 60))


def test_real_multitrack_and_type0_give_the_same_candidates(m21_midi):
    src = m21_midi("k525short.mid")  # type 1, five string tracks, program 48
    found = M.read_midi(src)
    assert len(found.candidates) == 5 and {c.program for c in found.candidates} == {48}
    assert found.default == 0  # no melody program: the busy, monophonic, high first violin
    assert found.qpm == pytest.approx(100, abs=1e-3) and found.tempo_changes == 2
    mid = mido.MidiFile(src)
    merged = mido.MidiFile(type=0, ticks_per_beat=mid.ticks_per_beat)
    merged.tracks.append(mido.merge_tracks(mid.tracks))
    buf = io.BytesIO()
    merged.save(file=buf)
    found0 = M.read_midi(buf.getvalue())  # one track, five channels
    assert len(found0.candidates) == 5 and found0.default == 0
    for a, b in zip(found.candidates, found0.candidates, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)


def test_real_pickup_and_meter_change(m21_midi):
    found = M.read_midi(m21_midi("test02.mid"))  # SATB, a 1/4 pickup bar, then 4/4
    assert found.time_signature == (1, 4) and found.time_signature_changes == 1
    assert len(found.candidates) == 4 and found.default == 0
    assert [c.num_bars for c in found.candidates] == [9] * 4


def test_max_bars_cuts(m21_midi):
    full = M.read_midi(m21_midi("test03.mid"))
    cut = M.read_midi(m21_midi("test03.mid"), max_bars=10)
    assert full.chosen.num_bars == 97
    for a, b in zip(full.candidates, cut.candidates, strict=True):
        assert b.num_bars == 10
        np.testing.assert_array_equal(b.tokens, a.tokens[:160])


@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature change events:RuntimeWarning")
def test_every_real_file_reads(real_files):
    for path in real_files:
        found = M.read_midi(path)
        assert found.candidates, path.name
        assert 0 <= found.default < len(found.candidates)
        assert found.qpm > 0 and found.time_signature[0] > 0
        for c in found.candidates:
            assert c.tokens.dtype == np.uint8 and len(c.tokens) % 16 == 0, path.name
            assert c.tokens.max() < 90 and c.num_notes > 0 and 0 < c.num_bars <= M.MAX_BARS
            lo, hi = c.pitch_range
            assert 21 <= lo <= hi <= 108
            assert 0.0 <= c.polyphony <= 1.0


# --- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind, message, error", [
    ("empty", "the file is empty", M.UnreadableMidiError),
    ("not_midi", "not a MIDI file", M.UnreadableMidiError),
    ("corrupt", "corrupt MIDI file", M.UnreadableMidiError),
    ("drums_only", "only drums", M.NoMelodyError),
    ("no_notes", "no notes", M.NoMelodyError),
])
def test_bad_files_raise_a_clear_melody_error(bad_midi, kind, message, error):
    """One message, and a class that says what to ask for instead: another file (unreadable), or
    a file with a melody in it."""
    with pytest.raises(error, match=message):
        M.read_midi(bad_midi[kind])
    if kind in ("empty", "not_midi", "corrupt"):  # the same from bytes
        with pytest.raises(error, match=message):
            M.read_midi(bad_midi[kind].read_bytes())


def test_missing_file(tmp_path):
    with pytest.raises(M.UnreadableMidiError, match="no such file"):
        M.read_midi(tmp_path / "nope.mid")
    with pytest.raises(M.MelodyError, match="no such file"):
        M.read_midi(tmp_path)  # a folder is not a file


def test_too_large_file(tmp_path):
    path = tmp_path / "huge.mid"
    with open(path, "wb") as f:
        f.write(b"MThd")
        f.truncate(M.MAX_FILE_BYTES + 1)  # sparse: no 16 MB written
    with pytest.raises(M.MelodyError, match="huge.mid: file is larger than 16 MB"):
        M.read_midi(path)


def test_every_truncation_of_a_real_file_is_a_melody_error(m21_midi):
    data = m21_midi("test06.mid").read_bytes()
    for n in range(0, len(data) - 1, 7):
        with pytest.raises(M.MelodyError):
            M.read_midi(data[:n])


@pytest.mark.skipif(not colleague_bad_files(), reason="tests/data/midi has no bad files")
def test_the_bad_files_in_tests_data_raise_melody_error():
    for path in colleague_bad_files():
        with pytest.raises(M.MelodyError):
            M.read_midi(path)
