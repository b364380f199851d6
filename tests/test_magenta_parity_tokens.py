"""Token parity with Magenta: our MIDI -> mel_2bar tokens against MusicVAE's own converter.

The reference is magenta 2.1.4's `OneHotMelodyConverter` exactly as configured for
`CONFIG_MAP['cat-mel_2bar_big']` (the checkpoint we use), with one change:
`max_tensors_per_notesequence=None` (it keeps at most 5 windows per file otherwise).
Its one-hot outputs are mapped back to class indices with argmax.

What Magenta does with a NoteSequence (magenta/models/music_vae/data.py,
magenta/pipelines/melody_pipelines.py, note_seq.Melody.from_quantized_sequence):
  1. split it at every tempo and time-signature change (the parts start at time 0);
  2. per part: drop notes whose program is not 0..31 or whose pitch is not 21..108;
     quantize at 4 steps per quarter; skip the part unless a bar is 16 steps (4/4, 2/2);
  3. per instrument: extract melodies (highest note wins among notes that start together,
     a new note cuts the sounding one), ending a melody when a note starts >= 16 steps
     after the last note-off; each starts at the bar holding its first note and is
     padded with rests to a bar line; drums are ignored; melodies are cut at 100 bars;
  4. slide a 2-bar window at a 1-bar hop over each melody; a slice is a new Melody, whose
     constructor turns note-offs before its first note into "no event"; dedupe per part.

melody.py instead gives one whole-track line per instrument on one beat grid for the whole
file. For every file this test predicts Magenta's windows FROM OUR TOKENS, applying only
the rules below, and requires the prediction to equal Magenta's output exactly (same set
per part and per instrument, same count for the whole file):
  - SPLIT: Magenta's parts are located on our grid (a part starting at time t starts at
    our step 4 * beats(t)); notes sounding across a split are cut there; notes begun in an
    earlier part are absent from a later one; Magenta's bars restart at each part, so a
    part that starts mid-bar on our grid (a pickup written as a 1/4 bar, a tempo change
    on beat 3, a 3/4 bar before 4/4 ones) has its windows off our bar lines.
  - METER: a part whose bar is not 16 steps gives nothing.
  - PROGRAM: an instrument whose program is not 0..31 gives nothing.
  - GAP: a line is cut into melodies at every silence of >= 16 steps from a note-off to
    the next onset (1 bar: gap_bars=1.0); the silence between melodies gives nothing.
  - MAX_BARS: a melody longer than 100 bars is cut to its first 100 (the rest is lost).
  - DEDUPE: identical windows of one part count once.
  - LEADING_OFF: in a window, a note-off before the first note-on reads 0, not 1 (the
    held note ended before the window; `Melody._from_event_list`). melody.windows keeps
    the 1, so such windows are compared after this cleaning (a known difference, see
    LEADING_OFF_NOTE).
  - RANGE: Magenta drops notes outside 21..108 where melody.py moves them by octaves into
    range (a known difference, see OUT_OF_RANGE_NOTE). For an instrument with such notes the
    prediction starts from our line of the same NoteSequence without them
    (`melody.sequence_lines`); read_midi's line then differs from Magenta's.
Then both directions are checked against read_midi's lines and `melody.windows(tokens,
2, 1)`: every Magenta window is our window at the same bar, token for token, unless a
rule above says why not (LEADING_OFF; its part starts mid-bar on our grid; a split cut a
note in it: differences only after the part's end); each of our windows is either
explained by a named rule (PROGRAM, METER, SPLIT, GAP, MAX_BARS, RANGE) or equal to
Magenta's window at that very place. Windows are compared as exact 32-token tuples.
Mutating our tokens (a step's shift, one pitch, dropping note-offs, a 2-bar hop, lowest
note wins) or any rule here (GAP off by one, no 100-bar cut, no cut at a split, no
LEADING_OFF or RANGE) makes some file fail.
"""
from __future__ import annotations

import copy
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.magenta  # a tier of its own: needs TensorFlow + Magenta (conftest skips importing it)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import magenta_env  # noqa: E402
import note_seq_reference as ref  # noqa: E402

mv_data = magenta_env.music_vae_data()
mv_configs = magenta_env.music_vae_configs()

import note_seq  # noqa: E402
from note_seq import sequences_lib  # noqa: E402

