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

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .baselines import MDN_CONFIGS, MDNConfig, TransformerMDN, mdn_loss
from .dataset import DEFAULT_PATH
from .latents import LatentSettings, gather_windows
from .train_diffusion import (
    LatentWindows, TrainLatentsError, epoch_batches, load_latent_windows, lr_at, resumable,
)
from .training import (
    JsonLog, Runtime, load_training_state, save_training_state, setup_runtime, shutdown, train_loop, unwrap, wrap_ddp,
)

TrainMDNError = TrainLatentsError


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


# --- command line: `symdiff train mdn` ----------------------------------------------------------

def add_cli(train_subparsers, default_vae: Path, default_data: Path = DEFAULT_PATH) -> argparse.ArgumentParser:
    """Register `symdiff train mdn` on the `train` sub-parsers (arguments as `train diffusion`)."""
    s = train_subparsers.add_parser("mdn", help="train the TransformerMDN baseline on the VAE's latents (resumes from OUT/last)")
    s.add_argument("--config", default="cpu", help="paper (38M parameters at d = 42) or cpu (2.2M at d = 256)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    s.add_argument("--vae", type=Path, default=default_vae, help="the MusicVAE checkpoint whose latents to model")
    s.add_argument("--out", type=Path, default=Path("runs/mdn-cpu"))
    s.add_argument("--data", type=Path, default=default_data)
    s.add_argument("--latents", type=Path, help="latent cache folder (default: DATA's folder/cache/latents)")
    s.add_argument("--transpositions", type=int, default=4, help="versions of each training line (1 = untransposed only)")
    s.add_argument("--silence", choices=("token", "drop"), default="token",
                   help="silent chunks as a silence latent (default) or drop windows holding one (the paper)")
    s.add_argument("--max-steps", type=int, help="default: the config's max_steps")
    s.add_argument("--minutes", type=float, help="stop (and save) after this much wall time")
    s.add_argument("--eval-every", type=int, default=1000)
    s.add_argument("--eval-windows", type=int, default=2048, help="valid windows in the held-out NLL")
    s.add_argument("--save-minutes", type=float, default=5.0)
    s.add_argument("--log-every", type=int, default=50)
    s.add_argument("--bucket", action="store_true", help="batch windows of similar length (less padding)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-bf16", action="store_true", help="train in fp32 (bf16 autocast is the default)")
    s.set_defaults(func=cmd_train_mdn)
    return s


def cmd_train_mdn(args: argparse.Namespace) -> None:
    import os

    from .cli import UsageError, parse_overrides

    if args.config not in MDN_CONFIGS:
        raise UsageError(f"unknown config {args.config!r}; choose from {', '.join(MDN_CONFIGS)}")
    cfg = parse_overrides(args.set, MDN_CONFIGS[args.config])
    settings = LatentSettings(transpositions=args.transpositions)  # latents' own seed: --seed does not re-encode
    try:
        state = train_mdn(
            cfg, args.vae, args.out, args.data, args.latents, settings, args.max_steps, args.minutes,
            args.eval_every, args.save_minutes, args.eval_windows, bf16=not args.no_bf16, seed=args.seed,
            silence=args.silence, bucket=args.bucket, log_every=args.log_every,
        )
    except TrainMDNError as e:
        raise UsageError(str(e)) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 evaluates and reports
        return
    best = state["best_loss"]
    print(f"stopped at step {state['step']} after {state['seconds'] / 60:.1f} min; best held-out NLL "
          f"{'-' if best is None else f'{best:.3f}'}; checkpoints in {args.out}")
