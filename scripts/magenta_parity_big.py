#!/usr/bin/env python
"""Parity of the imported cat-mel_2bar_big (the paper's VAE) with magenta's own graph.

The same check as tests/test_magenta_parity_vae.py (which runs cat-mel_2bar_small in CI),
for the big config (BiLSTM 2048, LSTM 3 x 2048, z 512: about 134M parameters):
  1. magenta builds cat-mel_2bar_big as training does, every weight is drawn at random
     (biases included) and tf Saver writes the checkpoint (no optimizer slots by default,
     to keep the files at ~540 MB);
     or, with --checkpoint, an existing checkpoint is used as it is (e.g. the released
     mel_2bar_big.ckpt, unpacked);
  2. symdiff.magenta_import converts it (save_pretrained + from_pretrained);
  3. on --chunks real 2-bar windows from tests/data/midi: magenta's TrainedModel gives
     mu, sigma and the argmax decode from z = mu, magenta's decoder graph the
     teacher-forced logits; ours the same from the imported model.
Prints the max abs differences (tolerance 1e-4) and the timings; exit status 1 on failure.

  TF_NUM_INTRAOP_THREADS=1 python scripts/magenta_parity_big.py [--chunks 16] [--checkpoint PREFIX]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_magenta_parity_vae as parity  # noqa: E402  (its helpers; magenta via tests/magenta_env)

from symdiff import magenta_import  # noqa: E402
from symdiff.vae import MusicVAE  # noqa: E402

CONFIG = "cat-mel_2bar_big"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=CONFIG, help="magenta config (cat-mel_2bar_small for a quick look)")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", help="use this checkpoint prefix instead of random weights")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (TF sessions use 1)")
    ap.add_argument("--workdir", type=Path, help="keep the checkpoints here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        parity._magenta()
    except pytest.skip.Exception as e:
        print(f"magenta_parity_big: {e.msg}", file=sys.stderr)
        return 2

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="magenta-parity-big-") as tmp:
        work = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        if args.checkpoint:
            prefix = Path(args.checkpoint)
        else:
            prefix = work / "magenta" / "model.ckpt-1234"
            parity.write_magenta_checkpoint(args.config, prefix, seed=args.seed, optimizer=False)
            timings["magenta_build_randomize_save_s"] = time.perf_counter() - t0
        _, shapes, _ = magenta_import.read_checkpoint(prefix)
        print(f"checkpoint {prefix}: {len(shapes)} variables")
        for name in sorted(shapes):
            print(f"  {name} {list(shapes[name])}")

        chunks = parity.real_chunks(args.chunks)
        ref = parity.magenta_reference(args.config, prefix, chunks)
        timings.update(ref.pop("timings"))

        t0 = time.perf_counter()
        magenta_import.import_magenta(prefix, args.config, work / "ours")
        timings["import_s"] = time.perf_counter() - t0
        model = MusicVAE.from_pretrained(work / "ours")
        n_params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        got = parity.ours(model, chunks, ref["z"])
        timings["ours_encode_tf_free_s"] = time.perf_counter() - t0

    diffs = parity.differences(ref, got)
    ok = (max(diffs["mu"], diffs["sigma"], diffs["tf_logits"], diffs["free_logits"]) < parity.TOL
          and diffs["free_tokens_mismatch"] == 0.0)
    result = {
        "config": args.config,
        "weights": args.checkpoint or f"random (seed {args.seed}, tests/test_magenta_parity_vae.random_value)",
        "parameters": n_params,
        "chunks": int(len(chunks)),
        "max_abs_diff": {k: v for k, v in diffs.items() if k != "free_tokens_mismatch"},
        "free_tokens_mismatch": diffs["free_tokens_mismatch"],
        "distinct_tokens_per_decode": float(np.mean([len(set(r)) for r in ref["free_tokens"]])),
        "tolerance": parity.TOL,
        "pass": ok,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("PASS" if ok else "FAIL", f"(tolerance {parity.TOL})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