from symdiff import melody  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "midi"
REAL_FILES = sorted(DATA.glob("*.mid"))
SYNTHETIC_FILES = sorted((DATA / "synthetic").glob("*.mid"))
BAD_FILES = sorted((DATA / "bad").glob("*.mid"))
SPB = melody.STEPS_PER_BAR
WIN = melody.CHUNK_STEPS
MAGENTA_MAX_STEPS = 100 * SPB  # cat-mel_2bar_big: max_bars=100
LEADING_OFF_NOTE = (
    "melody.windows keeps a note-off that comes before a window's first note; MusicVAE's "
    "windows (slices of note_seq Melody objects) have 0 there"
)
OUT_OF_RANGE_NOTE = (
    "melody.py squashes notes outside 21..108 into range by octaves; MusicVAE's "
    "OneHotMelodyConverter drops them before extracting melodies"
)


def magenta_converter():
    """cat-mel_2bar_big's converter, except that it keeps every window."""
    conv = copy.deepcopy(mv_configs.CONFIG_MAP["cat-mel_2bar_big"].data_converter)
    assert isinstance(conv, mv_data.OneHotMelodyConverter)
    conv.max_tensors_per_notesequence = None
    return conv


CONVERTER = magenta_converter()


def test_converter_is_cat_mel_2bar_big():
    """Pin the settings the rules in this file rely on."""
    conv = CONVERTER
    assert conv._valid_programs == mv_data.MEL_PROGRAMS == range(0, 32)
    assert (conv._min_pitch, conv._max_pitch) == (melody.MIN_PITCH, melody.MAX_PITCH)
    assert conv._steps_per_quarter == melody.STEPS_PER_QUARTER
    assert conv._steps_per_bar == SPB and conv._slice_steps == WIN
    assert conv._presplit_on_time_changes and conv._dedupe_event_lists
    assert conv.end_token is None and not conv._pad_to_total_time
    assert conv.output_depth == melody.NUM_CLASSES
    extractor = conv._event_extractor_fn.keywords
    assert extractor["gap_bars"] == 1.0 and extractor["ignore_polyphonic_notes"]
    assert extractor["max_steps_truncate"] == MAGENTA_MAX_STEPS and extractor["pad_end"]
    assert extractor["min_bars"] == 1 and extractor["min_unique_pitches"] == 1
    assert conv.max_tensors_per_notesequence is None
    original = mv_configs.CONFIG_MAP["cat-mel_2bar_big"].data_converter
    assert original.max_tensors_per_notesequence == 5  # why we change it


# --- Magenta's side -----------------------------------------------------------------------

def magenta_windows(ns) -> list[tuple[int, ...]]:
    """The converter's output windows as class-index tuples (argmax of the one-hots)."""
    tensors = CONVERTER.to_tensors(copy.deepcopy(ns))
    out = []
    for onehot in tensors.outputs:
        onehot = np.asarray(onehot)
        assert onehot.shape == (WIN, melody.NUM_CLASSES)
        assert (onehot.sum(axis=1) == 1).all(), "not one-hot"
        out.append(tuple(int(i) for i in onehot.argmax(axis=1)))
    return out


def split_times(ns) -> list[float]:
    """The times `split_note_sequence_on_time_changes` cuts at (its loop, restated)."""
    num, den, qpm = 4, 4, note_seq.DEFAULT_QUARTERS_PER_MINUTE
    changes = sorted(list(ns.time_signatures) + list(ns.tempos), key=lambda t: t.time)
    times = [0.0]
    for c in changes:
        if c.time >= ns.total_time:
            continue
        if isinstance(c, note_seq.NoteSequence.TimeSignature):
            if (c.numerator, c.denominator) == (num, den):
                continue
            num, den = c.numerator, c.denominator
        else:
            if c.qpm == qpm:
                continue
            qpm = c.qpm
        if c.time > times[-1]:
            times.append(c.time)
    if ns.total_time > times[-1]:
        times.append(ns.total_time)
    return times


def part_steps_per_bar(part) -> float | None:
    try:
        q = sequences_lib.quantize_note_sequence(part, melody.STEPS_PER_QUARTER)
        return sequences_lib.steps_per_bar_in_quantized_sequence(q)
    except (note_seq.BadTimeSignatureError, note_seq.NegativeTimeError):
        return None


# --- our side ----------------------------------------------------------------------------

