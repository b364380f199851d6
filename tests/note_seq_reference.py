"""The note_seq path symdiff's reading and writing of MIDI files took until note_seq left the
inference path (issue 28), kept as the reference `tests/test_note_seq_parity.py` holds
`symdiff.notes` to: pretty_midi's reading through `midi_io.midi_to_note_sequence`, note_seq's
quantiser and `Melody.from_quantized_sequence`, and writing through `Melody.to_sequence` and
`note_sequence_to_pretty_midi`. Test-only: note_seq stays a test dependency
(requirements-magenta.txt)."""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    import note_seq
from note_seq import melodies_lib, midi_io, sequences_lib
from note_seq.protobuf import music_pb2

from symdiff import melody as M
from symdiff.notes import read_pretty_midi

MINOR = music_pb2.NoteSequence.KeySignature.MINOR


def load_note_sequence(source: str | Path | bytes) -> tuple[music_pb2.NoteSequence, float | None]:
    """A file (bounded as symdiff bounds it) as note_seq reads it, and where it was cut."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    mid, cut_beat = M.bounded_midi(data)
    return midi_io.midi_to_note_sequence(read_pretty_midi(mid)), cut_beat


def beat_clock(ns: music_pb2.NoteSequence):
    tempos = sorted(ns.tempos, key=lambda t: t.time)
    if not tempos or tempos[0].time > 0:
        tempos = [music_pb2.NoteSequence.Tempo(time=0.0, qpm=tempos[0].qpm if tempos else M.DEFAULT_QPM)] + tempos
    times = np.array([t.time for t in tempos])
    qpms = np.array([t.qpm for t in tempos])
    beats_at = np.concatenate([[0.0], np.cumsum(np.diff(times) * qpms[:-1] / 60.0)])

    def beats(t):
        t = np.asarray(t, dtype=np.float64)
        i = np.searchsorted(times, t, side="right") - 1
        return beats_at[i] + (t - times[i]) * qpms[i] / 60.0

    return beats


def to_beat_time(ns: music_pb2.NoteSequence) -> music_pb2.NoteSequence:
    beats = beat_clock(ns)
    out = music_pb2.NoteSequence()
    out.CopyFrom(ns)
    del out.tempos[:]
    out.tempos.add(time=0.0, qpm=60.0)
    del out.time_signatures[:]
    out.time_signatures.add(time=0.0, numerator=4, denominator=4)
    starts = beats([n.start_time for n in out.notes]).tolist()
    ends = beats([n.end_time for n in out.notes]).tolist()
    for n, start, end in zip(out.notes, starts, ends, strict=True):
        n.start_time, n.end_time = start, end
    out.total_time = float(beats(ns.total_time))
    return out


def melody_to_tokens(melody: melodies_lib.Melody) -> np.ndarray:
    events = np.asarray(list(melody), dtype=np.int64)
    out = np.zeros(len(events), dtype=np.uint8)
    out[events == melodies_lib.MELODY_NOTE_OFF] = M.NOTE_OFF
    on = events >= 0
    out[on] = events[on] - M.MIN_PITCH + 2
    return out


def sequence_lines(ns: music_pb2.NoteSequence, max_bars: int = M.MAX_BARS) -> list[M.Candidate]:
    if not ns.notes:
        return []
    beats = to_beat_time(ns)
    end = float(max_bars * M.STEPS_PER_BAR // M.STEPS_PER_QUARTER)
    kept = [n for n in beats.notes if n.start_time < end]
    del beats.notes[:]
    beats.notes.extend(kept)
    for n in beats.notes:
        n.end_time = min(n.end_time, end)
    beats.total_time = min(beats.total_time, end)
    quantized = sequences_lib.quantize_note_sequence(beats, M.STEPS_PER_QUARTER)
    names = {i.instrument: i.name for i in ns.instrument_infos}
    in_range = [n for n in quantized.notes if M.MIN_PITCH <= n.pitch <= M.MAX_PITCH]
    del quantized.notes[:]
    quantized.notes.extend(in_range)
    by_instrument: dict[int, list] = {}
    for n in quantized.notes:
        if not n.is_drum and n.velocity > 0:
            by_instrument.setdefault(n.instrument, []).append(n)
    one = music_pb2.NoteSequence()
    one.CopyFrom(quantized)
    lines = []
    for instrument, notes in sorted(by_instrument.items()):
        del one.notes[:]
        one.notes.extend(notes)
        melody = melodies_lib.Melody()
        melody.from_quantized_sequence(one, instrument=instrument, gap_bars=float("inf"),
                                       ignore_polyphonic_notes=True, pad_end=True)
        if len(melody) == 0:
            continue
        start_bar = melody.start_step // M.STEPS_PER_BAR
        tokens = np.zeros(start_bar * M.STEPS_PER_BAR + len(melody), dtype=np.uint8)
        tokens[start_bar * M.STEPS_PER_BAR :] = melody_to_tokens(melody)
        onsets = np.unique([n.quantized_start_step for n in notes], return_counts=True)[1]
        lines.append(M.Candidate(
            index=len(lines), instrument=instrument, program=notes[0].program, name=names.get(instrument, ""),
            tokens=tokens[: max_bars * M.STEPS_PER_BAR], num_source_notes=len(notes),
            polyphony=float((onsets > 1).mean()),
        ))
    return lines


def read_midi(source: str | Path | bytes, max_bars: int = M.MAX_BARS) -> M.MidiMelodies:
    """`melody.read_midi` as it was over a NoteSequence."""
    ns, cut_beat = load_note_sequence(source)
    candidates = [c for c in sequence_lines(ns, max_bars) if c.num_notes > 0]
    tempos = sorted(ns.tempos, key=lambda t: t.time)
    sigs = sorted(ns.time_signatures, key=lambda t: t.time)
    beats, steps = beat_clock(ns), M.STEPS_PER_QUARTER
    end_beat = float(max_bars * M.STEPS_PER_BAR // M.STEPS_PER_QUARTER)
    pitched = [n for n in ns.notes if not n.is_drum and M.MIN_PITCH <= n.pitch <= M.MAX_PITCH]
    starts, ends = beats([n.start_time for n in pitched]), beats([n.end_time for n in pitched])
    onsets = np.round(starts[starts < end_beat] * steps).astype(np.int64)
    end = float(np.where(ends < end_beat, ends, np.minimum(starts + 1 / steps, end_beat)).max()) * steps
    bars = M.bar_map([(float(beats(t.time)) * steps, t.numerator, t.denominator) for t in sigs], onsets, end)
    if cut_beat is not None:
        why = (f"symdiff reads at most {max_bars:,} bars" if cut_beat >= end_beat else
               f"symdiff reads the first {M.MAX_EVENTS:,} notes and events of a file")
        bars = replace(bars, cut_at=bars.number_at(max(0, math.ceil(cut_beat * steps) - 1)), cut_why=why)
    return M.MidiMelodies(
        candidates=candidates, default=M.most_melodic(candidates),
        qpm=float(tempos[0].qpm) if tempos else M.DEFAULT_QPM,
        time_signature=(sigs[0].numerator, sigs[0].denominator) if sigs else (4, 4),
        tempo_changes=max(0, len({round(t.qpm, 3) for t in tempos}) - 1),
        time_signature_changes=max(0, len({(s.numerator, s.denominator) for s in sigs}) - 1),
        bars=bars,
        keys=tuple((round(float(beats(k.time)) * steps), k.key + 12 * (k.mode == MINOR))
                   for k in sorted(ns.key_signatures, key=lambda k: k.time)),
    )


def tokens_to_note_sequence(tokens: np.ndarray, qpm: float = M.DEFAULT_QPM, program: int = 0,
                            velocity: int = 100) -> music_pb2.NoteSequence:
    tokens = np.asarray(tokens, dtype=np.int64)
    events = np.full(len(tokens), melodies_lib.MELODY_NO_EVENT, dtype=np.int64)
    events[tokens == M.NOTE_OFF] = melodies_lib.MELODY_NOTE_OFF
    on = tokens >= 2
    events[on] = tokens[on] - 2 + M.MIN_PITCH
    melody = melodies_lib.Melody(events=events.tolist(), steps_per_quarter=M.STEPS_PER_QUARTER,
                                 steps_per_bar=M.STEPS_PER_BAR)
    ns = melody.to_sequence(velocity=velocity, program=program, qpm=qpm)
    ns.time_signatures.add(numerator=4, denominator=4)
    ns.total_time = len(tokens) * 60.0 / qpm / M.STEPS_PER_QUARTER
    return ns


def tokens_to_midi_bytes(tokens: np.ndarray, qpm: float = M.DEFAULT_QPM, program: int = 0) -> bytes:
    pm = note_seq.note_sequence_to_pretty_midi(tokens_to_note_sequence(tokens, qpm, program))
    buf = io.BytesIO()
    pm.write(buf)
    mid = mido.MidiFile(file=io.BytesIO(buf.getvalue()))
    end = len(tokens) * mid.ticks_per_beat // M.STEPS_PER_QUARTER
    for track in mid.tracks:
        last = track[-1]
        if last.type == "end_of_track":
            before = sum(m.time for m in track[:-1])
            last.time = max(last.time, end - before)
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()
