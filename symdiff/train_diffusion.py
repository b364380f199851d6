"""`symdiff train diffusion`: the paper's TransformerDDPM on MusicVAE latents, resumable, DDP-ready.

Data: the latent dataset of `symdiff.latents` (built once per VAE, corpus and settings, then
read from its cache): windows of up to 32 chunks at a stride of one chunk, in model space
([-1, 1] by the training set's scaler; silent chunks as the silence latent, or windows with
silence dropped as the paper does with `silence="drop"`). A batch pads its windows to the
longest and passes the key padding mask to the model and the loss; `bucket=True` groups
windows of similar length (within pools of 32 batches) to spend less on padding.

Objective (paper sec. 3, the official `diffusion_loss`): continuous noise level
sqrt(alpha_bar), alpha_bar ~ U(alpha_bar_{t-1}, alpha_bar_t), t ~ U{1..N};
loss = mean over real positions of (eps - eps_theta(x_t, sqrt(alpha_bar)))^2.
Adam, lr = learning_rate * lr_decay^(step // lr_decay_every), global-norm clip, no EMA unless
asked for, bf16 autocast with fp32 weights.

Checkpoints (`OUT/last` every `save_minutes` and at the end, `OUT/best` at the lowest held-out
loss on the valid split): `TransformerDDPM.save_pretrained` with the `LatentScaler`, and
config.extra naming the VAE (path + sha256 of its weights), the corpus, the latent cache and the
silence rule, so `latents.LatentCodec.from_pretrained(OUT/best)` rebuilds tokens <-> model space.
With EMA, `last/` holds the raw weights (EMA in extra.safetensors, for resuming) and `best/` the
EMA weights. Under `torchrun`, rank 0 builds the latent cache while the others wait for it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .dataset import DEFAULT_PATH
from .diffusion import DiffusionConfig, TransformerDDPM, load_extra_tensors
from .latents import (
    SILENCE_VALUE, LatentSettings, ensure_latents, gather_windows, wait_for_latents,
)
from .schedulers import NoiseSchedule, diffusion_loss
from .training import (
    JsonLog, Runtime, load_training_state, rank_batches, save_training_state, setup_runtime, shutdown, time_is_up, unwrap, wrap_ddp,
)


class TrainDiffusionError(ValueError):
    """A run that cannot start as asked (e.g. resuming with another VAE)."""


def lr_at(step: int, cfg: DiffusionConfig) -> float:
    return cfg.learning_rate * cfg.lr_decay ** (step // cfg.lr_decay_every)


def epoch_batches(lengths: np.ndarray, batch_size: int, rt: Runtime, seed: int, epoch: int,
                  bucket: bool = False, pool: int = 32):
    """This rank's batches (window indices) of one epoch, from `rank_batches`; with `bucket`,
    each pool of batches is re-cut by window length and the batches reshuffled."""
    batches = [b.numpy() for b in rank_batches(len(lengths), batch_size, rt, seed, epoch)]
    if not bucket:
        yield from batches
        return
    out = []
    for i in range(0, len(batches), pool):
        idx = np.concatenate(batches[i : i + pool])
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        out += [idx[j : j + batch_size] for j in range(0, len(idx), batch_size)]
    for k in np.random.default_rng([seed, epoch, rt.rank]).permutation(len(out)):
        yield out[k]


@torch.no_grad()
def held_out_loss(model: TransformerDDPM, x: np.ndarray, windows: np.ndarray, schedule: NoiseSchedule,
                  rt: Runtime, bf16: bool, batch_size: int = 256, seed: int = 1234) -> float:
    """The training loss on fixed windows with fixed noise (a CPU generator: the same numbers on
    any device), averaged over all real positions."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    order = np.argsort(windows[:, 1], kind="stable")  # similar lengths together: little padding
    total = count = 0.0
    for i in range(0, len(order), batch_size):
        x0, mask = gather_windows(x, windows[order[i : i + batch_size]])
        noise = schedule.training_noise(x0, gen)
        mask = mask.to(rt.device)
        with rt.autocast(bf16):
            pred = model(noise.x_t.to(rt.device), noise.noise_level.to(rt.device), mask)
        n = float(mask.sum()) * x0.shape[-1]
        total += diffusion_loss(pred, noise.eps.to(rt.device), mask).item() * n
        count += n
    model.train()
    return total / max(count, 1.0)


