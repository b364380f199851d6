"""The default melody of a multi-track file is the track a musician would call the tune: checked
on a labelled set of real multi-track files (`tests/data/melody_labels.json`, each with why)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from symdiff import melody as M

REPO = Path(__file__).resolve().parent.parent
LABELS = json.loads((REPO / "tests" / "data" / "melody_labels.json").read_text())["files"]
MIN_RATE = 0.9


def _path(entry: dict, music21_dir: Path) -> Path:
    prefix = "music21:"
    return music21_dir / entry["path"][len(prefix):] if entry["path"].startswith(prefix) else REPO / entry["path"]


def test_labelled_set_is_real_multitrack_and_labels_name_their_tracks(music21_dir):
    assert len(LABELS) >= 30 and len({e["path"] for e in LABELS}) == len(LABELS)
    for e in LABELS:
        found = M.read_midi(_path(e, music21_dir))
        assert len(found.candidates) >= 2, e["path"]
        assert [found.candidates[i].name.strip() for i in e["tune"]] == e["names"], e["path"]
        assert e["why"], e["path"]


def test_default_melody_is_the_tune_in_at_least_90_percent(music21_dir, capsys):
    misses = []
    for e in LABELS:
        found = M.read_midi(_path(e, music21_dir))
        if found.chosen.index not in e["tune"]:
            misses.append(f"{e['path']}: chose {found.chosen.index} ({found.chosen.name.strip()!r}), "
                          f"the tune is {e['tune']} {e['names']}")
    rate = 1 - len(misses) / len(LABELS)
    with capsys.disabled():
        print(f"\ndefault melody = the labelled tune in {len(LABELS) - len(misses)}/{len(LABELS)} files ({rate:.0%})")
    assert rate >= MIN_RATE, "\n".join(misses)


def test_voice_and_piano_example_picks_a_singer_not_the_piano(music21_dir):
    found = M.read_midi(REPO / "assets" / "examples" / "liliuokalani_aloha_oe_voice_piano.mid")
    assert found.chosen.name in ("Soprano", "Solo Voice")


@pytest.mark.parametrize("name, points", [("Melody 1", 3.0), ("Lead Vocal", 3.0), ("Soprano II", 1.5),
                                          ("Acc", -3.0), ("Bass", -3.0), ("Left Hand", -3.0),
                                          ("Accordion", 0.0), ("Bassoon", 0.0), ("Contrabass", -3.0),
                                          ("Violin 2", -1.5), ("Track 2", 0.0), ("Alto Sax", 0.0),
                                          ("Tenor Saxophone", 0.0), ("Alto", -1.5), ("Piano RH", 1.5),
                                          ("Right Hand", 1.5)])
def test_name_points(name, points):
    assert M.name_points(name) == points


def test_accompaniment_figure_repeats_and_a_tune_does_not():
    figure = (48, 55, 52, 55)  # an Alberti bass: low, high, middle, high in eighths, every bar
    alberti = [M.pitch_to_token(figure[s // 2 % 4]) if s % 2 == 0 else 0 for s in range(8 * M.STEPS_PER_BAR)]
    tune = [M.pitch_to_token(60 + (s * 5) % 13) if s % 2 == 0 else 0 for s in range(8 * M.STEPS_PER_BAR)]
    assert M.repetition(np.array(alberti, dtype=np.uint8)) == 7 / 8  # every bar after the first
    assert M.repetition(np.array(tune, dtype=np.uint8)) < 0.5
