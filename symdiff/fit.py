"""What new bars must keep of the user's piece, and how a draw falls short of it.

An infill replaces bars of a real song. A musician judges the result against what it replaces
and what sits around it, so the targets are read from the user's own bars (never from a
reference) when the range is planned, and every draw is checked against them
(`MelodyDiffusion.infill` draws again the ones that fall short and reports what still does):

- **Note rate.** As the replaced bars (`density="replaced"`, the default; where they are all
  rests, the nearest bars that play), as the piece (`"piece"`: the other bars of the model's
  window, rests included, which is all a hidden-middle evaluation may look at), or a number of
  notes per bar. A draw more than exp(DENSITY_MARGIN) = 1.65 times off is a fault.
- **No erased bars.** With `"replaced"`, a draw may not hold more silent bars (no note sounding
  anywhere in the bar) than the bars it replaces did: a sax line's rests may come back, its
  phrases may not vanish.
- **The section's key.** In a song whose key signature changes, the scale of the nearby bars
  (up to KEY_BARS on each side, inside the key-signature section that holds the range), found
  with the Krumhansl-Kessler key profiles. In a song of one key the model's window already
  holds it, and a key read off a few bars of one line is a guess (a chorale's alto modulates):
  measured on the fidelity task's chorales, checking it there redrew middles whose key fitted
  the whole piece, and they lost register (seed 0: pitch overlap 0.880 -> 0.866).
  The notes name the key, the signatures only bound the section: many files carry a default C
  major signature whatever they play in.
  A draw with more notes off that scale than the nearby bars' own share would give by chance
  (`key_limit`: two binomial standard deviations and a note more) is a fault: in a tune in G that
  turns to F at bar 17, bars 9-12 take no run of B-flats.
- **The cadence.** A range that holds the line's last note ends on that note's pitch class (a
  tune that ends on A still ends on A).
- **A pickup stays a pickup.** A pickup the bar numbers depend on (a bar of rest, then the
  pickup's notes: `melody.BarMap.onset_pickup`) keeps a note, or every later bar number moves.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import melody

DENSITY_MARGIN = 0.5  # |log| of the note-rate ratio: 1.65 times off
DENSITY_FLOOR = 0.5  # notes: a silent side's count, so the log ratio stays finite
NEAR_PLAYING_BARS = 4  # bars that play on each side, the rate of a range of rests
KEY_BARS = 8  # bars on each side whose notes say the section's key
KEY_MIN_NOTES = 8  # fewer nearby notes say no key
ERASE_WEIGHT = 10.0  # an erased bar outweighs any other miss (`badness`): it is the one never allowed
KEY_FLOOR = 0.02  # the least share of notes off the scale that chance allows (`key_limit`)
DENSITY_CHOICES = ("replaced", "piece")
# "piece" checks ranges of this many bars or more: over a bar or two a note rate says little against
# the whole piece (a cadence bar of half notes in a tune of quarters is 2 times off, and right).
PIECE_MIN_BARS = 4

# Krumhansl & Kessler's probe-tone profiles, C major and C minor (Krumhansl 1990).
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural, harmonic and melodic minor together
_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def density_log_ratio(notes_a: int, bars_a: float, notes_b: int, bars_b: float) -> float:
    """|log| of the ratio of notes per bar of two stretches, note counts floored at `DENSITY_FLOOR`."""
    return float(abs(np.log(max(notes_a, DENSITY_FLOOR) / bars_a) - np.log(max(notes_b, DENSITY_FLOOR) / bars_b)))


def sounding_steps(tokens: np.ndarray) -> np.ndarray:
    """(steps,) bool: a note sounds at the step (its note-on was the last event at or before it)."""
    tokens = np.asarray(tokens)
    idx = np.where(tokens != melody.NO_EVENT, np.arange(len(tokens)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    return (last >= 0) & melody.is_onset(tokens[np.maximum(last, 0)])


def silent_bars(tokens: np.ndarray, lo: int, hi: int) -> int:
    """Bars (16 steps from `lo`; a last partial bar counts) of tokens[lo:hi] with no note sounding."""
    on = sounding_steps(tokens)[lo:hi]
    size = melody.STEPS_PER_BAR
    return sum(not on[i : i + size].any() for i in range(0, len(on), size))


def onsets(tokens: np.ndarray, lo: int, hi: int) -> int:
    return int(melody.is_onset(np.asarray(tokens)[lo:hi]).sum())


@dataclass(frozen=True)
class Key:
    """A key as a musician names it, and the pitch classes its melodies use."""

    tonic: int  # pitch class
    minor: bool

    @property
    def scale(self) -> frozenset[int]:
        return frozenset((self.tonic + s) % 12 for s in (_MINOR_SCALE if self.minor else _MAJOR_SCALE))

    def __str__(self) -> str:
        return f"{_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"


def find_key(tokens: np.ndarray) -> Key | None:
    """The major or minor key whose Krumhansl-Kessler profile best matches the tokens' pitch
    classes, each weighted by how long it sounds; None for fewer than KEY_MIN_NOTES notes."""
    tokens = np.asarray(tokens)
    if onsets(tokens, 0, len(tokens)) < KEY_MIN_NOTES:
        return None
    idx = np.where(tokens != melody.NO_EVENT, np.arange(len(tokens)), -1)
    held = tokens[np.maximum(np.maximum.accumulate(idx), 0)][sounding_steps(tokens)]
    weight = np.bincount(melody.token_to_pitch(held) % 12, minlength=12).astype(float)
    def score(k: Key) -> float:
        profile = np.roll(_MINOR if k.minor else _MAJOR, k.tonic)
        return float(np.corrcoef(profile, weight)[0, 1]) if weight.std() > 0 else 0.0

    return max((Key(t, m) for m in (False, True) for t in range(12)), key=score)


def off_scale(tokens: np.ndarray, scale: frozenset[int]) -> tuple[int, int]:
    """(notes whose pitch class is off `scale`, notes) of a stretch of tokens."""
    pcs = melody.tokens_pitches(tokens) % 12
    return int(sum(int(p) not in scale for p in pcs)), len(pcs)


@dataclass(frozen=True)
class Targets:
    """What a draw of one range must keep (module docstring); None/0 where there is nothing to keep."""

    steps: tuple[int, int]  # the range, token steps, end exclusive
    rate: float | None  # notes per 16-step bar
    max_silent: int | None  # silent bars allowed in the range
    key: Key | None
    key_off: float  # the share of the nearby bars' notes off the key's scale
    final_pitch_class: int | None
    pickup: tuple[int, int] | None  # steps of a pickup inside the range that must keep a note


def section(keys: Sequence[tuple[int, int]], steps: tuple[int, int], end: int) -> tuple[int, int]:
    """The steps of the key-signature section(s) holding the range `steps` of a melody of `end`
    steps; `keys` (step, pretty_midi key number) as the file says them. The whole melody where
    the key never changes."""
    changes = sorted({s for s, _ in keys if 0 < s < end} if len({k for _, k in keys}) > 1 else set())
    lo, hi = steps
    start = max([0, *[s for s in changes if s <= lo]])
    stop = min([end, *[s for s in changes if s >= hi]])
    return start, stop


def targets(tokens: np.ndarray, steps: tuple[int, int], density: str | float = "replaced",
            window: tuple[int, int] | None = None, keys: Sequence[tuple[int, int]] = (),
            pickup: tuple[int, int] | None = None) -> Targets:
    """The targets of regenerating `steps` of the melody `tokens` (module docstring). `window`:
    the steps the model sees (the "piece" rate's bars); `keys`: the file's key signatures (step,
    pretty_midi key number); `pickup`: `melody.BarMap.onset_pickup`."""
    tokens = np.asarray(tokens)
    lo, hi = steps
    bar = melody.STEPS_PER_BAR
    bars = (hi - lo) / bar
    replaced = onsets(tokens, lo, hi)
    rate: float | None
    max_silent = None
    if isinstance(density, (int, float)) and not isinstance(density, bool):
        if not 0 < density <= bar:
            raise ValueError(f"a note rate must be above 0 and at most {bar} notes per bar, got {density}")
        rate = float(density)
    elif density == "replaced":
        max_silent = silent_bars(tokens, lo, hi) if replaced else None
        rate = replaced / bars if replaced else near_rate(tokens, lo, hi)
    elif density == "piece":
        w0, w1 = window or (0, len(tokens))
        kept = onsets(tokens, w0, w1) - onsets(tokens, lo, hi)
        rest = (w1 - w0 - (min(hi, w1) - max(lo, w0))) / bar
        rate = kept / rest if kept and rest > 0 and bars >= PIECE_MIN_BARS else None
    else:
        raise ValueError(f"density must be one of {', '.join(DENSITY_CHOICES)} or notes per bar, got {density!r}")
    s0, s1 = section(keys, steps, len(tokens))
    near = np.concatenate([tokens[max(s0, lo - KEY_BARS * bar) : lo], tokens[hi : min(s1, hi + KEY_BARS * bar)]])
    # the key of the bars around: in a song whose key signature changes, and in a continuation
    # (nothing plays from the range on), where each new window once drifted off the one before
    # (key stability of 128-bar melodies' halves 0.56 against real lines' 0.92, eval/long-coherence-128.md);
    # the key of all the section before a continuation instead of its last 8 bars did not help (0.54)
    continuing = not melody.is_onset(tokens[lo:]).any()
    key = find_key(near) if (s0, s1) != (0, len(tokens)) or continuing else None
    key_off = 0.0
    if key is not None:
        off, n = off_scale(near, key.scale)
        key_off = off / n
    # the range ends the line where its last note lies in it or before it
    played = np.flatnonzero(melody.is_onset(tokens))
    final = melody.token_to_pitch(int(tokens[played[-1]])) % 12 if len(played) and played[-1] < hi else None
    inside = None
    if pickup is not None and lo < pickup[1] and hi > pickup[0]:
        inside = (max(lo, pickup[0]), min(hi, pickup[1]))
    return Targets((lo, hi), rate, max_silent, key, key_off, final, inside)


def near_rate(tokens: np.ndarray, lo: int, hi: int) -> float | None:
    """Notes per bar of the NEAR_PLAYING_BARS nearest bars on each side of tokens[lo:hi] that hold
    a note (a range of rests takes the rate of the music around it); None where nothing plays."""
    bar = melody.STEPS_PER_BAR
    before = [tokens[s : s + bar] for s in range(lo - bar, -1, -bar)]
    after = [tokens[s : s + bar] for s in range(hi, len(tokens) - bar + 1, bar)]
    playing = [b for b in before if melody.is_onset(b).any()][:NEAR_PLAYING_BARS] + \
        [b for b in after if melody.is_onset(b).any()][:NEAR_PLAYING_BARS]
    return sum(int((b >= 2).sum()) for b in playing) / len(playing) if playing else None


@dataclass(frozen=True)
class Fault:
    """How far one draw misses one target; `size` ranks draws (0 = met)."""

    what: str  # "density", "silence", "key", "cadence", "pickup"
    size: float
    message: str


def faults(tokens: np.ndarray, t: Targets) -> list[Fault]:
    """The targets a spliced melody `tokens` misses in the range `t.steps`, each with its size."""
    lo, hi = t.steps
    out = []
    bars = (hi - lo) / melody.STEPS_PER_BAR
    made = onsets(tokens, lo, hi)
    if t.rate is not None:
        gap = float(abs(np.log(max(made, DENSITY_FLOOR) / bars) - np.log(t.rate)))
        if gap > DENSITY_MARGIN:
            out.append(Fault("density", gap - DENSITY_MARGIN,
                             f"the new bars hold {made / bars:.1f} notes per bar against {t.rate:.1f} wanted"))
    if t.max_silent is not None:
        extra = silent_bars(tokens, lo, hi) - t.max_silent
        if extra > 0:
            out.append(Fault("silence", float(extra), f"{extra} more bar{'s' * (extra > 1)} of rest than the "
                                                      "bars replaced"))
    if t.key is not None:
        off, n = off_scale(tokens[lo:hi], t.key.scale)
        if off > key_limit(n, t.key_off):
            out.append(Fault("key", (off - key_limit(n, t.key_off)) / n,
                             f"{off} of {n} new notes lie outside {t.key}, the key of the bars around them"))
    if t.final_pitch_class is not None:
        played = np.flatnonzero(melody.is_onset(np.asarray(tokens)[lo:hi]))
        last = melody.token_to_pitch(int(tokens[lo + played[-1]])) % 12 if len(played) else None
        if last != t.final_pitch_class:
            out.append(Fault("cadence", 1.0, f"the new ending is on {_NAMES[last] if last is not None else 'a rest'}, "
                                             f"the piece's on {_NAMES[t.final_pitch_class]}"))
    if t.pickup is not None and not onsets(tokens, *t.pickup):
        out.append(Fault("pickup", 1.0, "the pickup came back empty"))
    return out


def key_limit(notes: int, share: float) -> float:
    """The most notes off the scale that `notes` new notes may hold by chance where the nearby
    bars have `share` of theirs off it: the binomial mean, two standard deviations and one note."""
    p = max(share, KEY_FLOOR)
    return notes * p + 2.0 * float(np.sqrt(notes * p * (1.0 - p))) + 1.0


def badness(found: list[Fault]) -> float:
    """One number to rank draws by: the faults' sizes added, a bar of rest more than the bars
    replaced held (ERASE_WEIGHT) above every other miss."""
    return float(sum(f.size * (ERASE_WEIGHT if f.what == "silence" else 1.0) for f in found))


def erases(found: list[Fault]) -> bool:
    """Whether a draw writes more bars of rest than the bars it replaced held."""
    return any(f.what == "silence" for f in found)


def end_on(tokens: np.ndarray, t: Targets) -> np.ndarray:
    """The spliced melody with the range's last note moved to the nearest pitch of the piece's
    final pitch class (the cadence, when no draw found it); unchanged when already there."""
    out = np.array(tokens, copy=True)
    lo, hi = t.steps
    played = np.flatnonzero(melody.is_onset(out[lo:hi]))
    if t.final_pitch_class is None or not len(played):
        return out
    step = lo + int(played[-1])
    pitch = melody.token_to_pitch(int(out[step]))
    shift = (t.final_pitch_class - pitch) % 12
    shift = shift - 12 if shift > 6 else shift
    new = pitch + shift
    if not melody.MIN_PITCH <= new <= melody.MAX_PITCH:
        new -= 12 * int(np.sign(shift) or 1)
    out[step] = melody.pitch_to_token(new)
    return out
