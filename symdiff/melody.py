"""Monophonic melodies as MusicVAE's 2-bar melody model sees them, and MIDI I/O.

The token grid is MusicVAE's `mel_2bar` encoding (note_seq `MelodyOneHotEncoding(21, 109)`):
4 steps per quarter note, 16 steps per model bar (four quarter notes), 90 classes per step:
0 = no event (hold the sounding note or stay silent), 1 = note-off, 2..89 = note-on for MIDI
pitch 21..108. A 2-bar chunk is 32 steps. note_seq does the reading, quantizing and the
monophonic reduction; this module decides how a real MIDI file maps onto that grid.

Policies (what a real file meets):
- Type 0 and type 1 files: pretty_midi splits notes into instruments by track, program and
  channel, so a type 0 file with several channels gives several candidates, as type 1 does.
- Several tracks: every non-drum instrument is a candidate melody. The default is the most
  melodic one: programs 0..31 (MusicVAE's melody programs) before others, then the most
  notes kept by the monophonic reduction, weighted by how rarely notes start together.
- Drums are never candidates; a file with only drums is an error.
- Polyphony: the highest note wins among notes that start together, and a new note cuts the
  sounding one (note_seq `Melody.from_quantized_sequence(ignore_polyphonic_notes=True)`).
- Tempo changes: notes are placed by their position in beats (through the tempo map), so a
  tempo change never shifts the grid; the output MIDI carries the first tempo.
- Time signatures: the grid is always 16 steps per model bar. Meters whose bar is not four
  quarters (3/4, 6/8, ...) are kept, their barlines then do not fall on model-bar lines; the
  first time signature is reported. Time-signature changes do not break the grid.
- Notes outside 21..108 are dropped, as MusicVAE's data converter does.
- Pickup bars: a melody starts at the model bar that contains its first note, so a pickup
  sits at the end of a bar of rest, as in MusicVAE.
- Triplets and other off-grid notes snap to the nearest 16th (note_seq's quantizer); notes
  that collapse onto an earlier note's step are dropped by the monophonic reduction.
- Empty files and files without a single note in any non-drum track are errors; files longer
  than `MAX_BARS` are cut there (64-bar windows are all the models use).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# pyfluidsynth prints "'fluidsynth' was found at ..." to stdout on import whenever $CI is set,
# and note_seq's pretty_midi imports it: import it first, silenced, so the CLI's stdout (JSON
# included) stays exactly what symdiff writes. symdiff reaches note_seq only through this module.
with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        pass
import note_seq  # noqa: E402
from note_seq import melodies_lib, midi_io, sequences_lib  # noqa: E402
from note_seq.protobuf import music_pb2  # noqa: E402

STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16
BARS_PER_CHUNK = 2
CHUNK_STEPS = STEPS_PER_BAR * BARS_PER_CHUNK
NO_EVENT = 0
NOTE_OFF = 1
MIN_PITCH = 21
MAX_PITCH = 108
NUM_CLASSES = MAX_PITCH - MIN_PITCH + 1 + 2  # 90
MELODY_PROGRAMS = range(0, 32)  # MusicVAE's MEL_PROGRAMS
MAX_BARS = 1024
DEFAULT_QPM = 120.0
MAX_FILE_BYTES = 16 * 1024 * 1024


class MelodyError(ValueError):
    """A file or melody that cannot be used; the message is meant for the user."""


@dataclass
class Candidate:
    """One monophonic line found in a MIDI file (one per non-drum instrument)."""

    index: int
    instrument: int
    program: int
    name: str
    tokens: np.ndarray  # uint8, length a multiple of STEPS_PER_BAR
    num_source_notes: int
    polyphony: float  # share of note onsets that had company

    @property
    def num_bars(self) -> int:
        return len(self.tokens) // STEPS_PER_BAR

    @property
    def num_notes(self) -> int:
        return int((self.tokens >= 2).sum())

    @property
    def pitch_range(self) -> tuple[int, int] | None:
        pitches = tokens_pitches(self.tokens)
        return (int(pitches.min()), int(pitches.max())) if len(pitches) else None

    @property
    def in_melody_programs(self) -> bool:
        return self.program in MELODY_PROGRAMS

    def summary(self) -> dict:
        return {
            "index": self.index,
            "instrument": self.instrument,
            "program": self.program,
            "name": self.name,
            "bars": self.num_bars,
            "notes": self.num_notes,
            "pitch_range": self.pitch_range,
            "polyphony": round(self.polyphony, 3),
        }


@dataclass
class MidiMelodies:
    """What `read_midi` found: the candidate lines and the file's timing facts."""

    candidates: list[Candidate]
    default: int  # index into candidates
    qpm: float
    time_signature: tuple[int, int]
    tempo_changes: int
    time_signature_changes: int

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.default]

    def pick(self, track: int | None) -> Candidate:
        """The candidate with this index, or the default one for None."""
        if track is None:
            return self.chosen
        for c in self.candidates:
            if c.index == track:
                return c
        valid = ", ".join(str(c.index) for c in self.candidates)
        raise MelodyError(f"no melody track {track} in this file (tracks: {valid})")


