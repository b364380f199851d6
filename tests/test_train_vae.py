"""`symdiff train vae` (symdiff.train.vae): MusicVAE's schedules and loss by hand, and short
real runs of the command on a small dataset cut from the real corpus: checkpoints and log,
resuming (step, log, optimizer moments), and the same command under torchrun with 2 ranks.

Runs use a tiny model (enc 16, dec 16+16, z 8, batch 16) for a handful of steps.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from work import cpu_seconds

from symdiff.cli import main as cli_main
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.train.vae import PRESETS, VAERecipe, beta_at, lr_at, teacher_forcing_prob, vae_loss
from symdiff.vae import MusicVAE, evaluate

REPO = Path(__file__).resolve().parent.parent
CFG = PRESETS["cat-mel_2bar_small"][1]  # the recipe
TINY_SET = ["enc_size=16", "dec_sizes=16,16", "z_size=8", "batch_size=16"]
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which train_vae uses


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


# --- schedules ------------------------------------------------------------------------------

def test_teacher_forcing_schedule():
    assert teacher_forcing_prob(0, 1000.0) == pytest.approx(1000 / 1001, rel=1e-12)
    assert teacher_forcing_prob(5000, 1000.0) == pytest.approx(1000 / (1000 + math.exp(5)), rel=1e-12)
    assert teacher_forcing_prob(10000, 1000.0) == pytest.approx(1000 / (1000 + math.exp(10)), rel=1e-12)
    assert teacher_forcing_prob(5000, 1000.0) == pytest.approx(0.8707, abs=1e-4)
    assert teacher_forcing_prob(10000, 1000.0) == pytest.approx(0.043428, abs=1e-6)
    assert teacher_forcing_prob(10**9, 1000.0) == pytest.approx(0.0, abs=1e-200)  # no overflow
    assert teacher_forcing_prob(0, 0.0) == teacher_forcing_prob(123456, 0.0) == 1.0


def test_beta_and_learning_rate_schedules():
    assert beta_at(0, CFG) == 0.0
    assert beta_at(1, CFG) == pytest.approx((1 - 0.99999) * 0.2, rel=1e-9)
    assert beta_at(100_000, CFG) == pytest.approx((1 - 0.99999**100_000) * 0.2, rel=1e-12)
    assert beta_at(10_000_000, CFG) == pytest.approx(CFG.max_beta, rel=1e-12)
    assert all(beta_at(s, CFG) <= beta_at(s + 1000, CFG) <= CFG.max_beta for s in range(0, 10**6, 10**5))

    assert lr_at(0, CFG) == CFG.learning_rate == 1e-3
    assert lr_at(1, CFG) == pytest.approx((1e-3 - 1e-5) * 0.9999 + 1e-5, rel=1e-12)
    assert lr_at(10_000, CFG) == pytest.approx((1e-3 - 1e-5) * 0.9999**10_000 + 1e-5, rel=1e-12)
    assert lr_at(10**7, CFG) == pytest.approx(CFG.min_learning_rate, rel=1e-9)
    assert all(lr_at(s, CFG) >= CFG.min_learning_rate for s in range(0, 10**7, 10**5))


def test_vae_loss_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]],
                           [[0.0, 1.0, 3.0], [-2.0, 0.0, 2.0]]])  # B=2, T=2, C=3
    targets = torch.tensor([[0, 2], [1, 2]])
    mu = torch.tensor([[0.1, -0.2], [2.0, 1.0]])
    sigma = torch.tensor([[0.9, 1.1], [0.5, 0.8]])
    # free bits: 0.5 bits = 0.3466 nats; example 0 has a smaller KL (no cost), example 1 a larger one
    cfg = VAERecipe(free_bits=0.5)
    beta = 0.3

    def nll(row, k):
        return math.log(sum(math.exp(v) for v in row)) - row[k]

    r = [sum(nll(logits[b, t].tolist(), int(targets[b, t])) for t in range(2)) for b in range(2)]
    kl = [0.5 * sum(m * m + s * s - 1 - 2 * math.log(s) for m, s in zip(mu[b].tolist(), sigma[b].tolist(), strict=True))
          for b in range(2)]
    free = 0.5 * math.log(2)
    assert kl[0] < free < kl[1]
    expected = (r[0] + r[1]) / 2 + beta * (max(kl[0] - free, 0) + max(kl[1] - free, 0)) / 2

    loss, parts = vae_loss(logits, targets, mu, sigma, beta, cfg)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert parts["r_loss"] == pytest.approx((r[0] + r[1]) / 2, rel=1e-6)
    assert parts["kl"] == pytest.approx((kl[0] + kl[1]) / 2, rel=1e-6)  # reported before free bits
    loss0, _ = vae_loss(logits, targets, mu, sigma, beta, VAERecipe(free_bits=0.0))
    assert loss0.item() == pytest.approx((r[0] + r[1]) / 2 + beta * (kl[0] + kl[1]) / 2, rel=1e-6)
    # bf16 logits (autocast) give the float32 loss of those values
    loss_bf16, _ = vae_loss(logits.bfloat16(), targets, mu, sigma, beta, cfg)
    assert loss_bf16.dtype == torch.float32
    logits.requires_grad_(True)
    vae_loss(logits, targets, mu, sigma, beta, cfg)[0].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# --- real runs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A small dataset of real lines: some train and some valid lines of the corpus."""
    path = tmp_path_factory.mktemp("data") / "small.npz"
    if DEFAULT_PATH.is_file():
        lines = Lines.load(DEFAULT_PATH)
    else:  # a fresh checkout: build one subcorpus (a few seconds)
        from symdiff.data.corpus import build

        lines, _ = build(path.with_name("josquin.npz"), ["josquin"], workers=1)
    train, valid = lines.select("train"), lines.select("valid")
    small = Lines(train.tokens[:24] + valid.tokens[:6], train.meta[:24] + valid.meta[:6])
    # enough for the runs below: 4 steps of 2 x 8 chunks inside the first epoch, some held out
    assert len(small.select("train").vae_chunks()) >= 160 and len(small.select("valid").vae_chunks()) >= 16
    small.save(path)
    return path


