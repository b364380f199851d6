"""symdiff.demo, what the app computes: reading uploads, snapping ranges, the infilling baselines
spliced like the diffusion result, reference statistics, the refinement trace (metrics of the x0
estimate every few steps, stages, cancelling), and the Learn tab's forward and reverse process.
With the shipped diffusion checkpoint, as tests/test_generate.py."""
from __future__ import annotations

import math
import threading
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from symdiff import demo, melody, metrics
from symdiff.dataset import Lines, random_windows
from symdiff.errors import SymdiffError
from symdiff.generate import GenerateError, plan_infill

torch.set_num_threads(1)
MIDI = Path(__file__).parent / "data" / "midi"
BAR = melody.STEPS_PER_BAR


@pytest.fixture(scope="module")
def reference(pipe) -> demo.Reference:
    return demo.reference_stats(pipe, num_windows=40, latent_windows=2)


def test_examples_are_real_midi_files_with_melodies():
    names = [p.name for p in demo.list_examples()]
    assert len(names) >= 3 and "liliuokalani_aloha_oe_voice_piano.mid" in names
    for p in demo.list_examples():
        found, cand = demo.load_melody(p)
        assert cand.num_notes > 0
        assert p.read_bytes() == (MIDI / p.name).read_bytes()  # copies of the test files


def test_load_melody_from_bytes_and_path_and_track():
    path = MIDI / "liliuokalani_aloha_oe_voice_piano.mid"
    found, cand = demo.load_melody(path.read_bytes())
    assert len(found.candidates) == 7 and cand.index == found.default
    _, solo = demo.load_melody(path, 4)
    # name, GM instrument, range
    assert demo.track_label(found, solo) == "4: Solo Voice, Voice Oohs, D4-C5, 36 notes to bar 12"
    with pytest.raises(melody.MelodyError, match="no melody track 9"):
        demo.load_melody(path, 9)
    with pytest.raises(melody.MelodyError, match="larger than"):
        demo.load_melody(path, max_bytes=1000)
    with pytest.raises(melody.MelodyError, match="no file"):
        demo.load_melody(MIDI / "no_such_file.mid")


def test_an_upload_is_parsed_once_until_it_changes(tmp_path):
    """Every preview and range change of one upload reuses its parse (issue 10); a changed file
    is read again, and the cache stays bounded."""
    path = tmp_path / "song.mid"
    path.write_bytes((MIDI / "liliuokalani_aloha_oe_voice_piano.mid").read_bytes())
    found, _ = demo.load_melody(path)
    again, solo = demo.load_melody(path, 4)
    assert again is found and solo.index == 4
    path.write_bytes((MIDI / "oneills_003_4-4_melody.mid").read_bytes())
    other, _ = demo.load_melody(path)
    assert other is not found and len(other.candidates) == 1
    path.write_bytes(b"MThd")  # a bad file's error is kept too, and says (and is) the same every time
    for _ in range(2):
        with pytest.raises(melody.UnreadableMidiError, match="corrupt|not a MIDI"):
            demo.load_melody(path)
    for k in range(demo.PARSED_CACHE_SIZE + 3):
        copy = tmp_path / f"copy{k}.mid"
        copy.write_bytes((MIDI / "oneills_003_4-4_melody.mid").read_bytes())
        demo.load_melody(copy)
    assert len(demo._parsed) == demo.PARSED_CACHE_SIZE


