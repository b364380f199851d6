"""The training corpus built from the public-domain scores shipped inside the music21 wheel.

Folk tunes (one line per tune, repeats expanded) and every voice of the vocal and chorale
works become monophonic lines on the model grid (see `melody` for the grid's policies).
Parsing is slow (music21 reads ABC, kern and MusicXML), so it runs in a process pool and the
built dataset is committed: training and tests read `data/corpus.npz` and never re-parse.

Repeats are expanded by our own rule (`expand_repeats`), because music21's `expandRepeats()`
mangles many ABC tunes. Renaissance works notated with a half-note beat (3/2, 4/2) have about
one note per model bar, so their note values are halved by default (`halve_long_meters`, see `part_notes`).
"""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .. import melody
from ..dataset import Lines
from ..notes import Note, Score

log = logging.getLogger(__name__)

# subcorpus -> (style, licence as its source states it)
SUBCORPORA: dict[str, tuple[str, str]] = {
    "essenFolksong": ("folk", "Essen Folksong Collection (ABC by S. Schlien): permission for "
                      "non-commercial distribution and use only (E. Dahlig-Turek)"),
    "oneills1850": ("folk", "O'Neill's Music of Ireland (1850), public domain; ABC transcription "
                    "by N. Paap, distributed with music21 by permission"),
    "ryansMammoth": ("folk", "Ryan's Mammoth Collection (1883), public domain; ABC by J. Chambers, "
                     "distributed with music21 by permission"),
    "airdsAirs": ("folk", "Aird's Selection of Airs (1782-97), public domain; ABC distributed with "
                  "music21 by permission"),
    "miscFolk": ("folk", "public-domain folk tunes (fife and Northumbrian collections); ABC "
                 "distributed with music21 by permission"),
    "bach": ("chorale", "J.S. Bach chorales, public domain; encodings distributed with music21 by "
             "permission of their encoders"),
    "palestrina": ("vocal", "Palestrina masses (CCARH/KernScores encodings), public domain works; "
                   "encodings distributed with music21 by permission, non-commercial use"),
    "monteverdi": ("vocal", "Monteverdi madrigals, public domain; encodings distributed with "
                   "music21 by permission"),
    "trecento": ("vocal", "Trecento works (PMFC), public domain; encodings distributed with "
                 "music21 by permission"),
    "josquin": ("vocal", "Josquin des Prez, ABC by L. E. Conrad, GPL-2.0-or-later"),
    "ciconia": ("vocal", "Ciconia, public domain; encoding distributed with music21"),
    "luca": ("vocal", "Gloria (Luca MS), public domain; encoding distributed with music21"),
    "lusitano": ("vocal", "Lusitano, public domain; encoding distributed with music21"),
}
STYLES = ("folk", "chorale", "vocal")


def style_of(source: str) -> str:
    """A line's style from its subcorpus ("" for a source outside the corpus, a user's MIDI)."""
    return SUBCORPORA[source][0] if source in SUBCORPORA else ""


SCORE_SUFFIXES = {".abc", ".krn", ".mxl", ".xml", ".musicxml"}
MAX_EXPANSION = 4  # a tune played more than 4x its notated length is a mis-read repeat


@dataclass(frozen=True)
class Bar:
    """What repeat expansion needs to know of a measure."""

    start_repeat: bool = False
    end_repeat: int = 0  # times the section is played when a :| ends this bar, 0 for none
    endings: frozenset[int] = frozenset()  # numbers of the 1st/2nd-ending bracket over it


