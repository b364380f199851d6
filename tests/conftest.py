"""Shared fixtures: where the real MIDI files and music21's corpus are, and bad MIDI files.

Real MIDI files come from `tests/data/midi/` (a colleague's folder of real files; its `bad/`
and `synthetic/` subfolders are not "real" and are left out here) and, always, from the
files music21 ships for its own MIDI tests (`music21/midi/testPrimitive/*.mid`,
`music21/omr/*.mid`). Tests that check exact values use the music21 files by name, so they
do not depend on how the colleague's folder is named or filled.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import mido
import numpy as np
import pytest

warnings.filterwarnings("ignore", message="Couldn't find ffmpeg")

REPO = Path(__file__).resolve().parent.parent
DATA_MIDI = REPO / "tests" / "data" / "midi"

# --- tiers (markers registered in pyproject.toml; plain `pytest` runs the fast tier) ---------------
# Modules whose every test is in one tier, by their `pytestmark`. Importing them is costly
# (TensorFlow, Playwright), so they are not even collected when the -m expression leaves their
# tier out.
WHOLE_MODULE_TIERS = {
    "test_magenta_parity_tokens.py": "magenta",
    "test_magenta_parity_vae.py": "magenta",
    "test_app_browser.py": "browser",
}


def pytest_ignore_collect(collection_path, config):
    tier = WHOLE_MODULE_TIERS.get(collection_path.name)
    expr = config.getoption("markexpr", "")
    if tier is None or not expr:
        return None
    from _pytest.mark.expression import Expression  # what -m itself uses

    try:
        selected = Expression.compile(expr).evaluate(lambda name, /, **kwargs: name == tier and not kwargs)
    except Exception:  # an expression this pytest parses differently: collect, -m deselects
        return None
    return None if selected else True


TPB = 480  # ticks per beat of the files the tests write


def _music21_dir() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent


@pytest.fixture(scope="session")
def music21_dir() -> Path:
    return _music21_dir()


@pytest.fixture(scope="session")
def corpus_root(music21_dir) -> Path:
    return music21_dir / "corpus"


@pytest.fixture(scope="session")
def m21_midi(music21_dir):
    """m21_midi("test13.mid") -> that real file inside the music21 wheel."""

    def find(name: str) -> Path:
        for folder in ("midi/testPrimitive", "omr"):
            path = music21_dir / folder / name
            if path.is_file():
                return path
        raise FileNotFoundError(f"{name} is not in the music21 wheel")

    return find


def real_midi_files() -> list[Path]:
    """Every real MIDI file available: the colleague's folder (top level) + music21's."""
    m21 = _music21_dir()
    files = sorted((m21 / "midi" / "testPrimitive").glob("*.mid")) + sorted((m21 / "omr").glob("*.mid"))
    if DATA_MIDI.is_dir():
        files += sorted(p for p in DATA_MIDI.glob("*.mid") if p.is_file() and p.stat().st_size > 0)
    return files


@pytest.fixture(scope="session")
def real_files() -> list[Path]:
    files = real_midi_files()
    assert len(files) >= 20, files
    return files


# --- files written with mido (a real library writing real files) -----------------------------

def write_midi(path: Path, tracks: list[list], type_: int = 1) -> Path:
    """tracks: lists of (tick, mido message) at absolute ticks -> a MIDI file."""
    mid = mido.MidiFile(type=type_, ticks_per_beat=TPB)
    for events in tracks:
        track, now = mido.MidiTrack(), 0
        # metas first, then note-offs before note-ons at the same tick
        order = lambda e: (e[0], 0 if e[1].is_meta else 1 if e[1].type == "note_off" else 2)
        for tick, msg in sorted(events, key=order):
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)
    return path


@pytest.fixture
def late_pickup(tmp_path) -> Path:
    """O'Neill's tune moved three beats later: a bar of rest, then its one-beat pickup (the
    pickup the reader finds by its notes, `melody.BarMap.onset_pickup`)."""
    mid = mido.MidiFile(Path(__file__).parent / "data" / "midi" / "oneills_514_4-4_triplets_pickup.mid")
    for track in mid.tracks:
        first = next((m for m in track if m.type == "note_on"), None)
        if first is not None:
            first.time += 3 * mid.ticks_per_beat
    mid.save(tmp_path / "late.mid")
    return tmp_path / "late.mid"


def notes_track(notes, channel: int = 0, program: int | None = 0, name: str | None = None) -> list:
    """notes: (start_step, length_steps, pitch) in 16ths -> absolute-tick events."""
    step = TPB // 4
    events = []
    if name:
        events.append((0, mido.MetaMessage("track_name", name=name)))
    if program is not None:
        events.append((0, mido.Message("program_change", channel=channel, program=program)))
    for start, length, pitch in notes:
        events.append((round(start * step), mido.Message("note_on", channel=channel, note=pitch, velocity=90)))
        off = mido.Message("note_off", channel=channel, note=pitch, velocity=0)
        events.append((round((start + length) * step), off))
    return events


def conductor(tempos=((0, 120.0),), sigs=((0, 4, 4),)) -> list:
    """Tempo (bpm) and time-signature events at steps (16ths)."""
    step = TPB // 4
    events = [(round(s * step), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(b))) for s, b in tempos]
    events += [(round(s * step), mido.MetaMessage("time_signature", numerator=n, denominator=d)) for s, n, d in sigs]
    return events


@pytest.fixture(scope="session")
def bad_midi(tmp_path_factory, m21_midi) -> dict[str, Path]:
    """Bad inputs made from real files: kind -> path."""
    root = tmp_path_factory.mktemp("bad_midi")
    real = m21_midi("test07.mid").read_bytes()  # a real 3 kB type 0 melody
    (root / "empty.mid").write_bytes(b"")
    (root / "not_midi.mid").write_text("This is a text file, not a MIDI file.\n")
    (root / "corrupt.mid").write_bytes(real[: len(real) // 2])
    drums = [(b * 16 + q * 4, 1, 36 if q % 2 == 0 else 38) for b in range(4) for q in range(4)]
    write_midi(root / "drums_only.mid", [conductor(), notes_track(drums, channel=9, program=None, name="Drums")])
    write_midi(root / "no_notes.mid", [conductor() + [(0, mido.MetaMessage("track_name", name="nothing"))]])
    return {p.stem: p for p in root.iterdir()}


def colleague_bad_files() -> list[Path]:
    """The bad files in tests/data/midi, where that folder has them."""
    files = sorted((DATA_MIDI / "bad").glob("*.mid")) if (DATA_MIDI / "bad").is_dir() else []
    drums = DATA_MIDI / "synthetic" / "syn_drums_only.mid"
    return files + ([drums] if drums.is_file() else [])


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP's spinning
    threads make each small op ~100x slower; restored for the other test modules."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real app (app.py) serving in a subprocess, one per test module that asks."""
    from app_server import start_app

    srv = start_app(tmp_path_factory.mktemp("app") / "app.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pipe():
    """The shipped default diffusion pipeline (`generate.DEFAULT_DIFFUSION` and the VAE beside
    it), loaded once; tests must not change its attributes."""
    from symdiff.generate import DEFAULT_DIFFUSION, MelodyDiffusion

    return MelodyDiffusion.from_pretrained(DEFAULT_DIFFUSION)


PHI_MINUS_1 = 0.15865525393145707  # standard normal cdf at -1


def bar(*notes: tuple[int, int]) -> np.ndarray:
    """One bar of melody tokens from (step, pitch) onsets (the fidelity and metric tests' pieces)."""
    from symdiff.melody import MIN_PITCH, STEPS_PER_BAR

    out = np.zeros(STEPS_PER_BAR, np.uint8)
    for step, pitch in notes:
        out[step] = pitch - MIN_PITCH + 2
    return out
