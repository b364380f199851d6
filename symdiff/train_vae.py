"""`symdiff train vae`: MusicVAE's recipe on the corpus' 2-bar chunks, resumable, DDP-ready.

Recipe (magenta `music_vae/configs.py`, `base_model.py`): beta = (1 - rate^step) * max_beta,
free bits, scheduled sampling with an inverse-sigmoid teacher-forcing probability
k / (k + exp(step / k)), lr decayed by `decay_rate` per step to a floor, global-norm clip,
random transposition in -5..+5 semitones done on the fly (kept in range).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .atomic import recover_dir, replace_dir
from .dataset import DEFAULT_PATH, Lines, transpose_chunks
from .errors import SymdiffError
from .precision import resolve_precision
from .training import (
    JsonLog, load_training_state, rank_batches, save_training_state, setup_runtime, shutdown, train_loop, unwrap,
    wrap_ddp,
)
from .vae import MusicVAE, VAEConfig, kl_divergence
from .vae import evaluate as evaluate_vae


def teacher_forcing_prob(step: int, rate: float) -> float:
    if rate <= 0:
        return 1.0
    return rate / (rate + math.exp(min(step / rate, 700.0)))


def beta_at(step: int, cfg: VAEConfig) -> float:
    return (1.0 - cfg.beta_rate**step) * cfg.max_beta


def lr_at(step: int, cfg: VAEConfig) -> float:
    return (cfg.learning_rate - cfg.min_learning_rate) * cfg.decay_rate**step + cfg.min_learning_rate


def vae_loss(logits, targets, mu, sigma, beta: float, cfg: VAEConfig) -> tuple[torch.Tensor, dict]:
    """mean(reconstruction NLL summed over steps) + beta * mean(max(KL - free_bits*ln2, 0))."""
    r_loss = F.cross_entropy(logits.float().transpose(1, 2), targets.long(), reduction="none").sum(-1)
    kl = kl_divergence(mu.float(), sigma.float())
    kl_cost = torch.clamp(kl - cfg.free_bits * math.log(2.0), min=0.0)
    loss = r_loss.mean() + beta * kl_cost.mean()
    return loss, {"r_loss": r_loss.mean().item(), "kl": kl.mean().item()}


def train_vae(
    cfg: VAEConfig,
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
    held = lines.select("valid").vae_chunks()
    per_rank = cfg.batch_size // rt.world
    if per_rank < 1 or len(train) // rt.world < per_rank:
        raise SymdiffError(f"{len(train)} training chunks give no batch of {cfg.batch_size}"
                         + (f" over {rt.world} ranks" if rt.world > 1 else "")
                         + "; use a smaller batch_size or more data")
    rng_eval = np.random.default_rng(1234)
    held = torch.from_numpy(held[rng_eval.permutation(len(held))[:eval_chunks]])

    model = MusicVAE(cfg).to(rt.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    state = {"step": 0, "epoch": 0, "best_accuracy": 0.0, "seconds": 0.0}
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
        state["step"] = int(shipped.config.extra.get("train_step", 0))
        state["seconds"] = float(shipped.config.extra.get("train_seconds", 0.0))
    ddp = wrap_ddp(model, rt)
    log = JsonLog(out / "log.jsonl", rt.main)
    if rt.main:
        cfg.save(out / "config.json") if out.exists() else (out.mkdir(parents=True), cfg.save(out / "config.json"))
        log.write(event="start", step=state["step"], train_chunks=len(train), held_chunks=len(held), world=rt.world,
                  precision=precision)

    def provenance(step: int) -> dict:
        return {"train_step": step, "train_seconds": round(state["seconds"], 1), "precision": precision}

    def checkpoint() -> None:
        if rt.main:
            replace_dir(last, lambda d: (unwrap(ddp).save_pretrained(d, extra=provenance(state["step"])),
                                         save_training_state(d, opt, state)))

    rng = np.random.default_rng(seed * 7919 + rt.rank + state["step"])
    gen = torch.Generator(device=rt.device).manual_seed(seed + rt.rank + state["step"])

    def train_step(idx: torch.Tensor, step: int) -> dict:
        x = torch.from_numpy(transpose_chunks(train[idx.numpy()], rng)).to(rt.device)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        beta, tf_prob = beta_at(step, cfg), teacher_forcing_prob(step, cfg.sampling_rate)
        model.train()
        with rt.autocast(bf16):
            logits, mu, sigma = ddp(x, teacher_prob=tf_prob, generator=gen)
        loss, parts = vae_loss(logits, x, mu, sigma, beta, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
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
            replace_dir(out / "best", lambda d: unwrap(ddp).save_pretrained(d, extra=provenance(step)))

    train_loop(state, rt, lambda epoch: rank_batches(len(train), per_rank, rt, seed, epoch), train_step, evaluate,
               checkpoint, log, max_steps, minutes, eval_every, save_minutes, desc=f"train vae ({precision})",
               postfix=("loss", "kl", "teacher_prob"))
    shutdown(rt)
    return state