def expand_repeats(bars: list[Bar]) -> list[int] | None:
    """Playback order of bar indices, or None where the marks do not make sense.

    A `:|` returns to the last `|:`, or, where there is none, to the bar after the previous
    finished repeat (the start of the piece for the first); ending brackets are played on
    the passes they are numbered for.
    """
    order: list[int] = []
    i, start, passno, jumped = 0, 0, 1, False
    while i < len(bars):
        bar = bars[i]
        if bar.start_repeat and not jumped:
            start, passno = i, 1
        jumped = False
        if bar.endings and passno not in bar.endings:
            i += 1
            continue
        order.append(i)
        if len(order) > MAX_EXPANSION * len(bars):
            return None
        if bar.end_repeat and passno < bar.end_repeat:
            passno, i, jumped = passno + 1, start, True
            continue
        if bar.end_repeat or (bar.endings and (i + 1 == len(bars) or not bars[i + 1].endings)):
            start, passno = i + 1, 1
        i += 1
    return order


def _bar_marks(part, score) -> list[Bar]:
    from music21 import bar as m21bar
    from music21 import spanner

    measures = list(part.getElementsByClass("Measure"))
    endings: dict[int, frozenset[int]] = {}
    for bundle in (part.spannerBundle, score.spannerBundle):
        for rb in bundle.getByClass(spanner.RepeatBracket):
            numbers = frozenset(rb.numberRange or [])
            for m in rb.getSpannedElements():
                endings[id(m)] = numbers
    marks = []
    for m in measures:
        left, right = m.leftBarline, m.rightBarline
        start = isinstance(left, m21bar.Repeat) and left.direction == "start"
        end = 0
        if isinstance(right, m21bar.Repeat) and right.direction == "end":
            end = int(right.times or 2)
        marks.append(Bar(start, end, endings.get(id(m), frozenset())))
    return marks


def part_notes(part, score, halve_long_meters: bool = True) -> tuple[list[tuple[float, float, int]], dict]:
    """(start, end, pitch) in quarter notes of one part as played, and its metadata.

    With `halve_long_meters`, a part in a half-note-beat meter (x/2) with fewer than two
    notes per whole note (Renaissance notation) gets its note values halved.
    """
    from music21 import meter

    measures = list(part.getElementsByClass("Measure"))
    ts = next(iter(part.recurse().getElementsByClass(meter.TimeSignature)), None)
    ks = next(iter(part.recurse().getElementsByClass("KeySignature")), None)
    info = {
        "meter": ts.ratioString if ts else "",
        "key": (ks.name if hasattr(ks, "name") else ks.asKey().name) if ks else "",
        "halved": False,
        "repeats": "none",
    }
    if not measures:  # some encodings come without measures: play the notes as they are
        measures, order = [part], [0]
    else:
        playback = expand_repeats(_bar_marks(part, score))
        info["repeats"] = "expanded" if playback and len(playback) > len(measures) else "none"
        if playback is None:
            order, info["repeats"] = list(range(len(measures))), "ignored"
        else:
            order = playback
    bar_q = float(ts.barDuration.quarterLength) if ts else 4.0
    notes, length = _play(measures, order, bar_q, 1.0)
    if halve_long_meters and ts and ts.denominator == 2 and len(notes) < 2 * length / 4.0:
        notes, _ = _play(measures, order, bar_q, 0.5)
        info["halved"] = True
    return notes, info


def _play(measures, order: list[int], bar_q: float, scale: float) -> tuple[list[tuple[float, float, int]], float]:
    """Notes of the measures in playback order, tied notes merged; and the total length."""
    # Start so that the first full bar falls on a model-bar line (a pickup ends a bar of rest).
    first = float(measures[order[0]].duration.quarterLength)
    pickup = first < bar_q
    t = (-first * scale) % 4.0 if pickup else 0.0
    notes: list[list] = []
    open_by_pitch: dict[int, list] = {}
    prev_len = 0.0
    for j, k in enumerate(order):
        m = measures[k]
        if j > 0 and k == order[0] and pickup and prev_len + first > bar_q + 1e-6:
            # A repeat back to the pickup after a bar written at full length: the pickup is
            # played in that bar's closing rest, so the bar grid stays where it was.
            t -= first * scale
        prev_len = float(m.duration.quarterLength)
        for n in m.flatten().notes:
            q = float(n.quarterLength) * scale
            if q <= 0 or n.duration.isGrace:
                continue
            on = t + float(n.offset) * scale
            tie = n.tie.type if n.tie is not None else None
            for p in n.pitches:
                prev = open_by_pitch.get(p.midi)
                if tie in ("stop", "continue") and prev is not None and abs(prev[1] - on) < 1e-3:
                    prev[1] = on + q
                else:
                    prev = [on, on + q, p.midi]
                    notes.append(prev)
                    open_by_pitch[p.midi] = prev
        t += float(m.duration.quarterLength) * scale
    return [tuple(n) for n in notes], t