def train_args(out: Path, data: Path, max_steps: int, eval_every: int, *extra: str) -> list[str]:
    return ["train", "vae", "--config", "cat-mel_2bar_small", "--set", *TINY_SET, "--out", str(out),
            "--data", str(data), "--max-steps", str(max_steps), "--eval-every", str(eval_every), *extra]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def read_state(out: Path) -> dict:
    return json.loads((out / "last" / "state.json").read_text())


@pytest.fixture(scope="module")
def six_steps(small_data, tmp_path_factory) -> Path:
    """One real 6-step run (kept read-only: tests that go on copy it first)."""
    out = tmp_path_factory.mktemp("runs") / "six"
    assert cli_main(train_args(out, small_data, 6, 3)) == 0
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_train_writes_checkpoints_and_log(six_steps, small_data):
    out = six_steps
    assert sorted(p.name for p in out.iterdir()) == ["best", "last", "log.jsonl"]
    assert sorted(p.name for p in (out / "last").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    assert sorted(p.name for p in (out / "best").iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "last" / "config.json").read_text())
    assert (cfg["model"]["enc_size"], cfg["model"]["dec_sizes"], cfg["model"]["z_size"]) == (16, [16, 16], 8)
    assert cfg["recipe"] == {**VAERecipe().to_dict(), "batch_size": 16} and cfg["training"]["train_step"] == 6

    state = read_state(out)
    assert state["step"] == 6 and state["epoch"] == 0 and state["seconds"] > 0
    assert len(state["param_groups"]) == 1
    recipe = VAERecipe.from_dict(MusicVAE.from_pretrained(out / "last").sections["recipe"])
    assert state["param_groups"][0]["lr"] == pytest.approx(lr_at(5, recipe))

    log = read_log(out)
    assert log[0]["event"] == "start" and log[0]["step"] == 0 and log[0]["world"] == 1
    held = Lines.load(small_data).select("valid").vae_chunks()
    assert log[0]["held_chunks"] == len(held)
    assert log[0]["train_chunks"] == len(Lines.load(small_data).select("train").vae_chunks())
    evals = [row for row in log if row.get("event") == "eval"]
    assert [row["step"] for row in evals] == [3, 6]
    for row in evals:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["accuracy_teacher_forced"] <= 1
        assert 0 <= row["active_dims"] <= 8 and row["kl"] >= 0
    best = max(evals, key=lambda row: row["accuracy"])
    assert state["best_accuracy"] == best["accuracy"] and state["best"]["step"] == best["step"]

    model = MusicVAE.from_pretrained(out / "last")
    assert model.config.z_size == 8
    torch.manual_seed(0)  # the run's seed: its initial weights
    first = MusicVAE(model.config)
    moved = [n for n, p in model.state_dict().items() if not torch.equal(p, first.state_dict()[n])]
    assert len(moved) == len(model.state_dict())  # every tensor was trained
    opt = load_file(str(out / "last" / "optimizer.safetensors"))
    n_params = len(list(model.parameters()))
    assert set(opt) == {f"{i}.{k}" for i in range(n_params) for k in ("step", "exp_avg", "exp_avg_sq")}
    assert all(opt[f"{i}.step"].item() == 6 for i in range(n_params))


