"""The paper's evaluation (Table 1, Figure 3) for our models and the baselines, one call.

Protocol (paper sec. 4-5, docs/paper_notes.md sec. 7-8):
- Reference: N 64-bar windows (32 chunks, chunk-aligned, drawn at random without replacement
  where the split has enough) of the *training* split; the framewise OA Consistency/Variance of
  every row is relative to them, as in the paper's Table 1. Two more real sets give the floor:
  "train data" (another N training windows) and "test data" (N test-split windows).
- Unconditional: N melodies of 64 bars from the diffusion model; the TransformerMDN sampled
  autoregressively at temperature 1; spherical interpolation from latent 0 to latent 31 of real
  test windows; independent N(0, I) latents (the prior).
- Infilling: the N test windows with latents 0-7 and 24-31 kept and 8-23 (bars 17-48)
  generated: diffusion (Algorithm 1, known latents = the VAE's mu), interpolation between the
  real latents 7 and 24, and the prior. The user's notes outside bars 17-48 are kept exactly,
  as `symdiff infill` does, so every row shares the real outer bars.
- Latent metrics: Frechet distance and polynomial-kernel MMD between each row's model-space
  latents and the reference windows' latents (sampled z, as the model was trained on; silent
  chunks at the silence latent), all latents of a window as rows (N * 32 vectors).
- Originality: the longest bar span each melody copies verbatim from the training lines, and
  the share of melodies that copy 8 bars or more (`metrics.CopyIndex`).
- Figure 3: during the diffusion run, at `figure_points` steps, the x0 estimate's latent FD and
  MMD and (decoded) framewise C/V; mean and standard deviation over 5 disjoint subsets.

What is expensive and reused is cached in `data/cache/eval/`: the encoded reference and test
windows, keyed by the sha256 of the VAE weights and of the corpus, N, the seed, the scaler and
the silence rule (two codecs with one scaler encode silence differently).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import save_npz, savefig, sha256_file, write_text
from ..baselines import PAPER_INFILL_MASK, TransformerMDN, interpolate_infill, prior_latents
from ..codec import LatentCodec
from ..dataset import DEFAULT_PATH, WINDOW_CHUNKS, Lines, random_windows
from ..generate import MelodyDiffusion, plan_infill, splice_bars
from ..melody import STEPS_PER_BAR
from ..metrics import CopyIndex, consistency_variance, copy_report, frechet_distance, mmd_polynomial, overlap_stats
from ..vae import vae_hash
from . import CACHE
from . import TABLE1_TASKS as TASKS

INFILL_METHOD_ROWS = {"replace": "Algorithm 1", "conditioned": "conditioned"}
PAPER_INFILL_BARS = (16, 48)  # bars 17-48 = latents 8-23, the paper's task (PAPER_INFILL_MASK)
FIGURE_GROUPS = 5
# The paper's Table 1 (docs/paper_notes.md sec. 8): pitch C, pitch Var, duration C, duration Var.
PAPER = {
    "unconditional": {"train data": (1.00, 1.00, 1.00, 1.00), "test data": (1.00, 0.96, 1.00, 0.91),
                      "diffusion": (0.99, 0.90, 0.96, 0.92), "TransformerMDN": (0.93, 0.68, 0.93, 0.76),
                      "interpolation": (0.85, 0.23, 0.91, 0.34), "N(0,I) prior": (0.84, 0.19, 0.90, 0.67)},
    "infill": {"diffusion": (0.97, 0.87, 0.97, 0.80), "interpolation": (0.94, 0.78, 0.96, 0.80),
               "N(0,I) prior": (0.89, 0.19, 0.94, 0.54)},
}


def held_out_melodies(
    num: int, seed: int = 0, split: str = "test", data: str | Path = DEFAULT_PATH
) -> list[np.ndarray]:
    return random_windows(Lines.load(data), split, num, seed)


@dataclass
class RealSet:
    tokens: list[np.ndarray]
    latents: torch.Tensor  # (N, 32, d) model space, as the model was trained on (sampled z or mu)
    mu: torch.Tensor  # (N, 32, d) mu in model space (the known latents for infilling)


def encode_windows(pipe: MelodyDiffusion, tokens: list[np.ndarray], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space latents of 64-bar windows: sampled z (seeded per window) and mu."""
    z = torch.stack([pipe.codec.encode(t, sample=True, seed=seed + i) for i, t in enumerate(tokens)])
    mu = torch.stack([pipe.codec.encode(t) for t in tokens])
    return z, mu