def train_diffusion(
    cfg: DiffusionConfig,
    vae: Path,
    out: Path,
    data: Path = DEFAULT_PATH,
    cache_dir: Path | None = None,
    latent_settings: LatentSettings | None = None,
    max_steps: int | None = None,
    minutes: float | None = None,
    eval_every: int = 1000,
    save_minutes: float = 5.0,
    eval_windows: int = 2048,
    bf16: bool = True,
    seed: int = 0,
    ema: float = 0.0,
    silence: str = "token",
    bucket: bool = False,
    log_every: int = 50,
    encode_batch: int = 512,
) -> dict:
    if silence not in ("token", "drop"):
        raise TrainDiffusionError(f"silence must be 'token' (a silence latent) or 'drop' (the paper's rule), not {silence!r}")
    rt = setup_runtime()
    torch.manual_seed(seed)
    out, vae, data = Path(out), Path(vae), Path(data)
    cache_dir = Path(cache_dir) if cache_dir is not None else data.parent / "cache" / "latents"
    settings = latent_settings or LatentSettings()
    max_steps = cfg.max_steps if max_steps is None else max_steps

    # --- data: latents cached per (VAE, corpus, settings); rank 0 builds, the others wait ---
    if rt.main:
        ds = ensure_latents(vae, data, cache_dir, settings, encode_batch, rt.device)
    else:
        ds = wait_for_latents(vae, data, cache_dir, settings)
    x_all = ds.model_space()
    drop = silence == "drop"
    train_w = ds.windows("train", cfg.seq_len, drop_silent=drop)
    held_w = ds.windows("valid", cfg.seq_len, drop_silent=drop)
    held_w = held_w[np.sort(np.random.default_rng(1234).permutation(len(held_w))[:eval_windows])]
    if len(train_w) < cfg.batch_size:
        raise TrainDiffusionError(f"{len(train_w)} training windows: fewer than one batch of {cfg.batch_size}")
    scaler = ds.scaler()
    vae_sha = ds.key["vae_sha256"]

    cfg = dataclasses.replace(cfg, data_dim=ds.dim, extra=dict(cfg.extra))
    cfg.extra.update(
        vae={"path": str(vae.resolve()), "sha256": vae_sha, "z_size": ds.z_size},
        data={"path": str(data.resolve()), "sha256": ds.key["data_sha256"]},
        latents={"path": str(ds.path.resolve()) if ds.path else None, "settings": ds.key},
        silence={"rule": silence, "value": SILENCE_VALUE, "threshold": ds.silence_threshold},
        ema=ema,
    )
    model = TransformerDDPM(cfg).to(rt.device)
    model.scaler = scaler
    schedule = cfg.schedule()
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0, cfg))
    ema_state = ({k: v.detach().clone().float() for k, v in model.state_dict().items()} if ema > 0 else None)
    state = {"step": 0, "epoch": 0, "best_loss": None, "seconds": 0.0}
    last = out / "last"
    if (last / "state.json").is_file():
        saved = DiffusionConfig.load(last / "config.json")
        if saved.extra.get("vae", {}).get("sha256") != vae_sha:
            raise TrainDiffusionError(f"{last} was trained on another VAE's latents; use a new --out")
        model.load_state_dict(TransformerDDPM.from_pretrained(last).state_dict())
        state = load_training_state(last, opt)
        if ema_state is not None:
            saved_ema = {k[4:]: v for k, v in load_extra_tensors(last).items() if k.startswith("ema.")}
            ema_state = {k: saved_ema.get(k, v).to(rt.device).float() for k, v in ema_state.items()}
    ddp = wrap_ddp(model, rt)
    log = JsonLog(out / "log.jsonl", rt.main)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        log.write(event="start", step=state["step"], train_windows=len(train_w), held_windows=len(held_w),
                  data_dim=ds.dim, parameters=model.num_parameters(), world=rt.world, silence=silence,
                  latents=str(ds.path))

    def ema_model() -> TransformerDDPM:
        if ema_state is None:
            return model
        m = TransformerDDPM(cfg).to(rt.device)
        m.load_state_dict(ema_state)
        return m

    def checkpoint() -> None:
        if rt.main:
            cfg.extra.update(train_step=state["step"], train_seconds=round(state["seconds"], 1))
            extra = {f"ema.{k}": v for k, v in ema_state.items()} if ema_state is not None else None
            unwrap(ddp).save_pretrained(last, scaler=scaler, extra_tensors=extra)
            save_training_state(last, opt, state)

    def evaluate(step: int) -> None:
        if not rt.main or not len(held_w):
            return
        loss = held_out_loss(ema_model(), x_all, held_w, schedule, rt, bf16)
        log.write(step=step, event="eval", valid_loss=loss, seconds=round(state["seconds"], 1))
        tqdm.write(f"step {step}: held-out loss {loss:.5f}")
        if state["best_loss"] is None or loss < state["best_loss"]:
            state["best_loss"] = loss
            state["best"] = {"step": step, "valid_loss": loss}
            cfg.extra.update(train_step=step, train_seconds=round(state["seconds"], 1), valid_loss=loss)
            ema_model().save_pretrained(out / "best", scaler=scaler)

    lengths = train_w[:, 1]
    gen = torch.Generator(device=rt.device).manual_seed(seed + rt.rank + state["step"])
    t_start, t_saved = time.time(), time.time()
    seconds_before = state["seconds"]
    bar = tqdm(total=max_steps, initial=state["step"], desc="train diffusion", disable=not rt.main, unit="step")
    stop = state["step"] >= max_steps
    evaluated = None
    model.train()
    while not stop:
        for idx in epoch_batches(lengths, cfg.batch_size // rt.world, rt, seed, state["epoch"], bucket):
            step = state["step"]
            x0, mask = gather_windows(x_all, train_w[idx])
            x0, mask = x0.to(rt.device), mask.to(rt.device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            noise = schedule.training_noise(x0, gen)
            with rt.autocast(bf16):
                pred = ddp(noise.x_t, noise.noise_level, mask)
            loss = diffusion_loss(pred, noise.eps, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema_state is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema_state[k].mul_(ema).add_(v.float(), alpha=1.0 - ema)
            state["step"] = step = step + 1
            state["seconds"] = seconds_before + time.time() - t_start
            bar.update(1)
            if step % log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_at(step, cfg):.2e}")
                log.write(step=step, loss=loss.item(), lr=lr_at(step, cfg), grad_norm=grad_norm.item(),
                          length=float(mask.sum(1).float().mean()), seconds=round(state["seconds"], 1))
            out_of_time = time_is_up(t_start, minutes, rt)
            stop = step >= max_steps or out_of_time
            if step % eval_every == 0 or (stop and evaluated != step):
                evaluate(step)
                evaluated = step
            if time.time() - t_saved > save_minutes * 60 or stop:
                checkpoint()
                t_saved = time.time()
            if stop:
                break
        else:
            state["epoch"] += 1
    bar.close()
    shutdown(rt)
    return state
