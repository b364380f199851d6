"""Infills of real songs as users upload them: the labelled set of `tests/data/songs` (game, pop
and band arrangements, lead sheets, a key change, pickups and cadences).

Two checks, both through `MelodyDiffusion.infill` with its defaults, as `symdiff infill` runs:
- **Never erase the melody.** In each song's default track, ranges of 4 and 8 bars whose every
  bar holds a note (the first, middle and last such range of each length) are regenerated; a
  result must hold no silent bar (`fit.silent_bars`) and a note rate within 1.65x of the bars it
  replaces (`fit.DENSITY_MARGIN`), or tell the user (`Result.remarks`).
- **The section, not the song.** Named cases over several seeds: an infill inside one key of a
  song that changes key uses no more notes off that key's scale than the bars around it do; an
  infill of the last bars ends on the piece's final pitch class; an infill of a pickup keeps it
  a pickup, so no bar number moves.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import arrangement, fit, melody
from ..generate import MelodyDiffusion

SONGS = Path(__file__).resolve().parents[2] / "tests" / "data" / "songs"
LENGTHS = (4, 8)  # bars of the ranges regenerated in every song


@dataclass(frozen=True)
class Case:
    """A named infill whose result a musician can judge by one rule (`judge`)."""

    name: str
    file: str
    bars: tuple[int, int]
    rule: str  # "key", "cadence" or "pickup"


CASES = (
    Case("G section of a chorale that turns to F (bars 9-12)", "arr_chorale_g_then_f.mid", (9, 12), "key"),
    Case("F section of a song that turns to G (bars 29-32)", "openmsx_say_what_redfarn.mid", (29, 32), "key"),
    Case("the last 4 bars of a lead sheet ending on A", "arr_lead_sheet_pickup_cadence.mid", (14, 17), "cadence"),
    Case("the last 4 bars of a chorale ending in F", "arr_chorale_g_then_f.mid", (25, 28), "cadence"),
    Case("a one-beat pickup as a 1/4 bar (bars 0-3)", "arr_lead_sheet_pickup_cadence.mid", (0, 3), "pickup"),
    Case("a pickup after three beats of rest (bars 0-3)", "openmsx_moo_redfarn.mid", (0, 3), "pickup"),
)


def labels() -> list[dict]:
    return json.loads((SONGS / "labels.json").read_text())["files"]


def playing_ranges(found: melody.MidiMelodies, tokens: np.ndarray, length: int) -> list[tuple[int, int]]:
    """The first, middle and last range of `length` bars (as numbered) whose every bar holds a note onset."""
    bars = found.bars
    plays = [b for b in range(bars.first_number, bars.num_bars + 1)
             if melody.is_onset(tokens[slice(*bars.steps(b, b))]).any()]
    ok = set(plays)
    starts = [b for b in plays if all(b + i in ok for i in range(length))]
    if not starts:
        return []
    picked = sorted({starts[0], starts[len(starts) // 2], starts[-1]})
    return [(b, b + length - 1) for b in picked]


def erase_check(pipe: MelodyDiffusion, seed: int = 0, steps: int | None = None, lengths: tuple[int, ...] = LENGTHS,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per range of every song (module docstring): what the infill wrote against what it replaced."""
    rows = []
    for label in labels():
        found = melody.read_midi(SONGS / label["file"])
        tokens = found.tokens(found.chosen)
        for length in lengths:
            for first, last in playing_ranges(found, tokens, length):
                span = found.bars.steps(first, last)
                res = pipe.infill(tokens, span, seed=seed, steps=steps, keys=found.keys,
                                  pickup=found.bars.onset_pickup)
                out = res.tokens[0]
                bars = (span[1] - span[0]) / melody.STEPS_PER_BAR
                before, after = fit.onsets(tokens, *span), fit.onsets(out, *span)
                rows.append({
                    "file": label["file"], "track": found.chosen.index, "chords": found.chosen.chordal,
                    "bars": [first, last], "notes_before": before, "notes_after": after,
                    "rate_ratio": round((after / bars) / (before / bars), 3) if before else None,
                    "silent_before": fit.silent_bars(tokens, *span), "silent_after": fit.silent_bars(out, *span),
                    "remarks": res.remarks,
                })
                if progress:
                    progress(f"{label['file']} bars {first}-{last}")
    return rows


