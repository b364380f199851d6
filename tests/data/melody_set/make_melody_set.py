"""Re-create the multi-track MIDI files of the melody-choice test set (`tests/data/melody_labels.json`).

Two kinds, both from public-domain works in music21's corpus (music21 10.5.1 made the committed
files; what music21 writes can change between versions, so the committed files are the reference):
- `m21_*.mid`: the corpus score written as it is by `score.write('midi')` (part names and
  instruments kept): chorales, string quartets, songs with voice and piano, concertante pieces.
- `band_*.mid`: a tune re-scored as a small band would play it, written with mido: the tune on
  a lead instrument, the harmony (the tune's own chord symbols, or the chorale's alto, tenor
  and bass) as a chord or an arpeggio track and a bass track, a drum track in some. These are
  the arrangements where "programs 0..31 first" loses the tune (a piccolo, a saxophone, a
  square lead against a guitar, piano or electric-piano accompaniment).

    python tests/data/melody_set/make_melody_set.py      # writes next to this file
"""
from __future__ import annotations

import warnings
from pathlib import Path

import mido
from music21 import corpus, harmony

HERE = Path(__file__).resolve().parent
TPB = 480

RENDERED = {
    "m21_bach_bwv10.7.mid": "bach/bwv10.7",
    "m21_bach_bwv101.7.mid": "bach/bwv101.7",
    "m21_bach_bwv102.7.mid": "bach/bwv102.7",
    "m21_bach_bwv103.6.mid": "bach/bwv103.6",
    "m21_bach_bwv104.6.mid": "bach/bwv104.6",
    "m21_bach_bwv11.6.mid": "bach/bwv11.6",
    "m21_bach_bwv110.7.mid": "bach/bwv110.7",
    "m21_haydn_op1no1_mvt2.mid": "haydn/opus1no1/movement2",
    "m21_haydn_op1no1_mvt4.mid": "haydn/opus1no1/movement4",
    "m21_mozart_k155_mvt2.mid": "mozart/k155/movement2",
    "m21_mozart_k156_mvt4.mid": "mozart/k156/movement4",
    "m21_mozart_k80_mvt3.mid": "mozart/k80/movement3",
    "m21_corelli_op3no1_grave.mid": "corelli/opus3no1/1grave",
    "m21_johnson_lift_every_voice.mid": "johnson_j_r/lift_every_voice",
    "m21_schumann_op48no2.mid": "schumann_robert/opus48no2",
    "m21_handel_lascia_chio_pianga.mid": "handel/rinaldo/Lascia_chio_pianga",
    "m21_beach_prayer_of_a_tired_child.mid": "beach/prayer_of_a_tired_child",
    "m21_verdi_la_donna_e_mobile.mid": "verdi/laDonnaEMobile",
    "m21_schumann_clara_op17_mvt3.mid": "schumann_clara/opus17/movement3",
}

# name: (source, index of the score in an opus or None, style of the harmony track,
#        (lead program, name), (harmony program, name), (bass program, name), drums)
BANDS = {
    "band_cuckoos_nest.mid": ("nottingham-dataset/reelsa-c.abc", 0, "block",
                              (72, "Piccolo"), (24, "Guitar"), (32, "Bass"), True),
    "band_little_czech_number.mid": ("nottingham-dataset/reelsa-c.abc", 1, "arpeggio",
                                     (65, ""), (0, ""), (33, ""), False),
    "band_alexanders_ragtime.mid": ("leadSheet/berlinAlexandersRagtime", None, "block",
                                    (80, "Melody 1"), (4, "Acc"), (33, "Bass"), True),
    "band_foster_brown_hair.mid": ("leadSheet/fosterBrownHair", None, "arpeggio",
                                   (73, "Track 1"), (25, "Track 2"), (32, "Track 3"), False),
    "band_bach_bwv113.8.mid": ("bach/bwv113.8", None, "block",
                               (56, "Trumpet"), (48, "Strings"), (43, "Contrabass"), False),
    "band_bach_bwv114.7.mid": ("bach/bwv114.7", None, "arpeggio",
                               (71, ""), (0, ""), (32, ""), True),
    "band_bach_bwv115.6.mid": ("bach/bwv115.6", None, "block",
                               (68, "Oboe"), (19, "Organ"), (35, "Fretless"), False),
}


