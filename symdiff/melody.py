"""Monophonic melodies as MusicVAE's 2-bar melody model sees them, and MIDI I/O.

The token grid is MusicVAE's `mel_2bar` encoding (note_seq `MelodyOneHotEncoding(21, 109)`):
4 steps per quarter note, 16 steps per model bar (four quarter notes), 90 classes per step:
0 = no event (hold the sounding note or stay silent), 1 = note-off, 2..89 = note-on for MIDI
pitch 21..108. A 2-bar chunk is 32 steps. pretty_midi reads a file; `notes` quantises and
reduces it to one line per track as note_seq did; this module decides how a real MIDI file maps
onto that grid.

Policies (what a real file meets):
- Type 0 and type 1 files: pretty_midi splits notes into instruments by track, program and
  channel, so a type 0 file with several channels gives several candidates, as type 1 does.
- Several tracks: every non-drum instrument is a candidate melody. The default is the line a
  musician would call the tune (`most_melodic`): points for the track's name (melody, vocal,
  soprano... up; bass, acc, chord, left hand... down), its General MIDI instrument (basses and
  pads down; voices, reeds, pipes and synth leads up), a high register, one voice at a time,
  enough notes, varied pitches, and no figure repeated bar after bar; any program may win
  (MusicVAE's programs 0..31 are its training-data filter, not a sign of the tune).
- Drums are never candidates; a file with only drums is an error.
- Polyphony: the highest note wins among notes that start together, and a new note cuts the
  sounding one (`notes.monophonic`, as note_seq's `Melody.from_quantized_sequence`).
- Tempo changes: notes are placed by their position in beats (through the tempo map), so a
  tempo change never shifts the grid; the output MIDI carries the first tempo.
- Time signatures: the token grid is always 16 steps per model bar (what the VAE knows), and
  the file's own bars are a map over it (`BarMap`, `MidiMelodies.bars`): each time-signature
  event starts a bar, its meter's bars follow (a 6/8 bar is 12 steps, 3/8 is 6, 12/8 is 24),
  so meter changes are handled; a meter whose bar is not whole 16th notes (3/32) is refused.
  Users count these bars; the model's 2-bar chunks are an internal grid.
- Pickups are bar 0, as notation software numbers them (the first full bar is bar 1): a first
  meter event lasting one short bar before the real meter (1/4 then 4/4), or a first bar whose
  first note lies in its second half (a pickup written as a full bar of rest first). A file that
  starts with the pickup's notes at tick 0 and no meter event for it (music21 writes them so)
  says nothing a reader can trust (a short last bar may as well be an early end): its bars are
  counted from tick 0, so the count is right and the barlines sit a pickup early.
- Notes outside 21..108 are dropped, as MusicVAE's data converter does.
- Token step 0 is the file's tick 0 (leading silence is kept), so a step is the same moment
  in every track and in the file's bar map.
- Triplets and other off-grid notes snap to the nearest 16th (`notes.quantize`); notes
  that collapse onto an earlier note's step are dropped by the monophonic reduction.
- Empty files and files without a single note in any non-drum track are errors; files longer
  than `MAX_BARS` are cut there (64-bar windows are all the models use).
- Bounded work, whatever a file says (`bounded_midi`, before pretty_midi sees it): events from
  `MAX_BARS` bars on are cut, and so is everything after a file's first `MAX_EVENTS` events in
  time (all tracks together; a limit set by the measured cost per event, so that real songs of
  any length up to `MAX_BARS` are read whole); a note still sounding at the cut ends there; files
  whose ticks would pass `MAX_TICKS` are rescaled to `RESCALED_TPB` ticks per beat; drum notes
  after a drum part's first, controllers, pitch bends, sysex and text are skipped unread. A
  29-byte file with one event at tick 1e8, or one note held for 2**24 beats, once cost seconds
  and gigabytes. A file whose notes go on past a cut says so wherever its length is shown
  (`BarMap.cut_at`: `describe`, the bar-range errors, `symdiff inspect`, the app).
"""
from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import mido
import numpy as np
from mido.midifiles.meta import build_meta_message

from .atomic import write_bytes
from .errors import SymdiffError
from .notes import (
    FIRST_PITCH_TOKEN,
    NO_EVENT,
    NOTE_OFF,
    BadMeter,
    Note,
    Score,
    is_onset,
    line_notes,
    monophonic,
    program_name,
    quantize,
    read_pretty_midi,
    score_of,
    write_line,
)
from .options import MAX_NEW_BARS

log = logging.getLogger(__name__)
TokenOrArray = TypeVar("TokenOrArray", int, np.ndarray)

STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16
BARS_PER_CHUNK = 2
CHUNK_STEPS = STEPS_PER_BAR * BARS_PER_CHUNK
MIN_PITCH = 21
MAX_PITCH = 108
NUM_CLASSES = FIRST_PITCH_TOKEN + MAX_PITCH - MIN_PITCH + 1  # 90
MELODY_PROGRAMS = range(0, 32)  # MusicVAE's MEL_PROGRAMS
MAX_BARS = 1024
DEFAULT_QPM = 120.0
MAX_FILE_BYTES = 16 * 1024 * 1024
# Notes, tempos, meters, programs and names kept from a file (drum notes are not kept: see
# `_scan_track`); later bars are cut. Reading costs per event kept: read_midi takes 16-25 us of CPU
# and 0.5-0.7 KB of traced peak memory (about 1 KB resident) for each, from 20,000 to 100,000
# events (bench/bench_read_midi.py: the long songs of tests/data/songs and synthetic songs, on a
# loaded 2-core Xeon), so 100,000 events cost about 2 s and 50-100 MB. The songs of
# tests/data/songs keep at most 33,000 (the 877-bar one 23,700; the old limit of 20,000 events,
# drums counted, cut them at 134-402 bars of 242-877), and the densest, about 100 a bar, would be
# read to bar 1,000. Skipped events (drums, controllers) cost 0.4-0.6 us each to scan, so a 16 MB
# upload of nothing else reads in 2.5 s; 16 MB of notes, in 1 track or 64, in 2 s.
MAX_EVENTS = 100_000
MAX_TICKS = 2**21  # the tick table pretty_midi builds (8 bytes a tick); finer files are rescaled
RESCALED_TPB = 480


class MelodyError(SymdiffError):
    """A file or melody that cannot be used; the message is meant for the user. The subclasses
    tell a caller what to ask for instead."""


class UnreadableMidiError(MelodyError):
    """No MIDI file symdiff can read (missing, empty, too large, not MIDI, corrupt): another file."""


class NoMelodyError(MelodyError):
    """A readable file without a melody to work on (no notes, only drums, none in the model's
    range or on its grid): another file, since no track of this one will do."""


class BarRangeError(MelodyError):
    """Bars the piece does not have; `valid` is the bars it has (first, last, as numbered), the
    range a caller can offer or clamp to."""

    def __init__(self, message: str, valid: tuple[int, int]):
        super().__init__(message)
        self.valid = valid


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
    def chordal(self) -> bool:
        """Plays chords, not a line with the odd double stop: more than 1 onset in 10 has company."""
        return self.polyphony > 0.1

    @property
    def num_notes(self) -> int:
        return int(is_onset(self.tokens).sum())

    @property
    def pitch_range(self) -> tuple[int, int] | None:
        pitches = tokens_pitches(self.tokens)
        return (int(pitches.min()), int(pitches.max())) if len(pitches) else None

    @property
    def instrument_name(self) -> str:
        """The General MIDI name of the track's program, e.g. 'Flute' (names in files are often empty)."""
        return program_name(self.program)

    @property
    def in_melody_programs(self) -> bool:
        return self.program in MELODY_PROGRAMS

    def summary(self) -> dict:
        return {
            "index": self.index,
            "instrument": self.instrument,
            "program": self.program,
            "instrument_name": self.instrument_name,
            "name": self.name,
            "bars": self.num_bars,
            "notes": self.num_notes,
            "pitch_range": self.pitch_range,
            "polyphony": round(self.polyphony, 3),
        }


BAR_MAP_STEPS = (MAX_BARS + MAX_NEW_BARS + 64) * STEPS_PER_BAR  # bars are mapped this far: the file, and extensions


