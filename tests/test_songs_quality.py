"""The shipped default on the labelled real songs (`symdiff.evaluation.songs`, figures in
eval/songs.md): no melody erased, and the section's key, the cadence and a pickup right on five
seeds each. Figures of the shipped weights: the quality tier."""
from __future__ import annotations

import numpy as np
import pytest

from symdiff import fit
from symdiff.evaluation import songs

pytestmark = pytest.mark.quality


def test_key_cadence_and_pickup_come_out_right_on_five_seeds(pipe):
    rows = songs.case_check(pipe)
    assert len(rows) == 5 * len(songs.CASES)
    wrong = [(r["case"], r["seed"], r["seen"]) for r in rows if not r["ok"]]
    assert wrong == []


def test_no_infill_erases_a_melody_or_strays_from_its_rate_unsaid(pipe):
    """Ranges that play in every bar come back playing in every bar and within 1.65x of the
    replaced bars' note rate; the few that do not say so to the user."""
    rows = songs.erase_check(pipe)
    assert len(rows) >= 60
    missed = [r for r in rows if r["silent_after"] > r["silent_before"]
              or abs(np.log(max(r["rate_ratio"], 1e-9))) > fit.DENSITY_MARGIN]
    assert all(r["remarks"] for r in missed)
    assert len(missed) <= len(rows) // 10, missed
