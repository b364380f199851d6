"""Ship a trained VAE: copy a run's best weights to checkpoints/, measure them on held-out
test chunks, and write the model card from the run's log.

    python scripts/ship_vae.py runs/vae-small --command "symdiff train vae ..."
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from symdiff.data.dataset import Lines  # noqa: E402
from symdiff.options import DEFAULT_VAE  # noqa: E402
from symdiff.train.vae import VAERecipe  # noqa: E402
from symdiff.vae import MusicVAE, evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=DEFAULT_VAE)
    ap.add_argument("--command", required=True, help="the command that trained the run")
    ap.add_argument("--chunks", type=int, default=8192, help="held-out test chunks to measure on")
    args = ap.parse_args()

    rows = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("event") == "eval"]
    train_rows = [r for r in rows if "loss" in r]
    state = json.loads((args.run / "last" / "state.json").read_text())
    # best/ is written at every new best evaluation, last/ only every few minutes: best/'s own
    # config names its step, and the log has that evaluation.
    best_step = MusicVAE.from_pretrained(args.run / "best").sections["training"]["train_step"]
    best = next(({"step": r["step"], **{k: r[k] for k in ("accuracy", "accuracy_teacher_forced", "kl", "active_dims")}}
                 for r in evals if r["step"] == best_step), state.get("best", {}))
    state["step"] = max(state["step"], max((r["step"] for r in rows), default=0))
    state["seconds"] = max(state["seconds"], max((r.get("seconds", 0) for r in rows), default=0))

    args.out.mkdir(parents=True, exist_ok=True)
    model = MusicVAE.from_pretrained(args.run / "best")
    best_seconds = max((r["seconds"] for r in evals if r["step"] == best.get("step")), default=state["seconds"])
    # the step count lets `train vae --init-from` continue it
    training = {**model.sections.get("training", {}), "train_step": best.get("step", state["step"]),
                "train_seconds": best_seconds}
    model.save_pretrained(args.out, {**model.sections, "training": training})

    chunks = Lines.load().select("test").vae_chunks()
    rng = np.random.default_rng(0)
    sample = torch.from_numpy(chunks[rng.permutation(len(chunks))[: args.chunks]])
    torch.set_num_threads(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m = evaluate(model, sample)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    train_steps, eval_steps = [r["step"] for r in train_rows], [r["step"] for r in evals]
    ax[0].plot(train_steps, [r["r_loss"] for r in train_rows], lw=0.8, label="reconstruction NLL")
    ax[0].plot(train_steps, [r["kl"] for r in train_rows], lw=0.8, label="KL")
    ax[0].set_xlabel("step")
    ax[0].legend()
    ax[0].set_yscale("log")
    ax[1].plot(eval_steps, [r["accuracy"] for r in evals], marker=".", label="argmax from mu")
    ax[1].plot(eval_steps, [r["accuracy_teacher_forced"] for r in evals], marker=".", label="teacher-forced")
    ax[1].axhline(0.95, color="gray", ls="--", lw=0.8)
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("held-out token accuracy")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(args.out / "training.png", dpi=110)

    cfg = model.config
    recipe = VAERecipe.from_dict(model.sections['recipe'])
    status = "It is reached." if m["accuracy"] >= 0.95 else (
        "It is not reached yet: training continues from these weights with "
        f"`symdiff train vae ... --init-from {args.out}` (the step count is in config.json, so "
        "the beta, sampling and lr schedules go on where they were), and they will be replaced.")
    hours = state["seconds"] / 3600
    params = sum(p.numel() for p in model.parameters())
    precision = model.sections["training"].get("precision", "bf16")
    shown = args.out.relative_to(Path.cwd()) if args.out.is_relative_to(Path.cwd()) else args.out
    card = f"""# MusicVAE 2-bar melody ({cfg.name}), trained by symdiff

The 2-bar melody MusicVAE of Roberts et al. (2018) in the `{cfg.name}` size
(BiLSTM encoder {cfg.enc_size}x2, LSTM decoder {list(cfg.dec_sizes)}, z = {cfg.z_size};
{params / 1e6:.1f}M parameters), trained on a 2-core CPU in {precision} (autocast; fp32 weights). Load it with
`symdiff.vae.MusicVAE.from_pretrained("{shown}")`.

## Data
`data/corpus.npz` (see [`data/corpus.md`](../../data/corpus.md)): the public-domain folk, chorale and vocal scores
shipped in the music21 wheel, train split, as bar-aligned 2-bar chunks at a 1-bar hop
(MusicVAE's slicing), silent chunks dropped, de-duplicated, transposed on the fly by a random
-5..+5 semitones. Held-out figures below are on the **test** split ({len(sample)} chunks,
pieces never seen in training).

## Training
```
{args.command}
```
MusicVAE's recipe: Adam, lr {recipe.learning_rate:g} x {recipe.decay_rate}^step (floor {recipe.min_learning_rate:g}),
beta = (1 - {recipe.beta_rate}^step) x {recipe.max_beta}, free bits {recipe.free_bits}, scheduled sampling
with inverse-sigmoid rate {recipe.sampling_rate:g}, global-norm clip {recipe.grad_clip}, batch {recipe.batch_size}.
Ran {state['step']} steps in {hours:.2f} h of wall time; these weights are from step
{best.get('step', '?')} (best held-out accuracy on the valid split during training:
{best.get('accuracy', float('nan')):.4f}).

![training curves](training.png)

## Held-out quality (test split)
| figure | value |
|---|---|
| argmax reconstruction token accuracy from mu (free-running decode) | {m['accuracy']:.4f} |
| teacher-forced token accuracy | {m['accuracy_teacher_forced']:.4f} |
| mean KL(q(z|x) || N(0, I)) (nats) | {m['kl']:.1f} |
| active latent dims (mean posterior sigma < 0.98) | {m['active_dims']} of {cfg.z_size} |

The target for this model is an argmax accuracy of 0.95 (MusicVAE's own melody models are in
that range). {status}
About 73% of the tokens are "no event", so a model that predicts nothing scores about 0.73.

## Speed on our 2-core CPU
`python bench/bench_vae.py` measures encoding, decoding and training against plain references;
its figures for these weights are in docs/models.md. On 2 cores, two DDP ranks of one thread each
(`torchrun --nproc_per_node=2 -m symdiff.cli train vae ...`) ran about 1.6x more steps per
second than one process with two threads: the decoder's step loop is bound by Python overhead.

## Importing Magenta's checkpoints instead
`symdiff import-magenta CKPT --config cat-mel_2bar_big --out DIR` converts Magenta's own
checkpoints. Checked against Magenta's code on checkpoints it wrote with random weights:
`cat-mel_2bar_small` in CI (`tests/test_magenta_parity_vae.py`: mu 8.9e-7, sigma 6.0e-7,
logits 1.9e-6 max abs difference, identical argmax decodes on 32 real chunks) and
`cat-mel_2bar_big` once (`python scripts/magenta_parity_big.py --chunks 64`, 134.6M
parameters: mu 8.0e-7, sigma 6.0e-7, teacher-forced logits 1.7e-6, free-running logits 1.8e-6,
0 token mismatches; tolerance 1e-4).
"""
    (args.out / "README.md").write_text(card)
    metrics = {"test": m, "steps": state["step"], "hours": hours, "best": best}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