@dataclass(frozen=True)
class BarMap:
    """The file's bars as a musician counts them, on the token grid (see the module docstring):
    bar `first_number + i` spans steps starts[i]..starts[i + 1]. `first_number` is 0 when the
    file begins with a pickup (bar 0), else 1; `num_bars` is the last bar that holds music.
    `cut_at` is the bar where reading stopped in a file too long to read whole (`cut_why` says
    which limit), None when every bar was read."""

    starts: tuple[int, ...]  # step where each bar begins, up to BAR_MAP_STEPS
    first_number: int
    num_bars: int
    meters: tuple[tuple[int, int, int], ...]  # (first step, numerator, denominator) of each meter
    # A pickup found by its notes (a bar of rest, then the pickup): its steps, from the beat of its
    # first note. Bar 0 is these steps alone, so new bars there never fill the rest before it, and
    # they must keep a note there, or the bar numbers move (`fit.Targets.pickup`).
    onset_pickup: tuple[int, int] | None = None
    cut_at: int | None = None
    cut_why: str = ""

    @property
    def meter(self) -> str:
        """'6/8', or '4/4 then 3/4' for a file whose meter changes."""
        meters = self.meters[1:] if self.first_number == 0 and self.meters[1:2] and \
            self.meters[1][0] == self.starts[1] else self.meters  # a pickup's own short meter
        names = [f"{n}/{d}" for _, n, d in meters]
        names = [m for i, m in enumerate(names) if i == 0 or m != names[i - 1]]
        return " then ".join(names)

    def describe(self) -> str:
        """'16 bars of 6/8 and a pickup (bar 0)', for the user; a cut file says so."""
        pickup = " and a pickup (bar 0)" if self.first_number == 0 else ""
        cut = f", cut at bar {self.cut_at} (the file goes on; {self.cut_why})" if self.cut_at is not None else ""
        return f"{self.num_bars} bars of {self.meter}{pickup}{cut}"

    def start(self, bar: int) -> int:
        """The step where a bar (as numbered) begins (a pickup found by its notes: its first beat)."""
        if bar == 0 and self.onset_pickup is not None:
            return self.onset_pickup[0]
        return self.starts[bar - self.first_number]

    def number_at(self, step: int) -> int:
        """The number of the bar that holds a step."""
        return self.first_number + int(np.searchsorted(self.starts, step, side="right")) - 1

    def steps(self, first: int, last: int, allow_past_end: int = 0) -> tuple[int, int]:
        """Bars first..last (as numbered, inclusive) -> token steps (start, end exclusive);
        `allow_past_end` bars after the music may be asked for (a continuation)."""
        low = self.first_number
        top = self.num_bars + allow_past_end
        asked = f"bars {first}-{last}"
        valid = (low, top)
        if first == 0 and low == 1:
            raise BarRangeError(f"{asked}: this file has no pickup, so it has no bar 0 (bar 0 is a pickup, the short "
                                f"bar before bar 1); its bars are 1-{self.num_bars}", valid)
        if first < low:
            raise BarRangeError(f"{asked}: bars count from {low}", valid)
        if last < first:
            raise BarRangeError(f"{asked}: the last bar comes before the first", valid)
        if last > top:
            ends = (f"the music ends at bar {self.num_bars} ({self.describe()})" if self.cut_at is None else
                    f"the file is cut at bar {self.cut_at} (it goes on; {self.cut_why})")
            choose = f"bars {first}-{top}" if first <= top else f"bars within {low}-{top}"
            raise BarRangeError(f"{asked}: {ends}; choose {choose}", valid)
        return self.start(first), self.start(last + 1)


def _meter_steps(numerator: int, denominator: int, where: float) -> int:
    """Steps in one bar of a meter; a meter whose bar is not whole 16th notes is refused."""
    steps = numerator * STEPS_PER_BAR / denominator
    if numerator < 1 or steps < 1 or not float(steps).is_integer():
        raise MelodyError(f"the meter {numerator}/{denominator} at quarter note {where / STEPS_PER_QUARTER:g} "
                          "has bars that are not whole 16th notes, the model's grid; it cannot be used")
    return int(steps)