def real_set(pipe: MelodyDiffusion, lines: Lines, split: str, num: int, seed: int, data: Path,
             vae_dir: Path | None, cache: Path | None) -> RealSet:
    tokens = random_windows(lines, split, num, seed)
    path = None
    if cache is not None and vae_dir is not None:
        key = json.dumps({"vae": vae_hash(vae_dir), "data": sha256_file(data), "split": split, "num": num,
                          "seed": seed, "scaler": hashlib.sha256(repr(sorted(
                              (k, v.tolist()) for k, v in pipe.codec.scaler.to_dict().items())).encode()).hexdigest(),
                          "silence": [pipe.codec.config.silence_rule, pipe.codec.config.silence_value],
                          "format": 3}, sort_keys=True)
        path = Path(cache) / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == key:
                    return _real(tokens, torch.from_numpy(f["z"]), torch.from_numpy(f["mu"]), pipe)
    z, mu = encode_windows(pipe, tokens, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, z=z.numpy(), mu=mu.numpy(), key=np.array(key))  # atomic: never a half-written cache
    return _real(tokens, z, mu, pipe)


def _real(tokens: list[np.ndarray], z: torch.Tensor, mu: torch.Tensor, pipe: MelodyDiffusion) -> RealSet:
    """The latents the model was trained on (`LatentCodec.posterior`: sampled z or mu) are the
    reference for FD and MMD; mu is always the known music of an infill."""
    return RealSet(tokens, z if pipe.codec.config.posterior == "sample" else mu, mu)


@dataclass
class Row:
    name: str
    tokens: list[np.ndarray]
    latents: torch.Tensor
    seconds: float = 0.0


@dataclass
class Evaluation:
    task: str
    num: int
    settings: dict
    rows: dict[str, dict] = field(default_factory=dict)
    figure: dict | None = None

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "num": self.num, "settings": self.settings, "rows": self.rows,
                           "figure3": self.figure, "paper": PAPER[self.task]}, indent=1)

    def markdown(self) -> str:
        """Table 1's layout, our figures, the paper's beside them in brackets where it has them."""
        paper = PAPER[self.task]
        head = ("| setting | pitch C | pitch Var | duration C | duration Var | latent FD | latent MMD "
                "| longest copy (bars) | copies >= 8 bars |")
        lines = [head, "|" + "---|" * 9]
        for name, r in self.rows.items():
            p = paper.get(name)
            vals = [r["pitch"]["consistency"], r["pitch"]["variance"], r["duration"]["consistency"],
                    r["duration"]["variance"]]
            cells = [f"{v:.2f}" + (f" ({p[i]:.2f})" if p else "") for i, v in enumerate(vals)]
            lines.append(f"| {self.task}: {name} | " + " | ".join(cells) + f" | {r['fd']:.3f} | {r['mmd']:.4f} | "
                         f"{r['copy']['longest_mean']:.1f} (max {r['copy']['longest_max']}) | "
                         f"{r['copy']['share_copying']:.1%} |")
        s = self.settings
        lines.append("")
        lines.append(f"N = {self.num} melodies of 64 bars per row; framewise OA relative to {self.num} training "
                     f"windows; diffusion: {s['sampler']} sampler, {s['steps']} steps; paper's figures in brackets; "
                     f"{s['seconds']:.0f} s in all.")
        return "\n".join(lines) + "\n"


def row_metrics(row: Row, gt_stats: dict, ref_latents: torch.Tensor, index: CopyIndex) -> dict:
    cv = consistency_variance(overlap_stats(row.tokens), gt_stats)
    return {**cv, "fd": frechet_distance(row.latents.numpy(), ref_latents.numpy()),
            "mmd": mmd_polynomial(row.latents.numpy(), ref_latents.numpy()),
            "copy": copy_report(row.tokens, index), "seconds": round(row.seconds, 2)}