def beat_map(ns):
    """time (s) -> quarter notes, through the file's tempo map (120 qpm before the first)."""
    tempos = sorted(ns.tempos, key=lambda t: t.time)
    times = [0.0] + [t.time for t in tempos if t.time > 0]
    qpms = [note_seq.DEFAULT_QUARTERS_PER_MINUTE] + [t.qpm for t in tempos if t.time > 0]
    for t in tempos:
        if t.time == 0:
            qpms[0] = t.qpm
    at = [0.0]
    for i in range(1, len(times)):
        at.append(at[-1] + (times[i] - times[i - 1]) * qpms[i - 1] / 60.0)

    def beats(t: float) -> float:
        i = max(j for j in range(len(times)) if times[j] <= t + 1e-9)
        return at[i] + (t - times[i]) * qpms[i] / 60.0

    return beats


def quantize(x: float) -> int:
    """note_seq's rounding of a position in steps (cut-off 0.5)."""
    return int(x + 0.5)


@dataclass
class Part:
    index: int
    t0: float
    t1: float
    start: float  # our step (4 * beats), may be fractional
    end: float
    steps_per_bar: float | None
    ns: object

    @property
    def kept(self) -> bool:
        return self.steps_per_bar == SPB

    @property
    def on_our_grid(self) -> bool:
        return abs(self.start - round(self.start)) < 1e-6

    @property
    def a(self) -> int:
        return int(round(self.start))


@dataclass
class Predicted:
    pos: int  # our step where the window starts
    tokens: tuple[int, ...]
    melody_first_onset: int


@dataclass
class MelodySpan:
    start: int
    end: int  # after the 100-bar cut
    full_end: int  # before it


def clean_leading_offs(window) -> tuple[int, ...]:
    """LEADING_OFF: note-offs before the first note-on -> no event (as note_seq does)."""
    out = [int(x) for x in window]
    for i, x in enumerate(out):
        if x >= 2:
            break
        out[i] = melody.NO_EVENT
    return tuple(out)


def line_notes(tokens: np.ndarray):
    """(onset, end, token) of each note of a line: a note ends at the next non-zero token."""
    nz = np.flatnonzero(tokens)
    notes = []
    for k, s in enumerate(nz):
        if tokens[s] >= 2:
            e = int(nz[k + 1]) if k + 1 < len(nz) else len(tokens)
            notes.append((int(s), e, int(tokens[s])))
    return notes


def predict_part(tokens: np.ndarray, a: int, b: int):
    """Magenta's windows for one instrument in the part [a, b) of our grid (rules SPLIT,
    GAP, MAX_BARS), computed from our tokens. Returns (windows, melody spans)."""
    notes = []
    for s, e, tok in line_notes(tokens):
        if a <= s < b:  # SPLIT: only notes that start in the part; cut at its end
            e = min(e, b)
            notes.append((s, max(e, s + 1), tok))
    windows, spans = [], []
    i, search = 0, a
    while i < len(notes):
        first = notes[i][0]
        m0 = first - (first - search) % SPB
        mel = [notes[i]]
        i += 1
        while i < len(notes) and notes[i][0] - mel[-1][1] < SPB:  # GAP
            mel.append(notes[i])
            i += 1
        last_off = mel[-1][1]
        length = last_off - m0 + (-(last_off - m0)) % SPB
        full_end = m0 + length
        length = min(length, MAGENTA_MAX_STEPS)  # MAX_BARS
        ev = np.zeros(length, dtype=np.int64)
        for s, e, tok in mel:
            if s - m0 < length:
                ev[s - m0] = tok
            if e - m0 < length:
                ev[e - m0] = melody.NOTE_OFF
        spans.append(MelodySpan(m0, m0 + length, full_end))
        for w in range(0, length - WIN + 1, SPB):
            windows.append(Predicted(m0 + w, clean_leading_offs(ev[w : w + WIN]), first))
        search = full_end
    return windows, spans


@dataclass
class FileReport:
    name: str
    magenta_total: int = 0
    magenta_on_our_grid: int = 0  # Magenta windows equal to our window at the same bar
    magenta_leading_off: int = 0  # ... once our leading note-offs are cleaned (LEADING_OFF)
    magenta_shifted: int = 0  # equal to our tokens, but the part starts mid-bar on our grid
    magenta_split_cut: int = 0  # differ from ours only where a split cut a note
    ours_total: int = 0
    ours_found: int = 0
    ours_found_leading_off: int = 0  # found once cleaned (LEADING_OFF)
    ours_explained: Counter = field(default_factory=Counter)
    range_rule_instruments: list = field(default_factory=list)
    parts: int = 0
    kept_parts: int = 0


