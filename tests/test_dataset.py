"""symdiff.dataset: the .npz storage of lines, the split, the training views, stats."""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections import Counter

import numpy as np
import pytest

from symdiff import melody
from symdiff.dataset import FIELDS, Lines, split_of, transpose_chunks, window_starts


def bars(*notes_per_bar: int | None) -> np.ndarray:
    """One bar per argument: a note-on token at step 0 of the bar (None: a silent bar)."""
    out = np.zeros(16 * len(notes_per_bar), np.uint8)
    for b, token in enumerate(notes_per_bar):
        if token is not None:
            out[16 * b] = token
            out[16 * b + 4] = melody.NOTE_OFF
    return out


def sample_lines() -> Lines:
    lines = Lines()
    lines.add(bars(41, None, 43), source="bach", piece="bach/bwv1.xml", voice="Soprano", meter="4/4", key="F major")
    lines.add(np.array([2, 0, 89, 1] * 8, np.uint8), source="josquin", piece="josquin/a.abc", voice="Ténor ©",
              meter="2/2", key="", split="train")
    lines.add(np.zeros(0, np.uint8), source="josquin", piece="josquin/b.abc", voice="", meter="", key="", split="test")
    return lines


# --- storage -------------------------------------------------------------------------------

def test_add_fills_every_field_and_the_split():
    lines = sample_lines()
    assert len(lines) == 3
    assert all(set(m) == set(FIELDS) for m in lines.meta)
    assert lines.meta[0]["split"] == split_of("bach/bwv1.xml")
    assert lines.meta[2]["split"] == "test"  # given explicitly
    assert all(t.dtype == np.uint8 for t in lines.tokens)


def test_save_load_round_trip(tmp_path):
    lines = sample_lines()
    path = lines.save(tmp_path / "sub" / "d.npz")  # the folder is made
    assert path == tmp_path / "sub" / "d.npz"
    back = Lines.load(path)
    assert len(back) == 3
    for a, b in zip(lines.tokens, back.tokens, strict=True):
        assert b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    assert back.meta == lines.meta  # unicode and empty strings included
    assert os.listdir(tmp_path / "sub") == ["d.npz"]  # no temporary file left behind


def test_saved_file_has_no_pickles(tmp_path):
    path = sample_lines().save(tmp_path / "d.npz")
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"tokens", "offsets", *FIELDS}
        for name in z.files:
            assert z[name].dtype != object
        assert z["offsets"].tolist() == [0, 48, 80, 80]
        assert z["tokens"].dtype == np.uint8
    with zipfile.ZipFile(path) as zf:  # compressed
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "d.npz"
    sample_lines().save(path)
    small = Lines()
    small.add(bars(50), source="x", piece="p")
    small.save(path)
    back = Lines.load(path)
    assert len(back) == 1 and back.tokens[0].tolist() == bars(50).tolist()
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


def test_empty_lines_round_trip(tmp_path):
    back = Lines.load(Lines().save(tmp_path / "e.npz"))
    assert len(back) == 0 and back.vae_chunks().shape == (0, 32)


def test_load_missing_file_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="symdiff data build"):
        Lines.load(tmp_path / "nope.npz")


def test_extend():
    a, b = sample_lines(), sample_lines()
    a.extend(b)
    assert len(a) == 6 and a.meta[3:] == b.meta


# --- split ---------------------------------------------------------------------------------

def test_split_is_deterministic_and_follows_sha1():
    # sha1 (not hash(), which changes with PYTHONHASHSEED): the same split on every machine
    ids = [f"oneills1850/{k:04d}.abc#{k}" for k in range(300)]
    first = [split_of(i) for i in ids]
    assert first == [split_of(i) for i in ids]
    for piece, split in zip(ids, first, strict=True):  # u = first 8 hex digits of sha1 / 2**32
        u = int(hashlib.sha1(piece.encode()).hexdigest()[:8], 16) / 2**32
        assert split == ("test" if u < 0.05 else "valid" if u < 0.10 else "train")
    assert set(first) == {"train", "valid", "test"}


def test_split_proportions():
    counts = Counter(split_of(f"piece-{k}") for k in range(20000))
    assert set(counts) == {"train", "valid", "test"}
    assert abs(counts["train"] / 20000 - 0.90) < 0.01
    assert abs(counts["valid"] / 20000 - 0.05) < 0.006
    assert abs(counts["test"] / 20000 - 0.05) < 0.006


