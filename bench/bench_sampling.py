"""Sampling speed and quality of the diffusion model, beside references in the same run.

1. This machine's matmul peak (2048 x 2048, fp32 and bf16), measured first.
2. Time to sample one and 16 melodies of 64 bars (32 latents) at 1000, 100 and 20 steps
   (the paper's ancestral sampler, respaced below 1000) and with DDIM, through
   `MelodyDiffusion` (bf16 off and on), beside a plain reference loop: the paper's update
   written out step by step in fp32 (float64 schedule values looked up per step).
3. The FLOP rate of the 1000-step batch-16 run (FLOPs of one forward counted by
   `torch.utils.flop_counter`) as a fraction of the measured peak, for the shipped model and,
   with random weights, the paper-size model.
4. Quality: framewise OA Consistency/Variance (relative to held-out data) of N samples from
   the fast samplers against the 1000-step sampler.

    python bench/bench_sampling.py [--checkpoint DIR] [--num 200] [--skip-quality]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from symdiff.diffusion import CONFIGS, TransformerDDPM
from symdiff.generate import DEFAULT_DIFFUSION, MelodyDiffusion

CHUNKS = 32


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - t0)


def forward_flops(model: TransformerDDPM, batch: int) -> int:
    x = torch.randn(batch, CHUNKS, model.config.data_dim)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x, torch.full((batch,), 0.5))
    return fc.get_total_flops()


@torch.no_grad()
def reference_sample(model: TransformerDDPM, batch: int, seed: int = 0) -> torch.Tensor:
    """The paper's 1000-step ancestral loop as a direct port writes it, in fp32."""
    sched = model.config.schedule()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, CHUNKS, model.config.data_dim, generator=g)
    for t in range(sched.num_steps, 0, -1):
        ab, ab_prev = float(sched.alpha_bar_ext[t]), float(sched.alpha_bar_ext[t - 1])
        beta = float(sched.betas[t - 1])
        eps = model(x, torch.full((batch,), math.sqrt(ab)))
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
        mean = beta * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab) * x
        if t > 1:
            x = mean + math.sqrt(beta * (1 - ab_prev) / (1 - ab)) * torch.randn(x.shape, generator=g)
        else:
            x = mean
    return x


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_DIFFUSION))
    ap.add_argument("--num", type=int, default=200, help="samples per sampler in the quality comparison")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak (2048^2): fp32 {peak32 / 1e12:.3f} TFLOP/s, bf16 {peak16 / 1e12:.3f} TFLOP/s")

    pipe = MelodyDiffusion.from_pretrained(args.checkpoint)
    model = pipe.model
    d = pipe.codec.dim
    print(f"\nmodel: {model.config.name} config, {model.num_parameters():,} parameters, d = {d}")
    print(f"{'sampler':<22}{'batch':>6}{'fp32 s':>10}{'bf16 s':>10}{'reference s':>13}")
    rows = [("ddpm", 1000), ("ddpm", 100), ("ddpm", 20), ("ddim", 50), ("ddim", 20)]
    times = {}
    for batch in (1, 16):
        for name, steps in rows:
            out = []
            for bf16 in (False, True):
                pipe.precision = "bf16" if bf16 else "fp32"
                sampler = pipe.sampler(name, steps)
                out.append(timed(lambda b=batch, s=sampler: pipe.sample_latents(b, CHUNKS, s, seed=0)))
            ref = timed(lambda b=batch: reference_sample(model, b)) if (name, steps) == ("ddpm", 1000) else None
            times[(name, steps, batch)] = min(out)
            ref_s = f"{ref:13.2f}" if ref is not None else f"{'':>13}"
            print(f"{name + ' ' + str(steps):<22}{batch:>6}{out[0]:>10.3f}{out[1]:>10.3f}{ref_s}")
    pipe.precision = "fp32"
    t_decode = timed(lambda: pipe.decode(torch.zeros(1, CHUNKS, d)))
    print(f"decoding 32 latents to 64 bars: {t_decode:.3f} s")

    print("\nFLOP rate of the 1000-step sampler, batch 16 (fraction of the measured bf16 peak):")
    for label, m, secs in [("shipped " + model.config.name, model, times[("ddpm", 1000, 16)])]:
        flops = forward_flops(m, 16) * 1000
        print(f"  {label}: {flops / 1e9:.1f} GFLOP in {secs:.2f} s = {flops / secs / 1e12:.3f} TFLOP/s "
              f"= {flops / secs / peak16:.1%} of bf16 peak ({flops / secs / peak32:.1%} of fp32 peak)")
    paper = TransformerDDPM(dataclasses.replace(CONFIGS["paper"], data_dim=d)).eval()
    paper_pipe = MelodyDiffusion(paper, pipe.codec, precision="bf16")
    sampler = paper_pipe.sampler("ddpm", 50)
    secs = timed(lambda: paper_pipe.sample_latents(16, CHUNKS, sampler, seed=0)) * 1000 / 50
    flops = forward_flops(paper, 16) * 1000
    print(f"  paper config (random weights, bf16; 50 steps timed, scaled to 1000): {flops / 1e12:.2f} TFLOP "
          f"in {secs:.1f} s = {flops / secs / 1e12:.3f} TFLOP/s = {flops / secs / peak16:.1%} of bf16 peak")

    if args.skip_quality:
        return
    from symdiff.evaluation.table1 import held_out_melodies
    from symdiff.metrics import consistency_variance, overlap_stats

    gt = overlap_stats(held_out_melodies(args.num, seed=1))
    print(f"\nquality: framewise OA vs held-out data, {args.num} samples of 64 bars each")
    print(f"{'sampler':<14}{'pitch C':>9}{'pitch V':>9}{'dur C':>9}{'dur V':>9}{'s/sample':>10}")
    for name, steps in [("ddpm", 1000), ("ddpm", 100), ("ddim", 50), ("ddim", 20)]:
        t0 = time.perf_counter()
        res = pipe.generate(args.num, 64, name, steps, seed=0)
        per = (time.perf_counter() - t0) / args.num
        cv = consistency_variance(overlap_stats(res.tokens), gt)
        print(f"{name + ' ' + str(steps):<14}{cv['pitch']['consistency']:>9.3f}{cv['pitch']['variance']:>9.3f}"
              f"{cv['duration']['consistency']:>9.3f}{cv['duration']['variance']:>9.3f}{per:>10.3f}")


if __name__ == "__main__":
    main()