def without_out_of_range(ns):
    out = copy.deepcopy(ns)
    keep = [n for n in out.notes if melody.MIN_PITCH <= n.pitch <= melody.MAX_PITCH]
    del out.notes[:]
    out.notes.extend(keep)
    return out


def prediction_lines(ns, ours: dict[int, melody.Candidate], rep: FileReport) -> dict[int, np.ndarray]:
    """The line each prediction starts from: read_midi's, except for rule RANGE (its instruments
    are recorded in `rep`)."""
    lines: dict[int, np.ndarray] = {}
    for inst, cand in ours.items():
        lines[inst] = cand.tokens
        pitches = [n.pitch for n in ns.notes if n.instrument == inst and not n.is_drum]
        if cand.in_melody_programs and any(
            not melody.MIN_PITCH <= p <= melody.MAX_PITCH for p in pitches
        ):
            rep.range_rule_instruments.append(inst)
            filtered = {c.instrument: c for c in ref.sequence_lines(without_out_of_range(ns))}
            if inst in filtered and filtered[inst].num_notes:
                lines[inst] = filtered[inst].tokens
            else:
                del lines[inst]
    return lines


def count_magenta_window(rep: FileReport, w: Predicted, have: tuple, p: Part, b: float, where: str) -> None:
    """Magenta -> ours: Magenta's window `w` is our window at the same bar (`have`), equal or
    once our leading note-offs are cleaned, or shifted (the part starts mid-bar), or differs only
    after the part's end `b`, where a note was cut; counted in `rep`. `where` names the part and
    instrument in a failure."""
    if have == w.tokens and w.pos % SPB == 0:
        rep.magenta_on_our_grid += 1
    elif clean_leading_offs(have) == w.tokens and w.pos % SPB == 0:
        rep.magenta_leading_off += 1  # LEADING_OFF
    elif clean_leading_offs(have) == w.tokens:
        assert p.a % SPB != 0
        rep.magenta_shifted += 1  # SPLIT: the part starts mid-bar on our grid
    else:  # ... or differs only after the part's end, where a note was cut
        diff = split_cut_steps(have, w.tokens, w.pos, b)
        assert diff is not None, (
            f"{where}: Magenta's window at step "
            f"{w.pos} differs from ours\n magenta {list(w.tokens)}\n ours    {list(have)}")
        rep.magenta_split_cut += 1


def check_our_windows(path: Path, ours: dict[int, melody.Candidate], parts: list[Part], predicted: dict,
                      rep: FileReport) -> None:
    """Ours -> Magenta: each window of each line is Magenta's window at that place, or a rule
    says why Magenta has none there."""
    for inst, cand in ours.items():
        for j, win in enumerate(melody.windows(cand.tokens, bars=2, hop_bars=1)):
            rep.ours_total += 1
            pos, win = j * SPB, tuple(int(x) for x in win)
            reason, expected = explain(pos, inst, cand, parts, predicted, rep)
            if reason is not None:
                rep.ours_explained[reason] += 1
                continue
            if win == expected:
                rep.ours_found += 1
            else:
                assert clean_leading_offs(win) == expected, (
                    f"{path.name}: inst {inst}: our window at bar {j} lies inside a Magenta "
                    f"melody but differs from Magenta's window there\n ours    {list(win)}\n"
                    f" magenta {list(expected)}")
                rep.ours_found_leading_off += 1


