"""`symdiff evaluate` end to end at a small N with the shipped checkpoints and the real corpus:
every row and figure is there, the real rows behave as real data must, the cache is reused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from symdiff import melody
from symdiff.cli import main
from symdiff.dataset import Lines, random_windows
from symdiff.evaluation.table1 import splice

torch.set_num_threads(1)


def test_random_windows_are_real_64_bar_windows():
    lines = Lines.load()
    wins = random_windows(lines, "test", 20, 0)
    assert len(wins) == 20 and all(len(w) == 64 * melody.STEPS_PER_BAR for w in wins)
    test_lines = [bytes(t) for t in lines.select("test").tokens]
    assert all(any(bytes(w) in t for t in test_lines) for w in wins[:5])
    assert [bytes(w) for w in random_windows(lines, "test", 20, 0)] == [bytes(w) for w in wins]


def test_splice_keeps_real_tokens_outside_the_mask():
    real = [np.full(64 * 16, 5, np.uint8)]
    made = [np.full(64 * 16, 9, np.uint8)]
    out = splice(real, made)[0]
    assert (out[: 16 * 16] == 5).all() and (out[16 * 16 : 48 * 16] == 9).all() and (out[48 * 16 :] == 5).all()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["evaluate", "--num", "12", "--steps", "8", "--figure-points", "3", "--out", str(out / "res"),
            "--cache", str(out / "cache"), "--quiet", "--seed", "3"]
    assert main(argv) == 0
    return out, argv


def test_tables_json_and_figure(evaluated):
    out, _ = evaluated
    res = out / "res"
    for task in ("unconditional", "infill"):
        d = json.loads((res / f"{task}.json").read_text())
        names = set(d["rows"])
        assert {"train data", "test data", "diffusion", "interpolation", "N(0,I) prior"} <= names
        assert ("TransformerMDN" in names) == (task == "unconditional")
        for r in d["rows"].values():
            for feat in ("pitch", "duration"):
                assert 0.0 <= r[feat]["consistency"] <= 1.0 and 0.0 <= r[feat]["variance"] <= 1.0
            assert r["fd"] >= 0 and r["mmd"] >= 0
        assert d["rows"]["train data"]["copy"]["share_copying"] == 1.0  # training windows are in the index
        md = (res / f"{task}.md").read_text()
        assert md.startswith("| setting | pitch C |") and f"| {task}: diffusion |" in md
        assert len(d["figure3"]["steps"]) == 3 and d["figure3"]["steps"][-1] == 8
    assert (res / "figure3.png").stat().st_size > 10_000


def test_cache_is_reused_and_results_repeat(evaluated, capsys):
    out, argv = evaluated
    cached = sorted(p.name for p in (out / "cache").glob("*.npz"))
    assert len(cached) == 3  # reference, train and test windows
    first = json.loads((out / "res" / "infill.json").read_text())
    assert main([*argv[:-3], "--task", "infill", "--out", str(out / "again"), "--quiet", "--seed", "3"]) == 0
    again = json.loads((out / "again" / "infill.json").read_text())
    assert sorted(p.name for p in (out / "cache").glob("*.npz")) == cached
    assert again["rows"]["diffusion"]["pitch"] == first["rows"]["diffusion"]["pitch"]


def test_bad_arguments(tmp_path, capsys):
    assert main(["evaluate", "--num", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["evaluate", "--mdn", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "no TransformerMDN checkpoint" in capsys.readouterr().err
