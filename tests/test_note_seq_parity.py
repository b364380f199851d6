"""`symdiff.notes` against the note_seq path it replaced (tests/note_seq_reference.py), on every
MIDI file under tests/data: the same candidates (tokens, programs, names, polyphony), bar maps,
keys and timing facts, the same bytes written for every line, and bad files refused."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import note_seq_reference as ref
import numpy as np
import pytest

from symdiff import melody as M

DATA = Path(__file__).resolve().parent / "data"
FILES = sorted(p for p in DATA.rglob("*.mid") if "bad" not in p.parts)
BAD = sorted((DATA / "midi" / "bad").glob("*.mid"))


def facts(found: M.MidiMelodies) -> dict:
    """Everything read_midi found, tokens as lists (dataclass equality on arrays is ambiguous)."""
    out = asdict(found)
    out["candidates"] = [c | {"tokens": c["tokens"].tolist()} for c in out["candidates"]]
    return out


def test_the_files_are_there():
    folders = {p.relative_to(DATA).parts[0] for p in FILES}
    assert {"midi", "melody_set", "songs"} <= folders and any("synthetic" in p.parts for p in FILES)
    assert len(FILES) >= 70 and len(BAD) == 3


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_reading_and_writing_match_note_seq(path):
    try:
        ours = M.read_midi(path)
    except M.MelodyError:  # no melody (drums only, ...): note_seq's path finds no line either
        assert not [c for c in ref.sequence_lines(ref.load_note_sequence(path)[0]) if c.num_notes]
        return
    assert repr(facts(ours)) == repr(facts(ref.read_midi(path)))  # repr: numpy and Python numbers differ
    for c in ours.candidates:
        written = M.tokens_to_midi_bytes(c.tokens, ours.qpm, c.program)
        assert written == ref.tokens_to_midi_bytes(c.tokens, ours.qpm, c.program)
        back = M.read_midi(written).chosen.tokens
        assert back.tolist() == c.tokens[: len(back)].tolist() and not c.tokens[len(back) :].any()


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_files_are_refused_with_a_clear_message(path):
    with pytest.raises(M.MelodyError, match=r"corrupt MIDI file|not a MIDI file|the file is empty"):
        M.read_midi(path)


@pytest.mark.parametrize("qpm", [120.0, 97.3, 61.7, 200.0, 33.3])
def test_written_files_match_for_odd_tempos_and_note_kinds(qpm):
    """Repeated pitches, notes cut by the next, a note-off then rests, a note held to the end,
    a silent melody; tempos whose microseconds per beat do not divide evenly."""
    rng = np.random.default_rng(int(qpm * 10))
    for _ in range(20):
        tokens = rng.choice([0, 0, 0, 1, 41, 41, 45, 60], size=int(rng.integers(1, 80))).astype(np.uint8)
        assert M.tokens_to_midi_bytes(tokens, qpm, 0) == ref.tokens_to_midi_bytes(tokens, qpm, 0)
    assert M.tokens_to_midi_bytes(np.zeros(32, np.uint8), qpm) == ref.tokens_to_midi_bytes(np.zeros(32, np.uint8), qpm)


def test_played_notes_match_note_seq():
    tokens = np.array([41, 0, 1, 45, 45, 0, 0, 1, 1, 50, 0, 60], np.uint8)
    score = M.tokens_to_score(tokens, qpm=96.0, program=7, velocity=90)
    ns = ref.tokens_to_note_sequence(tokens, qpm=96.0, program=7, velocity=90)
    assert [(n.start, n.end, n.pitch, n.velocity, n.program) for n in score.notes] == \
        [(n.start_time, n.end_time, n.pitch, n.velocity, n.program) for n in ns.notes]
    assert score.total_time == ns.total_time