def test_split_fractions_are_parameters():
    assert {split_of(f"p{k}", valid=0.0, test=0.0) for k in range(500)} == {"train"}
    assert {split_of(f"p{k}", valid=0.0, test=1.0) for k in range(500)} == {"test"}
    assert {split_of(f"p{k}", valid=1.0, test=0.0) for k in range(500)} == {"valid"}


def test_lines_of_a_piece_share_its_split():
    lines = Lines()
    for k in range(200):
        for voice in ("S", "A", "T", "B"):
            lines.add(bars(41), source="bach", piece=f"bach/{k}", voice=voice)
    by_piece: dict[str, set] = {}
    for m in lines.meta:
        by_piece.setdefault(m["piece"], set()).add(m["split"])
    assert all(len(s) == 1 for s in by_piece.values())


def test_select():
    lines = sample_lines()
    lines.add(bars(60), source="bach", piece="bach/x", split="valid")
    assert [m["piece"] for m in lines.select(sources={"josquin"}).meta] == ["josquin/a.abc", "josquin/b.abc"]
    assert [m["piece"] for m in lines.select(split="valid").meta] == ["bach/x"]
    assert [m["piece"] for m in lines.select(split="valid", sources={"josquin"}).meta] == []
    assert len(lines.select()) == 4
    sel = lines.select(split="test", sources={"josquin"})
    assert sel.meta == [lines.meta[2]] and sel.tokens[0] is lines.tokens[2]


# --- views ---------------------------------------------------------------------------------

def test_vae_chunks_drop_silent_and_dedupe():
    lines = Lines()
    tune = bars(41, None, None, 43)  # windows at a 1-bar hop: [41 -], [- -] silent, [- 43]
    lines.add(tune, source="a", piece="p1")
    lines.add(tune, source="a", piece="p2")  # the same tune again: duplicates
    held = np.zeros(64, np.uint8)
    held[0] = 50  # a note held through 4 bars: only the first window has an onset
    lines.add(held, source="a", piece="p3")
    chunks = lines.vae_chunks()
    assert chunks.dtype == np.uint8 and chunks.shape == (3, 32)
    expected = {tuple(bars(41, None)), tuple(bars(None, 43)), tuple(held[:32])}
    assert {tuple(c) for c in chunks} == expected
    assert lines.vae_chunks(dedupe=False).shape == (5, 32)  # 2 + 2 + 1
    assert lines.vae_chunks(hop_bars=2, dedupe=False).shape == (5, 32)  # [41 -] [- 43] twice, held once
    assert not melody.silent_chunks(lines.vae_chunks(dedupe=False)).any()


def test_vae_chunks_see_windows_as_the_vae_does():
    lines = Lines()
    held_over = np.zeros(48, np.uint8)
    held_over[[0, 20, 24, 28]] = [41, 1, 43, 1]  # C4 held into bar 1, then E4 in bar 1
    lines.add(held_over, source="a", piece="p1")
    alone = np.zeros(32, np.uint8)
    alone[[8, 12]] = [43, 1]  # what the window at bar 1 is once its leading note-off is blanked
    lines.add(alone, source="a", piece="p2")
    chunks = lines.vae_chunks(dedupe=False)
    assert chunks.shape == (3, 32)
    np.testing.assert_array_equal(chunks[1], alone)
    np.testing.assert_array_equal(chunks[2], alone)
    assert lines.vae_chunks().shape == (2, 32)
    assert lines.tokens[0][20] == 1  # the stored line keeps its note-off


def test_line_chunks_and_window_starts():
    lines = Lines()
    lines.add(np.zeros(16 * 5, np.uint8), source="a", piece="p")
    assert [c.shape for c in lines.line_chunks()] == [(3, 32)]
    assert list(window_starts(40)) == list(range(9))
    assert list(window_starts(32)) == [0]
    assert list(window_starts(5)) == [0]


# --- transposition ---------------------------------------------------------------------------

