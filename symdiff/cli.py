"""The `symdiff` command line: one subcommand per job, all thin over the library."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SymdiffError
from .options import (
    CONTEXT_GUIDANCE,
    DEFAULT_DIFFUSION,
    DEFAULT_GUIDANCE,
    DEFAULT_MDN,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DEFAULT_VAE,
    DEVICES,
    DIFFUSION_PRESETS,
    INFILL_METHODS,
    MAX_NEW_BARS,
    MDN_PRESETS,
    PRECISIONS,
    SAMPLER_CONTEXT_GUIDANCE,
    SAMPLER_NAMES,
)

if TYPE_CHECKING:  # the light commands import no torch (generate is imported inside the subcommands)
    from .generate import Progress


class UsageError(SymdiffError):
    """Bad arguments or input: printed as one line, exit status 2."""


def check_out(out: Path, *inputs: Path) -> None:
    """Refuse, before any work, an --out that is one of the inputs (it would be replaced by
    the result) or that cannot take a file (a directory, a read-only file, no such folder)."""
    from .atomic import check_writable

    for source in inputs:
        if out.exists() and source.exists() and out.resolve() == source.resolve():
            raise UsageError(f"--out {out} is the input file {source}; write the result to another file")
    check_writable(out)


def cmd_inspect(args: argparse.Namespace) -> None:
    from .melody import read_midi

    found = read_midi(args.file)
    report: dict[str, Any] = {
        "file": str(args.file),
        "qpm": round(found.qpm, 3),
        "time_signature": "{}/{}".format(*found.time_signature),
        "meter": found.bars.meter,
        "bars": found.bars.num_bars,
        "cut_at_bar": found.bars.cut_at,  # None: every bar was read
        "cut_why": found.bars.cut_why or None,
        "pickup": found.bars.first_number == 0,
        "tempo_changes": found.tempo_changes,
        "time_signature_changes": found.time_signature_changes,
        "default": found.chosen.index,
        "single_line_melody": not found.chosen.chordal,  # False: even the default track plays chords
        "candidates": [c.summary() | {"bars": found.track_bars(c)} for c in found.candidates],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.file}: {found.bars.describe()}, {report['qpm']} qpm, "
          f"{found.tempo_changes} tempo / {found.time_signature_changes} meter changes")
    print(f"{'track':>5} {'program':>7} {'bars':>5} {'notes':>6} {'range':>9} {'poly':>5}  {'instrument':<24}  name")
    for c in report["candidates"]:
        rng = "{}-{}".format(*c["pitch_range"]) if c["pitch_range"] else "-"
        mark = "*" if c["index"] == found.chosen.index else " "
        print(f"{c['index']:>4}{mark} {c['program']:>7} {c['bars']:>5} {c['notes']:>6} {rng:>9} "
              f"{c['polyphony']:>5.2f}  {c['instrument_name']:<24}  {c['name'].strip()}")
    print("* = the melody used by default (--track K picks another); bars: the last bar the track plays in")
    if found.chosen.chordal:
        print(f"no single-line melody: the default track {found.chosen.index} plays chords (poly = share of onsets "
              "with company), and an infill writes one line in its place")


def cmd_data_build(args: argparse.Namespace) -> None:
    import time

    from .dataset import save_stats

    t0 = time.time()
    if args.midi_dir:
        from .data.midi_corpus import build_from_midi_folder, format_report

        report = build_from_midi_folder(args.midi_dir, args.out, workers=args.workers, shard=args.shard,
                                        restart=args.restart, limit=args.limit)
        print(format_report(report))
        if report["interrupted"]:
            sys.exit(130)
        return
    if importlib.util.find_spec("music21") is None:
        raise UsageError("building from music21's corpus needs music21: pip install 'symdiff[data]' "
                         "(or use --midi-dir)")
    from .data.corpus import build

    lines, counts = build(Path(args.out), args.sources, args.workers, not args.no_halve, args.limit)
    stats = lines.stats()
    stats["_build"] = {**counts, "seconds": round(time.time() - t0, 1)}
    save_stats(stats, Path(args.out).with_suffix(".stats.json"))
    from .atomic import write_text
    from .data.corpus import dataset_card

    write_text(Path(args.out).with_suffix(".md"), dataset_card(stats, stats["_build"]))
    print(f"wrote {args.out}: {len(lines)} lines, {stats['all']['all']['bars']} bars, "
          f"{counts['errors']} unreadable in {time.time() - t0:.0f} s")


def cmd_data_merge(args: argparse.Namespace) -> None:
    from .data.midi_corpus import merge_shards

    check_out(args.out, *args.shards)
    report = merge_shards(args.shards, args.out)
    print(f"wrote {args.out}: {len(report['shards'])} shards, {report['pieces']} files with lines, "
          f"{report['lines']} lines, {report['bars']} bars")


def cmd_data_stats(args: argparse.Namespace) -> None:
    from .dataset import Lines

    stats = Lines.load(args.path).stats()
    if args.json:
        print(json.dumps(stats, indent=1))
        return
    cols = ("pieces", "lines", "bars", "chunks", "lines_64_bars", "windows_64_bars")
    print(f"{'source':<14} {'split':<6}" + "".join(f"{c:>16}" for c in cols))
    for source, splits in stats.items():
        for split, row in splits.items():
            print(f"{source:<14} {split:<6}" + "".join(f"{row[c]:>16}" for c in cols))


def parse_overrides(pairs: list[str], configs: tuple) -> tuple:
    """--set key=value pairs -> the preset's configs (architecture, schedule, recipe) with those
    fields replaced, in whichever config has the field (types follow the field)."""
    import dataclasses

    owner = {f.name: i for i, c in enumerate(configs) for f in dataclasses.fields(c) if f.name != "name"}
    changes: list[dict] = [{} for _ in configs]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in owner:
            raise UsageError(f"--set {pair}: expected KEY=VALUE with KEY one of {', '.join(owner)}")
        current = getattr(configs[owner[key]], key)
        new: object
        try:
            if isinstance(current, tuple):
                new = tuple(int(v) for v in value.split(","))
            elif isinstance(current, bool):
                new = value.lower() in ("1", "true", "yes")
            else:
                new = type(current)(value)
        except ValueError:
            raise UsageError(f"--set {pair}: {value!r} is not a {type(current).__name__}") from None
        changes[owner[key]][key] = new
    try:
        return tuple(dataclasses.replace(c, **ch) for c, ch in zip(configs, changes, strict=True))
    except ValueError as e:  # a config's own check
        raise UsageError(f"--set: {e}") from None


def cmd_train_vae(args: argparse.Namespace) -> None:
    from .train.vae import PRESETS, train_vae

    if args.config not in PRESETS:
        raise UsageError(f"unknown config {args.config!r}; choose from {', '.join(PRESETS)}")
    cfg, recipe = parse_overrides(args.set, PRESETS[args.config])
    state = train_vae(cfg, recipe, args.out, args.data, args.max_steps, args.minutes, args.eval_every,
                      args.save_minutes, precision=args.precision, seed=args.seed, init_from=args.init_from)
    print(f"stopped at step {state['step']} after {state['seconds'] / 60:.1f} min; "
          f"best held-out accuracy {state['best_accuracy']:.4f}; checkpoints in {args.out}")


def cmd_train_latent(args: argparse.Namespace) -> None:
    """`train diffusion` and `train mdn`: the same data, options and report."""
    import os

    from .data.latents import LatentSettings
    from .precision import resolve_device, resolve_precision

    presets: dict[str, tuple]  # name -> the trainer's configs (architecture, [schedule,] recipe)
    train: Callable[..., dict]
    if args.model == "diffusion":
        from .train.diffusion import PRESETS as presets
        from .train.diffusion import train_diffusion as train
    else:
        from .train.mdn import PRESETS as presets
        from .train.mdn import train_mdn as train
    if args.config not in presets:
        raise UsageError(f"unknown config {args.config!r}; choose from {', '.join(presets)}")
    configs = parse_overrides(args.set, presets[args.config])
    precision = resolve_precision(args.precision, resolve_device())  # the latents are encoded in it too
    # the latents' own seed: --seed does not re-encode
    settings = LatentSettings(transpositions=args.transpositions, bf16=precision == "bf16", posterior=args.posterior)
    state = train(
        *configs, args.vae, args.out, data=args.data, cache_dir=args.latents, latent_settings=settings,
        max_steps=args.max_steps, minutes=args.minutes, eval_every=args.eval_every,
        save_minutes=args.save_minutes, eval_windows=args.eval_windows, precision=precision,
        seed=args.seed, ema=args.ema, silence=args.silence, bucket=args.bucket, log_every=args.log_every,
        standardize=args.standardize, init_from=args.init_from, style_balance=args.style_balance,
        balance_scope=args.balance_scope, **({"teacher": args.teacher} if args.model == "diffusion" else {}),
    )
    best = state["best_loss"]
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 evaluates and reports
        return
    what = "loss" if args.model == "diffusion" else "NLL"
    print(f"stopped at step {state['step']} after {state['seconds'] / 60:.1f} min; best held-out {what} "
          f"{'-' if best is None else f'{best:.5f}'}; checkpoints in {args.out}")


def cmd_data_latents(args: argparse.Namespace) -> None:
    from .data.latents import LatentSettings, ensure_latents
    from .precision import resolve_device, resolve_precision

    device = resolve_device(args.device)
    bf16 = resolve_precision(args.precision, device) == "bf16"
    settings = LatentSettings(transpositions=args.transpositions, seed=args.seed, bf16=bf16, posterior=args.posterior)
    cache = args.cache if args.cache is not None else args.data.parent / "cache" / "latents"
    ds = ensure_latents(args.vae, args.data, cache, settings, args.batch_size, device)
    print(json.dumps({"path": str(ds.path), **ds.summary()}, indent=1))


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import time

    from .melody import is_onset, read_midi, tokens_to_midi
    from .vae import MusicVAE, reconstruct

    check_out(args.out, args.file)
    found = read_midi(args.file)
    line = found.pick(args.track)
    vae = MusicVAE.from_pretrained(args.checkpoint)
    t0 = time.time()
    out = reconstruct(vae, line.tokens)
    seconds = time.time() - t0
    tokens_to_midi(out, args.out, qpm=found.qpm, program=line.program)
    notes = is_onset(line.tokens)
    acc = float((out == line.tokens).mean())
    onset_acc = float((out[notes] == line.tokens[notes]).mean()) if notes.any() else float("nan")
    print(f"track {line.index} ({line.num_bars} bars, {line.num_notes} notes): token accuracy {acc:.4f}, "
          f"note accuracy {onset_acc:.4f} in {seconds:.2f} s; wrote {args.out}")


def _pipeline(args: argparse.Namespace):
    from .generate import MelodyDiffusion
    from .precision import resolve_device

    return MelodyDiffusion.from_pretrained(args.checkpoint, args.vae, args.precision, resolve_device(args.device))


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def _check_seed(args: argparse.Namespace) -> None:
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be a non-negative integer below 2^63, got {args.seed}")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from .melody import tokens_to_midi

    _check_seed(args)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; sample writes a folder of MIDI files")
    pipe = _pipeline(args)
    with _progress(args) as progress:
        result = pipe.generate(args.num, args.bars, args.sampler, args.steps, args.seed, style=args.style,
                               guidance=args.guidance, context_guidance=args.context_guidance, progress=progress)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot make the folder {args.out}: {e.strerror}") from None
    width = len(str(args.num - 1))
    paths = [tokens_to_midi(t, args.out / f"sample_{i:0{width}d}.mid", qpm=args.qpm)
             for i, t in enumerate(result.tokens)]
    print(f"wrote {len(paths)} melodies of {args.bars} bars to {args.out} in {result.seconds:.2f} s "
          f"({args.sampler}, {pipe.sampler(args.sampler, args.steps).num_steps} steps, {pipe.precision}, "
          f"{_threads(torch.get_num_threads())})")


def cmd_infill(args: argparse.Namespace) -> None:
    import torch

    from .arrangement import write_arrangement
    from .generate import parse_bar_range
    from .melody import STEPS_PER_BAR, read_midi

    _check_seed(args)
    check_out(args.out, args.file)
    found = read_midi(args.file)
    line = found.pick(args.track)
    pipe = _pipeline(args)
    tokens, bars = found.tokens(line), found.bars  # bars as the file counts them, in its meter
    if args.command == "extend":
        if not 1 <= args.bars <= MAX_NEW_BARS:
            raise UsageError(f"--bars: a melody can be extended by 1 to {MAX_NEW_BARS} bars, got {args.bars}")
        first, last = bars.num_bars + 1, bars.num_bars + args.bars
        span = bars.steps(first, last, allow_past_end=args.bars)
        extend = -(-max(0, span[1] - len(tokens)) // STEPS_PER_BAR)
        what = f"added bars {first}-{last} ({bars.meter})"
    else:
        first, last = parse_bar_range(args.bars)
        span, extend = bars.steps(first, last), 0
        what = f"infilled bars {first}-{last} of {bars.describe()}"
    if line.chordal:
        print(f"note: track {line.index} plays chords; its top line is rewritten and the notes under it are kept "
              "(`symdiff inspect` lists the tracks, --track picks a single line)")
    with _progress(args) as progress:
        result = pipe.infill(tokens, span, args.sampler, args.steps, args.seed, extend_bars=extend,
                             method=args.method, guidance=args.guidance, style=args.style, density=args.density,
                             keys=found.keys, pickup=bars.onset_pickup, progress=progress)
    for remark in result.remarks + write_arrangement(args.file, line, result.tokens[0], span, args.out):
        print(f"note: {remark}")
    heard = " as heard in your melody" if args.style is None and pipe.styles else ""
    print(f"track {line.index}: {what} in {result.seconds:.2f} s ({pipe.precision}, "
          f"{_threads(torch.get_num_threads())}), {result.style} style{heard}; "
          f"wrote {args.out} (your file with only these bars new)")


def cmd_vary(args: argparse.Namespace) -> None:
    import torch

    from .arrangement import write_arrangement
    from .generate import parse_bar_range
    from .melody import read_midi

    _check_seed(args)
    if not 0.0 < args.strength <= 1.0:
        raise UsageError(f"--strength must be above 0 and at most 1, got {args.strength:g}")
    if not 1 <= args.num <= 64:
        raise UsageError(f"--num must be between 1 and 64, got {args.num}")
    paths = [args.out.with_name(f"{args.out.stem}_{i:0{len(str(args.num))}d}{args.out.suffix}")
             for i in range(1, args.num + 1)] if args.num > 1 else [args.out]
    for path in paths:
        check_out(path, args.file)
    found = read_midi(args.file)
    line = found.pick(args.track)
    tokens, bars = found.tokens(line), found.bars
    if args.bars is None:
        first, last = bars.first_number, bars.num_bars
        what = f"all {bars.describe()}"
    else:
        first, last = parse_bar_range(args.bars)
        what = f"bars {first}-{last} of {bars.describe()}"
    span = bars.steps(first, last)
    if line.chordal:
        print(f"note: track {line.index} plays chords; its top line is varied and the notes under it are kept "
              "(`symdiff inspect` lists the tracks, --track picks a single line)")
    pipe = _pipeline(args)
    try:
        with _progress(args) as progress:
            result = pipe.vary(tokens, args.strength, span, args.num, args.sampler, args.steps, args.seed,
                               method=args.method, guidance=args.guidance, style=args.style, density=args.density,
                               keys=found.keys, pickup=bars.onset_pickup, progress=progress)
    except SymdiffError as e:
        if args.bars is None and "at once" in str(e):
            raise UsageError(f"{e}; vary a part of it with --bars FIRST-LAST") from None
        raise
    remarks = list(result.remarks)
    for out, path in zip(result.tokens, paths, strict=True):
        remarks += [r for r in write_arrangement(args.file, line, out, span, path) if r not in remarks]
    for remark in remarks:
        print(f"note: {remark}")
    heard = " as heard in your melody" if args.style is None and pipe.styles else ""
    shown = str(paths[0]) if args.num == 1 else f"{paths[0]} ... {paths[-1].name}"
    print(f"track {line.index}: {args.num} variation{'s' * (args.num > 1)} of {what} at strength "
          f"{args.strength:g} in {result.seconds:.2f} s ({pipe.precision}, {_threads(torch.get_num_threads())}), "
          f"{result.style} style{heard}; wrote {shown} (your file with only these bars new)")


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Progress]:
    """A tqdm bar over the whole job (hearing the style, the draw, every redraw), which names the
    stage it is in and grows when a stage is added, never going back (`generate.Progress`)."""
    from tqdm import tqdm

    from .generate import Progress

    bars: list[tqdm] = []  # opened at the first model pass: a refused setting prints its one line alone

    def report(done: int, total: int, stage: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=args.command, unit="step", leave=False, disable=args.quiet))
        bars[0].total = total
        bars[0].set_description(f"{args.command}: {stage}", refresh=False)
        bars[0].update(done - bars[0].n)

    try:
        yield Progress(report)
    finally:
        for bar in bars:
            bar.close()


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .baselines import TransformerMDN
    from .codec import LatentCodec
    from .evaluation import TABLE1_TASKS
    from .evaluation.fidelity import DEFAULT_PIECES, DEFAULT_SAMPLES, coherence, fidelity, write_report
    from .evaluation.table1 import evaluate, write_outputs

    _check_seed(args)
    paper = [task for task in args.task if task in TABLE1_TASKS]
    if args.num is not None and args.num < (2 if paper else 1):
        raise UsageError(f"--num must be at least {2 if paper else 1}"
                         + (" (the metrics compare sets)" if paper else ""))
    pipe = _pipeline(args)
    mdn = None  # the MDN baseline runs on the CPU whatever --device says
    if args.mdn is not None and "unconditional" in args.task:
        if not (args.mdn / "model.safetensors").is_file():
            raise UsageError(f"{args.mdn}: no TransformerMDN checkpoint there (use --mdn none to leave it out)")
        mdn = TransformerMDN.from_pretrained(args.mdn)
        if mdn.sections.get("codec", {}).get("vae_sha256") != pipe.codec.config.vae_sha256:
            raise UsageError(f"{args.mdn} models another VAE's latents than {args.checkpoint}")
    vae_dir = pipe.codec.vae_dir
    mdn_codec = LatentCodec.from_pretrained(args.mdn, vae_dir) if mdn is not None else None
    results = [evaluate(task, args.num or 1000, pipe, mdn, args.sampler or "ddpm", args.steps, args.seed or 0,
                        args.data, vae_dir, None if args.no_cache else args.cache, args.figure_points, not args.quiet,
                        mdn_codec=mdn_codec)
               for task in paper]
    paths = write_outputs(results, args.out) if results else []
    # issue 11's tasks: the default sampler, which is what a user of `symdiff sample` and `infill` gets
    fit_args = dict(sampler=args.sampler or DEFAULT_SAMPLER, steps=args.steps, seed=args.seed or 0, data=args.data,
                    checkpoint=args.checkpoint, progress=not args.quiet)
    reports = []
    if "fidelity" in args.task:
        reports.append(fidelity(pipe, args.num or DEFAULT_PIECES, tuple(args.styles), guidance=tuple(args.guidance),
                                region_bars=args.region_bars, **fit_args))
        paths += write_report(reports[-1], args.out)
    if "coherence" in args.task:
        reports.append(coherence(pipe, args.num or DEFAULT_SAMPLES, context_guidance=args.context_guidance, **fit_args))
        paths += write_report(reports[-1], args.out)
    for ev in results:
        print(ev.markdown())
    for report in reports:
        print(report.markdown())
    print("wrote " + ", ".join(str(p) for p in paths))


def cmd_import_magenta(args: argparse.Namespace) -> None:
    from .magenta_import import import_magenta

    try:
        model = import_magenta(args.checkpoint, args.config, args.out, ignore=args.ignore)
    except ImportError as e:  # TensorFlow is not installed
        raise UsageError(str(e)) from None
    n = sum(p.numel() for p in model.parameters())
    source = model.sections["training"]["imported_from"]
    step = f", global step {source['global_step']}" if "global_step" in source else ""
    print(f"imported {source['model_variables']} variables ({n / 1e6:.1f}M parameters{step}; "
          f"{source['skipped_variables']} optimizer/counter variables skipped) as {args.config}; wrote {args.out}")


def device_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the model runs: auto (the default: cuda where torch sees a GPU, else cpu), cpu or cuda")


def precision_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (the default): bf16 autocast on a GPU, and for training on a CPU with "
                        "AMX/AVX512-BF16; else fp32")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, from light modules only (`options`, `fit`, `melody`, the
    subpackages' names): `symdiff --help` and `inspect` load no torch (tests/test_layers.py)."""
    from .data.corpus import STYLES
    from .dataset import DEFAULT_PATH
    from .evaluation import CACHE, FIT_TASKS, MIN_BARS, TABLE1_TASKS
    from .fit import DENSITY_CHOICES
    from .melody import BARS_PER_CHUNK

    p = argparse.ArgumentParser(prog="symdiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="list the candidate melodies in a MIDI file")
    s.add_argument("file", type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    data = sub.add_parser("data", help="build or describe the training dataset").add_subparsers(
        dest="data_command", required=True)
    s = data.add_parser("build", help="build the dataset from music21's corpus or a MIDI folder")
    s.add_argument("--out", type=Path, default=DEFAULT_PATH)
    s.add_argument("--sources", nargs="*", help="music21 subcorpora (default: all of corpus.SUBCORPORA)")
    s.add_argument("--midi-dir", type=Path, help="build from a folder of MIDI files instead")
    s.add_argument("--shard", default="0/1", help="i/n: this worker's share of a MIDI folder")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--limit", type=int, help="read only the first N files (for a quick look)")
    s.add_argument("--no-halve", action="store_true", help="keep Renaissance note values as notated")
    s.add_argument("--restart", action="store_true",
                   help="MIDI folder: discard an unfinished build's saved progress instead of resuming it")
    s.set_defaults(func=cmd_data_build)
    s = data.add_parser("merge", help="join the shards of a MIDI folder build into one dataset")
    s.add_argument("shards", nargs="+", type=Path)
    s.add_argument("--out", type=Path, default=DEFAULT_PATH)
    s.set_defaults(func=cmd_data_merge)
    s = data.add_parser("stats", help="counts per subcorpus and split")
    s.add_argument("--path", type=Path, default=DEFAULT_PATH)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_data_stats)
    s = data.add_parser("latents",
                        help="encode the corpus with a VAE into the diffusion model's latent dataset (cached)")
    s.add_argument("--vae", type=Path, default=DEFAULT_VAE)
    s.add_argument("--data", type=Path, default=DEFAULT_PATH)
    s.add_argument("--cache", type=Path, help="cache folder (default: DATA's folder/cache/latents)")
    s.add_argument("--transpositions", type=int, default=4,
                   help="versions of each training line (1 = untransposed only)")
    s.add_argument("--posterior", choices=("sample", "mean"), default="sample",
                   help="encode each chunk as a sampled z (the paper) or as the posterior mean mu")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=512)
    device_arg(s)
    precision_arg(s)
    s.set_defaults(func=cmd_data_latents)
    s = sub.add_parser("reconstruct", help="encode a melody with the VAE and decode it back")
    s.add_argument("file", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--track", type=int, help="candidate index from `symdiff inspect` (default: the melody)")
    s.add_argument("--checkpoint", type=Path, default=DEFAULT_VAE)
    s.set_defaults(func=cmd_reconstruct)

    def generation_args(s: argparse.ArgumentParser) -> None:
        per_sampler = ", ".join(f"{n} for {name}" for name, n in DEFAULT_STEPS.items())
        s.add_argument("--steps", type=int, help=f"reverse steps (default: {per_sampler}; the paper: ddpm 1000)")
        s.add_argument("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_SAMPLER,
                       help="ddpm (the default: the paper's ancestral sampler, respaced below 1000 steps), ddim "
                            "(4x faster, deterministic, but more rests), dpmpp-sde (DPM-Solver++ SDE, 10x faster, "
                            "infills a little less close to their piece: docs/sampler.md) or dpmpp (deterministic)")
        s.add_argument("--seed", type=int, help="repeatable results (default: fresh randomness)")
        s.add_argument("--checkpoint", type=Path, default=DEFAULT_DIFFUSION, help="diffusion checkpoint")
        s.add_argument("--vae", type=Path, help="its VAE (default: the one named in the checkpoint)")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        device_arg(s)
        precision_arg(s)

    def density(text: str) -> str | float:
        if text in DENSITY_CHOICES:
            return text
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{', '.join(DENSITY_CHOICES)} or notes per bar, got {text!r}") from None

    def infill_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--track", type=int, help="candidate index from `symdiff inspect` (default: the melody)")
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("--method", choices=INFILL_METHODS, help=method_help)
        s.add_argument("--density", type=density, default="replaced",
                       help="the note rate the new bars keep: replaced (as the bars they replace; where those are "
                            "rests, as the nearest bars that play; the default), piece (as the rest of the piece), "
                            "or a number of notes per bar; a draw far off it is drawn again")
        style_args(s, "a conditioned infill (the known bars and the style)", heard_style)
        generation_args(s)
        s.set_defaults(func=cmd_infill)

    def style_args(s: argparse.ArgumentParser, guided: str, default: str) -> None:
        s.add_argument("--style", help="folk, chorale or vocal, for a model trained with style labels "
                                       f"(the default model), or any (no label); default: {default}")
        s.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                       help=f"classifier-free guidance weight of {guided} (default {DEFAULT_GUIDANCE:g}; 1 = none)")

    s = sub.add_parser("sample", help="generate new melodies (MIDI files)")
    s.add_argument("--num", type=int, default=1)
    s.add_argument("--bars", type=int, default=64,
                   help=f"length, up to {MAX_NEW_BARS} bars (past 64, written 32 bars at a time, each "
                        "conditioned on the 32 before)")
    s.add_argument("--qpm", type=float, default=120.0, help="tempo of the MIDI files")
    s.add_argument("--out", type=Path, default=Path("samples"), help="folder for sample_*.mid")
    style_args(s, "the style", "any")
    own = ", ".join(f"{w:g} for {name}" for name, w in SAMPLER_CONTEXT_GUIDANCE.items())
    s.add_argument("--context-guidance", type=float,
                   help="how strongly each 2-bar chunk follows the rest of the melody: guidance away from the "
                        f"model's view of the chunk alone (default {CONTEXT_GUIDANCE:g}, {own}; 1 = none, the "
                        "paper's sampler; higher holds key and register tighter and repeats more)")
    generation_args(s)
    s.set_defaults(func=cmd_sample)

    heard_style = "the style the rest of the melody is heard in"
    method_help = ("conditioned: the model sees the known bars (the default where the model was trained for it); "
                   "replace: the paper's Algorithm 1")
    s = sub.add_parser("infill", help="regenerate a bar range of a melody")
    s.add_argument("file", type=Path)
    s.add_argument("--bars", required=True,
                   help="FIRST-LAST, bars in the file's own meter as a score numbers them "
                        "(1 = the first full bar, 0 = a pickup), e.g. 17-48")
    infill_args(s)
    s = sub.add_parser("extend", help="continue a melody by some bars")
    s.add_argument("file", type=Path)
    s.add_argument("--bars", type=int, required=True,
                   help=f"bars to add, in the file's meter (up to {MAX_NEW_BARS}; past 64, written 32 bars at a "
                        "time, each conditioned on the 32 before)")
    infill_args(s)
    s = sub.add_parser("vary", help="variations of a melody or a bar range: its own notes noised and "
                                    "denoised again (MIDI files)")
    s.add_argument("file", type=Path)
    s.add_argument("--strength", type=float, required=True,
                   help="how far a variation may go, above 0 to 1: the share of the diffusion's noise steps "
                        "added to the melody before the model takes it back (0.1: close to the original; "
                        "1: a new draw; eval/variations.md measures it)")
    s.add_argument("--bars", help="FIRST-LAST, the bars to vary (default: the whole melody, up to 64 bars)")
    s.add_argument("--num", type=int, default=1,
                   help="variations to write: OUT itself for 1, else OUT's name with _1, _2, ... (default 1)")
    infill_args(s)
    s.set_defaults(func=cmd_vary)

    s = sub.add_parser("evaluate", help="the paper's Table 1 and Figure 3: diffusion vs baselines on held-out data; "
                       "infill fidelity and sample coherence (--task fidelity coherence)")
    s.add_argument("--task", nargs="+", choices=TABLE1_TASKS + FIT_TASKS, default=list(TABLE1_TASKS),
                   help="unconditional, infill: the paper's Table 1 (the default); fidelity: regenerated middles of "
                        "test pieces against the rest of each piece; coherence: key, register and repetition "
                        "of samples")
    s.add_argument("--num", type=int, help="melodies of 64 bars per row (default 1000); fidelity: test pieces per "
                   "style (default 30); coherence: samples and real windows (default 64)")
    s.add_argument("--styles", nargs="+", choices=STYLES, default=list(STYLES), help="fidelity: the styles measured")
    s.add_argument("--guidance", nargs="+", type=float, default=[DEFAULT_GUIDANCE],
                   help="fidelity: classifier-free guidance weights of the conditioned infill, one row each")
    s.add_argument("--context-guidance", type=float,
                   help="coherence: context guidance of the samples (default: the sampler's, as for sample)")
    s.add_argument("--region-bars", type=int, choices=range(BARS_PER_CHUNK, MIN_BARS // 2 + 1, BARS_PER_CHUNK),
                   help="fidelity: regenerate the middle N bars of each piece (default: its middle half)")
    s.add_argument("--mdn", type=lambda v: None if v == "none" else Path(v), default=DEFAULT_MDN,
                   help="TransformerMDN checkpoint, or none (default: %(default)s)")
    s.add_argument("--data", type=Path, default=DEFAULT_PATH)
    s.add_argument("--cache", type=Path, default=CACHE, help="where encoded reference windows are kept")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--figure-points", type=int, default=12, help="refinement steps measured for Figure 3 (0 = none)")
    s.add_argument("--out", type=Path, default=Path("runs/eval"),
                   help="results folder (the committed results: --out eval)")
    generation_args(s)
    s.set_defaults(func=cmd_evaluate, sampler=None)  # ddpm for the paper's tasks, else DEFAULT_SAMPLER

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="model", required=True)
    s = train.add_parser("vae", help="train the 2-bar melody MusicVAE (resumes from OUT/last)")
    s.add_argument("--config", default="cat-mel_2bar_small")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    s.add_argument("--out", type=Path, default=Path("runs/vae-small"))
    s.add_argument("--data", type=Path, default=DEFAULT_PATH)
    s.add_argument("--max-steps", type=int, default=100_000)
    s.add_argument("--minutes", type=float, help="stop (and save) after this much wall time")
    s.add_argument("--eval-every", type=int, default=500)
    s.add_argument("--save-minutes", type=float, default=5.0)
    s.add_argument("--seed", type=int, default=0)
    precision_arg(s)
    s.add_argument("--init-from", type=Path, help="start from a shipped checkpoint and its step count")
    s.set_defaults(func=cmd_train_vae)

    for model, help_, presets in (
        ("diffusion", "train the TransformerDDPM on the VAE's latents", DIFFUSION_PRESETS),
        ("mdn", "train the TransformerMDN baseline on the VAE's latents", MDN_PRESETS),
    ):
        s = train.add_parser(model, help=help_ + " (resumes from OUT/last)")
        s.add_argument("--config", default="cpu", help="; ".join(f"{name}: {what}" for name, what in presets.items()))
        s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
        s.add_argument("--vae", type=Path, default=DEFAULT_VAE,
                       help="the MusicVAE checkpoint whose latents to model")
        s.add_argument("--out", type=Path, default=Path(f"runs/{model}-cpu"))
        s.add_argument("--data", type=Path, default=DEFAULT_PATH)
        s.add_argument("--latents", type=Path, help="latent cache folder (default: DATA's folder/cache/latents)")
        s.add_argument("--transpositions", type=int, default=4,
                       help="versions of each training line (1 = untransposed only)")
        s.add_argument("--posterior", choices=("sample", "mean"), default="sample",
                       help="train on sampled z (the paper) or on the posterior mean mu")
        s.add_argument("--silence", choices=("token", "flag", "drop"), default="token",
                       help="silent chunks as a silence latent (default), as a silence dim of its own (flag), "
                            "or drop windows holding one (the paper)")
        s.add_argument("--max-steps", type=int, help="default: the config's max_steps")
        s.add_argument("--minutes", type=float, help="stop (and save) after this much wall time")
        s.add_argument("--eval-every", type=int, default=1000)
        s.add_argument("--eval-windows", type=int, default=2048, help="valid windows in the held-out loss")
        s.add_argument("--save-minutes", type=float, default=5.0)
        s.add_argument("--log-every", type=int, default=50)
        s.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0 = off, as the paper)")
        s.add_argument("--bucket", action="store_true", help="batch windows of similar length (less padding)")
        s.add_argument("--standardize", action="store_true",
                       help="model space centred per dim with one global std (else the paper's [-1, 1])")
        s.add_argument("--init-from", type=Path,
                       help="start a new run from this checkpoint's weights (new weights, e.g. style labels, start "
                            "at their initial values; steps and learning rate start at 0)")
        s.add_argument("--style-balance", type=float, default=0.0,
                       help="0 draws windows as the corpus has them, 1 gives each style an equal share "
                            "(a config with style labels)")
        s.add_argument("--balance-scope", default="all",
                       help="the windows --style-balance draws: all, or only those with known music (a "
                            "conditional config; new melodies keep the corpus' mix)")
        s.add_argument("--seed", type=int, default=0)
        if model == "diffusion":
            s.add_argument("--teacher", type=Path,
                           help="distil this checkpoint's guidance into a student of a guided config "
                                "(--set guided=true; start it with --init-from the teacher)")
        precision_arg(s)
        s.set_defaults(func=cmd_train_latent)

    s = sub.add_parser("import-magenta", help="convert a Magenta MusicVAE TF checkpoint to our format")
    s.add_argument("checkpoint", help="checkpoint prefix (model.ckpt-N), its folder, or a .ckpt.tar bundle")
    s.add_argument("--config", default="cat-mel_2bar_big", help="Magenta config the checkpoint was trained with")
    s.add_argument("--out", type=Path, required=True, help="folder for model.safetensors + config.json")
    s.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                   help="skip checkpoint variables matching REGEX (optimizer slots are always skipped)")
    s.set_defaults(func=cmd_import_magenta)
    return p


def main(argv: list[str] | None = None) -> int:
    # The library reports through `logging` (symdiff.*); the command shows its warnings as
    # one-line messages. No warning is switched off here: the library scopes its own.
    logging.basicConfig(format="symdiff: %(message)s", level=logging.WARNING)
    logging.getLogger("symdiff").setLevel(logging.INFO)

    args = build_parser().parse_args(argv)
    if args.func not in (cmd_inspect, cmd_data_build, cmd_data_merge, cmd_data_stats):  # these run no torch
        from .precision import choose_threads, limit_threads

        limit_threads()  # never more compute threads than this process' cores
        if args.func in (cmd_reconstruct, cmd_sample, cmd_infill, cmd_vary, cmd_evaluate):
            choose_threads()  # only the cores idle now: a busy one stalls every thread (precision module doc)
    if getattr(args, "workers", 0) is None:
        import os

        args.workers = os.cpu_count() or 1
    try:
        args.func(args)
    except (SymdiffError, FileNotFoundError) as e:
        print(f"symdiff: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
