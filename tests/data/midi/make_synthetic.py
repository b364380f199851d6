"""Write the few synthetic test MIDI files: cases no real file in this folder covers.

    python tests/data/midi/make_synthetic.py   # needs mido; writes synthetic/ and bad/ here

Every file is deterministic (no randomness), so re-running gives the same bytes.
- syn_drums_and_melody.mid: type 1; a piano melody (program 0), a bass line (program 33,
  outside MusicVAE's melody programs 0..31) and a drum kit on channel 10.
- syn_drums_only.mid: one drum track, no pitched notes.
- syn_out_of_range.mid: a melody with notes below 21 and above 108, some of them the top
  note of a chord (MusicVAE drops notes outside 21..108 before it extracts melodies).
- syn_tempo_change_mid_bar.mid: 4/4 with a tempo change on beat 3 of bar 3, under a
  sounding note, and a 3/4 bar (time-signature changes 4/4 -> 3/4 -> 4/4).
- syn_gaps_long_melody.mid: silences of exactly 15 and 16 sixteenths between a note-off
  and the next onset, a 2-bar rest, and a 120-bar stretch without gaps whose bars all
  differ (MusicVAE's `cat-mel_2bar_big` cuts melodies at 100 bars).
- corrupt_truncated.mid: the first 600 bytes of m21_test07_type0_melody_fast.mid.
- empty.mid: zero bytes.  not_midi.mid: a text file.
"""
from __future__ import annotations

from pathlib import Path

import mido

HERE = Path(__file__).resolve().parent
SYN = HERE / "synthetic"  # kept apart from the real files at the top level
BAD = HERE / "bad"  # files that must be rejected
TPB = 480
SIXTEENTH = TPB // 4


def track_from_notes(notes, channel=0, program=None, name=None, meta=()):
    """notes: (start_16th, length_16ths, pitch) -> a mido track (absolute -> delta times)."""
    events = list(meta)  # (tick, message)
    if name:
        events.append((0, mido.MetaMessage("track_name", name=name)))
    if program is not None:
        events.append((0, mido.Message("program_change", channel=channel, program=program)))
    for start, length, pitch in notes:
        on, off = start * SIXTEENTH, (start + length) * SIXTEENTH
        events.append((on, mido.Message("note_on", channel=channel, note=pitch, velocity=90)))
        events.append((off, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    # offs before ons at the same tick, metas first
    order = lambda e: (e[0], 0 if e[1].is_meta else 1 if e[1].type == "note_off" else 2)
    track, now = mido.MidiTrack(), 0
    for tick, msg in sorted(events, key=order):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def conductor(tempos=((0, 120),), sigs=((0, 4, 4),)):
    meta = [(t * SIXTEENTH, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(b))) for t, b in tempos]
    meta += [(t * SIXTEENTH, mido.MetaMessage("time_signature", numerator=n, denominator=d))
             for t, n, d in sigs]
    return track_from_notes([], meta=meta)


def save(name, tracks, type_=1):
    mid = mido.MidiFile(type=type_, ticks_per_beat=TPB)
    mid.tracks.extend(tracks)
    SYN.mkdir(exist_ok=True)
    mid.save(SYN / name)


SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def tune(bars, offset=0, numbered=False):
    """A plain 4/4 tune: eighths and quarters walking the C major scale. `numbered`: the
    first two notes of each bar spell the bar's number, so that no two bars are alike."""
    notes, t = [], offset
    for bar in range(bars):
        rhythm = [2, 2, 4, 2, 2, 4] if bar % 2 == 0 else [4, 4, 2, 2, 4]
        for i, length in enumerate(rhythm):
            pitch = SCALE[(bar + 3 * i) % len(SCALE)]
            if numbered and i < 2:
                pitch = 40 + (bar % 40 if i == 0 else bar // 40)
            notes.append((t, length, pitch))
            t += length
    return notes


def drums(bars):
    hits = []
    for bar in range(bars):
        for beat in range(4):
            hits.append((bar * 16 + beat * 4, 1, 36 if beat % 2 == 0 else 38))
            hits.append((bar * 16 + beat * 4 + 2, 1, 42))
    return hits


def main():
    save("syn_drums_and_melody.mid", [
        conductor(),
        track_from_notes(tune(8), channel=0, program=0, name="Piano melody"),
        track_from_notes([(b * 16 + q * 4, 4, 36 + (b % 4) * 2) for b in range(8) for q in range(4)],
                         channel=1, program=33, name="Bass"),
        track_from_notes(drums(8), channel=9, name="Drums"),
    ])
    save("syn_drums_only.mid", [conductor(), track_from_notes(drums(4), channel=9, name="Drums")])

    low_high = [(0, 4, 60), (4, 4, 19), (8, 4, 112), (12, 4, 64),   # bar 1: in, low, high, in
                (16, 4, 118), (16, 4, 72), (20, 4, 76), (24, 2, 12), (26, 2, 67), (28, 4, 21),
                (32, 4, 108), (36, 4, 109), (36, 4, 71), (40, 8, 20), (48, 8, 65),
                (64, 4, 110), (68, 4, 62), (72, 8, 127), (80, 16, 60)]
    save("syn_out_of_range.mid", [conductor(), track_from_notes(low_high, program=0, name="Range")])

    # 4/4 bars 1-2, tempo change on beat 3 of bar 3, a 3/4 bar (bar 5), then 4/4 again.
    # (bar 3 ends with a half note on step 36..44, sounding across the tempo change at 40)
    notes = [n for n in tune(4) if not 36 <= n[0] < 44] + [(36, 8, 74)]
    notes += [(64 + i * 2, 2, SCALE[i % 8]) for i in range(6)] + tune(4, offset=76)
    save("syn_tempo_change_mid_bar.mid", [
        conductor(tempos=((0, 120), (40, 90)), sigs=((0, 4, 4), (64, 3, 4), (76, 4, 4))),
        track_from_notes(notes, program=0, name="Melody"),
    ])

    gaps = [(0, 4, 60), (4, 4, 64), (8, 4, 67), (12, 4, 72),  # bar 1
            (16, 1, 71), (32, 2, 69),                        # off at 17, next on at 32: 15 steps
            (34, 2, 67), (52, 4, 65),                        # off at 36, next on at 52: 16 steps
            (56, 8, 64),                                     # ends at 64 (a bar line)
            (96, 4, 62), (100, 4, 60)]                       # after a 2-bar rest
    long = tune(120, offset=128, numbered=True)
    save("syn_gaps_long_melody.mid", [conductor(), track_from_notes(gaps + long, program=0, name="Gaps")])

    src = (HERE / "m21_test07_type0_melody_fast.mid").read_bytes()
    BAD.mkdir(exist_ok=True)
    (BAD / "corrupt_truncated.mid").write_bytes(src[:600])
    (BAD / "empty.mid").write_bytes(b"")
    (BAD / "not_midi.mid").write_text("This is a text file, not a MIDI file.\n")


if __name__ == "__main__":
    main()
