"""`symdiff train diffusion` end to end, tiny: a tiny random VAE, real corpus lines (a subset of
the valid split re-split among themselves), a 1-layer TransformerDDPM, a handful of steps.

It runs `symdiff.cli.main` in this process (the same code the console script runs), one
process: the DDP code path is the same `training.py` helpers as `train vae`, with world 1.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from symdiff.cli import main
from symdiff.codec import FLAG_SILENT, STANDARD_SILENCE_VALUE, LatentCodec, LatentScaler
from symdiff.data import latents as L
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.diffusion import DiffusionConfig, TransformerDDPM
from symdiff.generate import GenerateError, MelodyDiffusion
from symdiff.schedulers import DDIM, ScheduleConfig
from symdiff.train.diffusion import KNOWN_MODES, diffusion_step_loss, distill_step_loss, random_known
from symdiff.train.latents import (
    TrainLatentsError,
    corpus_weights,
    epoch_batches,
    style_balanced_weights,
    style_labels,
)
from symdiff.train.loop import Recipe, Runtime
from symdiff.vae import MusicVAE, VAEConfig, vae_hash

torch.set_num_threads(1)

TINY = ["width=32", "layers=1", "heads=4", "mlp=64", "dense=64", "film=32", "batch_size=8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_diffusion")
    v = Lines.load(DEFAULT_PATH).select("valid")
    lines = Lines(v.tokens[600:660], [dict(m) for m in v.meta[600:660]])  # Monteverdi voices and folk tunes
    for i, m in enumerate(lines.meta):
        m["split"] = "valid" if i % 6 == 0 else "train"
    lines.save(root / "corpus.npz")
    torch.manual_seed(0)
    vae = MusicVAE(VAEConfig(enc_size=16, dec_sizes=(16,), z_size=8))
    vae.save_pretrained(root / "vae")
    return root


def argv(root, out, steps, *more):
    return ["train", "diffusion", "--config", "cpu", "--vae", str(root / "vae"), "--data", str(root / "corpus.npz"),
            "--out", str(out), "--set", *TINY, "--max-steps", str(steps), "--eval-every", "2",
            "--transpositions", "2", "--log-every", "1", *more]


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_save_resume(setup, capsys):
    root, out = setup, setup / "run"
    assert main(argv(root, out, 5)) == 0
    assert "stopped at step 5" in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "scaler.safetensors", "optimizer.safetensors", "state.json"):
        assert (out / "last" / name).is_file(), name
    for name in ("model.safetensors", "config.json", "scaler.safetensors"):
        assert (out / "best" / name).is_file(), name
    rows = read_log(out)
    assert rows[0]["event"] == "start" and rows[0]["train_windows"] > 100
    assert [r["step"] for r in rows if r.get("event") == "eval"] == [2, 4, 5]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 5 and state["best"]["valid_loss"] == state["best_loss"]

    # the checkpoint: scaler of the latent dataset, pointer to its VAE, silence rule
    model = TransformerDDPM.from_pretrained(out / "best")
    training = model.sections["training"]
    ds = L.LatentDataset.load(training["latents"]["path"])
    assert model.config.data_dim == ds.dim == model.scaler.dim
    assert model.scaler.to_dict()["range"].tolist() == list(ds.range)
    # one object: tokens -> model space -> a sample -> tokens
    codec = LatentCodec.from_pretrained(out / "best")
    assert codec.config.vae_sha256 == vae_hash(root / "vae") and codec.config.vae_path == str((root / "vae").resolve())
    assert codec.config.silence_rule == "token" and codec.config.posterior == "sample"
    assert training["train_step"] == state["best"]["step"]
    assert model.sections["schedule"] == ScheduleConfig().to_dict()
    assert model.sections["recipe"] == {**Recipe().to_dict(), "batch_size": 8}
    x = DDIM(ScheduleConfig().build(), steps=5).sample(model, (1, 4, model.config.data_dim), seed=0)
    tokens = codec.decode(x[0])
    assert tokens.shape == (4 * 32,) and tokens.dtype == np.uint8
    line = Lines.load(root / "corpus.npz").tokens[0]
    assert codec.encode(line).shape == (-(-len(line) // 32), ds.dim)

    # resume with a higher --max-steps: continues from step 5 with its Adam moments
    before = load_file(str(out / "last" / "model.safetensors"))
    assert main(argv(root, out, 8)) == 0
    rows = read_log(out)
    starts = [r for r in rows if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 5]
    assert [r["step"] for r in rows if "loss" in r][-3:] == [6, 7, 8]
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 8
    adam = load_file(str(out / "last" / "optimizer.safetensors"))
    assert float(adam["0.step"]) == 8.0  # 5 + 3: the moments were resumed, not restarted
    after = load_file(str(out / "last" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # a run at its max-steps does nothing more
    assert main(argv(root, out, 8)) == 0
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 8

    # resuming on another VAE's latents is refused, as one error line
    torch.manual_seed(1)
    MusicVAE(VAEConfig(enc_size=16, dec_sizes=(16,), z_size=8)).save_pretrained(root / "vae2")
    bad = argv(root, out, 9)
    bad[bad.index(str(root / "vae"))] = str(root / "vae2")
    capsys.readouterr()
    assert main(bad) == 2
    assert "another VAE" in capsys.readouterr().err


def test_paper_rule_and_ema(setup):
    out = setup / "run_drop"
    assert main(argv(setup, out, 3, "--silence", "drop", "--ema", "0.9", "--bucket")) == 0
    start = read_log(out)[0]
    training = TransformerDDPM.from_pretrained(out / "last").sections["training"]
    ds = L.LatentDataset.load(training["latents"]["path"])
    assert start["train_windows"] == len(ds.windows("train", drop_silent=True)) < len(ds.windows("train"))
    assert LatentCodec.from_pretrained(out / "last").config.silence_rule == "drop" and training["ema"] == 0.9
    ema = load_file(str(out / "last" / "extra.safetensors"))
    raw = load_file(str(out / "last" / "model.safetensors"))
    assert set(ema) == {f"ema.{k}" for k in raw}
    assert any(not torch.equal(ema[f"ema.{k}"], raw[k]) for k in raw)
    assert isinstance(LatentScaler.from_pretrained(out / "best"), LatentScaler)


def test_lr_and_batches():
    recipe = Recipe(lr_decay_every=4000)
    assert recipe.lr_at(0) == recipe.lr_at(3999) == 1e-3 and recipe.lr_at(4000) == pytest.approx(0.98e-3)
    assert recipe.lr_at(8000) == pytest.approx(1e-3 * 0.98**2)
    lengths = np.random.default_rng(0).integers(1, 33, 1003)
    for bucket in (False, True):
        # two ranks always get the same number of batches (DDP steps together), disjoint windows
        per_rank = [list(epoch_batches(lengths, 10, Runtime(torch.device("cpu"), r, 2), 0, 0, bucket, pool=4))
                    for r in range(2)]
        assert len(per_rank[0]) == len(per_rank[1]) == 50
        seen = np.concatenate([b for batches in per_rank for b in batches])
        assert len(set(seen.tolist())) == len(seen) == 1000
    spread = lambda batches: np.mean([np.ptp(lengths[b]) for b in batches])
    plain = list(epoch_batches(lengths, 10, Runtime(torch.device("cpu"), 0, 1), 0, 0, False))
    bucketed = list(epoch_batches(lengths, 10, Runtime(torch.device("cpu"), 0, 1), 0, 0, True))
    assert spread(bucketed) < spread(plain) / 3


@pytest.mark.parametrize("silence", ["token", "flag"])
def test_conditional_standardized_run_serves_both_infill_methods(setup, silence):
    """`--config cpu-cond --standardize`: the checkpoint carries the standardized scaler, its
    silence rule and clip, and the pipeline infills by both methods, the known bars exact. With
    `--silence flag` the model space has one more dim, up at silent chunks and down at music."""
    out = setup / f"run_cond_{silence}"
    args = argv(setup, out, 3, "--standardize", "--silence", silence)
    assert main([*args[:3], "cpu-cond", *args[4:]]) == 0
    model = TransformerDDPM.from_pretrained(out / "best")
    assert model.config.conditional and model.config.trunk_noise and model.scaler.standardized
    codec = LatentCodec.from_pretrained(out / "best")
    cfg = codec.config
    assert cfg.silence_rule == silence and model.config.data_dim == codec.dim == codec.scaler.dim + cfg.flag
    if silence == "flag":
        assert cfg.silence_value == FLAG_SILENT and cfg.silence_threshold == 0.0
    else:
        assert cfg.silence_value == STANDARD_SILENCE_VALUE and cfg.silence_threshold == 0.5 * STANDARD_SILENCE_VALUE
        assert cfg.clip >= -STANDARD_SILENCE_VALUE
    pipe = MelodyDiffusion.from_pretrained(out / "best")
    assert pipe.infill_methods == ("conditioned", "replace") and pipe.sampler("ddim", 5).clip == cfg.clip
    line = Lines.load(setup / "corpus.npz").tokens[0][: 8 * 16]
    for method in pipe.infill_methods:
        res = pipe.infill(line, (2 * 16, 6 * 16), steps=5, seed=0, method=method)
        assert np.array_equal(res.tokens[0][: 2 * 16], line[: 2 * 16])
        assert np.array_equal(res.tokens[0][6 * 16 :], line[6 * 16 :])
    # a line with a silent chunk: encoded as the rule says, decoded back as a rest
    rest = np.concatenate([line[:32], np.zeros(32, np.uint8), line[64:96]])
    rest[32] = 1  # note-off: the held note ends, then 2 bars of silence
    x = codec.encode(rest)
    assert codec.is_silent(x).tolist() == [False, True, False] and x.shape == (3, codec.dim)
    if silence == "flag":
        assert x[:, -1].tolist() == [-FLAG_SILENT, FLAG_SILENT, -FLAG_SILENT] and not x[1, :-1].any()
    assert np.array_equal(codec.decode(x)[32:64], rest[32:64])


def test_random_known_masks():
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(32)[None, :] < torch.randint(1, 33, (4000, 1), generator=g)
    keep = random_known(mask, g)
    assert not (keep & ~mask).any()  # padding is never known
    assert ((mask & ~keep).sum(1) >= 1).all()  # something to generate in every row
    none = ~keep.any(1)
    assert abs(float(none.float().mean()) - KNOWN_MODES["none"]) < 0.05 + 0.1  # single-chunk rows add to it
    spans = keep[(mask.sum(1) == 32) & keep.any(1)]
    assert float(spans.float().mean()) > 0.2


def test_style_labels_warm_start_and_guidance(setup, capsys):
    """`--config cpu-style --init-from CHECKPOINT`: a conditional flag model gains style labels
    (and then, `--config cpu-copy`, the copy head).
    The run starts from the checkpoint's weights (the style embedding at zero: every label is
    "any style" at first), records where it started, and the pipeline samples and infills in a
    style, with guidance on it; a style the model does not know is one clear error."""
    base, out = setup / "run_style_base", setup / "run_style"
    args = argv(setup, base, 2, "--standardize", "--silence", "flag")
    assert main([*args[:3], "cpu-cond", *args[4:]]) == 0
    args = argv(setup, out, 2, "--standardize", "--silence", "flag", "--init-from", str(base / "best"),
                "--style-balance", "0.75", "--balance-scope", "known")
    assert main([*args[:3], "cpu-style", *args[4:]]) == 0
    model = TransformerDDPM.from_pretrained(out / "best")
    assert model.config.styles == ("folk", "chorale", "vocal")
    assert model.sections["training"]["style_balance"] == 0.75
    assert model.sections["training"]["balance_scope"] == "known"
    init = model.sections["training"]["init_from"]
    assert init["path"] == str(base / "best") and init["new_weights"] == ["style_embed.weight"]
    assert init["train_step"] == TransformerDDPM.from_pretrained(base / "best").sections["training"]["train_step"]

    # the labels follow each line's subcorpus: this corpus holds Monteverdi voices and folk tunes
    training = model.sections["training"]
    ds = L.LatentDataset.load(training["latents"]["path"])
    labels = style_labels(ds, setup / "corpus.npz", model.config.styles)
    sources = np.load(setup / "corpus.npz")["source"]
    per_seq = labels[ds.offsets[:-1][ds.lengths() > 0]]
    want = [1 + model.config.styles.index("vocal" if sources[i] == "monteverdi" else "folk")
            for i in ds.line[ds.lengths() > 0]]
    assert per_seq.tolist() == want and set(want) == {1, 3}

    pipe = MelodyDiffusion.from_pretrained(out / "best")
    assert pipe.styles == model.config.styles
    folk = pipe.generate(2, 8, steps=5, seed=0, style="folk").latents
    vocal = pipe.generate(2, 8, steps=5, seed=0, style="vocal").latents
    plain = pipe.generate(2, 8, steps=5, seed=0, style="folk", guidance=1.0).latents
    assert not torch.equal(folk, vocal) and not torch.equal(folk, plain)
    line = Lines.load(setup / "corpus.npz").tokens[0][: 8 * 16]
    res = pipe.infill(line, (2 * 16, 6 * 16), steps=5, seed=0, style="folk")
    assert np.array_equal(res.tokens[0][: 2 * 16], line[: 2 * 16])
    with pytest.raises(GenerateError, match="choose from folk, chorale, vocal"):
        pipe.generate(1, 8, steps=5, style="rock")
    with pytest.raises(GenerateError, match="no styles"):
        MelodyDiffusion.from_pretrained(base / "best").generate(1, 8, steps=5, style="folk")

    # ... and a styled model gains the copy head, shut at first, and infills with it
    args = argv(setup, setup / "run_copy", 1, "--standardize", "--silence", "flag", "--init-from", str(out / "best"))
    assert main([*args[:3], "cpu-copy", *args[4:]]) == 0
    copy = TransformerDDPM.from_pretrained(setup / "run_copy" / "best")
    assert copy.sections["training"]["init_from"]["new_weights"] == [
        "copy_head.gate.bias", "copy_head.gate.weight", "copy_head.key.bias", "copy_head.key.weight",
        "copy_head.query.bias", "copy_head.query.weight"]
    res = MelodyDiffusion.from_pretrained(setup / "run_copy" / "best").infill(line, (2 * 16, 6 * 16), steps=5, seed=0)
    assert np.array_equal(res.tokens[0][6 * 16 :], line[6 * 16 :])

    # a checkpoint whose weights do not fit the architecture cannot start a run
    capsys.readouterr()
    args = argv(setup, setup / "run_misfit", 1, "--standardize", "--silence", "flag", "--init-from", str(base / "best"))
    assert main(args) == 2  # the plain config: no known-music input, no adaLN
    assert "does not fit" in capsys.readouterr().err
    args = argv(setup, setup / "run_unlabelled", 1, "--standardize", "--silence", "flag", "--style-balance", "1")
    assert main([*args[:3], "cpu-cond", *args[4:]]) == 2
    assert "needs a config with style labels" in capsys.readouterr().err
    args = argv(setup, setup / "run_scope", 1, "--standardize", "--silence", "flag", "--balance-scope", "infill")
    assert main(args) == 2
    assert "balance scope must be one of all, known" in capsys.readouterr().err
    args = argv(setup, setup / "run_scope", 1, "--standardize", "--silence", "flag", "--balance-scope", "known")
    assert main(args) == 2  # the plain config sees no known music
    assert "needs a conditional config" in capsys.readouterr().err


def test_balance_scope_known_weighs_new_melodies_back_to_the_corpus_mix():
    """`--balance-scope known`: a window seen with nothing known has its loss scaled by its
    corpus share over its drawn share, one seen with known music is left alone; so over the
    balanced draw the windows with nothing known weigh as the corpus has them."""
    cfg = DiffusionConfig(name="t", width=32, layers=1, heads=4, mlp=64, dense=64, film=32, data_dim=8,
                          prediction="v", conditional=True, trunk_noise=True)
    torch.manual_seed(0)
    net, schedule = TransformerDDPM(cfg), ScheduleConfig().build()
    rt = Runtime(torch.device("cpu"), 0, 1)
    x0, mask = torch.randn(1, 6, 8), torch.ones(1, 6, dtype=torch.bool)

    def loss(seed: int, weight: float | None) -> float:
        w = None if weight is None else torch.tensor([weight])
        with torch.no_grad():
            return float(diffusion_step_loss(net, x0, mask, torch.Generator().manual_seed(seed), rt, False, schedule,
                                             corpus_weight=w))

    kinds = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        schedule.training_noise(x0, g)  # the draws the loss makes before `random_known`
        unknown_only = not random_known(mask, g).any()
        kinds.add(unknown_only)
        assert loss(seed, 1.0) == pytest.approx(loss(seed, None), rel=1e-6)
        assert loss(seed, 0.25) == pytest.approx(loss(seed, None) * (0.25 if unknown_only else 1.0), rel=1e-5)
    assert kinds == {True, False}

    labels = np.repeat([3, 1, 2], [700, 265, 35])
    weights = style_balanced_weights(labels, 0.75)
    drawn = torch.multinomial(weights, 200_000, replacement=True, generator=torch.Generator().manual_seed(0)).numpy()
    back = corpus_weights(weights, "known", conditional=True).numpy()[drawn]
    shares = np.bincount(labels[drawn], weights=back, minlength=4)[1:] / back.sum()
    assert np.allclose(shares, [0.265, 0.035, 0.7], atol=0.01)


def test_style_balance_evens_the_styles_drawn():
    """`--style-balance`: 1 draws each style's windows equally often however rare the style,
    0 as the corpus has them; both deal every rank the same number of batches."""
    labels = np.repeat([3, 1, 2], [700, 265, 35])  # the corpus' shares of vocal, folk, chorale windows
    lengths = np.full(len(labels), 8)

    def shares(balance: float, rank: int = 0, world: int = 1) -> np.ndarray:
        rt = Runtime(torch.device("cpu"), rank, world)
        weights = style_balanced_weights(labels, balance)
        drawn = np.concatenate([b for e in range(20) for b in epoch_batches(lengths, 10, rt, 0, e, weights=weights)])
        assert len(drawn) == 20 * (len(labels) // world)
        return np.bincount(labels[drawn], minlength=4)[1:] / len(drawn)

    assert np.allclose(shares(1.0), 1 / 3, atol=0.02)
    assert np.allclose(shares(0.0), [0.265, 0.035, 0.7], atol=0.02)
    assert np.allclose(shares(0.75, rank=1, world=2), [0.316, 0.259, 0.425], atol=0.03)
    with pytest.raises(TrainLatentsError, match="between 0 and 1"):
        style_balanced_weights(labels, 1.5)


def test_distil_a_guided_student(setup, capsys):
    """`--teacher T --set guided=true --init-from T`: a student that takes the guidance weights as
    input starts as its teacher's plain view (its guidance embedding at zero), learns the teacher's
    guided eps (the loss falls on a fixed batch), and samples and infills with one model row per
    chain row a step, where its teacher runs two or three."""
    teacher_out, out = setup / "run_teacher", setup / "run_student"
    assert main(argv(setup, teacher_out, 1, "--standardize", "--silence", "flag", "--config", "cpu-copy")) == 0
    teacher = TransformerDDPM.from_pretrained(teacher_out / "best")
    args = argv(setup, out, 2, "--standardize", "--silence", "flag", "--config", "cpu-copy", "--teacher",
                str(teacher_out / "best"), "--init-from", str(teacher_out / "best"))
    args[args.index("--set") + 1 : args.index("--set") + 1] = ["guided=true"]
    assert main(args) == 0
    student = TransformerDDPM.from_pretrained(out / "best")
    assert student.config.guided and student.sections["teacher"]["path"] == str(teacher_out / "best")
    assert student.sections["training"]["init_from"]["new_weights"] == [
        "guidance_embed.0.bias", "guidance_embed.0.weight", "guidance_embed.2.bias", "guidance_embed.2.weight"]

    # at the start it is the teacher's plain view, whatever the weights
    fresh = TransformerDDPM(student.config)
    fresh.load_state_dict({**fresh.state_dict(), **teacher.state_dict()})
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, teacher.config.data_dim, generator=gen)
    keep = torch.tensor([[True, False, False, True], [False] * 4])
    cond = {"known": torch.randn(x.shape, generator=gen), "keep": keep, "style": torch.tensor([1, 0])}
    plain = teacher.eval()(x, torch.tensor([0.3, 0.7]), **cond)
    weights = torch.tensor([[3.0, 1.0], [1.0, 2.5]])
    torch.testing.assert_close(fresh.eval()(x, torch.tensor([0.3, 0.7]), guidance=weights, **cond), plain)
    with pytest.raises(ValueError, match="not distilled"):
        teacher(x, torch.tensor([0.3, 0.7]), guidance=weights, **cond)

    # the distillation loss falls on one batch (a teacher whose views differ: weights off their init)
    with torch.no_grad():
        for w in teacher.parameters():
            w.add_(0.05 * torch.randn(w.shape, generator=gen))
    fresh.load_state_dict({**fresh.state_dict(), **teacher.state_dict()})
    x0, mask = torch.randn(8, 4, teacher.config.data_dim, generator=gen), torch.ones(8, 4, dtype=torch.bool)
    fresh.train()
    opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    schedule = ScheduleConfig().build()
    losses = []
    for _ in range(30):
        loss = distill_step_loss(fresh, x0, mask, torch.Generator().manual_seed(1), Runtime(torch.device("cpu"), 0, 1),
                                 False, schedule, teacher, style=torch.tensor([1, 2, 3, 0] * 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

    # it samples and infills, one row a chain row
    pipe = MelodyDiffusion.from_pretrained(out / "best")
    rows: list[int] = []
    pipe.model.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].shape[0]))
    pipe.generate(2, 8, steps=5, seed=0, style="folk", repair=False)
    line = Lines.load(setup / "corpus.npz").tokens[0][: 8 * 16]
    res = pipe.infill(line, (2 * 16, 6 * 16), steps=5, seed=0, style="folk", repair=False)
    assert np.array_equal(res.tokens[0][6 * 16 :], line[6 * 16 :])
    assert rows == [2] * 5 + [1] * 5

    # a student needs a guided config
    capsys.readouterr()
    args = argv(setup, setup / "run_unguided", 1, "--standardize", "--silence", "flag", "--config", "cpu-copy",
                "--teacher", str(teacher_out / "best"))
    assert main(args) == 2
    assert "guided=true" in capsys.readouterr().err
