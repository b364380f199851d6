"""Notes between a MIDI file and the model's grid: what note_seq did for us (its reading of a
pretty_midi file, its quantiser, `Melody.from_quantized_sequence`'s monophonic reduction and
`Melody.to_sequence`), restated in plain Python over pretty_midi and mido, so the inference path
and the app need neither note_seq nor its tree (librosa, numba, bokeh, IPython; issue 28).
tests/test_note_seq_parity.py checks it token for token and byte for byte against note_seq on
every MIDI file under tests/data."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field

# pyfluidsynth prints "'fluidsynth' was found at ..." to stdout on import whenever $CI is set,
# and pretty_midi imports it: this module is the one gateway to pretty_midi, so it imports
# pyfluidsynth first, silenced, and the CLI's stdout (JSON included) stays what symdiff writes.
with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        pass
import mido  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import pretty_midi  # noqa: E402

NO_EVENT, NOTE_OFF, FIRST_PITCH_TOKEN = 0, 1, 2  # token classes (melody.py); a pitch token starts a note
# Ticks per quarter note of the files symdiff writes: note_seq's STANDARD_PPQ, kept so that a
# melody written today is byte for byte the file written before note_seq left.
WRITE_RESOLUTION = 220
log = logging.getLogger(__name__)


def is_onset(tokens: npt.ArrayLike) -> np.ndarray:
    """True where a token starts a note (a pitch token, not a rest or a held step), for one
    token or an array of them."""
    return np.asarray(tokens) >= FIRST_PITCH_TOKEN


@dataclass(frozen=True)
class Note:
    """One note; times in seconds, beats or steps as the function that made it says."""

    start: float
    end: float
    pitch: int
    velocity: int
    instrument: int = 0  # index of pretty_midi's instrument (a track, program and channel)
    program: int = 0
    is_drum: bool = False


@dataclass
class Score:
    """A MIDI file as pretty_midi reads it, times in seconds (note_seq's NoteSequence of it)."""

    notes: list[Note]
    tempos: list[tuple[float, float]] = field(default_factory=list)  # (time, qpm)
    meters: list[tuple[float, int, int]] = field(default_factory=list)  # (time, numerator, denominator)
    keys: list[tuple[float, int]] = field(default_factory=list)  # (time, key number: 0-11 major, 12-23 minor)
    names: dict[int, str] = field(default_factory=dict)  # instrument -> its track name, where it has one
    total_time: float = 0.0  # the end of the last note (or of the tokens written)


class BadMeter(ValueError):
    """A time signature no reader can hold (note_seq refused a denominator past 32 bits)."""


def read_pretty_midi(mid: mido.MidiFile) -> pretty_midi.PrettyMIDI:
    """pretty_midi's reading of a (bounded) file. Its warnings about odd but readable files (tempo
    or meter events on a later track) go to the log, not to the user's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = pretty_midi.PrettyMIDI(mido_object=mid)
    for w in caught:
        log.debug("pretty_midi: %s", w.message)
    return pm


def program_name(program: int) -> str:
    """The General MIDI name of a program, e.g. 'Flute'."""
    return pretty_midi.program_to_instrument_name(program)


def score_of(pm: pretty_midi.PrettyMIDI) -> Score:
    """pretty_midi's reading -> a Score: every instrument's notes in order, instruments in order
    (plain Python numbers: pretty_midi hands out some numpy ones, which JSON refuses)."""
    notes = [Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity), i, int(inst.program),
                  bool(inst.is_drum)) for i, inst in enumerate(pm.instruments) for n in inst.notes]
    for ts in pm.time_signature_changes:
        if ts.denominator >= 2**31:
            raise BadMeter(f"invalid time signature denominator {ts.denominator}")
    times, qpms = pm.get_tempo_changes()
    return Score(
        notes=notes,
        tempos=[(float(t), float(q)) for t, q in zip(times, qpms, strict=True)],
        meters=[(float(ts.time), int(ts.numerator), int(ts.denominator)) for ts in pm.time_signature_changes],
        keys=[(float(k.time), int(k.key_number)) for k in pm.key_signature_changes],
        names={i: inst.name for i, inst in enumerate(pm.instruments) if inst.name},
        total_time=max((n.end for n in notes), default=0.0),
    )


def quantize(steps: np.ndarray) -> np.ndarray:
    """Positions in steps -> whole steps, as note_seq rounds them (a half step and more goes up)."""
    return np.floor(np.asarray(steps, dtype=np.float64) + 0.5).astype(np.int64)


def monophonic(onsets: np.ndarray, offsets: np.ndarray, pitch_tokens: np.ndarray,
               steps_per_bar: int) -> tuple[int, np.ndarray]:
    """One instrument's quantised notes -> (first step, tokens) of its single line, from the bar
    of its first note, padded with rests to whole bars. Among notes that start together the
    highest wins; a note that starts while another sounds cuts it; the line ends with its last
    note's note-off, unless that falls on a barline, where the end of the line ends the note
    (note_seq's `from_quantized_sequence(ignore_polyphonic_notes=True, pad_end=True)`)."""
    order = sorted(range(len(onsets)), key=lambda i: (onsets[i], -pitch_tokens[i]))
    first = int(onsets[order[0]]) // steps_per_bar * steps_per_bar
    events: list[int] = []
    last_on = -1
    for i in order:
        on, off = int(onsets[i]) - first, int(offsets[i]) - first
        if on == last_on:  # a lower note at the same onset
            continue
        del events[off + 1 :]  # a new note cuts the sounding one, and what followed it
        events.extend([NO_EVENT] * (off + 1 - len(events)))
        events[on : off + 1] = [int(pitch_tokens[i])] + [NO_EVENT] * (off - on - 1) + [NOTE_OFF]
        last_on = on
    if (len(events) - 1) % steps_per_bar == 0:
        events.pop()  # the last note-off falls on a barline: the line ends there
    tokens = np.zeros(-(-len(events) // steps_per_bar) * steps_per_bar, dtype=np.uint8)
    tokens[: len(events)] = events
    return first, tokens


def line_notes(tokens: np.ndarray) -> list[tuple[int, int, int]]:
    """Tokens -> (start step, end step, pitch token) of each note: a note sounds until the next
    note-on or note-off, or the end of the tokens (note_seq's `Melody.to_sequence`)."""
    out: list[tuple[int, int, int]] = []
    sounding: list[int] | None = None
    for step, token in enumerate(np.asarray(tokens).tolist()):
        if token != NO_EVENT and sounding is not None:
            out.append((sounding[0], step, sounding[1]))
            sounding = None
        if token >= FIRST_PITCH_TOKEN:
            sounding = [step, token]
    if sounding is not None:
        out.append((sounding[0], len(tokens), sounding[1]))
    return out


def write_line(notes: list[tuple[int, int, int]], steps: int, steps_per_quarter: int, qpm: float,
               program: int, velocity: int) -> mido.MidiFile:
    """One line of (start step, end step, MIDI pitch) notes -> a type 1 file: a timing track (the
    tempo, 4/4) and the line's track, both lasting `steps` steps at least (bars of rest at the end
    are part of the piece). Events are ordered as pretty_midi wrote them: by tick, then pitch,
    then velocity (so a note-off comes before the note-on of the same pitch at its tick)."""
    per_step = WRITE_RESOLUTION // steps_per_quarter
    end = steps * per_step
    tick_scale = 60.0 / (qpm * WRITE_RESOLUTION)
    tempo = int(6e7 / (60.0 / (tick_scale * WRITE_RESOLUTION)))  # pretty_midi's rounding, for the same bytes
    timing = [(0, mido.MetaMessage("set_tempo", tempo=tempo)),
              (0, mido.MetaMessage("time_signature", numerator=4, denominator=4))]
    events = sorted([(on * per_step, pitch, velocity) for on, _, pitch in notes]
                    + [(off * per_step, pitch, 0) for _, off, pitch in notes])
    line = [(0, mido.Message("program_change", program=program))]
    line += [(tick, mido.Message("note_on", note=pitch, velocity=vel)) for tick, pitch, vel in events]
    mid = mido.MidiFile(ticks_per_beat=WRITE_RESOLUTION)
    for track in (timing, line):
        track.append((max(track[-1][0] + 1, end), mido.MetaMessage("end_of_track")))
        now, out = 0, mido.MidiTrack()
        for tick, message in track:
            out.append(message.copy(time=tick - now))
            now = tick
        mid.tracks.append(out)
    return mid