def bar_map(meters: list[tuple[float, int, int]], onsets: np.ndarray, end: float) -> BarMap:
    """The file's bars from its time-signature events (step, numerator, denominator), the
    onsets of its pitched notes (steps) and the end of its music (step); rules in the module
    docstring."""
    events: dict[int, tuple[int, int]] = {0: (4, 4)}
    for step, num, den in sorted(meters):
        events[int(round(step))] = (num, den)  # the last of several at one step wins
    segs = sorted((s, n, d, _meter_steps(n, d, s)) for s, (n, d) in events.items())
    starts: list[int] = []
    for i, (s, _, _, size) in enumerate(segs):
        stop = segs[i + 1][0] if i + 1 < len(segs) else BAR_MAP_STEPS
        starts.extend(range(s, stop, size))
    starts.append(BAR_MAP_STEPS)
    end = max(1.0, end)
    first_onset = int(onsets.min()) if len(onsets) else 0
    size0 = segs[0][3]
    pickup, onset_pickup = False, None
    if len(segs) > 1 and segs[1][0] == size0 and size0 < segs[1][3]:  # 1/4, then 4/4 from its end
        pickup = True
    elif len(starts) > 2 and size0 / 2 <= first_onset < starts[1]:  # a bar of rest, then the pickup
        pickup = True
        beat = STEPS_PER_BAR // segs[0][2] or 1
        onset_pickup = (first_onset // beat * beat, starts[1])
    first_number = 0 if pickup else 1
    num_bars = max(1, first_number + int(np.searchsorted(starts, end, side="left")) - 1)
    return BarMap(tuple(starts), first_number, num_bars, tuple((s, n, d) for s, n, d, _ in segs), onset_pickup)


@dataclass
class MidiMelodies:
    """What `read_midi` found: the candidate lines, the file's bars and its timing facts."""

    candidates: list[Candidate]
    default: int  # index into candidates
    qpm: float
    time_signature: tuple[int, int]
    tempo_changes: int
    time_signature_changes: int
    bars: BarMap
    keys: tuple[tuple[int, int], ...] = ()  # key signatures: (step, pretty_midi key number: 0-11 major, 12-23 minor)

    def tokens(self, candidate: Candidate) -> np.ndarray:
        """A candidate's tokens padded with rests to the file's last bar (whole model bars), so
        every bar of the file can be infilled in every track."""
        end = self.bars.start(self.bars.num_bars + 1)
        size = max(len(candidate.tokens), -(-end // STEPS_PER_BAR) * STEPS_PER_BAR)
        out = np.zeros(size, dtype=np.uint8)
        out[: len(candidate.tokens)] = candidate.tokens
        return out

    def track_bars(self, candidate: Candidate) -> int:
        """The last bar (as numbered) in which a candidate plays a note."""
        onsets = np.flatnonzero(is_onset(candidate.tokens))
        return self.bars.number_at(int(onsets[-1])) if len(onsets) else self.bars.first_number

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
    return pitch - MIN_PITCH + FIRST_PITCH_TOKEN


def token_to_pitch(tokens: TokenOrArray) -> TokenOrArray:
    """The MIDI pitch of a pitch token (or of an array of them, as int64)."""
    if isinstance(tokens, np.ndarray):
        return tokens.astype(np.int64) - FIRST_PITCH_TOKEN + MIN_PITCH
    return tokens - FIRST_PITCH_TOKEN + MIN_PITCH


def tokens_pitches(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens)
    return token_to_pitch(tokens[is_onset(tokens)])


def sounding_pitches(tokens: np.ndarray) -> np.ndarray:
    """(steps,) int64: the MIDI pitch sounding at each step (the last event at or before it is its
    note-on), -1 at a rest: the melody as heard, one 16th note at a time, so two melodies can be
    compared step by step whatever their tokens (a note re-struck or held sounds the same)."""
    tokens = np.asarray(tokens)
    idx = np.where(tokens != NO_EVENT, np.arange(len(tokens)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    event = tokens[np.maximum(last, 0)].astype(np.int64)
    return np.where((last >= 0) & (event >= 2), event - 2 + MIN_PITCH, -1)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the steps where two melodies of one length sound the same pitch or both rest."""
    return float((sounding_pitches(a) == sounding_pitches(b)).mean()) if len(a) else 1.0


def tokens_to_score(
    tokens: np.ndarray, qpm: float = DEFAULT_QPM, program: int = 0, velocity: int = 100
) -> Score:
    """Tokens -> notes in seconds; the end of the tokens ends a sounding note."""
    check_tokens(tokens)
    seconds = 60.0 / qpm / STEPS_PER_QUARTER  # per step
    notes = [Note(on * seconds, off * seconds, token_to_pitch(token), velocity, program=program)
             for on, off, token in line_notes(tokens)]
    return Score(notes, tempos=[(0.0, qpm)], meters=[(0.0, 4, 4)], total_time=len(tokens) * seconds)


def tokens_to_midi(
    tokens: np.ndarray, path: str | Path, qpm: float = DEFAULT_QPM, program: int = 0
) -> Path:
    """Write tokens as a one-track MIDI file (the tempo given, 4/4), atomically (`symdiff.atomic`)."""
    return write_bytes(path, tokens_to_midi_bytes(tokens, qpm, program))


def tokens_to_midi_bytes(tokens: np.ndarray, qpm: float = DEFAULT_QPM, program: int = 0) -> bytes:
    """The MIDI file's bytes; every track ends at the melody's last step, so bars of rest at its
    end are part of the file (a sample asked for 16 bars lasts 16 bars)."""
    check_tokens(tokens)
    notes = [(on, off, token_to_pitch(token)) for on, off, token in line_notes(tokens)]
    out = io.BytesIO()
    write_line(notes, len(tokens), STEPS_PER_QUARTER, qpm, program, velocity=100).save(file=out)
    return out.getvalue()


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
    return np.asarray(~is_onset(chunks).any(axis=-1))


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
    before_first_note = np.cumsum(is_onset(chunks), axis=-1) == 0
    chunks[before_first_note & (chunks == NOTE_OFF)] = NO_EVENT
    return chunks


# --- note sequences -> candidate lines -----------------------------------------------------

class _Corrupt(Exception):
    pass


def _varlen(data: bytes, i: int) -> tuple[int, int]:
    """A variable-length quantity at data[i] (at most 4 bytes) -> (value, next index)."""
    value = 0
    for j in range(i, min(i + 4, len(data))):
        value = (value << 7) | (data[j] & 0x7F)
        if data[j] < 0x80:
            return value, j + 1
    raise _Corrupt("bad variable-length number")


_KEPT_META = {0x03, 0x51, 0x58, 0x59}  # track name, tempo, time signature, key signature
_Event = tuple[int, int, int, int | bytes]  # (absolute tick, status, a, b), see `_scan_track`


# One loop over the bytes of a track, a branch per kind of event: clearer in one piece, and no call per event.
def _scan_track(data: bytes, end_tick: int) -> tuple[list[_Event], bool]:  # noqa: C901
    """One track chunk's events that matter for melodies, up to `end_tick` (excluded) or the
    first MAX_EVENTS of them -> ((absolute tick, status, a, b), whether the track's notes go on
    past them): a channel message (status, data bytes) or a meta event (0xFF, type, payload).
    Drum notes (channel 10) are kept only up to the first one's end, to show a drum part is
    there: nothing reads them, and a song's drums are a third of its events. The rest
    (controllers, pitch bends, sysex, text) is skipped without building anything. Raises _Corrupt."""
    out: list[_Event] = []
    tick, i, n, running, past = 0, 0, len(data), 0, False
    drum: int | None = None  # the pitch of the first drum note while it sounds, then -1
    try:
        while i < n and len(out) <= MAX_EVENTS:
            if data[i] < 0x80:  # most deltas are one byte
                tick += data[i]
                i += 1
            else:
                delta, i = _varlen(data, i)
                tick += delta
            status = data[i]
            if status >= 0x80:
                i += 1
                if status < 0xF0:
                    running = status
            elif running:
                status = running
            else:
                raise _Corrupt("running status without a status byte")
            kind = status & 0xF0
            if kind in (0x80, 0x90, 0xA0, 0xB0, 0xE0):
                if (data[i] | data[i + 1]) & 0x80:
                    raise _Corrupt("bad data byte")
                if kind <= 0x90 and tick >= end_tick:
                    past = True  # a note sounds or ends after what is kept: the file is cut
                    break
                on = kind == 0x90 and data[i + 1] > 0
                if kind <= 0x90 and status & 0x0F == 9:  # drums: the first note only, on and off
                    if drum is None and on or drum == data[i] and not on:
                        out.append((tick, status, data[i], data[i + 1]))
                        drum = data[i] if drum is None else -1
                elif kind <= 0x90:
                    out.append((tick, status, data[i], data[i + 1]))
                i += 2
            elif kind in (0xC0, 0xD0):
                if data[i] & 0x80:
                    raise _Corrupt("bad data byte")
                if kind == 0xC0 and tick < end_tick:
                    out.append((tick, status, data[i], 0))
                i += 1
            elif status == 0xFF:
                meta = data[i]
                length, i = _varlen(data, i + 1)
                if meta in _KEPT_META and tick < end_tick:
                    out.append((tick, 0xFF, meta, data[i : i + length]))
                i += length
            elif status in (0xF0, 0xF7):  # sysex
                length, i = _varlen(data, i)
                i += length
            else:
                raise _Corrupt(f"status byte 0x{status:X} has no place in a MIDI file")
    except IndexError:
        raise _Corrupt("a track ends inside an event") from None
    if i > n and not past:
        raise _Corrupt("a track ends inside an event")
    return out, past or len(out) > MAX_EVENTS


class Bounded(NamedTuple):
    """A file as `bounded_midi` keeps it, and the quarter note where its notes were cut (None: whole)."""

    midi: mido.MidiFile
    cut_beat: float | None


def bounded_midi(data: bytes, max_bars: int = MAX_BARS) -> Bounded:
    """The bytes of a MIDI file -> a mido file that pretty_midi reads in bounded time and memory,
    whatever the file says: the file is cut at quarter 4 * max_bars (the melody is cut there
    anyway) or earlier, after its first MAX_EVENTS events in time; notes still sounding at the cut
    end there; a file whose ticks would pass MAX_TICKS is rescaled to RESCALED_TPB ticks per beat.
    Only what melodies need is kept (notes, programs, tempos, meters, keys, track names; a drum
    part's first note). Raises _Corrupt."""
    head = int.from_bytes(data[4:8], "big")
    if len(data) < 8 + head or head < 6:
        raise _Corrupt("bad header")
    num_tracks, tpb = int.from_bytes(data[10:12], "big"), int.from_bytes(data[12:14], "big")
    if tpb & 0x8000:
        raise _Corrupt("SMPTE time code instead of ticks per beat is not supported")
    if tpb == 0:
        raise _Corrupt("zero ticks per beat")
    cut = max_bars * (STEPS_PER_BAR // STEPS_PER_QUARTER) * tpb
    tracks: list[list[_Event]] = []
    pos, was_cut, kept = 8 + head, False, 0
    for _ in range(num_tracks):
        if pos + 8 > len(data) or data[pos : pos + 4] != b"MTrk":
            raise _Corrupt(f"track {len(tracks)} is missing")
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if pos + 8 + size > len(data):
            raise _Corrupt(f"track {len(tracks)} is cut short")
        events, past = _scan_track(data[pos + 8 : pos + 8 + size], cut)
        tracks.append(events)
        was_cut, kept = was_cut or past, kept + len(events)
        if kept > 2 * MAX_EVENTS:  # cut in time now, so a file of many tracks never holds more
            cut, kept = _cut_at_budget(tracks, cut)
            was_cut = True
        pos += 8 + size
    if kept > MAX_EVENTS:
        cut, kept = _cut_at_budget(tracks, cut)
        was_cut = True
    scale = RESCALED_TPB / tpb if cut > MAX_TICKS else 1.0
    out = mido.MidiFile(ticks_per_beat=RESCALED_TPB if scale != 1.0 else tpb)
    for events in tracks:
        track, now, sounding = mido.MidiTrack(), 0, {}
        for tick, status, a, b in events:
            if tick >= cut:
                break
            t = round(tick * scale)
            if status == 0xFF:
                track.append(build_meta_message(a, b, t - now))
            elif status & 0xF0 == 0xC0:
                track.append(mido.Message.from_bytes([status, a], t - now))
            else:
                assert isinstance(b, int)  # a channel message: b is its second data byte
                track.append(mido.Message.from_bytes([status, a, b], t - now))
                sounding[(status & 0x0F, a)] = status >= 0x90 and b > 0  # an off ends all (pretty_midi)
            now = t
        t = round(cut * scale)
        for channel, pitch in [key for key, on in sounding.items() if on]:  # these end at the cut
            track.append(mido.Message("note_off", channel=channel, note=pitch, time=t - now))
            now = t
        track.append(mido.MetaMessage("end_of_track"))  # pretty_midi fails on an empty track
        out.tracks.append(track)
    return Bounded(out, cut / tpb if was_cut else None)


def _cut_at_budget(tracks: list[list[_Event]], cut: int) -> tuple[int, int]:
    """Cut the tracks' events in time after the first MAX_EVENTS of them all (in place) ->
    (the new cut tick, events left)."""
    ticks = np.array([e[0] for t in tracks for e in t], dtype=np.int64)
    if len(ticks) > MAX_EVENTS:
        cut = min(cut, int(np.partition(ticks, MAX_EVENTS)[MAX_EVENTS]))
    for events in tracks:
        events[:] = [e for e in events if e[0] < cut]
    return cut, sum(len(t) for t in tracks)


def load_score(source: str | Path | bytes, max_bars: int = MAX_BARS) -> Score:
    """Read a MIDI file (path or bytes) into its notes and timing events, with a clear error for
    bad input; bounded work whatever the file holds (`bounded_midi`)."""
    return _load(source, max_bars)[0]


def _load(source: str | Path | bytes, max_bars: int) -> tuple[Score, float | None]:
    """`load_score`, and the quarter note where the file was cut (None: read whole)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UnreadableMidiError(f"{path}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnreadableMidiError(f"{path.name}: file is larger than {MAX_FILE_BYTES >> 20} MB")
        data = path.read_bytes()
        name = path.name
    else:
        data, name = bytes(source), "input"
    if not data:
        raise UnreadableMidiError(f"{name}: the file is empty")
    if not data.startswith(b"MThd"):
        raise UnreadableMidiError(f"{name}: not a MIDI file (no MThd header)")
    try:
        mid, cut_beat = bounded_midi(data, max_bars)
        return score_of(read_pretty_midi(mid)), cut_beat
    except (_Corrupt, BadMeter) as e:
        raise UnreadableMidiError(f"{name}: corrupt MIDI file ({e})") from None
    except Exception as e:  # mido's and pretty_midi's many kinds on corrupt data
        raise UnreadableMidiError(f"{name}: corrupt MIDI file ({type(e).__name__}: {e})") from None


def beat_clock(score: Score) -> Callable[[Any], np.ndarray]:
    """seconds -> beats through the score's tempo map, for many times at once (a song's
    notes: one call per note was a fifth of reading a long song)."""
    tempos = sorted(score.tempos, key=lambda t: t[0])
    if not tempos or tempos[0][0] > 0:
        tempos = [(0.0, tempos[0][1] if tempos else DEFAULT_QPM)] + tempos
    times = np.array([t for t, _ in tempos])
    qpms = np.array([q for _, q in tempos])
    beats_at = np.concatenate([[0.0], np.cumsum(np.diff(times) * qpms[:-1] / 60.0)])

    def beats(t: Any) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.searchsorted(times, t, side="right") - 1
        return beats_at[i] + (t - times[i]) * qpms[i] / 60.0

    return beats


def sequence_lines(score: Score, max_bars: int = MAX_BARS) -> list[Candidate]:
    """One monophonic line per non-drum instrument of a score, on the model grid: notes placed
    by their beat (so tempo changes never move the grid), cut at the bar limit, quantised to 16th
    notes, drums, silent notes (velocity 0) and pitches outside 21..108 left out."""
    beats = beat_clock(score)
    end = float(max_bars * STEPS_PER_BAR // STEPS_PER_QUARTER)  # in beats
    notes = [n for n in score.notes if not n.is_drum and n.velocity > 0 and MIN_PITCH <= n.pitch <= MAX_PITCH]
    starts = beats([n.start for n in notes])
    kept = starts < end  # a note held past the bar limit ends there
    notes = [n for n, k in zip(notes, kept, strict=True) if k]
    onsets = quantize(starts[kept] * STEPS_PER_QUARTER)
    offsets = quantize(np.minimum(beats([n.end for n in notes]), end) * STEPS_PER_QUARTER)
    offsets = np.maximum(offsets, onsets + 1)  # a note shorter than half a step still takes one
    by_instrument: dict[int, list[int]] = {}
    for i, n in enumerate(notes):
        by_instrument.setdefault(n.instrument, []).append(i)
    lines: list[Candidate] = []
    for instrument, rows in sorted(by_instrument.items()):
        first, line = monophonic(onsets[rows], offsets[rows],
                                 np.array([pitch_to_token(notes[i].pitch) for i in rows]), STEPS_PER_BAR)
        tokens = np.zeros(first + len(line), dtype=np.uint8)
        tokens[first:] = line
        together = np.unique(onsets[rows], return_counts=True)[1]
        lines.append(Candidate(
            index=len(lines), instrument=instrument, program=notes[rows[0]].program,
            name=score.names.get(instrument, ""), tokens=tokens[: max_bars * STEPS_PER_BAR],
            num_source_notes=len(rows), polyphony=float((together > 1).mean()),
        ))
    return lines


# Why each signal: a musician's first look at a file. Names say most when they say anything
# ("Melody", "Vocal", "Soprano" vs "Bass", "Acc", "Left Hand"); the General MIDI program says
# what the instrument usually plays (basses and pads accompany, reeds, voices and synth leads
# carry tunes); the tune is the top line, busy, single-voiced, varied, and does not repeat one
# figure bar after bar as an accompaniment does. A piano's right hand carries the tune of a piano
# piece but plays chords in a band, so its name says half as much; an alto or tenor saxophone
# is a band's lead instrument, not a choir's inner voice.
_TUNE_NAME = re.compile(r"melod|lead|vocal|voice|\bvox\b|solo|soprano|sopran|canto|cantus|tune|theme|singer")
_HAND_NAME = re.compile(r"right hand|\brh\b")
_INNER_NAME = re.compile(r"\balto\b(?!\s*sax)|\btenor(?!\s*sax)|\bviola\b|\bii\b|\b2nd\b|second|harmony|"
                         r"(violin|violino|soprano|melody|lead|voice)\s*2\b")
_ACCOMP_NAME = re.compile(r"bass(?!oon)|\bacc\b|accomp|chord|\bpad|\bcomp\b|rhythm|strum|\barp|left hand|\blh\b|"
                          r"backing|drum|perc|continuo|violone")
_PROGRAM_POINTS = (  # (first, last, points) over General MIDI program families
    (32, 39, -3.0), (43, 43, -2.0), (47, 47, -2.0), (55, 55, -2.0), (58, 58, -2.0),  # basses, timpani, hit, tuba
    (88, 103, -2.0), (112, 127, -2.0),  # pads, effects, percussive, sound effects
    (52, 54, 1.0), (56, 56, 1.0), (59, 59, 1.0), (64, 79, 1.0),  # voices, trumpets, reeds and pipes
    (80, 87, 2.0),  # synth leads
)


def name_points(name: str) -> float:
    """+3 for a tune's name, +1.5 for a right hand's, -1.5 for an inner part's, -3 for an
    accompaniment's (they add up)."""
    name = name.lower().strip()
    return (3.0 * bool(_TUNE_NAME.search(name)) + 1.5 * bool(_HAND_NAME.search(name))
            - 1.5 * bool(_INNER_NAME.search(name)) - 3.0 * bool(_ACCOMP_NAME.search(name)))


def program_points(program: int) -> float:
    """What the General MIDI instrument usually plays: -3 a bass ... +2 a synth lead, 0 the rest."""
    return next((p for lo, hi, p in _PROGRAM_POINTS if lo <= program <= hi), 0.0)


def repetition(tokens: np.ndarray) -> float:
    """Share of bars (of 3+ notes) that repeat the rhythm and contour of one of the two bars
    before: an accompaniment figure (an Alberti bass, a strummed or arpeggiated chord) does,
    a tune rarely does."""
    bars = np.asarray(tokens).reshape(-1, STEPS_PER_BAR)
    shapes = []
    for bar in bars:
        steps = np.flatnonzero(is_onset(bar))
        shapes.append((tuple(steps), tuple(np.sign(np.diff(bar[steps].astype(int))))) if len(steps) >= 3 else None)
    counted = [i for i, s in enumerate(shapes) if s is not None]
    if not counted:
        return 0.0
    return sum(shapes[i] in shapes[max(0, i - 2) : i] for i in counted) / len(counted)


def melody_signals(candidates: list[Candidate]) -> list[dict[str, float]]:
    """Each candidate's points per signal (their sum ranks it, `most_melodic`): name, program,
    register (-1.5 an octave below the highest line), polyphony (-2.5 when every onset is a
    chord), density (up to -1.5 below 40% of the busiest line's notes), variety (up to -1.5
    under 8 different pitches) and repetition (up to -3)."""
    most = max(c.num_notes for c in candidates)
    medians = [float(np.median(tokens_pitches(c.tokens))) if c.num_notes else 0.0 for c in candidates]
    top = max(medians)
    out = []
    for c, median in zip(candidates, medians, strict=True):
        out.append({
            "name": name_points(c.name),
            "program": program_points(c.program),
            "register": 1.5 * (median - top) / 12.0,
            "polyphony": -2.5 * c.polyphony,
            "density": -1.5 * max(0.0, 1.0 - c.num_notes / (0.4 * most)),
            "variety": -1.5 * max(0.0, 1.0 - len(np.unique(tokens_pitches(c.tokens))) / 8.0),
            "repetition": -3.0 * repetition(c.tokens),
        })
    return out


def most_melodic(candidates: list[Candidate]) -> int:
    """Index of the line a musician would call the tune: the highest total of `melody_signals`
    (the first such line on a tie)."""
    totals = [sum(s.values()) for s in melody_signals(candidates)]
    return int(np.argmax(totals))


def read_midi(source: str | Path | bytes, max_bars: int = MAX_BARS) -> MidiMelodies:
    """Read a MIDI file (path or bytes) -> its candidate melodies and the default choice."""
    score, cut_beat = _load(source, max_bars)
    if not score.notes:
        raise NoMelodyError("the MIDI file has no notes")
    if all(n.is_drum for n in score.notes):
        raise NoMelodyError("the MIDI file has only drums; a melody needs a pitched track")
    candidates = [c for c in sequence_lines(score, max_bars) if c.num_notes > 0]
    if not candidates:
        if all(not MIN_PITCH <= n.pitch <= MAX_PITCH for n in score.notes if not n.is_drum):
            raise NoMelodyError(f"no melody found: every pitched note lies outside the range the model knows "
                              f"(MIDI {MIN_PITCH}-{MAX_PITCH}, A0 to C8)")
        raise NoMelodyError("no melody found: no pitched notes on the 16th-note grid")
    default = most_melodic(candidates)
    qpms = [q for _, q in sorted(score.tempos, key=lambda t: t[0])]
    sigs = [(n, d) for _, n, d in sorted(score.meters, key=lambda m: m[0])]
    beats, steps = beat_clock(score), STEPS_PER_QUARTER
    end_beat = float(max_bars * STEPS_PER_BAR // STEPS_PER_QUARTER)
    pitched = [n for n in score.notes if not n.is_drum and MIN_PITCH <= n.pitch <= MAX_PITCH]
    starts, ends = beats([n.start for n in pitched]), beats([n.end for n in pitched])
    onsets = np.round(starts[starts < end_beat] * steps).astype(np.int64)
    # the music ends with its last note; a note never ended (cut at the bar limit) counts one step
    end = float(np.where(ends < end_beat, ends, np.minimum(starts + 1 / steps, end_beat)).max()) * steps
    bars = bar_map([(float(beats(t)) * steps, n, d) for t, n, d in score.meters], onsets, end)
    if cut_beat is not None:
        why = (f"symdiff reads at most {max_bars:,} bars" if cut_beat >= end_beat else
               f"symdiff reads the first {MAX_EVENTS:,} notes and events of a file")
        bars = replace(bars, cut_at=bars.number_at(max(0, math.ceil(cut_beat * steps) - 1)), cut_why=why)
    return MidiMelodies(
        candidates=candidates,
        default=default,
        qpm=float(qpms[0]) if qpms else DEFAULT_QPM,
        time_signature=sigs[0] if sigs else (4, 4),
        tempo_changes=max(0, len({round(q, 3) for q in qpms}) - 1),
        time_signature_changes=max(0, len(set(sigs)) - 1),
        bars=bars,
        keys=tuple((round(float(beats(t)) * steps), key) for t, key in sorted(score.keys, key=lambda k: k[0])),
    )