def test_notes_outside_the_models_range_are_explained(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    for p in (12, 15, 115, 120):
        tr += [mido.Message("note_on", note=p, velocity=90, time=0), mido.Message("note_off", note=p, time=480)]
    mid.save(tmp_path / "low_high.mid")
    with pytest.raises(melody.MelodyError, match="outside the range the model knows"):
        demo.load_melody(tmp_path / "low_high.mid")
    with pytest.raises(melody.MelodyError, match="only drums"):  # other errors pass through unchanged
        demo.load_melody(MIDI / "synthetic" / "syn_drums_only.mid")


def test_plan_bars_in_the_files_meter():
    found, cand = demo.load_melody(MIDI / "schubert_lindenbaum_3-4_triplets.mid")
    plan, tokens = demo.plan_bars(found, cand, 9, 9)  # the musician's bar 9 of a 3/4 song
    assert plan.steps == (8 * 12, 9 * 12) and plan.chunk_range == (3, 4) and len(tokens) >= 82 * 12
    assert demo.default_range(found.bars) == (9, 16)
    for first, last, match in [(5, 4, "the last bar comes before the first"),
                               (3, 90, "the music ends at bar 82 .82 bars of 3/4.; choose bars 3-82"),
                               (2.5, 4, "whole number"), (None, 4, "whole number"), (0, 4, "this file has no pickup")]:
        with pytest.raises(SymdiffError, match=match):
            demo.plan_bars(found, cand, first, last)


def test_baselines_keep_the_melody_outside_the_range(pipe):
    found, cand = demo.load_melody(MIDI / "nottingham_cuckoos_nest_reel.mid")
    plan, _ = demo.plan_bars(found, cand, 17, 32)
    base = demo.baseline_infills(pipe, cand.tokens, plan, seed=1)
    lo, hi = plan.steps
    for name in ("interpolation", "prior"):
        out = base[name]
        assert len(out) == len(cand.tokens) and out.dtype == np.uint8
        assert np.array_equal(out[:lo], cand.tokens[:lo]) and np.array_equal(out[hi:], cand.tokens[hi:])
    assert not np.array_equal(base["interpolation"][lo:hi], base["prior"][lo:hi])
    again = demo.baseline_infills(pipe, cand.tokens, plan, seed=1)
    assert np.array_equal(again["prior"], base["prior"])  # seeded
    # the interpolation inside the range is the decoded slerp of the known neighbours
    from symdiff.baselines import interpolate_infill

    known = pipe.codec.encode(cand.tokens)
    x = interpolate_infill(known, torch.from_numpy(plan.mask()), pipe.codec.scaler, config=pipe.codec.config)
    assert np.array_equal(base["interpolation"][lo:hi], pipe.decode(x[None])[0][lo:hi])


def test_baselines_of_a_whole_window(pipe):
    tokens = demo.load_melody(MIDI / "oneills_003_4-4_melody.mid")[1].tokens[: 4 * BAR]
    plan = plan_infill(len(tokens), (0, len(tokens)))
    base = demo.baseline_infills(pipe, tokens, plan, seed=0)
    assert base["interpolation"] is None  # nothing known to interpolate from
    assert len(base["prior"]) == len(tokens)


def test_long_melody_baselines_use_the_window(pipe):
    found, cand = demo.load_melody(MIDI / "foster_brown_hair_lead_sheet.mid")
    assert cand.num_bars == 65 and found.bars.describe() == "64 bars of 4/4 and a pickup (bar 0)"
    plan, _ = demo.plan_bars(found, cand, 59, 64)
    assert plan.window[1] - plan.window[0] == 32
    base = demo.baseline_infills(pipe, cand.tokens, plan, seed=0)
    lo = plan.steps[0]
    assert np.array_equal(base["prior"][:lo], cand.tokens[:lo]) and len(base["prior"]) == len(cand.tokens)


def test_training_windows_and_reference(pipe, reference):
    lines = Lines.load()
    wins = random_windows(lines, "train", 10, 3)
    assert len(wins) == 10 and all(len(w) == 64 * BAR for w in wins)
    assert all(np.array_equal(w, random_windows(lines, "train", 10, 3)[i]) for i, w in enumerate(wins))
    assert set(reference.oa) == set(metrics.FEATURES) and reference.num_windows == 40
    assert reference.latents.shape == (64, pipe.codec.dim)


def test_sample_metrics(reference):
    window = random_windows(Lines.load(), "train", 1, 5)[0]
    lat = np.zeros((32, reference.latents.shape[1]))
    m = demo.sample_metrics(window, lat, reference)
    assert set(m) == set(demo.METRIC_NAMES) | {demo.LATENT_METRIC}
    assert all(0.0 <= m[k] <= 1.0 for k in demo.METRIC_NAMES)
    assert m[demo.LATENT_METRIC] == pytest.approx(metrics.mmd_polynomial(lat, reference.latents))
    short = demo.sample_metrics(window[: 4 * BAR], lat[:2], reference)  # too short for two frames
    assert all(math.isnan(short[k]) for k in demo.METRIC_NAMES) and not math.isnan(short[demo.LATENT_METRIC])


def test_checkpoints():
    assert demo.checkpoints(50, 8)[-1] == 49 and len(demo.checkpoints(50, 8)) == 8
    assert demo.checkpoints(3, 8) == [0, 1, 2]
    assert demo.checkpoints(1, 4) == [0]


def test_refinement_trace_measures_the_x0_estimate(pipe, reference):
    seen = []
    trace = demo.RefinementTrace(pipe, reference, bars=8, points=4, stages=3, on_point=seen.append)
    res = pipe.generate(1, 8, "ddim", 10, seed=2, callback=trace)
    assert [p.step for p in trace.trace] == [1, 2, 5, 8, 10] and seen == trace.trace
    assert [label for label, _ in trace.stage_tokens] == [
        "x0 estimate after step 1/10", "x0 estimate after step 5/10", "x0 estimate after step 10/10"]
    last = trace.stage_tokens[-1][1]
    assert np.array_equal(last, res.tokens[0])  # the last x0 estimate is the result
    assert trace.trace[-1].values == demo.sample_metrics(res.tokens[0], res.latents[0], reference)
    rows = trace.rows()
    assert {r["metric"] for r in rows} == set(demo.METRIC_NAMES) | {demo.LATENT_METRIC}
    # what the live view draws: the guess, the noisy latents, how much of the guess is decided
    assert np.array_equal(trace.trace[-1].tokens, res.tokens[0])
    assert trace.trace[-1].latents.shape == (4, pipe.codec.dim)
    settled = trace.settled_rows()
    assert [r["step"] for r in settled] == [2, 5, 8, 10] and math.isnan(trace.trace[0].settled)
    assert settled[-1]["value"] == demo.agreement(trace.trace[-1].tokens, trace.trace[-2].tokens)


def test_refinement_trace_can_be_cancelled(pipe, reference):
    stop = threading.Event()
    trace = demo.RefinementTrace(pipe, reference, bars=4, stop=stop,
                                 on_point=lambda p: stop.set())  # stop after the first point
    with pytest.raises(demo.Cancelled):
        pipe.generate(1, 4, "ddim", 20, seed=0, callback=trace)
    assert len(trace.trace) == 1 and trace.reached == 1  # where it stopped: after the first step


def test_forward_noise(pipe):
    tokens = demo.learn_melody(demo.load_melody(MIDI / "oneills_003_4-4_melody.mid")[1].tokens)
    assert len(tokens) == demo.LEARN_BARS * BAR
    x0 = pipe.codec.encode(tokens)
    clean, x = demo.forward_noise(pipe, tokens, 0, seed=1)
    assert torch.allclose(x, x0) and np.array_equal(clean, pipe.decode(x0[None])[0])
    a, xa = demo.forward_noise(pipe, tokens, 500, seed=1)
    b, xb = demo.forward_noise(pipe, tokens, 500, seed=1)
    assert torch.equal(xa, xb) and np.array_equal(a, b) and len(a) == len(tokens)
    _, x_end = demo.forward_noise(pipe, tokens, 1000, seed=1)
    level = demo.noise_level(pipe, 1000)
    assert level < 0.1
    eps = (x_end - level * x0) / math.sqrt(1 - level**2)  # the same noise at every t with one seed
    level_500 = demo.noise_level(pipe, 500)
    assert torch.allclose(eps, (xa - level_500 * x0) / math.sqrt(1 - level_500**2), atol=1e-4)
    # the captions say what the picture shows: the share of sixteenths kept, the VAE's own at step 0
    assert "give back 71% of the melody's sixteenths" in demo.noise_caption(pipe, 0, 0.714, 0.714)
    late = demo.noise_caption(pipe, 1000, 0.06, 0.714)
    assert "6% of the sixteenths still sound as in the melody (step 0: 71%)" in late and "noise" in late
    assert "speckle" not in demo.noise_caption(pipe, 100, 0.65, 0.714)
    with pytest.raises(GenerateError, match="between 0 and 1000"):
        demo.forward_noise(pipe, tokens, 1001)


def test_reverse_trace(pipe):
    tokens = demo.learn_melody(demo.load_melody(MIDI / "oneills_003_4-4_melody.mid")[1].tokens, 8)
    frames = demo.reverse_trace(pipe, tokens, 1000, 5, seed=0)
    assert len(frames) == 6 and frames[0].t == 1000 and frames[0].x0 is None and frames[-1].t == 0
    assert [f.t for f in frames] == sorted((f.t for f in frames), reverse=True)
    assert all(len(f.x_t) == len(tokens) and (f.x0 is None or len(f.x0) == len(tokens)) for f in frames)
    assert np.array_equal(frames[-1].x_t, frames[-1].x0)  # the last step lands on its x0 estimate
    assert all(f.latents.shape == (4, pipe.codec.dim) for f in frames) and frames[0].x0_latents is None
    again = demo.reverse_trace(pipe, tokens, 1000, 5, seed=0)
    assert all(np.array_equal(f.x_t, g.x_t) for f, g in zip(frames, again, strict=True))
    short = demo.reverse_trace(pipe, tokens, 20, 20, seed=0)  # every step from t = 20
    assert [f.t for f in short] == list(range(20, -1, -1))
    assert demo.reverse_caption(frames, 0, tokens, 0.7).startswith("**Start (step 1000):**")
    assert "a new melody" in demo.reverse_caption(frames, 5, tokens, 0.7)
    kept = demo.agreement(short[-1].x_t, tokens)
    assert f"{kept:.0%} of the sixteenths sound as in the melody" in demo.reverse_caption(short, 20, tokens, 0.7)
    assert "Step 3 of 20 (noise step 17)" in demo.reverse_caption(short, 3, tokens, 0.7)
    for args, match in [((0, 5), "start step"), ((1001, 5), "start step"), ((10, 11), "number of steps"),
                        ((10, 0), "number of steps")]:
        with pytest.raises(GenerateError, match=match):
            demo.reverse_trace(pipe, tokens, *args)


def test_a_reverse_run_restores_its_melody(pipe):
    """Issue 27: the Learn tab's reverse run, started from a lightly noised melody, must bring it
    back. It ended further from the melody than its noisy start at every start step (from step
    20: 25% of sixteenths against the start's 74%) while its sampler clipped x0 to [-1, 1] in a
    model space of std 1; now from step 20 it keeps what the VAE itself keeps, and from step 300
    it ends nearer the melody than it started."""
    tokens = demo.learn_melody(demo.load_melody(MIDI / "oneills_003_4-4_melody.mid")[1].tokens)
    vae = demo.agreement(demo.reconstruction(pipe, tokens), tokens)  # the VAE's own loss (72% of this reel)
    runs = demo.restoration(pipe, tokens, [20, 100, 300], seeds=[0, 1, 2])
    assert np.mean([r.end for r in runs if r.start_t == 20]) >= vae
    assert all(r.end > r.start + 0.05 for r in runs if r.start_t == 300)
    # every run ends nearer the melody's latents than it started (measured: 0.57-0.60 of the
    # start's distance from 20, 0.39-0.46 from 100 and 300); from 20 and 100 what decoding shows
    # of it is the VAE's own flips at its decision boundaries (eval/restoration.md)
    assert all(r.end_error < (0.7 if r.start_t == 20 else 0.55) * r.start_error for r in runs)
    frames = demo.reverse_trace(pipe, tokens, 20, 20, seed=0)  # what the tab draws
    assert demo.agreement(frames[-1].x_t, tokens) >= vae


def test_agreement_counts_sounding_pitches():
    tokens = np.array([melody.pitch_to_token(60), 0, 0, 1, melody.pitch_to_token(62), 0, 0, 0], dtype=np.uint8)
    assert demo.sounding_pitch(tokens).tolist() == [tokens[0]] * 3 + [-1] + [tokens[4]] * 4
    other = tokens.copy()
    other[3] = 0  # the C held through the rest
    assert demo.agreement(tokens, tokens) == 1.0 and demo.agreement(other, tokens) == 7 / 8