def notes_to_tokens(notes: list[tuple[float, float, int]]):
    """Notes in quarter notes -> tokens, through the quantiser and melody extraction of MIDI files."""
    score = Score([Note(on, off, pitch, 80) for on, off, pitch in notes], tempos=[(0.0, 60.0)])  # 1 s a quarter
    lines = melody.sequence_lines(score)
    return lines[0].tokens if lines else None


def score_files(root: Path | None = None, sources: list[str] | None = None) -> list[tuple[str, Path]]:
    """(subcorpus, path) of every score file to read, largest first (balances the pool)."""
    if root is None:
        import music21

        root = Path(music21.__file__).parent / "corpus"
    files = []
    for source in sources or list(SUBCORPORA):
        for path in sorted((root / source).rglob("*")):
            if path.suffix.lower() in SCORE_SUFFIXES:
                files.append((source, path))
    return sorted(files, key=lambda sp: -sp[1].stat().st_size)


def read_score_file(source: str, path: Path, root: Path, halve_long_meters: bool = True) -> tuple[Lines, dict]:
    """All lines of one file (an ABC file holds many tunes); errors are counted, not raised.
    music21 warns about every oddity of the corpus' old files; those stay out of the build's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_score_file(source, path, root, halve_long_meters)


def _read_score_file(source: str, path: Path, root: Path, halve_long_meters: bool) -> tuple[Lines, dict]:
    import music21

    lines, counts = Lines(), {"scores": 0, "parts": 0, "errors": 0, "expanded": 0, "repeats_ignored": 0, "halved": 0}
    rel = path.relative_to(root).as_posix()
    try:
        if path.suffix.lower() == ".abc":
            # music21 reads `:|:` (end and start a repeat) as a part without measures; `::` is
            # the same mark in a spelling it understands.
            parsed = music21.converter.parseData(path.read_text(errors="replace").replace(":|:", "::"), format="abc")
        else:
            parsed = music21.converter.parse(path)
    except Exception as e:  # a file music21 cannot read is counted, never fatal
        log.warning("%s: %s", rel, e)
        counts["errors"] += 1
        return lines, counts
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    for s_idx, score in enumerate(scores):
        # ABC, Humdrum and MusicXML (SCORE_SUFFIXES) parse to a Score or an Opus, never a bare Part
        assert isinstance(score, music21.stream.Score), f"{rel}: music21 gave a {type(score).__name__}"
        counts["scores"] += 1
        number = score.metadata.number if score.metadata and score.metadata.number else s_idx
        # A folk-tune file holds many tunes; a vocal work's ABC file holds one voice per tune.
        by_tune = len(scores) > 1 and SUBCORPORA[source][0] == "folk"
        piece = f"{rel}#{number}" if by_tune else rel
        for p_idx, part in enumerate(score.parts):
            try:
                notes, info = part_notes(part, score, halve_long_meters)
                tokens = notes_to_tokens(notes) if notes else None
            except Exception as e:
                log.warning("%s part %d: %s", piece, p_idx, e)
                counts["errors"] += 1
                continue
            if tokens is None or not melody.is_onset(tokens).any():
                continue
            counts["parts"] += 1
            counts["expanded"] += info["repeats"] == "expanded"
            counts["repeats_ignored"] += info["repeats"] == "ignored"
            counts["halved"] += info["halved"]
            title = score.metadata.title if score.metadata and not by_tune else ""
            voice = part.partName or title or f"part{p_idx}"
            lines.add(tokens, source=source, piece=piece, voice=voice, meter=info["meter"], key=info["key"])
    return lines, counts


def build(
    out: Path,
    sources: list[str] | None = None,
    workers: int = os.cpu_count() or 1,
    halve_long_meters: bool = True,
    limit: int | None = None,
) -> tuple[Lines, dict]:
    """Parse the music21 corpus into a dataset at `out`; returns the lines and the counts."""
    import music21

    root = Path(music21.__file__).parent / "corpus"
    files = score_files(root, sources)[:limit] if limit else score_files(root, sources)
    lines = Lines()
    counts: dict[str, int] = {}
    results: dict[Path, Lines] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(read_score_file, s, p, root, halve_long_meters): p for s, p in files}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="parsing scores", unit="file"):
            part_lines, c = fut.result()
            results[futures[fut]] = part_lines
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
    for _, path in sorted(files, key=lambda sp: str(sp[1])):  # file order, not finishing order
        lines.extend(results[path])
    lines.save(out)
    return lines, counts


def dataset_card(stats: dict, build: dict) -> str:
    """Markdown card of a built corpus: what is in it, per subcorpus and split, and licences."""
    cols = ("pieces", "lines", "bars", "chunks", "lines_64_bars", "windows_64_bars")
    head = "| subcorpus | style | split | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 3) + "\n"
    rows = []
    for source, splits in stats.items():
        style = SUBCORPORA[source][0] if source in SUBCORPORA else ""
        for split in ("train", "valid", "test", "all"):
            if split in splits:
                r = splits[split]
                name = f"**{source}**" if split == "all" else source
                rows.append(f"| {name} | {style} | {split} | " + " | ".join(f"{r[c]:,}" for c in cols) + " |")
    styles: dict[str, int] = {}
    for source, splits in stats.items():
        if source in SUBCORPORA and "all" in splits:
            styles[SUBCORPORA[source][0]] = styles.get(SUBCORPORA[source][0], 0) + splits["all"]["windows_64_bars"]
    total_w = sum(styles.values()) or 1
    mix = ", ".join(f"{k} {100 * v / total_w:.0f}%" for k, v in sorted(styles.items(), key=lambda kv: -kv[1]))
    lic = "\n".join(f"- **{k}** ({v[0]}): {v[1]}" for k, v in SUBCORPORA.items())
    return f"""# The symdiff corpus (`corpus.npz`)

