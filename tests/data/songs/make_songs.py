"""Re-create the three arranged songs of the labelled song set (`labels.json` here), the cases
no real file of the set has: a tune that changes key (G major, then F major from bar 17), a lead
sheet with a one-beat pickup and a final cadence, and a lead line with a long rest (a saxophone
that drops out for 8 bars while the band plays on). The tunes are public-domain works from
music21's corpus, arranged for a small band with mido (music21 10.5.1 and mido 1.3 made the
committed files, which are the reference).

    python tests/data/songs/make_songs.py      # writes next to this file
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import mido
from music21 import corpus

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "melody_set"))
from make_melody_set import TPB, harmony_of, track  # noqa: E402

Notes = list[tuple[float, float, list[int]]]  # (start beat, end beat, pitches)


def shift(notes: Notes, beats: float, semitones: int = 0, keep=lambda t0: True) -> Notes:
    return [(t0 + beats, t1 + beats, [p + semitones for p in ps]) for t0, t1, ps in notes if keep(t0)]


def drums(start: float, end: float) -> Notes:
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat in eighths."""
    out: Notes = []
    t = start
    while t < end - 1e-6:
        beat = round(t * 2) / 2
        if beat == int(beat):
            out.append((t, t + 0.25, [36 if int(beat) % 2 == 0 else 38]))
        out.append((t, t + 0.25, [42]))
        t += 0.5
    return out


def song(meta: list[mido.MetaMessage], parts: list[mido.MidiTrack]) -> mido.MidiFile:
    f = mido.MidiFile(ticks_per_beat=TPB)
    head = mido.MidiTrack()
    now = 0
    for m in sorted(meta, key=lambda m: m.time):  # `time` holds the absolute tick here
        head.append(m.copy(time=m.time - now))
        now = m.time
    f.tracks.append(head)
    f.tracks.extend(parts)
    return f


def key_change() -> mido.MidiFile:
    """Bach's chorale BWV 263 (G major, 12 bars) for trumpet, keys, bass and drums: a 4-bar intro,
    the chorale in bars 5-16, then again a tone lower, in F major, in bars 17-28."""
    tune, inner, bass = harmony_of(corpus.parse("bach/bwv263"))
    first, second = 16.0, 64.0
    lead = shift(tune, first) + shift(tune, second, -2)
    keys = [(0.0, first, [55, 59, 62])] + shift(inner, first) + shift(inner, second, -2)
    low = [(0.0, first, [43])] + shift(bass, first) + shift(bass, second, -2)
    end = max(t1 for _, t1, _ in lead)
    meta = [mido.MetaMessage("track_name", name="Chorale in G, then in F", time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96), time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.MetaMessage("key_signature", key="G", time=0),
            mido.MetaMessage("key_signature", key="F", time=round(second * TPB))]
    return song(meta, [track("Trumpet", 56, 0, lead, 100), track("Keys", 4, 1, keys, 70),
                       track("Bass", 33, 2, low, 90), track("Drums", 0, 9, drums(0.0, end), 80)])


def lead_sheet() -> mido.MidiFile:
    """The Nottingham reel "Little Czech Number" (A minor) as a lead sheet: melody, its chord
    symbols realised and a bass, on pianos; a one-beat pickup written as a 1/4 bar (bar 0), then
    17 bars of 4/4 ending on the cadence E7 - Am with the tune on A."""
    tune, chords, bass = harmony_of(corpus.parse("nottingham-dataset/reelsa-c.abc").scores[1])
    meta = [mido.MetaMessage("track_name", name="Little Czech Number", time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(110), time=0),
            mido.MetaMessage("time_signature", numerator=1, denominator=4, time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=TPB),
            mido.MetaMessage("key_signature", key="Am", time=0)]
    return song(meta, [track("Melody", 0, 0, tune, 100), track("Chords", 0, 1, chords, 70),
                       track("Bass", 32, 2, bass, 90)])


def sax_drops_out() -> mido.MidiFile:
    """The Nottingham reel "The Cuckoo's Nest" (D major) played twice by alto sax, guitar chords,
    bass and drums after a 4-bar intro: the sax's pickup on beat 4 of bar 4, the tune in bars 5-20
    and 21-36, and the sax silent in bars 13-20 (back with the pickup on beat 4 of bar 20) while the
    band plays on."""
    tune, chords, bass = harmony_of(corpus.parse("nottingham-dataset/reelsa-c.abc").scores[0])
    first, second = 16.0 - 1.0, 16.0 - 1.0 + 64.0  # the tune is a pickup and 16 bars less a beat
    rest = (first + 1.0 + 8 * 4.0, second)  # bars 13-20, up to the second pickup
    sax = shift(tune, first, keep=lambda t0: not rest[0] <= t0 + first < rest[1]) + shift(tune, second)
    d_major = [(0.0, 15.0, [57, 62, 66])]
    guitar = d_major + shift(chords, first) + shift(chords, second)
    low = [(0.0, 15.0, [38])] + shift(bass, first) + shift(bass, second)
    end = max(t1 for _, t1, _ in guitar)
    meta = [mido.MetaMessage("track_name", name="The Cuckoo's Nest", time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.MetaMessage("key_signature", key="D", time=0)]
    return song(meta, [track("Alto Sax", 65, 0, sax, 100), track("Guitar", 25, 1, guitar, 70),
                       track("Bass", 33, 2, low, 90), track("Drums", 0, 9, drums(0.0, end), 80)])


SONGS = {"arr_chorale_g_then_f.mid": key_change, "arr_lead_sheet_pickup_cadence.mid": lead_sheet,
         "arr_sax_drops_out.mid": sax_drops_out}


def main() -> None:
    warnings.filterwarnings("ignore")
    for name, make in SONGS.items():
        make().save(HERE / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
