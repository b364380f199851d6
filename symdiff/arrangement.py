"""The user's whole arrangement back: their MIDI file with only the chosen line's notes inside a
range replaced by new ones.

A musician who asks for bars 17-24 of one track wants their song back, not a one-track sketch.
So the output is the input file edited at the tick level with mido: every other track, every
other channel of the chosen track, programs, names, the tempo map, meters, key signatures,
controllers and the chosen line's own notes outside the range stay message for message as they
were (nothing is re-quantised). Inside the range the line's notes are removed and the new ones
written on its channel, under its program, at the median velocity of its notes near the range.
A note of the user's sounding into the range ends at its start; a new note never sounds past
its end. On a track that plays chords (`melody.Candidate.chordal`) only its top line is the
melody the model rewrote (the highest note of each onset, as the reader took it): the notes under
it stay, so the harmony is kept under the new line.

Ranges are token steps (16th notes from the file's tick 0, as `melody.read_midi` places them:
step s is tick s * ticks_per_beat / 4, whatever the tempo map), so a caller that counts bars in
the file's own meter only has to turn its bars into steps.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from . import melody, notes
from .atomic import write_bytes

NEAR_STEPS = 4 * melody.STEPS_PER_BAR  # the neighbours whose velocity the new notes take


@dataclass
class _Note:
    start: int  # absolute tick of the note-on
    end: int | None  # absolute tick of the note-off, None if the file never ends it
    on: int  # index of the note-on in the track's event list
    off: int | None  # index of the note-off
    pitch: int
    velocity: int


def _absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    tick, out = 0, []
    for msg in track:
        tick += msg.time
        out.append((tick, msg))
    return out


def _line_notes(events: list[tuple[int, mido.Message]], channel: int, program: int) -> list[_Note]:
    """The notes of one channel of a track played under `program`, note-ons paired first in,
    first out with the note-offs of their pitch."""
    current = 0
    open_: dict[int, list[_Note]] = {}  # pitch -> its notes still sounding, oldest first
    notes: list[_Note] = []
    for i, (tick, msg) in enumerate(events):
        if getattr(msg, "channel", None) != channel:
            continue
        if msg.type == "program_change":
            current = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            if current == program:
                note = _Note(tick, None, i, None, msg.note, msg.velocity)
                notes.append(note)
                open_.setdefault(msg.note, []).append(note)
        elif msg.type in ("note_on", "note_off") and open_.get(msg.note):
            note = open_[msg.note].pop(0)
            note.end, note.off = tick, i
    return notes


def split_chords(notes: list[_Note], ticks_per_beat: int, new: list[tuple[int, int, int]]) -> tuple[list[_Note],
                                                                                                   list[_Note]]:
    """A chord part's notes -> (its top line, the highest note of each onset as the reader's
    monophonic reduction takes it, onsets on one 16th note being together; the notes under it,
    its harmony). An under note that the `new` notes (start tick, end tick, pitch) play at the
    same time goes with the top line: one channel cannot sound a pitch twice."""
    step = {n.start: round(n.start * melody.STEPS_PER_QUARTER / ticks_per_beat) for n in notes}
    top: dict[int, int] = {}
    for n in notes:
        top[step[n.start]] = max(top.get(step[n.start], n.pitch), n.pitch)

    def clashes(n: _Note) -> bool:
        return any(p == n.pitch and a < (n.end if n.end is not None else a + 1) and b > n.start for a, b, p in new)

    under = [n for n in notes if n.pitch < top[step[n.start]] and not clashes(n)]
    return [n for n in notes if n not in under], under


def voice_under(under: list[_Note], new: list[tuple[int, int, int]], t_lo: int, t_hi: int) -> dict[int, int]:
    """Harmony notes that start in the range (ticks `t_lo`-`t_hi`) at or above a `new` note
    (start tick, end tick, pitch) sounding then -> {note-on index: pitch an octave or more lower,
    just under the new line}. Why: the melody is the top line; a kept chord note above the new
    one would take the tune over when the file is heard or read back. The pitch class, so the
    chord, is kept; harmony before or after the range is untouched."""
    out = {}
    for n in under:
        if not t_lo <= n.start < t_hi:
            continue
        over = [p for a, b, p in new if a <= n.start < b]
        if over and n.pitch >= min(over):
            pitch = n.pitch - 12 * ((n.pitch - min(over)) // 12 + 1)
            if pitch >= 0:
                out[n.on] = pitch
    return out


def _find_line(mid: mido.MidiFile, data: bytes, line: melody.Candidate) -> tuple[int, int]:
    """(track index, channel) of the file that `line` was read from: the one whose notes (onset
    tick, pitch) agree most with the line's notes as pretty_midi read them."""
    pm = notes.read_pretty_midi(melody.bounded_midi(data).midi)
    scale = mid.ticks_per_beat / pm.resolution
    want = {(round(pm.time_to_tick(n.start) * scale), n.pitch) for n in pm.instruments[line.instrument].notes}
    best, where = -1, (0, 0)
    for t, track in enumerate(mid.tracks):
        events = _absolute(track)
        for ch in sorted({m.channel for _, m in events if m.type == "note_on"}):
            got = {(n.start, n.pitch) for n in _line_notes(events, ch, line.program)}
            if len(got & want) > best:
                best, where = len(got & want), (t, ch)
    return where