def check_file(path: Path) -> FileReport:
    rep = FileReport(path.name)
    ns = note_seq.midi_file_to_note_sequence(str(path))
    try:
        ours = {c.instrument: c for c in melody.read_midi(path).candidates}
    except melody.MelodyError:
        ours = {}  # drums only / no notes: Magenta must give nothing either
    lines = prediction_lines(ns, ours, rep)

    # Magenta's parts, located on our grid. The last one runs on past the file's end.
    times = split_times(ns)
    official = sequences_lib.split_note_sequence_on_time_changes(ns)
    assert len(times) - 1 == len(official), "split times do not match note_seq's split"
    beats = beat_map(ns)
    parts = []
    for i, (t0, t1) in enumerate(zip(times[:-1], times[1:], strict=True)):
        last = i == len(official) - 1
        end = float("inf") if last else 4 * beats(t1)
        parts.append(Part(i, t0, t1, 4 * beats(t0), end, part_steps_per_bar(official[i]), official[i]))
        assert len(official[i].notes) == sum(t0 <= n.start_time < t1 for n in ns.notes), (
            "each part holds the notes that start in it")
    rep.parts, rep.kept_parts = len(parts), sum(p.kept for p in parts)

    # Whole file through Magenta = concatenation of its parts (dedupe is per part).
    whole = magenta_windows(ns)
    rep.magenta_total = len(whole)
    per_part = [magenta_windows(p.ns) for p in parts]
    assert Counter(whole) == Counter(w for ws in per_part for w in ws), path.name

    programs = {n.instrument: n.program for n in ns.notes}
    drums = {n.instrument for n in ns.notes if n.is_drum}
    instruments = sorted({n.instrument for n in ns.notes})
    predicted: dict[tuple[int, int], tuple[dict[int, tuple], list[MelodySpan], float]] = {}
    for p, mag_part in zip(parts, per_part, strict=True):
        assert len(mag_part) == len(set(mag_part)), f"{path.name}: part {p.index} not deduped"
        union = set()
        for inst in instruments:
            mag_inst = set(magenta_windows(mv_data._extract_instrument(p.ns, inst)))
            skip = (not p.kept) or inst in drums or programs[inst] not in melody.MELODY_PROGRAMS
            if skip or inst not in lines:  # METER, PROGRAM, drums, nothing pitched
                assert mag_inst == set(), f"{path.name}: part {p.index} inst {inst}: Magenta has windows"
                continue
            assert p.on_our_grid, (
                f"{path.name}: part {p.index} starts at step {p.start:.4f}, off our 16th grid: "
                "its notes quantize differently; add a rule or another file")
            # where Magenta's part ends (notes sounding on are cut there), on our grid
            b = float("inf") if p.end == float("inf") else p.a + quantize(p.end - p.a)
            pred, spans = predict_part(lines[inst], p.a, b)
            pred_set = {w.tokens for w in pred}
            assert mag_inst == pred_set, mismatch_message(path.name, p, inst, mag_inst, pred)
            union |= pred_set
            predicted[(p.index, inst)] = ({w.pos: w.tokens for w in pred}, spans, b)
            if inst in rep.range_rule_instruments:
                continue  # RANGE: read_midi's line is not what Magenta sees
            # Magenta -> ours: each of its windows is our window at the same bar, ...
            ours_line = ours[inst].tokens
            for w in pred:
                have = tuple(int(x) for x in padded(ours_line, w.pos))
                count_magenta_window(rep, w, have, p, b, f"{path.name}: part {p.index} inst {inst}")
        assert set(mag_part) == union, f"{path.name}: part {p.index}: instruments do not add up"

    check_our_windows(path, ours, parts, predicted, rep)
    return rep


def padded(tokens: np.ndarray, pos: int) -> np.ndarray:
    """Our tokens at [pos, pos + 32), past the line's end as rests; the end of a line ends
    a note still sounding there (as in melody.tokens_to_note_sequence)."""
    ext = np.zeros(max(len(tokens), pos + WIN) + 1, dtype=np.int64)
    ext[: len(tokens)] = tokens
    nz = np.flatnonzero(tokens)
    if len(nz) and tokens[nz[-1]] >= 2:
        ext[len(tokens)] = melody.NOTE_OFF
    return ext[pos : pos + WIN]


def split_cut_steps(ours_window, magenta_window, pos, b):
    """Steps where the two differ once leading note-offs are cleaned, if all lie at or after
    the part's end `b` (SPLIT: Magenta cut the note there and pads with rests); else None."""
    have = np.array(clean_leading_offs(ours_window))
    diff = pos + np.flatnonzero(have != np.array(magenta_window))
    return diff.tolist() if all(d >= b for d in diff) else None


def explain(pos, inst, cand, parts, predicted, rep) -> tuple[str | None, tuple | None]:
    """(rule, None) for why Magenta has no window for our window at `pos`, or
    (None, Magenta's window at that place)."""
    if not cand.in_melody_programs:
        return "PROGRAM", None
    overlapped = [p for p in parts if p.start < pos + WIN and pos < p.end]
    if any(not p.kept for p in overlapped):
        return "METER", None
    if len(overlapped) > 1:
        return "SPLIT (window crosses a time change)", None
    p = overlapped[0]
    if p.a % SPB != 0:
        return "SPLIT (part starts mid-bar on our grid)", None
    if inst in rep.range_rule_instruments:
        return "RANGE", None
    at, spans, b = predicted.get((p.index, inst), ({}, [], None))
    for s in spans:
        if s.start <= pos and pos + WIN <= s.end:
            if split_cut_steps(cand.tokens[pos : pos + WIN], at[pos], pos, b):
                return "SPLIT (a note cut at a time change)", None
            return None, at[pos]
        if s.start <= pos and pos + WIN <= s.full_end:
            return "MAX_BARS", None
    return "GAP", None


