"""`symdiff train vae`: MusicVAE's recipe on the corpus' 2-bar chunks, resumable, DDP-ready.

Recipe (magenta `music_vae/configs.py`, `base_model.py`): beta = (1 - rate^step) * max_beta,
free bits, scheduled sampling with an inverse-sigmoid teacher-forcing probability
k / (k + exp(step / k)), lr decayed by `decay_rate` per step to a floor, global-norm clip,
random transposition in -5..+5 semitones done on the fly (kept in range).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import recover_dir, replace_dir
from ..checkpoint import ConfigIO
from ..dataset import DEFAULT_PATH, Lines, transpose_chunks
from ..errors import SymdiffError
from ..precision import resolve_precision
from ..vae import CONFIGS, MusicVAE, VAEConfig, kl_divergence
from ..vae import evaluate as evaluate_vae
from .loop import (
    JsonLog,
    load_training_state,
    rank_batches,
    save_training_state,
    setup_runtime,
    shutdown,
    train_loop,
    wrap_ddp,
)


@dataclass(frozen=True)
class VAERecipe(ConfigIO):
    """MusicVAE's training hyper-parameters (magenta `configs.py`)."""

    max_beta: float = 0.2
    beta_rate: float = 0.99999
    free_bits: float = 0.0
    learning_rate: float = 1e-3
    decay_rate: float = 0.9999
    min_learning_rate: float = 1e-5
    grad_clip: float = 1.0
    batch_size: int = 512
    sampling_rate: float = 1000.0  # inverse-sigmoid scheduled sampling; 0 = always teacher forcing


PRESETS = {"cat-mel_2bar_small": (CONFIGS["cat-mel_2bar_small"], VAERecipe()),
           "cat-mel_2bar_big": (CONFIGS["cat-mel_2bar_big"], VAERecipe(max_beta=0.5))}


def teacher_forcing_prob(step: int, rate: float) -> float:
    if rate <= 0:
        return 1.0
    return rate / (rate + math.exp(min(step / rate, 700.0)))


def beta_at(step: int, cfg: VAERecipe) -> float:
    return (1.0 - cfg.beta_rate**step) * cfg.max_beta


def lr_at(step: int, cfg: VAERecipe) -> float:
    return (cfg.learning_rate - cfg.min_learning_rate) * cfg.decay_rate**step + cfg.min_learning_rate


def vae_loss(logits, targets, mu, sigma, beta: float, cfg: VAERecipe) -> tuple[torch.Tensor, dict]:
    """mean(reconstruction NLL summed over steps) + beta * mean(max(KL - free_bits*ln2, 0))."""
    r_loss = F.cross_entropy(logits.float().transpose(1, 2), targets.long(), reduction="none").sum(-1)
    kl = kl_divergence(mu.float(), sigma.float())
    kl_cost = torch.clamp(kl - cfg.free_bits * math.log(2.0), min=0.0)
    loss = r_loss.mean() + beta * kl_cost.mean()
    return loss, {"r_loss": r_loss.mean().item(), "kl": kl.mean().item()}