def test_resume_continues_and_restores_the_optimizer_exactly(six_steps, small_data, tmp_path):
    out = copy_run(six_steps, tmp_path / "run")
    before_model = {k: v.double() for k, v in load_file(str(out / "last" / "model.safetensors")).items()}
    before_opt = {k: v.double() for k, v in load_file(str(out / "last" / "optimizer.safetensors")).items()}
    before = read_state(out)

    assert cli_main(train_args(out, small_data, 7, 3)) == 0
    state = read_state(out)
    assert state["step"] == 7 and state["seconds"] > before["seconds"]
    assert state["best_accuracy"] >= before["best_accuracy"]
    starts = [row for row in read_log(out) if row.get("event") == "start"]
    assert [row["step"] for row in starts] == [0, 6]
    new_rows = read_log(out)[len(read_log(six_steps)):]
    assert [(r.get("event"), r["step"]) for r in new_rows] == [("start", 6), ("eval", 7)]  # the last weights are judged

    # One Adam step from the saved moments explains the new ones exactly: the gradient g
    # recovered from m7 = b1 m6 + (1 - b1) g must also give v7 = b2 v6 + (1 - b2) g^2 and the
    # new weights; a fresh optimizer (m6 = v6 = 0, step 1) or other weights would not.
    after_model = {k: v.double() for k, v in load_file(str(out / "last" / "model.safetensors")).items()}
    after_opt = {k: v.double() for k, v in load_file(str(out / "last" / "optimizer.safetensors")).items()}
    names = list(MusicVAE.from_pretrained(out / "last").state_dict())  # parameter order = optimizer order
    b1, b2 = ADAM_BETAS
    lr = lr_at(6, VAERecipe.from_dict(MusicVAE.from_pretrained(out / "last").sections["recipe"]))
    bc1, bc2 = 1 - b1**7, 1 - b2**7
    steps, directions = [], []
    for i, name in enumerate(names):
        assert after_opt[f"{i}.step"].item() == 7
        m6, v6, m7, v7 = (d[f"{i}.{k}"] for d in (before_opt, after_opt) for k in ("exp_avg", "exp_avg_sq"))
        g = (m7 - b1 * m6) / (1 - b1)
        torch.testing.assert_close(v7, b2 * v6 + (1 - b2) * g * g, rtol=1e-3, atol=1e-14)
        direction = m7 / bc1 / (v7.sqrt() / math.sqrt(bc2) + ADAM_EPS)
        step = before_model[name] - after_model[name]
        torch.testing.assert_close(step, lr * direction, rtol=0, atol=2e-7)
        assert step.abs().max() > 0
        steps.append(step.flatten())
        directions.append(direction.flatten())
    step, direction = torch.cat(steps), torch.cat(directions)
    fitted_lr = (step @ direction / (direction @ direction)).item()  # float32 rounding averages out
    assert fitted_lr == pytest.approx(lr, rel=2e-5)  # lr_at(7) would be 1e-4 off