def random_chunks(rng, n):
    chunks = rng.integers(0, 90, size=(n, 32)).astype(np.uint8)
    chunks[rng.random((n, 32)) < 0.5] = 0
    chunks[rng.random((n, 32)) < 0.1] = 1
    chunks[: n // 8, 3] = 2  # the lowest pitch
    chunks[n // 8 : n // 4, 7] = 89  # the highest
    chunks[n // 4 : n // 4 + 10, :] = rng.integers(0, 2, size=(10, 32))  # silent chunks
    chunks[n // 4 + 10 : n // 4 + 20, 0], chunks[n // 4 + 10 : n // 4 + 20, 1] = 2, 89  # full range
    return chunks


def test_transpose_keeps_every_chunk_in_range():
    rng = np.random.default_rng(0)
    for seed in range(20):
        chunks = random_chunks(rng, 400)
        out = transpose_chunks(chunks, np.random.default_rng(seed))
        assert out.dtype == chunks.dtype and out.shape == chunks.shape
        notes = chunks >= 2
        assert (out[~notes] == chunks[~notes]).all()  # 0 and 1 never move
        assert (out[notes] >= 2).all() and (out[notes] <= 89).all()
        shift = out.astype(int) - chunks.astype(int)
        for row, n in zip(shift, notes, strict=True):  # one shift per chunk, within -5..5
            s = set(row[n].tolist())
            assert len(s) <= 1 and all(-5 <= v <= 5 for v in s)
        lowest = (chunks == 2).any(axis=1)
        highest = (chunks == 89).any(axis=1)
        assert (shift[lowest][notes[lowest]] >= 0).all()
        assert (shift[highest][notes[highest]] <= 0).all()
        full = lowest & highest
        assert full.sum() >= 10 and (out[full] == chunks[full]).all()


def test_transpose_covers_all_shifts_uniformly_for_mid_range_chunks():
    chunks = np.zeros((11000, 32), np.uint8)
    chunks[:, 0], chunks[:, 8] = 41, 48  # C4, G4
    out = transpose_chunks(chunks, np.random.default_rng(1))
    shifts = Counter((out[:, 0].astype(int) - 41).tolist())
    assert set(shifts) == set(range(-5, 6))
    assert all(800 < shifts[s] < 1200 for s in range(-5, 6))  # about 1000 each
    assert ((out[:, 8].astype(int) - out[:, 0]) == 7).all()  # intervals kept


def test_transpose_near_the_edges_uses_only_the_room_there():
    chunks = np.zeros((2000, 32), np.uint8)
    chunks[:, 0], chunks[:, 5] = 3, 86  # room: 1 down, 3 up
    out = transpose_chunks(chunks, np.random.default_rng(2))
    assert set((out[:, 0].astype(int) - 3).tolist()) == {-1, 0, 1, 2, 3}
    chunks[:, 5] = 50
    out = transpose_chunks(chunks, np.random.default_rng(2), max_shift=2)
    assert set((out[:, 0].astype(int) - 3).tolist()) == {-1, 0, 1, 2}


def test_transpose_is_reproducible():
    chunks = random_chunks(np.random.default_rng(5), 100)
    a = transpose_chunks(chunks, np.random.default_rng(9))
    b = transpose_chunks(chunks, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, chunks)


# --- stats ---------------------------------------------------------------------------------

def test_stats_on_a_hand_made_dataset():
    lines = Lines()
    # a: 3 bars, a note in bar 0 -> chunks [notes | silent pad]: 1 chunk with notes
    lines.add(bars(41, None, None), source="a", piece="p1", split="train")
    # a: 66 bars, a note in every bar -> 33 chunks, one 64-bar line, 33 - 32 + 1 = 2 windows
    lines.add(bars(*[45] * 66), source="a", piece="p1", split="train")
    # b: 2 bars with a note -> 1 chunk
    lines.add(bars(50, None), source="b", piece="p2", split="test")
    row_a = {"pieces": 1, "lines": 2, "bars": 69, "chunks": 34, "lines_64_bars": 1, "windows_64_bars": 2}
    row_b = {"pieces": 1, "lines": 1, "bars": 2, "chunks": 1, "lines_64_bars": 0, "windows_64_bars": 0}
    row_all = {"pieces": 2, "lines": 3, "bars": 71, "chunks": 35, "lines_64_bars": 1, "windows_64_bars": 2}
    assert lines.stats() == {
        "a": {"all": row_a, "train": row_a},
        "all": {"all": row_all, "test": row_b, "train": row_a},
        "b": {"all": row_b, "test": row_b},
    }
