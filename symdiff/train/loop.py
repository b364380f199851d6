"""What every training loop here shares: devices, DDP, precision, resumable checkpoints, logs.

Runs unchanged as one process or under `torchrun --nproc_per_node=N` (DistributedDataParallel;
gloo on CPU, nccl on GPUs). Checkpoints are safetensors plus JSON, never pickles: the model in
`last/`, the optimizer moments in `last/optimizer.safetensors` and the loop state in
`last/state.json`. The trainers write `last/` as a whole (a new folder swapped in by
`atomic.replace_dir`, and `atomic.recover_dir` before a run looks for it), so a kill at any
moment resumes from weights, optimizer, step and EMA of one and the same step.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..atomic import append_text, read_json, read_tensors, save_tensors, write_text
from ..checkpoint import ConfigIO
from ..precision import autocast, available_cores


@dataclass(frozen=True)
class Recipe(ConfigIO):
    """How a latent model is trained (the official code's Adam recipe): lr = learning_rate *
    lr_decay^(step // lr_decay_every), global-norm clip, batch size, step budget."""

    learning_rate: float = 1e-3
    lr_decay: float = 0.98
    lr_decay_every: int = 10_000  # the official code; the paper's text says 4000
    grad_clip: float = 1.0
    batch_size: int = 64
    max_steps: int = 500_000

    def lr_at(self, step: int) -> float:
        return self.learning_rate * self.lr_decay ** (step // self.lr_decay_every)


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self, enabled: bool):
        """bf16 autocast when `enabled` (a run whose resolved precision is bf16, see
        `symdiff.precision`); fp32 master weights either way."""
        return autocast("bf16" if enabled else "fp32", self.device.type)


def setup_runtime() -> Runtime:
    """One process, or one rank of a torchrun job (env WORLD_SIZE/RANK/LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # never more threads than cores, shared between the ranks
        torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cores() // world)))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world)


def shutdown(rt: Runtime) -> None:
    """End a torchrun job cleanly: every rank reaches here before the group goes."""
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    if rt.world == 1:
        return model
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.module if hasattr(model, "module") else model
    assert isinstance(inner, torch.nn.Module)  # nn.Module types its attributes as Tensor | Module
    return inner


def save_training_state(directory: Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Optimizer moments (safetensors) and loop state (JSON), atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    sd = optimizer.state_dict()
    tensors = {
        f"{idx}.{key}": value.detach().contiguous()
        for idx, per_param in sd["state"].items()
        for key, value in per_param.items()
        if torch.is_tensor(value)
    }
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    save_tensors(tensors, directory / "optimizer.safetensors")
    write_text(directory / "state.json", json.dumps({**state, "param_groups": groups}, indent=1))


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer) -> dict:
    state = read_json(directory / "state.json")
    tensors = read_tensors(directory / "optimizer.safetensors")
    per_param: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        per_param.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state


class JsonLog:
    """Append-only JSON-lines log (one dict per line), written by rank 0 only."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **row) -> None:
        if self.enabled:
            append_text(self.path, json.dumps({"time": round(time.time(), 1), **row}) + "\n")


def rank_batches(n: int, batch_size: int, rt: Runtime, seed: int, epoch: int, weights: torch.Tensor | None = None):
    """This rank's batches of one epoch: a shared permutation, dealt out round-robin. Every
    rank gets the same number of batches (DDP would hang on an extra one). With `weights` (n,),
    the epoch is n draws with replacement in proportion to them instead."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    per_rank = n // rt.world
    if weights is None:
        order = torch.randperm(n, generator=g)
    else:
        order = torch.multinomial(weights, n, replacement=True, generator=g)
    perm = order[rt.rank :: rt.world][:per_rank]
    for i in range(0, per_rank - batch_size + 1, batch_size):
        yield perm[i : i + batch_size]


def time_is_up(t_start: float, minutes: float | None, rt: Runtime) -> bool:
    """Whether a --minutes budget is spent; rank 0's clock decides, so all ranks stop together."""
    if minutes is None:
        return False
    up = time.time() - t_start > minutes * 60
    if rt.world > 1:
        flag = torch.tensor([float(up)], device=rt.device)
        dist.broadcast(flag, 0)
        up = bool(flag.item())
    return up


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


Batch = TypeVar("Batch")


def train_loop(state: dict, rt: Runtime, batches: Callable[[int], Iterable[Batch]],
               train_step: Callable[[Batch, int], dict], evaluate: Callable[[int], None],
               checkpoint: Callable[[], None], log: JsonLog, max_steps: int,
               minutes: float | None = None, eval_every: int = 1000, save_minutes: float = 5.0,
               log_every: int = 50, desc: str = "train", postfix: tuple[str, ...] = ("loss", "lr")) -> None:
    """The step loop every trainer shares. Runs epochs of `batches(epoch)` until
    `max_steps` or a `minutes` budget, keeping state["step"], state["epoch"] and
    state["seconds"] (wall time over all runs). `train_step(batch, step)` does one optimizer
    step and returns the numbers to log (tensors are read only at log steps, every `log_every`);
    `evaluate(step)` runs every `eval_every` steps and at the stop (the last weights are judged
    too); `checkpoint()` every `save_minutes` and at the stop. A run already at max_steps does
    nothing. `postfix`: the logged numbers the progress bar shows. Ctrl-C, or SIGTERM (`kill`:
    a run started in the background with nohup or & ignores SIGINT), saves a checkpoint and
    returns with state["interrupted"] set."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) \
        if threading.current_thread() is threading.main_thread() else None
    t_start = t_saved = time.time()
    seconds_before = state["seconds"]
    bar = tqdm(total=max_steps, initial=state["step"], desc=desc, disable=not rt.main, unit="step")
    try:
        stop = state["step"] >= max_steps
        while not stop:
            for batch in batches(state["epoch"]):
                row = train_step(batch, state["step"])
                state["step"] = step = state["step"] + 1
                state["seconds"] = seconds_before + time.time() - t_start
                bar.update(1)
                if step % log_every == 0:
                    row = {k: float(v) for k, v in row.items()}
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in postfix if k in row})
                    log.write(step=step, **row, seconds=round(state["seconds"], 1))
                stop = step >= max_steps or time_is_up(t_start, minutes, rt)
                if step % eval_every == 0 or stop:
                    evaluate(step)
                if time.time() - t_saved > save_minutes * 60 or stop:
                    checkpoint()
                    t_saved = time.time()
                if stop:
                    break
            else:
                state["epoch"] += 1
    except KeyboardInterrupt:  # Ctrl-C keeps what was trained: last/ is written, then the run ends
        if rt.main:
            tqdm.write(f"interrupted at step {state['step']}: saving the checkpoint")
        checkpoint()
        state["interrupted"] = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    bar.close()