def mismatch_message(name, part, inst, mag, pred) -> str:
    pred_set = {w.tokens for w in pred}
    only_mag, only_pred = sorted(mag - pred_set), sorted(pred_set - mag)
    lines = [f"{name}: part {part.index} (step {part.start:g}) instrument {inst}: "
             f"Magenta {len(mag)} windows, predicted from our tokens {len(pred_set)}"]
    for w in only_mag[:3]:
        lines.append(f" only Magenta: {list(w)}")
    for w in only_pred[:3]:
        pos = [x.pos for x in pred if x.tokens == w]
        lines.append(f" only ours (step {pos}): {list(w)}")
    return "\n".join(lines)


# --- the tests ----------------------------------------------------------------------------

REPORTS: dict[str, FileReport] = {}


@pytest.mark.parametrize("path", REAL_FILES + SYNTHETIC_FILES, ids=lambda p: p.name)
def test_tokens_match_magenta(path):
    REPORTS[path.name] = rep = check_file(path)
    assert rep.ours_total == rep.ours_found + rep.ours_found_leading_off + sum(rep.ours_explained.values())


def report_for(path: Path) -> FileReport:
    return REPORTS.get(path.name) or check_file(path)


def test_parity_covers_enough_real_files():
    """The per-file checks above must have compared real windows, not passed vacuously,
    and each rule must have been needed by some file."""
    reports = [report_for(p) for p in REAL_FILES]
    table = "\n".join(
        f"{r.name:44s} parts {r.kept_parts}/{r.parts} magenta {r.magenta_total:4d} | on our grid "
        f"{r.magenta_on_our_grid:4d} leading-off {r.magenta_leading_off:3d} shifted "
        f"{r.magenta_shifted:3d} cut {r.magenta_split_cut:3d} | ours {r.ours_total:4d} found "
        f"{r.ours_found + r.ours_found_leading_off:4d} {dict(r.ours_explained)}"
        for r in reports + [report_for(p) for p in SYNTHETIC_FILES])
    print("\n" + table)
    assert len(REAL_FILES) >= 20
    with_windows = [r for r in reports if r.magenta_total > 0]
    assert len(with_windows) >= 15, [r.name for r in with_windows]
    exact = sum(r.magenta_on_our_grid for r in reports)
    found = sum(r.ours_found for r in reports)
    assert exact >= 450 and found >= 450, (exact, found)
    reasons = Counter()
    for r in reports:
        reasons.update(r.ours_explained)
    for rule in ("PROGRAM", "METER", "GAP", "SPLIT (window crosses a time change)",
                 "SPLIT (part starts mid-bar on our grid)"):
        assert reasons[rule] > 0, (rule, reasons)
    assert sum(r.magenta_leading_off for r in reports) > 0  # LEADING_OFF
    assert sum(r.magenta_shifted for r in reports) > 0
    synthetic = {p.name: report_for(p) for p in SYNTHETIC_FILES}
    assert synthetic["syn_gaps_long_melody.mid"].ours_explained["MAX_BARS"] > 0
    assert synthetic["syn_tempo_change_mid_bar.mid"].magenta_split_cut > 0
    assert synthetic["syn_out_of_range.mid"].ours_explained["RANGE"] > 0


def test_range_rule_is_the_only_pitch_difference():
    """RANGE (see OUT_OF_RANGE_NOTE) is applied exactly where a melody-program track has
    notes outside 21..108, and nowhere else."""
    for path in REAL_FILES + SYNTHETIC_FILES:
        rep = report_for(path)
        ns = note_seq.midi_file_to_note_sequence(str(path))
        expected = sorted({
            n.instrument for n in ns.notes
            if not n.is_drum and n.program in melody.MELODY_PROGRAMS
            and not melody.MIN_PITCH <= n.pitch <= melody.MAX_PITCH
        })
        assert rep.range_rule_instruments == expected, path.name
    assert report_for(DATA / "synthetic" / "syn_out_of_range.mid").range_rule_instruments == [0]


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_bad_files_rejected_by_both(path):
    """Files Magenta's reader (note_seq) cannot read, read_midi rejects with MelodyError."""
    with pytest.raises(note_seq.midi_io.MIDIConversionError):
        note_seq.midi_file_to_note_sequence(str(path))
    with pytest.raises(melody.MelodyError):
        melody.read_midi(path)