# --- tokens -----------------------------------------------------------------------------

def pitch_to_token(pitch: int) -> int:
    return pitch - MIN_PITCH + 2


def tokens_pitches(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens)
    return tokens[tokens >= 2].astype(np.int64) - 2 + MIN_PITCH


def melody_to_tokens(melody: melodies_lib.Melody) -> np.ndarray:
    """note_seq Melody events (-2 off, -1 no event, pitch) -> uint8 tokens."""
    events = np.asarray(list(melody), dtype=np.int64)
    out = np.zeros(len(events), dtype=np.uint8)
    out[events == melodies_lib.MELODY_NOTE_OFF] = NOTE_OFF
    on = events >= 0
    if np.any(on & ((events < MIN_PITCH) | (events > MAX_PITCH))):
        raise MelodyError("melody has pitches outside 21..108")
    out[on] = events[on] - MIN_PITCH + 2
    return out


def tokens_to_melody(tokens: np.ndarray) -> melodies_lib.Melody:
    tokens = np.asarray(tokens, dtype=np.int64)
    events = np.full(len(tokens), melodies_lib.MELODY_NO_EVENT, dtype=np.int64)
    events[tokens == NOTE_OFF] = melodies_lib.MELODY_NOTE_OFF
    on = tokens >= 2
    events[on] = tokens[on] - 2 + MIN_PITCH
    return melodies_lib.Melody(
        events=events.tolist(), steps_per_quarter=STEPS_PER_QUARTER, steps_per_bar=STEPS_PER_BAR
    )


def tokens_to_note_sequence(
    tokens: np.ndarray, qpm: float = DEFAULT_QPM, program: int = 0, velocity: int = 100
) -> music_pb2.NoteSequence:
    """Tokens -> NoteSequence in seconds; the end of the tokens ends a sounding note."""
    check_tokens(tokens)
    ns = tokens_to_melody(tokens).to_sequence(velocity=velocity, program=program, qpm=qpm)
    ns.time_signatures.add(numerator=4, denominator=4)
    ns.total_time = len(tokens) * 60.0 / qpm / STEPS_PER_QUARTER
    return ns


def tokens_to_midi(
    tokens: np.ndarray, path: str | Path, qpm: float = DEFAULT_QPM, program: int = 0
) -> Path:
    """Write tokens as a one-track MIDI file (the tempo given, 4/4)."""
    path = Path(path)
    note_seq.sequence_proto_to_midi_file(tokens_to_note_sequence(tokens, qpm, program), str(path))
    return path