def judge(case: Case, found: melody.MidiMelodies, tokens: np.ndarray, out: np.ndarray,
          span: tuple[int, int], written: bytes) -> tuple[bool, str]:
    """Whether one infill of a case is right, and what was seen."""
    if case.rule == "key":
        goal = fit.targets(tokens, span, keys=found.keys)
        assert goal.key is not None
        off, n = fit.off_scale(out[span[0] : span[1]], goal.key.scale)
        return off <= fit.key_limit(n, goal.key_off), \
            f"{off} of {n} notes off {goal.key} (the bars around: {goal.key_off:.0%})"
    if case.rule == "cadence":
        want = int(melody.tokens_pitches(tokens)[-1]) % 12
        got = int(melody.tokens_pitches(out[: span[1]])[-1]) % 12
        return got == want, f"ends on pitch class {got}, the piece on {want}"
    back = melody.read_midi(written)
    same = back.bars.describe() == found.bars.describe() and back.bars.first_number == 0
    return same, f"read back as {back.bars.describe()}"


def case_check(pipe: MelodyDiffusion, seeds: range = range(5), steps: int | None = None,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per case and seed (module docstring)."""
    rows = []
    for case in CASES:
        found = melody.read_midi(SONGS / case.file)
        tokens = found.tokens(found.chosen)
        span = found.bars.steps(*case.bars)
        for seed in seeds:
            res = pipe.infill(tokens, span, seed=seed, steps=steps, keys=found.keys, pickup=found.bars.onset_pickup)
            written, _ = arrangement.replace_range(SONGS / case.file, found.chosen, res.tokens[0], span)
            ok, seen = judge(case, found, tokens, res.tokens[0], span, written)
            rows.append({"case": case.name, "rule": case.rule, "seed": seed, "ok": ok, "seen": seen})
            if progress:
                progress(f"{case.name} seed {seed}")
    return rows


def markdown(erase: list[dict], cases: list[dict], settings: dict) -> str:
    """The report: every erase-check row, the cases by rule, and a verdict line each."""
    far = [r for r in erase if r["rate_ratio"] is not None and abs(np.log(max(r["rate_ratio"], 1e-9)))
           > fit.DENSITY_MARGIN]
    emptied = [r for r in erase if r["silent_after"] > r["silent_before"]]
    told = [r for r in far + emptied if r["remarks"]]
    lines = [f"# Infills of the labelled songs ({settings})", "",
             f"Never erase the melody: {len(erase)} ranges of 4 and 8 bars that play in every bar, in "
             f"{len({r['file'] for r in erase})} songs' default tracks: {len(emptied)} came back with a silent bar, "
             f"{len(far)} more than 1.65x off the replaced bars' note rate; {len(told)} of those told the user.", "",
             "| song | track | bars | notes before | notes after | rate ratio | silent bars before / after | said |",
             "|---|---|---|---|---|---|---|---|"]
    for r in erase:
        said = "; ".join(r["remarks"]) or "-"
        lines.append(f"| {r['file']} | {r['track']}{' (chords)' if r['chords'] else ''} | {r['bars'][0]}-"
                     f"{r['bars'][1]} | {r['notes_before']} | {r['notes_after']} | {r['rate_ratio']} | "
                     f"{r['silent_before']} / {r['silent_after']} | {said} |")
    lines += ["", "The section, not the song:", "", "| case | rule | right | seen |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["case"] for r in cases):
        mine = [r for r in cases if r["case"] == name]
        seen = "; ".join(f"seed {r['seed']}: {r['seen']}" for r in mine)
        lines.append(f"| {name} | {mine[0]['rule']} | {sum(r['ok'] for r in mine)} of {len(mine)} | {seen} |")
    return "\n".join(lines) + "\n"