def test_rerun_at_max_steps_trains_nothing(six_steps, small_data, tmp_path):
    out = copy_run(six_steps, tmp_path / "run")
    weights = load_file(str(out / "last" / "model.safetensors"))
    assert cli_main(train_args(out, small_data, 6, 3)) == 0
    assert read_state(out)["step"] == 6
    after = load_file(str(out / "last" / "model.safetensors"))
    assert all(torch.equal(after[k], v) for k, v in weights.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `symdiff train vae` as torchrun runs it (`-m symdiff.cli`), plus a record of each rank's final
# parameters: the optimizer's (a spy on torch.optim.Adam, which train_vae builds on the model's
# parameters), written to <dir>/rank<R>.safetensors after the command returns.
RANK_WEIGHTS_LAUNCHER = """
import os, sys
import torch
from safetensors.torch import save_file
from symdiff.cli import main

params = []
real_init = torch.optim.Adam.__init__
def init(self, p, *args, **kwargs):
    p = list(p)
    params.extend(p)
    real_init(self, p, *args, **kwargs)
torch.optim.Adam.__init__ = init
rc = main(sys.argv[2:])
save_file({str(i): t.detach().contiguous() for i, t in enumerate(params)},
          os.path.join(sys.argv[1], "rank%s.safetensors" % os.environ["RANK"]))
sys.exit(rc)
"""


@pytest.mark.slow
def test_torchrun_two_ranks(small_data, tmp_path):
    """The same command under torchrun (2 CPU ranks, gloo): both ranks run every step and
    end with the very same weights (DDP averages the gradients of their different batches),
    and rank 0 saves the model it evaluated."""
    out = tmp_path / "ddp"
    launcher = tmp_path / "launch.py"
    launcher.write_text(RANK_WEIGHTS_LAUNCHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(launcher), str(tmp_path), *train_args(out, small_data, 4, 2, "--precision", "fp32")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # each rank prints its own summary; both write to one pipe, so their lines may interleave
    assert re.findall(r"stopped at step (\d+) ", proc.stdout) == ["4", "4"], proc.stdout

    state = read_state(out)
    assert state["step"] == 4
    log = read_log(out)
    assert [row["event"] for row in log if "event" in row] == ["start", "eval", "eval"]  # rank 0 only
    assert log[0]["world"] == 2 and log[0]["step"] == 0
    train_chunks = Lines.load(small_data).select("train").vae_chunks()
    assert log[0]["train_chunks"] == len(train_chunks)
    assert state["epoch"] == 0  # ~150 chunks per rank: 4 batches of 8 fit in the first epoch

    # The checkpoint is the model whose held-out figures rank 0 logged at step 4 (fp32 run).
    held = Lines.load(small_data).select("valid").vae_chunks()
    held = torch.from_numpy(held[np.random.default_rng(1234).permutation(len(held))[:4096]])
    logged = next(row for row in log if row.get("event") == "eval" and row["step"] == 4)
    with torch.no_grad():
        got = evaluate(MusicVAE.from_pretrained(out / "last"), held)
    assert got["accuracy"] == logged["accuracy"]
    assert got["accuracy_teacher_forced"] == logged["accuracy_teacher_forced"]
    assert got["active_dims"] == logged["active_dims"]
    assert got["kl"] == pytest.approx(logged["kl"], rel=1e-6)
    opt = load_file(str(out / "last" / "optimizer.safetensors"))
    assert {v.item() for k, v in opt.items() if k.endswith(".step")} == {4.0}

    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    saved = list(MusicVAE.from_pretrained(out / "last").state_dict().values())
    assert len(ranks[0]) == len(ranks[1]) == len(saved)
    for i, value in enumerate(saved):
        assert torch.equal(ranks[0][str(i)], value) and torch.equal(ranks[1][str(i)], value), i


@pytest.mark.slow
def test_fewer_chunks_than_a_batch_is_an_error_not_a_hang(small_data, tmp_path):
    out = tmp_path / "run"
    args = train_args(out, small_data, 2, 2)
    args[args.index("batch_size=16")] = "batch_size=4096"  # the small dataset has ~300 chunks
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "symdiff.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.nice(10))  # a spinning loop must not slow the others
    try:
        t0 = time.monotonic()
        started = None  # the CPU seconds the run had used when its log said "start": the loop begins right after
        while proc.poll() is None and time.monotonic() - t0 < 300:  # a guard against a hang, not a verdict
            if started is None and (out / "log.jsonl").exists():
                started = cpu_seconds(proc.pid)
            if started is not None and cpu_seconds(proc.pid) - started > 5:
                break
            time.sleep(0.1)
        assert proc.poll() is not None, "still running after 5 CPU seconds since it started, without training a step"
        _, err = proc.communicate()
        assert proc.returncode == 2
        errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("symdiff: error:")]
        assert len(errors) == 1 and "batch" in errors[0], err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_the_checkpoint_and_a_rerun_resumes(small_data, tmp_path, sig):
    """Ctrl-C in the middle of a run (SIGINT, as a terminal sends it), or `kill` (SIGTERM: a
    background run ignores SIGINT), writes last/ at the step reached and exits cleanly; the same
    command then resumes from that step."""
    out = tmp_path / "run"
    args = train_args(out, small_data, 100_000, 100_000, "--save-minutes", "100")  # no save but Ctrl-C's
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # preexec_fn: a test run started in the background (nohup, &) ignores SIGINT, and so would
    # the child; the default disposition lets Python install its Ctrl-C handler there.
    proc = subprocess.Popen([sys.executable, "-m", "symdiff.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.time()
        while time.time() - t0 < 300 and proc.poll() is None:  # until the first logged training row
            if (out / "log.jsonl").exists() and any("loss" in r for r in read_log(out)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "interrupted at step" in stdout and "Traceback" not in stderr, stdout + stderr
    step = read_state(out)["step"]
    assert step >= 50  # at least the logged row's steps
    assert f"stopped at step {step} " in stdout
    assert (out / "last" / "model.safetensors").is_file()
    assert cli_main(train_args(out, small_data, step + 2, 1000)) == 0
    assert read_state(out)["step"] == step + 2