def tokens_to_midi_bytes(tokens: np.ndarray, qpm: float = DEFAULT_QPM, program: int = 0) -> bytes:
    pm = note_seq.note_sequence_to_pretty_midi(tokens_to_note_sequence(tokens, qpm, program))
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def check_tokens(tokens: np.ndarray) -> None:
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise MelodyError(f"tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= NUM_CLASSES):
        raise MelodyError(f"tokens must lie in 0..{NUM_CLASSES - 1}")


# --- chunks -----------------------------------------------------------------------------

def to_chunks(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> (n, 32) non-overlapping 2-bar chunks; a partial last chunk is padded with rests."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    n = -(-len(tokens) // CHUNK_STEPS)
    out = np.zeros(n * CHUNK_STEPS, dtype=np.uint8)
    out[: len(tokens)] = tokens
    return out.reshape(n, CHUNK_STEPS)


def from_chunks(chunks: np.ndarray) -> np.ndarray:
    return np.asarray(chunks, dtype=np.uint8).reshape(-1)


def silent_chunks(chunks: np.ndarray) -> np.ndarray:
    """True for chunks without a note onset (they may hold a note-off or a held note)."""
    return ~(np.asarray(chunks) >= 2).any(axis=-1)


def windows(tokens: np.ndarray, bars: int = BARS_PER_CHUNK, hop_bars: int = 1) -> np.ndarray:
    """All bar-aligned windows of `bars` bars at a hop of `hop_bars` (MusicVAE slices at 1),
    each as the VAE sees it (`as_vae_input`)."""
    size, hop = bars * STEPS_PER_BAR, hop_bars * STEPS_PER_BAR
    tokens = np.asarray(tokens, dtype=np.uint8)
    if len(tokens) < size:
        return np.zeros((0, size), dtype=np.uint8)
    starts = range(0, len(tokens) - size + 1, hop)
    return as_vae_input(np.stack([tokens[s : s + size] for s in starts]))


def as_vae_input(chunks: np.ndarray) -> np.ndarray:
    """Chunks as MusicVAE's converter slices them: a note-off before a chunk's first note
    (the end of a note held over from the previous chunk) becomes "no event"."""
    chunks = np.array(chunks, dtype=np.uint8)
    before_first_note = np.cumsum(chunks >= 2, axis=-1) == 0
    chunks[before_first_note & (chunks == NOTE_OFF)] = NO_EVENT
    return chunks


# --- note sequences -> candidate lines -----------------------------------------------------

def load_note_sequence(source: str | Path | bytes) -> music_pb2.NoteSequence:
    """Read a MIDI file (path or bytes) into a NoteSequence, with a clear error for bad input."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MelodyError(f"{path}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise MelodyError(f"{path.name}: file is larger than {MAX_FILE_BYTES >> 20} MB")
        data = path.read_bytes()
        name = path.name
    else:
        data, name = bytes(source), "input"
    if not data:
        raise MelodyError(f"{name}: the file is empty")
    if not data.startswith(b"MThd"):
        raise MelodyError(f"{name}: not a MIDI file (no MThd header)")
    try:
        return midi_io.midi_to_note_sequence(data)
    except Exception as e:  # pretty_midi/mido raise many kinds on corrupt data
        raise MelodyError(f"{name}: corrupt MIDI file ({type(e).__name__}: {e})") from None


def to_beat_time(ns: music_pb2.NoteSequence) -> music_pb2.NoteSequence:
    """Copy of `ns` with times in beats at 60 qpm, so tempo changes do not move the grid."""
    tempos = sorted(ns.tempos, key=lambda t: t.time)
    if not tempos or tempos[0].time > 0:
        tempos = [music_pb2.NoteSequence.Tempo(time=0.0, qpm=tempos[0].qpm if tempos else DEFAULT_QPM)] + tempos
    times = np.array([t.time for t in tempos])
    qpms = np.array([t.qpm for t in tempos])
    beats_at = np.concatenate([[0.0], np.cumsum(np.diff(times) * qpms[:-1] / 60.0)])

    def beats(t: float) -> float:
        i = int(np.searchsorted(times, t, side="right")) - 1
        return float(beats_at[i] + (t - times[i]) * qpms[i] / 60.0)

    out = music_pb2.NoteSequence()
    out.CopyFrom(ns)
    del out.tempos[:]
    out.tempos.add(time=0.0, qpm=60.0)
    del out.time_signatures[:]
    out.time_signatures.add(time=0.0, numerator=4, denominator=4)
    for n in out.notes:
        n.start_time, n.end_time = beats(n.start_time), beats(n.end_time)
    out.total_time = beats(ns.total_time)
    return out


def sequence_lines(ns: music_pb2.NoteSequence, max_bars: int = MAX_BARS) -> list[Candidate]:
    """One monophonic line per non-drum instrument of a NoteSequence, on the model grid."""
    if not ns.notes:
        return []
    quantized = sequences_lib.quantize_note_sequence(to_beat_time(ns), STEPS_PER_QUARTER)
    names = {i.instrument: i.name for i in ns.instrument_infos}
    in_range = [n for n in quantized.notes if MIN_PITCH <= n.pitch <= MAX_PITCH]
    del quantized.notes[:]
    quantized.notes.extend(in_range)
    by_instrument: dict[int, list] = {}
    for n in quantized.notes:
        if not n.is_drum and n.velocity > 0:
            by_instrument.setdefault(n.instrument, []).append(n)
    lines = []
    for instrument, notes in sorted(by_instrument.items()):
        melody = melodies_lib.Melody()
        melody.from_quantized_sequence(
            quantized, instrument=instrument, gap_bars=float("inf"),
            ignore_polyphonic_notes=True, pad_end=True,
        )
        if len(melody) == 0:
            continue
        start_bar = melody.start_step // STEPS_PER_BAR
        tokens = np.zeros(start_bar * STEPS_PER_BAR + len(melody), dtype=np.uint8)
        tokens[start_bar * STEPS_PER_BAR :] = melody_to_tokens(melody)
        tokens = tokens[: max_bars * STEPS_PER_BAR]
        onsets = np.unique([n.quantized_start_step for n in notes], return_counts=True)[1]
        lines.append(Candidate(
            index=len(lines), instrument=instrument, program=notes[0].program,
            name=names.get(instrument, ""), tokens=tokens, num_source_notes=len(notes),
            polyphony=float((onsets > 1).mean()),
        ))
    return lines


def most_melodic(candidates: list[Candidate]) -> int:
    """Index of the line most likely to be the tune: a melody program, busy, rarely
    polyphonic and high (the tune is usually the top line)."""
    most = max(c.num_notes for c in candidates)

    def score(c: Candidate) -> tuple:
        busy = min(1.0, c.num_notes / (0.5 * most))
        return (c.in_melody_programs, busy * (1.0 - c.polyphony) * tokens_pitches(c.tokens).mean())

    return max(range(len(candidates)), key=lambda i: score(candidates[i]))


def read_midi(source: str | Path | bytes, max_bars: int = MAX_BARS) -> MidiMelodies:
    """Read a MIDI file (path or bytes) -> its candidate melodies and the default choice."""
    ns = load_note_sequence(source)
    if not ns.notes:
        raise MelodyError("the MIDI file has no notes")
    if all(n.is_drum for n in ns.notes):
        raise MelodyError("the MIDI file has only drums; a melody needs a pitched track")
    candidates = [c for c in sequence_lines(ns, max_bars) if c.num_notes > 0]
    if not candidates:
        pitched = [n.pitch for n in ns.notes if not n.is_drum]
        if all(not MIN_PITCH <= p <= MAX_PITCH for p in pitched):
            raise MelodyError(f"no melody found: every pitched note lies outside the range the model knows "
                              f"(MIDI {MIN_PITCH}-{MAX_PITCH}, A0 to C8)")
        raise MelodyError("no melody found: no pitched notes on the 16th-note grid")
    default = most_melodic(candidates)
    tempos = sorted(ns.tempos, key=lambda t: t.time)
    sigs = sorted(ns.time_signatures, key=lambda t: t.time)
    return MidiMelodies(
        candidates=candidates,
        default=default,
        qpm=float(tempos[0].qpm) if tempos else DEFAULT_QPM,
        time_signature=(sigs[0].numerator, sigs[0].denominator) if sigs else (4, 4),
        tempo_changes=max(0, len({round(t.qpm, 3) for t in tempos}) - 1),
        time_signature_changes=max(0, len({(s.numerator, s.denominator) for s in sigs}) - 1),
    )
