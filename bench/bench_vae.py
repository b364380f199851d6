"""MusicVAE speed: encode/decode chunks/s (batch 1 and 256) and training steps/s, each beside a
naive reference in the same run.

References: decoding with a plain `nn.LSTM` stepped one token at a time on the full
[one-hot ; z] input (what a direct port does) vs our decoder (one-hot rows looked up, z's
part of the gates computed once); encoding chunk by chunk vs batched; a training step in
fp32 vs bf16 autocast.

    python bench/bench_vae.py [--checkpoint DIR] [--seconds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from symdiff.dataset import Lines, transpose_chunks
from symdiff.options import DEFAULT_VAE
from symdiff.train.vae import vae_loss
from symdiff.vae import CONFIGS, MusicVAE


def rate(fn, items: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


@torch.no_grad()
def naive_decode(model: MusicVAE, z: torch.Tensor) -> torch.Tensor:
    """Reference: torch LSTM layers stepped token by token on the concatenated input."""
    dec = model.decoder
    lstms = []
    for cell in dec.cells:
        lstm = torch.nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        lstm.weight_ih_l0.copy_(cell.weight_ih)
        lstm.weight_hh_l0.copy_(cell.weight_hh)
        lstm.bias_ih_l0.copy_(cell.bias_ih)
        lstm.bias_hh_l0.copy_(cell.bias_hh)
        lstms.append(lstm)
    state = [(h[None], c[None]) for h, c in dec.initial_state(z)]
    prev = torch.zeros(z.shape[0], dec.num_classes)
    out = []
    for _ in range(dec.seq_len):
        x = torch.cat([prev, z], -1)[:, None]
        for i, lstm in enumerate(lstms):
            x, state[i] = lstm(x, state[i])
        tok = dec.output_projection(x[:, 0]).argmax(-1)
        out.append(tok)
        prev = F.one_hot(tok, dec.num_classes).float()
    return torch.stack(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(DEFAULT_VAE))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--train-batch", type=int, default=512)
    args = ap.parse_args()
    try:
        model = MusicVAE.from_pretrained(args.checkpoint)
        print(f"checkpoint {args.checkpoint}")
    except FileNotFoundError:
        model = MusicVAE(CONFIGS["cat-mel_2bar_small"]).eval()
        print("no checkpoint: random cat-mel_2bar_small weights (speed does not depend on them)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    chunks = Lines.load().select("valid").vae_chunks()
    x256 = torch.from_numpy(chunks[:256]).long()
    z256 = model.encode(x256)[0].detach()

    with torch.no_grad():
        assert torch.equal(naive_decode(model, z256[:8]), model.decode(z256[:8])), "decoders disagree"
        for b in (1, 256):
            x, z = x256[:b], z256[:b]
            # this batch's x, z and b bound as default arguments
            enc = rate(lambda x=x: model.encode(x), b, args.seconds)
            one_by_one = lambda x=x, b=b: [model.encode(x[i : i + 1]) for i in range(b)]
            enc_loop = rate(one_by_one, b, args.seconds) if b > 1 else enc
            dec = rate(lambda z=z: model.decode(z), b, args.seconds)
            dec_naive = rate(lambda z=z: naive_decode(model, z), b, args.seconds)
            print(f"batch {b:>3}: encode {enc:9.1f} chunks/s (chunk-by-chunk {enc_loop:8.1f}) | "
                  f"decode {dec:8.1f} chunks/s (naive nn.LSTM loop {dec_naive:8.1f}, x{dec / dec_naive:.2f})")
        t0 = time.perf_counter()
        model.decode(model.encode(x256[:32])[0])
        print(f"a 64-bar melody (32 chunks) encodes and decodes in {time.perf_counter() - t0:.3f} s")

    train_model = MusicVAE(model.config)
    opt = torch.optim.Adam(train_model.parameters(), 1e-4)
    rng = np.random.default_rng(0)
    all_chunks = Lines.load().select("train").vae_chunks()

    def step(bf16: bool) -> None:
        picked = all_chunks[rng.integers(0, len(all_chunks), args.train_batch)]
        xb = torch.from_numpy(transpose_chunks(picked, rng)).long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, mu, sigma = train_model(xb, teacher_prob=0.5)
        loss, _ = vae_loss(logits, xb, mu, sigma, 0.1, train_model.config)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fp32 = rate(lambda: step(False), 1, args.seconds * 2)
    bf16 = rate(lambda: step(True), 1, args.seconds * 2)
    print(f"training (batch {args.train_batch}): bf16 {bf16:.2f} steps/s, fp32 {fp32:.2f} steps/s (x{bf16 / fp32:.2f})")


if __name__ == "__main__":
    main()
