"""Variations (`MelodyDiffusion.vary`, `symdiff vary`) and melodies longer than one window
(`generate` and `extend` past 64 bars, `symdiff sample / extend --bars N`), with the shipped
checkpoint and real MIDI files."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from symdiff import melody
from symdiff.cli import main
from symdiff.generate import EXTEND_NEW_CHUNKS, GenerateError, Progress

torch.set_num_threads(1)
MIDI = Path(__file__).parent / "data" / "midi"
BAR = melody.STEPS_PER_BAR
REEL = MIDI / "oneills_003_4-4_melody.mid"  # 16 bars, one track
SONG = MIDI / "liliuokalani_aloha_oe_voice_piano.mid"  # 7 tracks


def test_sounding_pitches():
    c4, e4 = melody.pitch_to_token(60), melody.pitch_to_token(64)
    tokens = np.array([c4, 0, 0, melody.NOTE_OFF, 0, e4, e4, 0], dtype=np.uint8)
    assert melody.sounding_pitches(tokens).tolist() == [60, 60, 60, -1, -1, 64, 64, 64]
    assert melody.sounding_pitches(np.zeros(3, dtype=np.uint8)).tolist() == [-1, -1, -1]
    held = np.array([c4, 0, 0, 0, 0, e4, 0, 0], dtype=np.uint8)  # C held on: differs at 3, 4
    assert melody.agreement(tokens, held) == 6 / 8 and melody.agreement(tokens, tokens) == 1.0


def test_vary_stays_closer_at_low_strength(pipe):
    """Whole-melody variations: as long as the melody, different from each other, and a low
    strength keeps more of the original than a new draw does."""
    tokens = melody.read_midi(REEL).chosen.tokens
    near = pipe.vary(tokens, 0.1, num=2, steps=20, seed=0)
    far = pipe.vary(tokens, 1.0, num=2, steps=20, seed=0)
    assert [len(t) for t in near.tokens + far.tokens] == [len(tokens)] * 4
    assert not np.array_equal(near.tokens[0], near.tokens[1])
    assert near.plan is not None and near.plan.steps == (0, len(tokens)) and near.style == "folk"
    close = [melody.agreement(t, tokens) for t in near.tokens]
    assert min(close) > max(melody.agreement(t, tokens) for t in far.tokens)
    assert min(close) > 0.5
    assert torch.equal(pipe.vary(tokens, 0.1, num=2, steps=20, seed=0).latents, near.latents)  # seeded


def test_vary_a_range_changes_only_the_range(pipe):
    line = melody.read_midi(SONG).chosen  # the voice enters in bar 12
    span = (12 * BAR, 16 * BAR)
    seen: list[tuple[int, int, str]] = []
    res = pipe.vary(line.tokens, 0.5, span, num=3, steps=10, seed=1,
                    progress=Progress(lambda done, total, stage: seen.append((done, total, stage))))
    assert len(res.tokens) == 3
    assert seen[-1][0] == seen[-1][1] and "drawing 3 variations" in {s for *_, s in seen}  # counts the steps run
    for out in res.tokens:
        assert np.array_equal(out[: span[0]], line.tokens[: span[0]])
        assert np.array_equal(out[span[1] + 1 :], line.tokens[span[1] + 1 :])
    assert any(not np.array_equal(out[slice(*span)], line.tokens[slice(*span)]) for out in res.tokens)


@pytest.mark.parametrize("kwargs, message", [
    ({"strength": 0.0}, "strength must be above 0"),
    ({"strength": 1.5}, "strength must be above 0"),
    ({"strength": 0.5, "num": 0}, "num must be between"),
    ({"strength": 0.5, "span": (0, 80 * BAR)}, "lies outside the melody"),
])
def test_vary_refuses_bad_requests(pipe, kwargs, message):
    with pytest.raises(GenerateError, match=message):
        pipe.vary(melody.read_midi(REEL).chosen.tokens, **kwargs)


def test_cli_vary_writes_whole_arrangements(tmp_path, capsys):
    found = melody.read_midi(SONG)
    assert main(["vary", str(SONG), "--strength", "0.4", "--bars", "13-16", "--num", "2", "--steps", "5",
                 "--seed", "2", "--out", str(tmp_path / "v.mid"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 variations of bars 13-16 of" in out and "wrote" in out
    files = sorted(tmp_path.glob("*.mid"))
    assert [f.name for f in files] == ["v_1.mid", "v_2.mid"]
    src = mido.MidiFile(SONG)
    for f in files:  # only the melody's track differs, and only inside the bars
        assert sum(list(x) != list(y) for x, y in zip(src.tracks, mido.MidiFile(f).tracks, strict=True)) == 1
        back = melody.read_midi(f)
        assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(found.candidates, back.candidates, strict=True)
                   if x.index != found.chosen.index)
        new = back.pick(found.chosen.index).tokens
        old = found.chosen.tokens
        assert np.array_equal(new[: 12 * BAR], old[: 12 * BAR]) and not np.array_equal(new, old)
    assert main(["vary", str(REEL), "--strength", "0.2", "--steps", "5", "--out", str(tmp_path / "one.mid"),
                 "--quiet"]) == 0
    assert "1 variation of all 16 bars of 4/4 at strength 0.2" in capsys.readouterr().out
    assert (tmp_path / "one.mid").is_file()


@pytest.mark.parametrize("args, message", [
    (["--strength", "0"], "--strength must be above 0 and at most 1"),
    (["--strength", "0.5", "--num", "0"], "--num must be between 1 and 64"),
    (["--strength", "0.5", "--bars", "20-30"], "the music ends at bar 16"),
    (["--strength", "0.5", "--bars", "x"], "expected FIRST-LAST"),
])
def test_cli_vary_bad_input_gives_one_line(tmp_path, capsys, args, message):
    assert main(["vary", str(REEL), *args, "--out", str(tmp_path / "o.mid")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("symdiff: error:") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_cli_vary_of_a_long_file_asks_for_bars(tmp_path, capsys):
    piano = MIDI / "joplin_maple_leaf_rag_2-4_piano.mid"  # 129 bars: more than one window
    assert main(["vary", str(piano), "--strength", "0.5", "--steps", "5", "--out", str(tmp_path / "o.mid")]) == 2
    err = capsys.readouterr().err
    assert "can be generated at once" in err and "--bars FIRST-LAST" in err


# --- past one window -------------------------------------------------------------------------


def test_a_128_bar_sample_continues_its_first_window(pipe):
    """128 bars: the first 64 are exactly the 64-bar sample of the seed, and each later window
    was conditioned on (and kept) the music before it."""
    long = pipe.generate(1, 128, steps=5, seed=0)
    short = pipe.generate(1, 64, steps=5, seed=0)
    out = long.tokens[0]
    assert len(out) == 128 * BAR and long.latents.shape[:2] == (1, 64)
    assert np.array_equal(out[: 64 * BAR], short.tokens[0])
    new = EXTEND_NEW_CHUNKS * melody.BARS_PER_CHUNK
    assert all((out[b * BAR : (b + new) * BAR] >= 2).any() for b in range(64, 128, new))


def test_a_long_extension_slides_its_window(pipe):
    line = melody.read_midi(REEL).chosen
    res = pipe.extend(line.tokens, 100, steps=5, seed=3)
    out = res.tokens[0]
    assert len(out) == len(line.tokens) + 100 * BAR
    assert np.array_equal(out[: len(line.tokens)], line.tokens)
    # the last window: the melody's last 32 chunks, of which the new ones are the end
    n = len(out) // melody.CHUNK_STEPS
    assert res.plan is not None and res.plan.window == (n - pipe.seq_len, n) and res.plan.chunk_range[1] == n
    assert res.plan.chunk_range[1] - res.plan.chunk_range[0] <= EXTEND_NEW_CHUNKS
    with pytest.raises(GenerateError, match="between 1 and 256"):
        pipe.extend(line.tokens, 257)


def test_cli_sample_256_bars_and_extend_200(tmp_path, capsys):
    assert main(["sample", "--bars", "256", "--steps", "3", "--seed", "0", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert "wrote 1 melodies of 256 bars" in capsys.readouterr().out
    (f,) = (tmp_path / "s").glob("*.mid")
    assert abs(mido.MidiFile(f).length - 256 * 2.0) < 0.01  # 256 bars at 120 qpm
    assert 200 < melody.read_midi(f).chosen.num_bars <= 256
    assert main(["extend", str(REEL), "--bars", "200", "--steps", "3", "--seed", "0", "--out",
                 str(tmp_path / "e.mid"), "--quiet"]) == 0
    assert "added bars 17-216 (4/4)" in capsys.readouterr().out
    assert 100 < melody.read_midi(tmp_path / "e.mid").chosen.num_bars <= 216


def test_whole_range_is_the_melody_up_to_one_window():
    from symdiff import demo

    assert demo.whole_range(melody.read_midi(REEL).bars) == (1, 16)
    joplin = melody.read_midi(MIDI / "joplin_maple_leaf_rag_2-4_piano.mid").bars  # 129 bars of 2/4
    assert demo.whole_range(joplin) == (1, 128)  # 128 bars of 2/4: 32 chunks, one window
