"""Judge a candidate default sampler against today's by issue 26's quality gate: coherence and
fidelity, each pooled over the same seeds, within one standard error of today's default on every
figure (or better), and the copy rate (restated chunks) no higher.

    python scripts/sampler_gate.py --reference eval/coherence.json eval/fidelity.json ... \\
        --candidate runs/dpmpp20-s0/coherence.json runs/dpmpp20-s0/fidelity.json ...

Runs are matched by task and seed. Coherence: the "diffusion samples" row (what `generate` gives),
unpaired, SE of the difference sqrt(se_ref^2 + se_new^2); better = closer to the real test
windows. Fidelity: the default infill row of each style, paired piece by piece (a seed draws the
same pieces for both), SE of the paired differences; better = higher overlap and key cosine,
lower onset distance and density ratio.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from symdiff.evaluation.fidelity import COHERENCE, FIT

SAMPLES, REAL = "diffusion samples", "real test windows"
INFILL = "diffusion (conditioned)"
COPY = ("repeated_chunks", "restated_chunks")
HIGHER_IS_BETTER = ("pitch_overlap", "pitch_class_cosine")


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0


def verdict(key: str, diff: float, se: float, better: bool) -> tuple[str, bool]:
    """(word, passes): a copy rate must not rise; any other figure within 1 SE, or better."""
    if key in COPY:
        return ("no higher" if diff <= 0 else f"higher by {diff / se:.1f} SE" if se else "higher"), diff <= 0
    if abs(diff) <= se:
        return "within 1 SE", True
    return (f"better by {abs(diff) / se:.1f} SE", True) if better else (f"worse by {abs(diff) / se:.1f} SE", False)


def by_task_seed(paths: list[Path]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for p in paths:
        r = json.loads(p.read_text())
        out[r["task"]][r["settings"]["seed"]] = r
    return out


def coherence_rows(ref: dict[int, dict], new: dict[int, dict]) -> list[list]:
    def values(reports: dict[int, dict], row: str, key: str) -> list[float]:
        return [it[key] for s in sorted(reports) for it in reports[s]["groups"]["all"]["items"] if it["row"] == row]

    rows = []
    for key, title in COHERENCE.items():
        (mr, sr), (mn, sn) = mean_se(values(ref, SAMPLES, key)), mean_se(values(new, SAMPLES, key))
        real = mean_se(values(ref, REAL, key))[0]
        se = math.hypot(sr, sn)
        word, ok = verdict(key, mn - mr, se, abs(mn - real) < abs(mr - real))
        rows.append(["coherence", title.split(" (")[0], len(values(ref, SAMPLES, key)), f"{mr:.3f} ({sr:.3f})",
                     f"{mn:.3f} ({sn:.3f})", f"{mn - mr:+.3f} ({se:.3f})", f"{real:.3f}", word, ok])
    return rows


def fidelity_rows(ref: dict[int, dict], new: dict[int, dict], row: str = INFILL) -> list[list]:
    rows = []
    for style in [s for s in ref[min(ref)]["groups"] if s in new[min(new)]["groups"]]:
        pairs = []
        for s in sorted(ref):
            a, b = ref[s]["groups"][style]["items"], new[s]["groups"][style]["items"]
            if [(x["piece"], x["voice"]) for x in a] != [(x["piece"], x["voice"]) for x in b]:
                raise SystemExit(f"seed {s}, {style}: the two runs filled different pieces")
            pairs += list(zip(a, b, strict=True))
        for key, title in FIT.items():
            r = [x["rows"][INFILL][key] for x, _ in pairs]
            n = [y["rows"][row][key] for _, y in pairs]
            real = mean_se([x["rows"]["real middle"][key] for x, _ in pairs])[0]
            (mr, sr), (mn, sn) = mean_se(r), mean_se(n)
            diff, se = mean_se([b - a for a, b in zip(r, n, strict=True)])
            sign = 1 if key in HIGHER_IS_BETTER else -1
            word, ok = verdict(key, diff, se, sign * diff > 0)
            rows.append([f"fidelity {style}", title.split(" (")[0], len(pairs), f"{mr:.3f} ({sr:.3f})",
                         f"{mn:.3f} ({sn:.3f})", f"{diff:+.3f} ({se:.3f})", f"{real:.3f}", word, ok])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, nargs="+", required=True, help="today's default: json files")
    ap.add_argument("--candidate", type=Path, nargs="+", required=True, help="the candidate: json files")
    ap.add_argument("--row", default=INFILL, help=f"the candidate's fidelity row (default {INFILL!r})")
    args = ap.parse_args()
    ref, new = by_task_seed(args.reference), by_task_seed(args.candidate)
    rows = []
    for task in ("coherence", "fidelity"):
        if task in ref and task in new:
            if sorted(ref[task]) != sorted(new[task]):
                raise SystemExit(f"{task}: seeds {sorted(ref[task])} against {sorted(new[task])}")
            rows += coherence_rows(ref[task], new[task]) if task == "coherence" else \
                fidelity_rows(ref[task], new[task], args.row)
    one = next(iter(next(iter(new.values())).values()))["settings"]
    seeds = sorted({s for t in new.values() for s in t})
    print(f"Candidate {one['sampler']} {one['steps']} steps against today's default, seeds "
          f"{', '.join(map(str, seeds))}: means with their SE; difference = candidate - default, with its SE.\n")
    print("| task | figure | n | default (SE) | candidate (SE) | difference (SE) | real | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for *cells, _ in rows:
        print("| " + " | ".join(map(str, cells)) + " |")
    failed = [f"{r[0]} {r[1]}" for r in rows if not r[-1]]
    print(f"\nGate: {'passed' if not failed else 'failed on ' + ', '.join(failed)}.")


if __name__ == "__main__":
    main()
