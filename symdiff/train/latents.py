"""What every model trained on latent windows shares (TransformerDDPM, TransformerMDN): data,
batches, checkpoints, held-out figure and the step loop.

Data: the latent dataset of `symdiff.data.latents` (built once per VAE, corpus and settings, then
read from its cache): windows of up to 32 chunks at a stride of one chunk, in model space
(the paper's [-1, 1] by the training set's scaler, or standardized; silent chunks as the silence
latent, or windows with silence dropped as the paper does with `silence="drop"`). A batch pads its
windows to the longest and passes the key padding mask to the model and the loss; `bucket=True`
groups windows of similar length (within pools of 32 batches) to spend less on padding.

Checkpoints (`OUT/last` every `save_minutes` and at the end, `OUT/best` at the best held-out
figure on the valid split) in the one format of `symdiff.checkpoint`: the weights, the
architecture, the codec (`codec.CodecConfig`: VAE by path and sha256, silence rule, clip), the
recipe, the objective's own sections (a diffusion model's schedule) and the training provenance
(corpus, latent cache, steps, time, precision, EMA). With EMA, `last/` holds the raw weights (EMA
in extra.safetensors, for resuming) and `best/` the EMA weights. Under `torchrun`, rank 0 builds
the latent cache while the others wait for it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import recover_dir, replace_dir
from ..checkpoint import load_tensors, read_checkpoint_config
from ..codec import FLAG_SILENT, SILENCE_VALUE, STANDARD_SILENCE_VALUE, CodecConfig, LatentScaler
from ..data.corpus import style_of
from ..data.latents import LatentDataset, LatentSettings, ensure_latents, gather_windows, wait_for_latents
from ..dataset import DEFAULT_PATH
from ..errors import SymdiffError
from ..precision import resolve_precision
from ..transformer import LatentTransformer
from .loop import (
    JsonLog,
    Recipe,
    Runtime,
    load_training_state,
    rank_batches,
    save_training_state,
    setup_runtime,
    shutdown,
    train_loop,
    wrap_ddp,
)


class TrainLatentsError(SymdiffError):
    """A run on latent windows that cannot start as asked (e.g. resuming with another VAE)."""


def epoch_batches(lengths: np.ndarray, batch_size: int, rt: Runtime, seed: int, epoch: int,
                  bucket: bool = False, pool: int = 32, weights: torch.Tensor | None = None):
    """This rank's batches (window indices) of one epoch, from `rank_batches` (`weights`: drawn in
    proportion to them); with `bucket`, each pool of batches is re-cut by window length and the
    batches reshuffled."""
    batches = [b.numpy() for b in rank_batches(len(lengths), batch_size, rt, seed, epoch, weights)]
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


# --- what every model trained on latent windows shares -----------------------------------------

@dataclass
class LatentWindows:
    """The latent dataset in model space and its training and held-out windows."""

    ds: LatentDataset
    x: np.ndarray  # (N, dim) model space
    train: np.ndarray  # (W, 2) rows of (first chunk, length)
    held: np.ndarray
    scaler: LatentScaler
    codec: CodecConfig  # what the model's numbers mean (`codec.LatentCodec.from_pretrained`)
    labels: np.ndarray | None = None  # (N,) int64 style label per chunk (`DiffusionConfig.style_index`)

    def batch(self, windows: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Windows (rows of start, length) -> x0, mask and the model's extra inputs (style labels)."""
        x0, mask = gather_windows(self.x, windows)
        extra = {} if self.labels is None else {"style": torch.from_numpy(self.labels[windows[:, 0]]).to(device)}
        return x0.to(device), mask.to(device), extra

    def train_batch(self, idx: np.ndarray, device: torch.device | str,
                    corpus_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Training windows `idx` as `batch` does, with their `corpus_weights` when given."""
        x0, mask, extra = self.batch(self.train[idx], device)
        if corpus_weight is not None:
            extra["corpus_weight"] = corpus_weight[idx].float().to(device)
        return x0, mask, extra

    def draw_weights(self, style_balance: float) -> torch.Tensor | None:
        """The training windows' sampling weights (`style_balanced_weights`), None to draw each once an epoch."""
        if not style_balance:
            return None
        if self.labels is None:
            raise TrainLatentsError("--style-balance needs a config with style labels (e.g. cpu-style)")
        return style_balanced_weights(self.labels[self.train[:, 0]], style_balance)

    def provenance(self, data: Path) -> dict[str, Any]:
        """The corpus and the latent cache the model was trained on (the card's data)."""
        ds = self.ds
        return {"data": {"path": str(Path(data).resolve()), "sha256": ds.key["data_sha256"]},
                "latents": {"path": str(ds.path.resolve()) if ds.path else None, "settings": ds.key}}

    def held_out_batches(self, device: torch.device | str, batch_size: int = 256):
        """The held-out windows as padded batches (`batch`), similar lengths together."""
        order = np.argsort(self.held[:, 1], kind="stable")
        for i in range(0, len(order), batch_size):
            yield self.batch(self.held[order[i : i + batch_size]], device)


def style_labels(ds: LatentDataset, data: Path, styles: tuple[str, ...]) -> np.ndarray:
    """(N,) int64: each chunk's style label, 1 + its index in `styles` by its line's subcorpus
    (`corpus.style_of`), 0 ("any style") for a line of no listed style."""
    with np.load(data, allow_pickle=False) as z:
        sources = z["source"]
    index = {style: 1 + i for i, style in enumerate(styles)}
    per_seq = np.array([index.get(style_of(str(sources[line])), 0) for line in ds.line], dtype=np.int64)
    return np.repeat(per_seq, ds.lengths())


# Which windows --style-balance applies to: all of them, or only those a conditional model sees
# with known music (infilling); the ones with nothing known (new melodies) then keep the corpus'
# mix, so new melodies without a style still sound like the corpus.
BALANCE_SCOPES = ("all", "known")


def style_balanced_weights(labels: np.ndarray, balance: float) -> torch.Tensor:
    """Sampling weights of windows with these style labels: `balance` 0 draws them as the corpus
    has them, 1 gives every labelled style an equal share (the corpus is 70% Renaissance vocal
    windows, 3.5% chorale ones), values between mix the two."""
    if not 0.0 <= balance <= 1.0:
        raise TrainLatentsError(f"style balance must be between 0 and 1, not {balance}")
    styles, counts = np.unique(labels[labels > 0], return_counts=True)
    even = np.zeros(len(labels))
    for style, count in zip(styles, counts, strict=True):
        even[labels == style] = 1.0 / (len(styles) * count)
    return torch.from_numpy((1.0 - balance) / len(labels) + balance * even)


def corpus_weights(weights: torch.Tensor | None, scope: str, conditional: bool) -> torch.Tensor | None:
    """Per window, its corpus share over its drawn share (1 on average over the draw): what a
    `scope` of "known" scales the loss of windows seen with nothing known by; None otherwise."""
    if scope not in BALANCE_SCOPES:
        raise TrainLatentsError(f"balance scope must be one of {', '.join(BALANCE_SCOPES)}, not {scope!r}")
    if scope == "known" and not conditional:
        raise TrainLatentsError("--balance-scope known needs a conditional config (e.g. cpu-copy)")
    return None if weights is None or scope == "all" else (1.0 / len(weights)) / weights


def load_latent_windows(vae: Path, data: Path, cache_dir: Path | None, settings: LatentSettings | None,
                        seq_len: int, batch_size: int, rt: Runtime, silence: str = "token",
                        eval_windows: int = 2048, encode_batch: int = 512, standardize: bool = False,
                        styles: tuple[str, ...] = ()) -> LatentWindows:
    """The latents cached per (VAE, corpus, settings), rank 0 building them while the other
    ranks wait; windows of up to `seq_len` chunks (`silence="drop"`: the paper's rule, windows
    with a silent chunk left out; "flag": a silence dim, `codec.FLAG_SILENT`); a fixed sample
    of `eval_windows` valid windows held out. `standardize`: model space per-dim centred with one
    global std (`LatentScaler`), the silence latent at `STANDARD_SILENCE_VALUE`; else the paper's
    [-1, 1]. `styles`: each window also gets its style label (`style_labels`)."""
    if silence not in ("token", "flag", "drop"):
        raise TrainLatentsError(f"silence must be 'token' (a silence latent), 'flag' (a silence dim) or 'drop' "
                                f"(the paper's rule), not {silence!r}")
    data = Path(data)
    cache_dir = Path(cache_dir) if cache_dir is not None else data.parent / "cache" / "latents"
    settings = settings or LatentSettings()
    if rt.main:
        ds = ensure_latents(vae, data, cache_dir, settings, encode_batch, rt.device)
    else:
        ds = wait_for_latents(vae, data, cache_dir, settings)
    drop = silence == "drop"
    train_w = ds.windows("train", seq_len, drop_silent=drop)
    held_w = ds.windows("valid", seq_len, drop_silent=drop)
    held_w = held_w[np.sort(np.random.default_rng(1234).permutation(len(held_w))[:eval_windows])]
    if len(train_w) < batch_size:
        raise TrainLatentsError(f"{len(train_w)} training windows: fewer than one batch of {batch_size}")
    scaler = ds.standard_scaler() if standardize else ds.scaler()
    if silence == "flag":
        value, threshold = FLAG_SILENT, 0.0
    elif standardize:
        value = STANDARD_SILENCE_VALUE
        threshold = 0.5 * value  # the real chunks' mean over dims averages 0 once centred
    else:
        value, threshold = SILENCE_VALUE, ds.silence_threshold
    codec = CodecConfig(vae_path=str(vae.resolve()), vae_sha256=ds.key["vae_sha256"], z_size=ds.z_size,
                        silence_rule=silence, silence_value=value, silence_threshold=threshold,
                        posterior=ds.key.get("posterior", "sample"))
    x = codec.join(torch.from_numpy(ds.model_space(scaler)), torch.from_numpy(ds.silent)).numpy()
    codec.clip = 1.0 if not standardize else float(np.ceil(np.abs(x).max() * 100) / 100)
    labels = style_labels(ds, data, styles) if styles else None
    return LatentWindows(ds, x, train_w, held_w, scaler, codec, labels)


def resumable(last: Path, vae_sha: str) -> bool:
    """Whether `last/` holds a run to resume (once what a kill left is tidied); a run on another
    VAE's latents is refused."""
    for folder in (last, last.with_name("best")):  # what a kill inside a checkpoint swap left, made whole
        recover_dir(folder)
    if not (last / "state.json").is_file():
        return False
    saved = read_checkpoint_config(last, "diffusion", "mdn").get("codec", {})
    if saved.get("vae_sha256") != vae_sha:
        raise TrainLatentsError(f"{last} was trained on another VAE's latents; use a new --out")
    return True


# --- the loop every model on latent windows shares ----------------------------------------------

@dataclass
class Objective:
    """What a model on latent windows is trained and judged by. `loss(net, x0, mask, gen, rt,
    bf16)` is the mean training loss per real position of a padded batch (the net called under
    `rt.autocast(bf16)`); on the held-out windows it picks `best/` (lower is better), logged as
    `metric` and printed as `report.format(value)`."""

    model_class: type[LatentTransformer]
    loss: Callable[..., torch.Tensor]
    metric: str
    report: str
    desc: str
    sections: dict[str, Any] = field(default_factory=dict)  # saved with every checkpoint (a schedule)


def resume(last: Path, model: LatentTransformer, opt: torch.optim.Optimizer,
           ema_state: dict[str, torch.Tensor] | None, device: torch.device) -> tuple[dict, dict | None]:
    """Load the run in `last/` into `model` and `opt` -> (loop state, EMA weights on `device`, or
    None without EMA; a weight the saved EMA lacks starts from `ema_state`'s)."""
    model.load_state_dict(type(model).from_pretrained(last).state_dict())
    state = load_training_state(last, opt)
    if ema_state is not None:
        saved_ema = {k[4:]: v for k, v in load_tensors(last, "extra").items() if k.startswith("ema.")}
        ema_state = {k: saved_ema.get(k, v).to(device).float() for k, v in ema_state.items()}
    return state, ema_state


def warm_start(model: LatentTransformer, init_from: Path, codec: CodecConfig, load: bool = True) -> dict[str, Any]:
    """Copy a trained checkpoint's weights into `model` (when `load`) -> what the card records of it.
    The checkpoint must be of the same latents (VAE, silence rule) and every weight it has must
    fit; weights only `model` has keep their initial values."""
    shipped = type(model).from_pretrained(init_from)
    saved = shipped.sections.get("codec", {})
    if saved.get("vae_sha256") != codec.vae_sha256 or saved.get("silence_rule") != codec.silence_rule:
        raise TrainLatentsError(f"{init_from} was trained on other latents (VAE or silence rule); "
                                "it cannot start this run")
    own = model.state_dict()
    theirs = shipped.state_dict()
    misfit = [k for k, v in theirs.items() if k not in own or own[k].shape != v.shape]
    if misfit:
        raise TrainLatentsError(f"{init_from} does not fit this architecture: {', '.join(misfit[:5])}")
    if load:
        model.load_state_dict({**own, **theirs})
    done = shipped.sections.get("training", {})
    return {"path": str(init_from), "train_step": done.get("train_step"), "train_seconds": done.get("train_seconds"),
            "new_weights": sorted(set(own) - set(theirs))}


@torch.no_grad()
def update_ema(ema_state: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * weights, for every floating-point entry of the state dict."""
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema_state[k].mul_(decay).add_(v.float(), alpha=1.0 - decay)


@torch.no_grad()
def held_out(objective: Objective, model: torch.nn.Module, windows: LatentWindows, rt: Runtime, bf16: bool,
             batch_size: int = 256, seed: int = 1234) -> float:
    """The objective on the fixed held-out windows, with fixed noise (a seeded CPU generator:
    the same numbers on any device), averaged over real positions."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = count = 0.0
    for x0, mask, extra in windows.held_out_batches(rt.device, batch_size):
        n = float(mask.sum())
        total += objective.loss(model, x0, mask, gen, rt, bf16, **extra).item() * n
        count += n
    model.train()
    return total / max(count, 1.0)


def train_on_latents(objective: Objective, cfg, recipe: Recipe, vae: Path, out: Path, data: Path = DEFAULT_PATH,
                     cache_dir: Path | None = None, latent_settings: LatentSettings | None = None,
                     max_steps: int | None = None, minutes: float | None = None, eval_every: int = 1000,
                     save_minutes: float = 5.0, eval_windows: int = 2048, precision: str = "auto", seed: int = 0,
                     ema: float = 0.0, silence: str = "token", bucket: bool = False, log_every: int = 50,
                     encode_batch: int = 512, standardize: bool = False, init_from: Path | None = None,
                     style_balance: float = 0.0, balance_scope: str = "all") -> dict:
    """Train `objective.model_class(cfg)` by `recipe` on the cached latent windows: resumable from
    `OUT/last` (weights, optimizer, step, EMA, written as one folder), `OUT/best` at the best
    held-out figure (EMA weights when `ema` > 0), a JSON-lines log, DDP under torchrun.
    `precision` 'auto' | 'bf16' | 'fp32' (`symdiff.precision`) for training and, without
    `latent_settings`, for encoding the latents; the one used is logged and recorded in the
    checkpoints. `init_from`: a fresh run starts from that checkpoint's weights (weights the
    config adds, such as a style embedding, keep their initial values; its step count and
    learning-rate schedule start at 0); the provenance records it. `style_balance`: windows drawn
    by `style_balanced_weights` (a config with style labels); `balance_scope` "known" leaves the
    windows a conditional model sees with nothing known at the corpus mix (`corpus_weight`).
    Returns the training state."""
    rt = setup_runtime()
    precision = resolve_precision(precision, rt.device)
    bf16 = precision == "bf16"
    latent_settings = latent_settings or LatentSettings(bf16=bf16)
    torch.manual_seed(seed)
    out, vae, data = Path(out), Path(vae), Path(data)
    max_steps = recipe.max_steps if max_steps is None else max_steps
    lw = load_latent_windows(vae, data, cache_dir, latent_settings, cfg.seq_len, recipe.batch_size, rt, silence,
                             eval_windows, encode_batch, standardize, getattr(cfg, "styles", ()))
    ds, scaler = lw.ds, lw.scaler

    cfg = dataclasses.replace(cfg, data_dim=lw.x.shape[1])
    weights = lw.draw_weights(style_balance)
    corpus_weight = corpus_weights(weights, balance_scope, getattr(cfg, "conditional", False))
    training: dict[str, Any] = {**lw.provenance(data), "ema": ema, "precision": precision,
                                "style_balance": style_balance, "balance_scope": balance_scope}
    sections = {"codec": lw.codec, "recipe": recipe, **objective.sections, "training": training}
    cls = objective.model_class
    model = cls(cfg).to(rt.device)
    model.scaler = scaler
    last = out / "last"
    fresh = not resumable(last, ds.key["vae_sha256"])
    if init_from is not None:
        training["init_from"] = warm_start(model, Path(init_from), lw.codec, load=fresh)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr_at(0))
    ema_state = ({k: v.detach().clone().float() for k, v in model.state_dict().items()} if ema > 0 else None)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "best_loss": None, "seconds": 0.0}
    if not fresh:
        state, ema_state = resume(last, model, opt, ema_state, rt.device)
    ddp = wrap_ddp(model, rt)
    log = JsonLog(out / "log.jsonl", rt.main)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        log.write(event="start", step=state["step"], train_windows=len(lw.train), held_windows=len(lw.held),
                  data_dim=cfg.data_dim, parameters=model.num_parameters(), world=rt.world, silence=silence,
                  latents=str(ds.path), precision=precision, recipe=recipe.to_dict())

    def ema_model():
        if ema_state is None:
            return model
        m = cls(cfg).to(rt.device)
        m.load_state_dict(ema_state)
        return m

    def write_last(d: Path) -> None:
        extra = {"extra": {f"ema.{k}": v for k, v in ema_state.items()}} if ema_state is not None else None
        model.save_pretrained(d, sections, extra, scaler)  # `model` is what `ddp` wraps
        save_training_state(d, opt, state)

    def checkpoint() -> None:
        if rt.main:
            training.update(train_step=state["step"], train_seconds=round(state["seconds"], 1))
            replace_dir(last, write_last)

    def evaluate(step: int) -> None:
        if not rt.main or not len(lw.held):
            return
        value = held_out(objective, ema_model(), lw, rt, bf16)
        log.write(step=step, event="eval", **{objective.metric: value}, seconds=round(state["seconds"], 1))
        tqdm.write(f"step {step}: " + objective.report.format(value))
        if state["best_loss"] is None or value < state["best_loss"]:
            state["best_loss"] = value
            state["best"] = {"step": step, objective.metric: value}
            best_training = {**training, "train_step": step, "train_seconds": round(state["seconds"], 1),
                             objective.metric: value}
            best = ema_model()
            replace_dir(out / "best", lambda d: best.save_pretrained(d, {**sections, "training": best_training},
                                                                     scaler=scaler))

    lengths = lw.train[:, 1]
    gen = torch.Generator(device=rt.device).manual_seed(seed + rt.rank + state["step"])

    def train_step(idx: np.ndarray, step: int) -> dict:
        x0, mask, extra = lw.train_batch(idx, rt.device, corpus_weight)
        lr = recipe.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = objective.loss(ddp, x0, mask, gen, rt, bf16, **extra)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        if ema_state is not None:
            update_ema(ema_state, model, ema)
        return {"loss": loss.detach(), "lr": lr, "grad_norm": grad_norm, "length": mask.sum(1).float().mean()}

    model.train()
    train_loop(state, rt, lambda epoch: epoch_batches(lengths, recipe.batch_size // rt.world, rt, seed, epoch, bucket,
                                                 weights=weights),
               train_step, evaluate, checkpoint, log, max_steps, minutes, eval_every, save_minutes, log_every,
               desc=f"{objective.desc} ({precision})")
    shutdown(rt)
    return state


# --- the diffusion model -------------------------------------------------------------------------