def train_vae(
    cfg: VAEConfig,
    recipe: VAERecipe,
    out: Path,
    data: Path = DEFAULT_PATH,
    max_steps: int = 100_000,
    minutes: float | None = None,
    eval_every: int = 500,
    save_minutes: float = 5.0,
    eval_chunks: int = 4096,
    precision: str = "auto",
    seed: int = 0,
    init_from: Path | None = None,
) -> dict:
    """Train (or resume from OUT/last) a MusicVAE; `precision` 'auto' | 'bf16' | 'fp32' (see
    `symdiff.precision`; the one used is logged and recorded in the checkpoints' config)."""
    rt = setup_runtime()
    precision = resolve_precision(precision, rt.device)
    bf16 = precision == "bf16"
    torch.manual_seed(seed)
    lines = Lines.load(data)
    train = lines.select("train").vae_chunks()
    valid = lines.select("valid").vae_chunks()
    per_rank = recipe.batch_size // rt.world
    if per_rank < 1 or len(train) // rt.world < per_rank:
        raise SymdiffError(f"{len(train)} training chunks give no batch of {recipe.batch_size}"
                         + (f" over {rt.world} ranks" if rt.world > 1 else "")
                         + "; use a smaller batch_size or more data")
    rng_eval = np.random.default_rng(1234)
    held = torch.from_numpy(valid[rng_eval.permutation(len(valid))[:eval_chunks]])

    model = MusicVAE(cfg).to(rt.device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "best_accuracy": 0.0, "seconds": 0.0}
    last = out / "last"
    for folder in (last, out / "best"):  # what a kill inside a checkpoint swap left, made whole
        recover_dir(folder)
    if (last / "state.json").is_file():
        model.load_state_dict(MusicVAE.from_pretrained(last).state_dict())
        state = load_training_state(last, opt)
    elif init_from is not None:
        # Continue a shipped checkpoint (weights and step count are committed; Adam's moments
        # are not, they re-warm within a few hundred steps).
        shipped = MusicVAE.from_pretrained(init_from)
        model.load_state_dict(shipped.state_dict())
        state["step"] = int(shipped.sections.get("training", {}).get("train_step", 0))
        state["seconds"] = float(shipped.sections.get("training", {}).get("train_seconds", 0.0))
    ddp = wrap_ddp(model, rt)
    log = JsonLog(out / "log.jsonl", rt.main)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        log.write(event="start", step=state["step"], train_chunks=len(train), held_chunks=len(held), world=rt.world,
                  precision=precision, recipe=recipe.to_dict())

    def sections(step: int) -> dict:
        return {"recipe": recipe,
                "training": {"train_step": step, "train_seconds": round(state["seconds"], 1), "precision": precision}}

    def write_last(d: Path) -> None:
        model.save_pretrained(d, sections(state["step"]))  # `model` is what `ddp` wraps
        save_training_state(d, opt, state)

    def checkpoint() -> None:
        if rt.main:
            replace_dir(last, write_last)

    rng = np.random.default_rng(seed * 7919 + rt.rank + state["step"])
    gen = torch.Generator(device=rt.device).manual_seed(seed + rt.rank + state["step"])

    def train_step(idx: torch.Tensor, step: int) -> dict:
        x = torch.from_numpy(transpose_chunks(train[idx.numpy()], rng)).to(rt.device)
        lr = lr_at(step, recipe)
        for g in opt.param_groups:
            g["lr"] = lr
        beta, tf_prob = beta_at(step, recipe), teacher_forcing_prob(step, recipe.sampling_rate)
        model.train()
        with rt.autocast(bf16):
            logits, mu, sigma = ddp(x, teacher_prob=tf_prob, generator=gen)
        loss, parts = vae_loss(logits, x, mu, sigma, beta, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        return {"loss": loss.detach(), "beta": beta, "lr": lr, "teacher_prob": tf_prob, "grad_norm": grad_norm, **parts}

    def evaluate(step: int) -> None:
        if not rt.main:
            return
        with rt.autocast(bf16):
            metrics = evaluate_vae(model, held.to(rt.device))
        log.write(step=step, event="eval", seconds=round(state["seconds"], 1), **metrics)
        tqdm.write(f"step {step}: held-out accuracy {metrics['accuracy']:.4f} "
                   f"(teacher-forced {metrics['accuracy_teacher_forced']:.4f}), kl {metrics['kl']:.1f}, "
                   f"active dims {metrics['active_dims']}")
        if metrics["accuracy"] > state["best_accuracy"]:
            state["best_accuracy"] = metrics["accuracy"]
            state["best"] = {"step": step, **metrics}
            replace_dir(out / "best", lambda d: model.save_pretrained(d, sections(step)))

    train_loop(state, rt, lambda epoch: rank_batches(len(train), per_rank, rt, seed, epoch), train_step, evaluate,
               checkpoint, log, max_steps, minutes, eval_every, save_minutes, desc=f"train vae ({precision})",
               postfix=("loss", "kl", "teacher_prob"))
    shutdown(rt)
    return state