Monophonic lines from the scores shipped inside the music21 wheel ({music21_version()}): folk tunes
(one line per tune, repeats expanded by `symdiff.data.corpus.expand_repeats`) and every voice of the
chorales and vocal works, on MusicVAE's melody grid (16 steps per 4-quarter bar, 90 classes).
Rebuild with `symdiff data build` ({build.get('seconds', 0) / 60:.0f} min on 2 cores); describe with
`symdiff data stats`. The split is by piece (`dataset.split_of`, 90/5/5), never by window.

Counts: *chunks* are non-silent, non-overlapping 2-bar chunks; *windows_64_bars* are 32-chunk
windows at a stride of one chunk (what the diffusion model trains on); *lines_64_bars* are lines
long enough for one. Style mix of the 64-bar windows: {mix}.

{head}{chr(10).join(rows)}

Build log: {build.get('scores', 0):,} scores read, {build.get('parts', 0):,} parts kept,
{build.get('errors', 0)} unreadable, {build.get('expanded', 0):,} parts with repeats expanded,
{build.get('repeats_ignored', 0)} with repeat marks that made no sense (played as written),
{build.get('halved', 0):,} parts with halved note values (Renaissance x/2 notation).

## Licences, as each source states them
The corpus mixes licences: check them before you use the data or models trained on it.
{lic}
"""


def music21_version() -> str:
    import music21

    return f"music21 {music21.__version__}"
