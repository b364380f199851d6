"""`symdiff train mdn`: the TransformerMDN baseline on MusicVAE latents, resumable, DDP-ready.

The same data as `symdiff train diffusion` (the cached latent dataset of `symdiff.latents`,
windows of up to 32 chunks at a stride of one, model space, silent chunks as the silence
latent or windows with silence dropped) and the same loop (`training.train_loop`): padded
batches with a key padding mask, bf16 autocast with fp32 weights, `OUT/last` every
`save_minutes` and at the end, `OUT/best` at the lowest held-out NLL on a fixed sample of
valid windows, a JSON-lines log, `--minutes`.

Objective (official `train_mdn.py`): negative log-likelihood of each latent under the mixture
predicted from the latents before it, averaged over real positions (nats per latent, summed
over the d dims). Adam, lr = 3e-4 * 0.98^(step // 4000), global-norm clip 1.0, batch 128,
250k steps in the paper config.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .baselines import MDNConfig, TransformerMDN, mdn_loss
from .dataset import DEFAULT_PATH
from .latents import LatentSettings, gather_windows
from .train_diffusion import (
    LatentWindows, epoch_batches, load_latent_windows, lr_at, resumable,
)
from .training import (
    JsonLog, Runtime, load_training_state, save_training_state, setup_runtime, shutdown, train_loop, unwrap, wrap_ddp,
)



@torch.no_grad()
def held_out_nll(model: TransformerMDN, windows: LatentWindows, rt: Runtime, bf16: bool, batch_size: int = 256) -> float:
    """Mean NLL per latent over every real position of the held-out windows."""
    model.eval()
    total = count = 0.0
    for x0, mask in windows.held_out_batches(batch_size):
        x0, mask = x0.to(rt.device), mask.to(rt.device)
        with rt.autocast(bf16):
            mix = model(x0)
        n = float(mask.sum())
        total += mdn_loss(mix, x0, mask).item() * n
        count += n
    model.train()
    return total / max(count, 1.0)


def train_mdn(
    cfg: MDNConfig,
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
    silence: str = "token",
    bucket: bool = False,
    log_every: int = 50,
    encode_batch: int = 512,
) -> dict:
    rt = setup_runtime()
    torch.manual_seed(seed)
    out, vae, data = Path(out), Path(vae), Path(data)
    max_steps = cfg.max_steps if max_steps is None else max_steps
    lw = load_latent_windows(vae, data, cache_dir, latent_settings, cfg.seq_len, cfg.batch_size, rt, silence,
                             eval_windows, encode_batch)
    ds, scaler = lw.ds, lw.ds.scaler()

    cfg = dataclasses.replace(cfg, data_dim=ds.dim, extra=dict(cfg.extra))
    cfg.extra.update(lw.provenance(vae, data))
    model = TransformerMDN(cfg).to(rt.device)
    model.scaler = scaler
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0, cfg))
    state = {"step": 0, "epoch": 0, "best_loss": None, "seconds": 0.0}
    last = out / "last"
    if resumable(last, ds.key["vae_sha256"]):
        model.load_state_dict(TransformerMDN.from_pretrained(last).state_dict())
        state = load_training_state(last, opt)
    ddp = wrap_ddp(model, rt)
    log = JsonLog(out / "log.jsonl", rt.main)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        log.write(event="start", step=state["step"], train_windows=len(lw.train), held_windows=len(lw.held),
                  data_dim=ds.dim, parameters=model.num_parameters(), world=rt.world, silence=silence,
                  latents=str(ds.path))

    def checkpoint() -> None:
        if rt.main:
            cfg.extra.update(train_step=state["step"], train_seconds=round(state["seconds"], 1))
            unwrap(ddp).save_pretrained(last, scaler=scaler)
            save_training_state(last, opt, state)

    def evaluate(step: int) -> None:
        if not rt.main or not len(lw.held):
            return
        nll = held_out_nll(model, lw, rt, bf16)
        log.write(step=step, event="eval", valid_nll=nll, seconds=round(state["seconds"], 1))
        tqdm.write(f"step {step}: held-out NLL {nll:.3f} nats per latent")
        if state["best_loss"] is None or nll < state["best_loss"]:
            state["best_loss"] = nll
            state["best"] = {"step": step, "valid_nll": nll}
            cfg.extra.update(train_step=step, train_seconds=round(state["seconds"], 1), valid_nll=nll)
            model.save_pretrained(out / "best", scaler=scaler)

    def train_step(idx: np.ndarray, step: int) -> dict:
        x0, mask = gather_windows(lw.x, lw.train[idx])
        x0, mask = x0.to(rt.device), mask.to(rt.device)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        with rt.autocast(bf16):
            mix = ddp(x0)
        loss = mdn_loss(mix, x0, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return {"loss": loss.detach(), "lr": lr, "grad_norm": grad_norm, "length": mask.sum(1).float().mean()}

    lengths = lw.train[:, 1]
    model.train()
    train_loop(state, rt, lambda epoch: epoch_batches(lengths, cfg.batch_size // rt.world, rt, seed, epoch, bucket),
               train_step, evaluate, checkpoint, log, max_steps, minutes, eval_every, save_minutes, log_every,
               desc="train mdn")
    shutdown(rt)
    return state