def harmony_of(score) -> tuple[list, list, list]:
    """(tune notes, chords, bass notes) as (start beat, end beat, pitches) of a lead sheet
    (its chord symbols, each held to the next) or of a chorale (soprano; alto + tenor; bass)."""
    flat = score.flatten()
    symbols = list(flat.getElementsByClass(harmony.ChordSymbol))
    end = float(flat.highestTime)
    if symbols:
        tune = [(float(n.offset), float(n.offset + n.quarterLength), [p.midi for p in n.pitches])
                for n in flat.notes if not isinstance(n, harmony.ChordSymbol)]
        chords, bass = [], []
        for a, b in zip(symbols, symbols[1:] + [None], strict=True):
            t0, t1 = float(a.offset), float(b.offset) if b is not None else end
            if t1 <= t0:
                continue
            pcs = sorted({p.midi % 12 for p in a.pitches})
            chords.append((t0, t1, [55 + (pc - 55) % 12 for pc in pcs]))  # closed, from G3 up
            bass.append((t0, t1, [36 + a.root().midi % 12]))
        return [n for n in tune if n[2]], chords, bass
    parts = [[(float(n.offset), float(n.offset + n.quarterLength), [p.midi for p in n.pitches])
              for n in p.flatten().notes] for p in score.parts]
    inner = sorted(parts[1] + parts[2])
    return parts[0], inner, parts[3]


def arpeggiate(chords: list) -> list:
    """Chords -> an Alberti-like line in eighths (low, high, middle, high), the pattern an
    accompanist repeats bar after bar."""
    out = []
    for t0, t1, pitches in chords:
        p = sorted(set(pitches)) or [60]
        cycle = [p[0], p[-1], p[len(p) // 2], p[-1]]
        t, i = t0, 0
        while t < t1 - 1e-6:
            out.append((t, min(t + 0.5, t1), [cycle[i % 4]]))
            t, i = t + 0.5, i + 1
    return out


def track(name: str, program: int, channel: int, notes: list, velocity: int) -> mido.MidiTrack:
    events = []
    for t0, t1, pitches in notes:
        for p in pitches:
            events.append((round(t0 * TPB), 1, mido.Message("note_on", channel=channel, note=p, velocity=velocity)))
            events.append((round(t1 * TPB), 0, mido.Message("note_off", channel=channel, note=p, velocity=0)))
    out = mido.MidiTrack()
    if name:
        out.append(mido.MetaMessage("track_name", name=name))
    if channel != 9:
        out.append(mido.Message("program_change", channel=channel, program=program))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        out.append(msg.copy(time=tick - now))
        now = tick
    return out


def band(source: str, index: int | None, style: str, lead, chord, bass, drums: bool) -> mido.MidiFile:
    parsed = corpus.parse(source)
    score = parsed.scores[index] if index is not None else parsed
    tune, chords, bass_notes = harmony_of(score)
    ts = score.recurse().getElementsByClass("TimeSignature")
    num, den = (ts[0].numerator, ts[0].denominator) if ts else (4, 4)
    f = mido.MidiFile(ticks_per_beat=TPB)
    head = mido.MidiTrack()
    title = score.metadata.title if score.metadata and score.metadata.title else ""
    head.append(mido.MetaMessage("track_name", name=title))
    head.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))
    head.append(mido.MetaMessage("time_signature", numerator=num, denominator=den))
    f.tracks.append(head)
    f.tracks.append(track(lead[1], lead[0], 0, tune, 100))
    f.tracks.append(track(chord[1], chord[0], 1, arpeggiate(chords) if style == "arpeggio" else chords, 70))
    f.tracks.append(track(bass[1], bass[0], 2, bass_notes, 90))
    if drums:
        end = max(t1 for _, t1, _ in tune)
        beats = [(float(b), float(b) + 0.25, [36 if b % 2 == 0 else 38]) for b in range(int(end))]
        f.tracks.append(track("Drums", 0, 9, beats, 80))
    return f


def main() -> None:
    warnings.filterwarnings("ignore")
    for name, path in RENDERED.items():
        corpus.parse(path).write("midi", fp=str(HERE / name))
        print("wrote", name)
    for name, spec in BANDS.items():
        band(*spec).save(HERE / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