def figure_steps(total: int, points: int) -> set[int]:
    return {int(round(v)) for v in np.linspace(0, total - 1, points)}


def to_space(x: torch.Tensor, source: LatentCodec, target: LatentCodec) -> torch.Tensor:
    """Latents of one codec's model space in another's (same VAE, other scaling or silence
    latent), so that every row's FD and MMD are taken in the diffusion model's space."""
    if source is target:
        return x
    out = target.scaler.transform(source.scaler.inverse(source.config.music(x), seed=0))
    return target.config.join(out, source.is_silent(x))


def evaluate(task: str, num: int, pipe: MelodyDiffusion, mdn: TransformerMDN | None = None,
             sampler: str = "ddpm", steps: int | None = None, seed: int = 0, data: Path = DEFAULT_PATH,
             vae_dir: Path | None = None, cache: Path | None = CACHE, figure_points: int = 0,
             progress: bool = True, log: Callable[[str], None] = print,
             mdn_codec: LatentCodec | None = None) -> Evaluation:
    """One task of Table 1 (module docstring); the MDN's samples are decoded by `mdn_codec`, the
    codec it was trained with (default: the pipeline's)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    t_start = time.perf_counter()
    data = Path(data)
    lines = Lines.load(data)
    log(f"encoding reference windows (cached in {cache})" if cache else "encoding reference windows")
    ref = real_set(pipe, lines, "train", num, seed, data, vae_dir, cache)
    train = real_set(pipe, lines, "train", num, seed + 1, data, vae_dir, cache)
    test = real_set(pipe, lines, "test", num, seed + 2, data, vae_dir, cache)
    gt_stats = overlap_stats(ref.tokens)
    index = CopyIndex(lines.select("train").tokens)
    smp = pipe.sampler(sampler, steps)
    gen = torch.Generator().manual_seed(seed)
    k = WINDOW_CHUNKS

    rows: list[Row] = [Row("train data", train.tokens, train.latents), Row("test data", test.tokens, test.latents)]
    figure: dict | None = None
    runs = len(pipe.infill_methods) if task == "infill" else 1
    bar = tqdm(total=smp.num_steps * runs, desc=f"diffusion ({task})", unit="step", disable=not progress)
    marks = figure_steps(smp.num_steps, figure_points) if figure_points else set()
    trace: list[dict] = []

    def callback(i: int, total: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        bar.update(1)
        if i in marks:
            trace.append(figure_point(pipe, i, total, x0, gt_stats, ref.latents))

    t0 = time.perf_counter()
    if task == "unconditional":
        x = pipe.sample_latents(num, k, smp, seed=seed, callback=callback)
        bar.close()
        rows.append(Row("diffusion", pipe.decode(x), x, time.perf_counter() - t0))
        if mdn is not None:
            t0 = time.perf_counter()
            x = mdn.sample(num, k, generator=gen)
            own = mdn_codec or pipe.codec
            tokens = list(own.decode(x.reshape(num * k, -1), seed=0).reshape(num, -1))
            rows.append(Row("TransformerMDN", tokens, to_space(x, own, pipe.codec), time.perf_counter() - t0))
        ends = torch.zeros(k, dtype=torch.bool)
        ends[1:-1] = True  # generate 1..30 between the real latents 0 and 31
        x = interpolate_infill(test.mu, ends, pipe.codec.scaler, config=pipe.codec.config)
        rows.append(Row("interpolation", pipe.decode(x), x))
        x = prior_latents(num, k, pipe.codec.scaler, gen, config=pipe.codec.config)
        rows.append(Row("N(0,I) prior", pipe.decode(x), x))
    else:
        mask = PAPER_INFILL_MASK
        for method in pipe.infill_methods:  # the model's default first: the "diffusion" row
            t0 = time.perf_counter()
            x = pipe.sample_latents(num, k, smp, seed=seed, callback=callback, mask=mask, known=test.mu,
                                    method=method)
            name = "diffusion" if method == pipe.infill_methods[0] else f"diffusion ({INFILL_METHOD_ROWS[method]})"
            rows.append(Row(name, splice(test.tokens, pipe.decode(x)), x, time.perf_counter() - t0))
            marks.clear()  # Figure 3 follows the default method
        bar.close()
        x = interpolate_infill(test.mu, mask, pipe.codec.scaler, config=pipe.codec.config)
        rows.append(Row("interpolation", splice(test.tokens, pipe.decode(x)), x))
        prior = prior_latents(num, k, pipe.codec.scaler, gen, config=pipe.codec.config)
        x = torch.where(mask[None, :, None], prior, test.mu)
        rows.append(Row("N(0,I) prior", splice(test.tokens, pipe.decode(x)), x))
    if trace:
        figure = {"steps": [t["step"] for t in trace], "total": smp.num_steps,
                  **{key: {"mean": [t[key][0] for t in trace], "std": [t[key][1] for t in trace]}
                     for key in trace[0] if key != "step"}}

    result = Evaluation(task, num, {"sampler": sampler, "steps": smp.num_steps, "seed": seed,
                                    "model": pipe.model.config.name, "data": str(data)})
    for row in tqdm(rows, desc="metrics", disable=not progress):
        result.rows[row.name] = row_metrics(row, gt_stats, ref.latents, index)
    result.figure = figure
    result.settings["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def splice(real: list[np.ndarray], made: list[np.ndarray]) -> list[np.ndarray]:
    """The paper's infilling task, bars 17-48 of each 64-bar window from `made`, the rest real,
    spliced as `symdiff infill` does."""
    first, end = PAPER_INFILL_BARS
    plan = plan_infill(64 * STEPS_PER_BAR, (first * STEPS_PER_BAR, end * STEPS_PER_BAR))
    return [splice_bars(a, b, plan) for a, b in zip(real, made, strict=True)]


def figure_point(pipe: MelodyDiffusion, i: int, total: int, x0: torch.Tensor, gt_stats: dict,
                 ref_latents: torch.Tensor) -> dict:
    """Figure 3 at step i: metrics of the x0 estimate, mean and std over disjoint subsets."""
    groups = np.array_split(np.arange(len(x0)), min(FIGURE_GROUPS, len(x0)))
    tokens = pipe.decode(x0)
    vals: dict[str, list[float]] = {}
    for g in groups:
        cv = consistency_variance(overlap_stats([tokens[j] for j in g]), gt_stats)
        for feat in ("pitch", "duration"):
            for kind in ("consistency", "variance"):
                vals.setdefault(f"{feat} {kind}", []).append(cv[feat][kind])
        vals.setdefault("latent FD", []).append(frechet_distance(x0[g].numpy(), ref_latents.numpy()))
        vals.setdefault("latent MMD", []).append(mmd_polynomial(x0[g].numpy(), ref_latents.numpy()))
    return {"step": i + 1, **{key: (float(np.mean(v)), float(np.std(v))) for key, v in vals.items()}}


def plot_figure3(evaluations: list[Evaluation], path: Path) -> Path:
    """Latent FD/MMD and framewise C/V of the x0 estimate across the refinement steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("latent FD", "latent FD"), ("latent MMD", "latent MMD"),
              ("consistency", ("pitch consistency", "duration consistency")),
              ("variance", ("pitch variance", "duration variance"))]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ev in evaluations:
        f = ev.figure
        if not f:
            continue
        steps = np.array(f["steps"])
        for ax, (title, keys) in zip(axes, panels, strict=True):
            for key in (keys if isinstance(keys, tuple) else (keys,)):
                mean, std = np.array(f[key]["mean"]), np.array(f[key]["std"])
                label = f"{ev.task}" + (f", {key.split()[0]}" if isinstance(keys, tuple) else "")
                ax.plot(steps, mean, marker="o", ms=3, label=label)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("refinement step")
            ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_ylim(0, 1.05)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(evaluations: list[Evaluation], out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ev in evaluations:
        for path, text in ((out / f"{ev.task}.json", ev.to_json()), (out / f"{ev.task}.md", ev.markdown())):
            write_text(path, text)
            paths.append(path)
    if any(ev.figure for ev in evaluations):
        paths.append(plot_figure3(evaluations, out / "figure3.png"))
    return paths