def token_notes(tokens: np.ndarray, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(start step, end step, pitch) of the notes that start in tokens[lo:hi]; each ends at the
    next event or at `hi`, never later."""
    tokens = np.asarray(tokens)
    out = []
    for s in range(lo, hi):
        if tokens[s] >= 2:
            nxt = np.flatnonzero(tokens[s + 1 : hi] != melody.NO_EVENT)
            end = s + 1 + int(nxt[0]) if len(nxt) else hi
            out.append((s, end, int(tokens[s]) - 2 + melody.MIN_PITCH))
    return out


def replace_range(source: str | Path | bytes, line: melody.Candidate, tokens: np.ndarray,
                  steps: tuple[int, int]) -> tuple[bytes, list[str]]:
    """The MIDI file `source` with `line`'s notes that start in `steps` (token steps, end
    exclusive) replaced by the notes `tokens` has there -> (the new file's bytes, notes for the
    user, e.g. that a polyphonic track got a single line)."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except Exception as e:  # mido's many kinds on corrupt data
        raise melody.MelodyError(f"cannot read the file back to write the arrangement ({e})") from None
    lo, hi = steps
    t_lo, t_hi = (round(s * mid.ticks_per_beat / melody.STEPS_PER_QUARTER) for s in steps)
    track_index, channel = _find_line(mid, data, line)
    events = _absolute(mid.tracks[track_index])
    notes = _line_notes(events, channel, line.program)

    new = [(*(round(s * mid.ticks_per_beat / melody.STEPS_PER_QUARTER) for s in (start, end)), pitch)
           for start, end, pitch in token_notes(tokens, lo, hi)]
    under: list[_Note] = []
    lowered: dict[int, int] = {}  # event index -> new pitch: harmony voiced under the new line
    if line.chordal:
        notes, under = split_chords(notes, mid.ticks_per_beat, new)
        lowered = voice_under(under, new, t_lo, t_hi)
        lowered.update({n.off: lowered[n.on] for n in under if n.on in lowered and n.off is not None})
    drop: set[int] = set()  # event indexes removed
    moved: dict[int, int] = {}  # note-off index -> new tick
    for n in notes:
        if t_lo <= n.start < t_hi:
            drop.update(i for i in (n.on, n.off) if i is not None)
        elif n.start < t_lo and (n.end is None or n.end > t_lo):
            if n.off is None:
                events.append((t_lo, mido.Message("note_off", channel=channel, note=n.pitch)))
                moved[len(events) - 1] = t_lo
            else:
                moved[n.off] = t_lo

    near = [n.velocity for n in notes if t_lo - NEAR_STEPS * mid.ticks_per_beat // 4 <= n.start
            < t_hi + NEAR_STEPS * mid.ticks_per_beat // 4] or [n.velocity for n in notes] or [100]
    velocity = int(np.median(near))
    # (tick, rank, order, message): at one tick, note-offs first, then the file's own events in
    # their order, then new note-ons; the end of the track stays last.
    rows = []
    for i, (tick, msg) in enumerate(events):
        if i in drop:
            continue
        if msg.type == "end_of_track":
            rows.append((tick, 3, i, msg))
        elif i in moved:
            rows.append((moved[i], 0, i, msg))
        else:
            rows.append((tick, 1, i, msg.copy(note=lowered[i]) if i in lowered else msg))
    order = len(events)
    for a, b, pitch in new:
        rows.append((a, 2, order, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
        rows.append((b, 0, order + 1, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        order += 2
    last = max(r[0] for r in rows)
    rows = [(last if r[1] == 3 else r[0], r[1], r[2], r[3]) for r in rows]
    track, now = mido.MidiTrack(), 0
    for tick, _, _, msg in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        track.append(msg.copy(time=tick - now))
        now = tick
    out = mido.MidiFile(type=mid.type, ticks_per_beat=mid.ticks_per_beat, charset=mid.charset)
    out.tracks = [track if t == track_index else tr for t, tr in enumerate(mid.tracks)]
    buf = io.BytesIO()
    out.save(file=buf)
    remarks = []
    starts = [n.start for n in notes if t_lo <= n.start < t_hi]  # the notes replaced
    if line.chordal:  # (bar numbers are the caller's: steps know no meter)
        held = sum(n.start < t_hi and (n.end is None or n.end > t_lo) for n in under)
        voiced = sum(events[i][1].type == "note_on" for i in lowered)
        remarks.append(f"track {line.index} plays chords: the new bars replace its top line, and the {held} notes "
                       "under it are kept" + (f" ({voiced} set lower, under the new line)" if voiced else ""))
    elif len(set(starts)) < len(starts):
        remarks.append(f"track {line.index} has notes played together in the range; the new bars are a single line")
    return buf.getvalue(), remarks


def write_arrangement(source: str | Path | bytes, line: melody.Candidate, tokens: np.ndarray,
                      steps: tuple[int, int], path: str | Path) -> list[str]:
    """`replace_range` written to `path` atomically (`symdiff.atomic`); returns its notes."""
    data, remarks = replace_range(source, line, tokens, steps)
    write_bytes(path, data)
    return remarks
