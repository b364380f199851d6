"""Ship a trained latent model (TransformerDDPM or TransformerMDN): copy a run's best weights to
checkpoints/ with portable provenance, plot its loss curves, and write the model card, with the
evaluation tables (`symdiff evaluate --out EVAL`) and the sampling bench output when given.

    python scripts/ship_diffusion.py runs/diffusion-cpu --out checkpoints/diffusion-cpu \
        --command "symdiff train diffusion ..." [--eval eval] [--bench bench.txt]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

from safetensors.torch import load_file, save_file  # noqa: E402

from symdiff.atomic import read_json, write_text  # noqa: E402
from symdiff.checkpoint import upgrade_config  # noqa: E402
from symdiff.codec import LatentScaler  # noqa: E402
from symdiff.train.diffusion import DISTILL_RANGE, DISTILL_WEIGHTS, KNOWN_MODES, STYLE_DROP  # noqa: E402


def portable(path: str | None) -> str | None:
    """A path relative to the repository (the VAE is found beside the checkpoint)."""
    if not path:
        return path
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else p.name


def this_machine() -> str:
    """'N cores of <CPU model name>' from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return f"{len(names)} cores of {names[0]}" if names else "a CPU"


def plot_losses(rows: list[dict], out: Path, label: str) -> None:
    train = [r for r in rows if "loss" in r and r.get("event") is None]
    evals = [r for r in rows if r.get("event") == "eval"]
    key = "valid_loss" if evals and "valid_loss" in evals[0] else "valid_nll"
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.6, alpha=0.6, label=f"training {label}")
    ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", ms=3,
            label=f"held-out {label} (valid split)")
    ax.set_xlabel("step")
    if all(r["loss"] > 0 for r in train):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--command", required=True, help="the command that trained the run")
    ap.add_argument("--eval", type=Path, help="a `symdiff evaluate --out` folder to quote")
    ap.add_argument("--bench", type=Path, help="saved output of bench/bench_sampling.py to quote")
    ap.add_argument("--title", default="TransformerDDPM on MusicVAE latents")
    ap.add_argument("--machine", default=this_machine(), help="where it was trained (default: this CPU)")
    ap.add_argument("--weights", choices=("best", "last"), default="best",
                    help="best/ (the lowest held-out loss) or the EMA weights of last/ (a fine-tune whose data "
                         "is drawn otherwise than the held-out windows, e.g. --style-balance)")
    args = ap.parse_args()

    best = args.run / args.weights
    full = upgrade_config(read_json(best / "config.json"))  # runs started before format 2 too
    full["codec"]["vae_path"] = portable(full["codec"]["vae_path"])
    for key in ("data", "latents"):
        if key in full["training"]:
            full["training"][key]["path"] = portable(full["training"][key]["path"])
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best / "scaler.safetensors", args.out / "scaler.safetensors")
    if args.weights == "best":
        shutil.copyfile(best / "model.safetensors", args.out / "model.safetensors")
    else:
        ema = {k.removeprefix("ema."): v for k, v in load_file(str(best / "extra.safetensors")).items()}
        assert ema.keys() == load_file(str(best / "model.safetensors")).keys(), "last/ holds no EMA weights"
        save_file(ema, str(args.out / "model.safetensors"))
    write_text(args.out / "config.json", json.dumps(full, indent=1) + "\n")
    cfg, e, codec_cfg, recipe = full["model"], full["training"], full["codec"], full["recipe"]

    rows = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    # The run's length from its log (last/ may predate the end: it is saved every few minutes),
    # these weights' step and held-out figure from best/ itself.
    steps, seconds = max(r["step"] for r in rows), max(r.get("seconds", 0.0) for r in rows)
    metric = "valid_nll" if "valid_nll" in e else "valid_loss"
    best_row = {"step": e.get("train_step"), metric: e.get(metric)}
    if args.weights == "last":  # its held-out figure, when the run evaluated at that step
        best_row[metric] = next((r[metric] for r in rows if r.get("event") == "eval" and r["step"] == best_row["step"]
                                 and metric in r), None)
    start = next(r for r in rows if r.get("event") == "start")
    is_mdn = "mixtures" in cfg
    prediction = cfg.get("prediction", "eps")
    plot_losses(rows, args.out, "NLL" if is_mdn else f"{prediction} MSE")

    rel = args.out.resolve().relative_to(ROOT) if args.out.resolve().is_relative_to(ROOT) else args.out
    load = ("symdiff.baselines.TransformerMDN.from_pretrained" if is_mdn else
            "symdiff.generate.MelodyDiffusion.from_pretrained")
    codec = ("; `symdiff.codec.LatentCodec.from_pretrained` on this folder decodes its samples" if is_mdn else
             "\n(the VAE is found beside this folder and checked by the sha256 of its weights).")
    params = start.get("parameters")
    objective = ("" if is_mdn or prediction == "eps" else
                 "; the net predicts v = sqrt(ab) eps - sqrt(1 - ab) x0 and the loss is MSE(v), "
                 "see `DiffusionConfig.prediction`")
    evals = ""
    if args.eval:
        for task in ("unconditional", "infill", "fidelity", "fidelity-seeds", "coherence"):
            md = args.eval / f"{task}.md"  # fidelity-seeds: scripts/fidelity_seeds.py over several seeds
            if md.is_file():
                evals += f"\n### {task}\n\n" + md.read_text()
        if (args.eval / "figure3.png").is_file():
            shutil.copyfile(args.eval / "figure3.png", args.out / "figure3.png")
            evals += "\n![Figure 3: metrics across the refinement](figure3.png)\n"
    scaler = LatentScaler.from_pretrained(best)
    posterior = ("the posterior mean mu: our VAE's posterior noise is 2/3 of a sampled z's variance"
                 if e.get("latents", {}).get("settings", {}).get("posterior") == "mean" else "sampled z, as the paper")
    scaling = (f"the paper's [-1, 1] min/max scaling, then centred per dim and divided by one global std "
               f"({scaler.std:.4f}), so the data has unit variance for the noise schedule; the samplers clip "
               f"x0 at +-{codec_cfg.get('clip', 1.0):.2f}" if scaler.standardized else
               "the paper's [-1, 1] scaling (one global min/max); the samplers clip x0 at +-1")
    conditioning = ""
    if cfg.get("conditional"):
        modes = ", ".join(f"{k} {v:.0%}" for k, v in KNOWN_MODES.items())
        conditioning = (f"- Known chunks for the conditional input, drawn per window ({modes}: nothing known, one "
                        "unknown span, scattered unknown chunks); the loss is taken on the unknown chunks only.\n")
    if cfg.get("styles"):
        conditioning += (f"- Style labels ({', '.join(cfg['styles'])}), each window's from its line's subcorpus "
                         f"(`corpus.style_of`), dropped to \"any style\" on {STYLE_DROP:.0%} of the windows so that "
                         "one model also serves classifier-free guidance on the style.\n")
    if cfg.get("copy"):
        conditioning += ("- A copy head (`symdiff.diffusion.CopyHead`): each unknown chunk's x0 estimate may "
                         "take a known chunk's clean latent, pointed at by the exact likelihood of x_t and a learnt "
                         "prior, in the share a learnt gate gives (at most the noise std), so the model can restate "
                         "a phrase of the piece as folk tunes and chorales do.\n")
    if e.get("style_balance"):
        scope = ("only where the model saw known music; windows it saw with nothing known weighed back to the "
                 "corpus' mix by corpus share / drawn share (`--balance-scope known`)"
                 if e.get("balance_scope") == "known" else "all of them")
        conditioning += (f"- Windows drawn style-balanced (`--style-balance {e['style_balance']:g}`: toward an equal "
                         f"share per style), {scope}.\n")
    if cfg.get("guided"):
        teacher = portable(str(Path(full.get("teacher", {}).get("path", "")).resolve()))
        full.setdefault("teacher", {})["path"] = teacher
        write_text(args.out / "config.json", json.dumps(full, indent=1) + "\n")
        ranges = "; ".join(f"{k} {a:g} to {b:g}" for k, (a, b) in DISTILL_RANGE.items())
        conditioning += (f"- Guidance distilled from `{teacher}` (`symdiff train diffusion --teacher`, after Meng et "
                         "al. 2023): the student takes the classifier-free and context guidance weights as an input "
                         "and learns, on the teacher's own noisy windows, known chunks and styles, the guided eps the "
                         "teacher mixes from two or three views, so each step is one row. Weights drawn per window: "
                         f"the defaults on {DISTILL_WEIGHTS['default']:.0%}, none on {DISTILL_WEIGHTS['none']:.0%}, "
                         f"else uniform ({ranges}); the classifier-free weight only where something is known or a "
                         "style given, the context weight only where nothing is known.\n")
        if cfg.get("guided_copy"):
            conditioning += ("- Guided copy (`DiffusionConfig.guided_copy`): the copy head's share is scaled by the "
                             "classifier-free weight, so the student's copy reaches as far toward a known chunk as "
                             "its teacher's guided one.\n")
    init = e.get("init_from")
    fresh = init["new_weights"] if init else []
    new = f"; new weights {', '.join(fresh)} at their initial values" if fresh else ""
    warm = (f" It started from the weights of `{init['path']}` ({init['train_step']:,} steps, "
            f"{init['train_seconds'] / 60:.1f} min of training before this run{new}); the step count above is this "
            "run's." if init else "")
    silence = (f"a silence flag, one more model-space dim: {codec_cfg.get('silence_value')} at a silent chunk (its "
               "other dims at the centre) and the opposite at music, decoded as a rest above "
               f"{codec_cfg.get('silence_threshold')} (`symdiff.codec.FLAG_SILENT` says why)"
               if codec_cfg.get("silence_rule") == "flag" else
               f"a fixed silence latent at {codec_cfg.get('silence_value')} in every dim, decoded as a rest")
    flag_dim = ", and the silence flag" if codec_cfg.get("silence_rule") == "flag" else ""
    latent_settings = {k: v for k, v in e.get("latents", {}).get("settings", {}).items()
                       if k in ("transpositions", "max_shift", "threshold", "seed")}
    lr, precision, best_step = recipe["learning_rate"], e.get("precision", "bf16"), best_row["step"]
    chosen = ("the lowest held-out loss" if args.weights == "best" else
              "the EMA weights at the run's end (its held-out windows are drawn as the corpus has them, its "
              "training windows are not)")
    bench = f"\n## Speed (bench/bench_sampling.py)\n```\n{args.bench.read_text().strip()}\n```\n" if args.bench else ""
    card = f"""# {args.title} ({cfg['name']} config)

Trained by symdiff on {args.machine}. {params:,} parameters; data dim {cfg['data_dim']} (the active dims of
the VAE below{flag_dim}), sequences of up to {cfg['seq_len']} latents (64 bars).

Load: `{load}("{rel}")`{codec}

## Data
- VAE: `{codec_cfg.get('vae_path')}` (sha256 `{codec_cfg.get('vae_sha256', '')[:16]}...`).
- Corpus: `data/corpus.npz` (see data/corpus.md), train split; every line cut into 2-bar chunks and
  encoded with the VAE ({posterior}), plus random transpositions
  (settings: {json.dumps(latent_settings)}).
- Windows of up to 32 chunks at a stride of one chunk: {start.get('train_windows'):,} training windows,
  {start.get('held_windows'):,} held-out (valid split) windows for the loss.
- Model space: {scaling}.
- Silent chunks: {silence} (symdiff/data/latents.py; the paper drops windows holding one instead,
  which would discard two thirds of our 64-bar material).
{conditioning}
## Training
```
{args.command}
```
{steps:,} steps in {seconds / 3600:.2f} h of wall time (batch {recipe['batch_size']}, Adam lr
{lr:g}, {precision} on {args.machine}{objective}). These weights: step {best_step:,}, {chosen}
({json.dumps(best_row)}).{warm}

![loss curves](training.png)

## Sample quality (held-out data; `symdiff evaluate`)
Framewise overlapping-area Consistency/Variance relative to training windows, as the paper's
Table 1 (its figures in brackets), latent Frechet distance and MMD to training latents, and the
longest span of bars copied verbatim from the training data.
{evals or 'Not measured yet.'}
{bench}"""
    (args.out / "README.md").write_text(card)
    print(f"shipped {best} -> {args.out}")


if __name__ == "__main__":
    main()
