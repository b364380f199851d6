"""`symdiff train diffusion`: the TransformerDDPM on MusicVAE latents (the shared latent-model
training of `symdiff.train.latents` with the diffusion objective).

Objective (paper sec. 3, the official `diffusion_loss`): continuous noise level
sqrt(alpha_bar), alpha_bar ~ U(alpha_bar_{t-1}, alpha_bar_t), t ~ U{1..N};
loss = mean over real positions of (eps - eps_theta(x_t, sqrt(alpha_bar)))^2, divided by
alpha_bar per example for a v-predicting config (`DiffusionConfig.prediction`). A conditional
config also sees random known chunks and is scored on the unknown ones (`random_known`).
Adam by the `Recipe`, no EMA unless asked for, bf16 autocast with fp32 weights where the CPU is
fast at it.

A preset (`PRESETS`, the CLI's `--config`) is an architecture (`diffusion.CONFIGS`), a noise
schedule and a training recipe; `--set KEY=VALUE` changes any field of the three.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion import CONFIGS, DiffusionConfig, TransformerDDPM, guided_views
from ..options import CONTEXT_GUIDANCE, DEFAULT_GUIDANCE
from ..schedulers import NoiseSchedule, ScheduleConfig, TrainingNoise, diffusion_loss
from .latents import Objective, TrainLatentsError, train_on_latents
from .loop import Recipe, Runtime, unwrap

# Every preset trains with the paper's schedule and the official recipe.
PRESETS = {name: (arch, ScheduleConfig(), Recipe()) for name, arch in CONFIGS.items()}


# What a conditional model is trained on: nothing known (unconditional generation), one
# contiguous unknown span (infilling; a span that reaches an end is continuation or a new
# opening), or scattered unknown chunks.
KNOWN_MODES = {"none": 0.25, "span": 0.6, "scattered": 0.15}
# A model with style labels sees "any style" (label 0) on this share of its windows: the
# unconditional model that classifier-free guidance on the style pushes away from.
STYLE_DROP = 0.2


def random_known(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, k) bool, True = known, for a padded batch (`mask` True at real positions), drawn by
    `KNOWN_MODES`; every row keeps at least one real position unknown."""
    b, k = mask.shape
    dev = gen.device
    length = mask.to(dev).sum(1)
    mode = torch.rand(b, generator=gen, device=dev)
    u = torch.rand(b, 2, generator=gen, device=dev)
    start = (u[:, 0] * length).long()
    stop = start + 1 + (u[:, 1] * (length - start)).long()
    pos = torch.arange(k, device=dev)[None]
    span = (pos < start[:, None]) | (pos >= stop[:, None])
    scattered = torch.rand(b, k, generator=gen, device=dev) < 0.5
    p_none, p_span = KNOWN_MODES["none"], KNOWN_MODES["span"]
    keep = torch.where((mode < p_none + p_span)[:, None], span, scattered)
    keep = keep & (mode >= p_none)[:, None] & mask.to(dev)
    keep = keep & ~(keep == mask.to(dev)).all(1, keepdim=True)  # all known: make it unconditional
    return keep.to(mask.device)


@dataclass
class Draw:
    """What one training step draws for a padded batch: the noisy windows, the model's conditioning
    (known chunks, style labels) and the loss's per-window weight and scored positions."""

    noise: TrainingNoise
    cond: dict[str, torch.Tensor]
    scored: torch.Tensor  # (B, k) bool: real positions the loss is taken on
    weight: torch.Tensor | None  # (B,) or None


def draw_step(cfg: DiffusionConfig, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator,
              schedule: NoiseSchedule, style: torch.Tensor | None = None,
              corpus_weight: torch.Tensor | None = None) -> Draw:
    """Noise x0 at a continuous level; a conditional config sees random known chunks
    (`random_known`), clean, beside the noisy x_t, and is scored on the unknown ones only;
    `style` (a config with `styles`) dropped to 0 on `STYLE_DROP` of the windows. The weight is
    the config's (v-weighted for a v-predicting one), times `corpus_weight` (B,) on the windows
    with nothing known: the weights that bring windows drawn style-balanced back to the corpus'
    mix (importance weighting, `--balance-scope known`)."""
    noise = schedule.training_noise(x0, gen)  # on x0's device, whatever the generator's
    cond, scored = {}, mask
    if cfg.conditional:
        keep = random_known(mask, gen)
        cond, scored = {"known": x0, "keep": keep}, mask & ~keep
    if style is not None:
        drop = torch.rand(style.shape, generator=gen, device=gen.device) < STYLE_DROP
        cond["style"] = torch.where(drop.to(style.device), torch.zeros_like(style), style)
    weight = cfg.loss_weight(noise.noise_level)
    if corpus_weight is not None:
        nothing_known = ~cond["keep"].any(1)
        row = torch.where(nothing_known.to(corpus_weight.device), corpus_weight, torch.ones_like(corpus_weight))
        weight = row if weight is None else weight * row
    return Draw(noise, cond, scored, weight)


def diffusion_step_loss(net, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, rt: Runtime,
                        bf16: bool, schedule: NoiseSchedule, style: torch.Tensor | None = None,
                        corpus_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6 on a padded batch (`draw_step` draws the noise, the known chunks and the styles):
    predict eps, v-weighted for a v-predicting config."""
    model = unwrap(net)
    assert isinstance(model, TransformerDDPM)  # nn.Module types its attributes as Tensor | Module
    d = draw_step(model.config, x0, mask, gen, schedule, style, corpus_weight)
    with rt.autocast(bf16):
        pred = net(d.noise.x_t, d.noise.noise_level, mask, **d.cond)
    return diffusion_loss(pred, d.noise.eps, d.scored, d.weight)


# The guidance weights a student is distilled at (`distill_step_loss`), each drawn per window:
# the default's on half of them (where students are used), none on a quarter (the plain view, what
# hearing the style asks), and uniform in the range around them on the rest, so other weights
# asked for still mean what they meant.
DISTILL_WEIGHTS = {"default": 0.5, "none": 0.25}
DISTILL_RANGE = {"guidance": (1.0, 5.0), "context": (1.0, 4.0)}


def draw_guidance(default: float, span: tuple[float, float], guided: torch.Tensor,
                  gen: torch.Generator) -> torch.Tensor:
    """(B,) weights by `DISTILL_WEIGHTS` for the rows that are `guided` (B,) bool, 1 for the others."""
    dev = gen.device
    u = torch.rand(guided.shape[0], generator=gen, device=dev)
    spread = span[0] + (span[1] - span[0]) * torch.rand(guided.shape[0], generator=gen, device=dev)
    p_default, p_none = DISTILL_WEIGHTS["default"], DISTILL_WEIGHTS["none"]
    w = torch.where(u < p_default, torch.full_like(u, default),
                    torch.where(u < p_default + p_none, torch.ones_like(u), spread))
    return torch.where(guided.to(dev), w, torch.ones_like(w)).to(guided.device)


def distill_step_loss(net, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, rt: Runtime,
                      bf16: bool, schedule: NoiseSchedule, teacher: TransformerDDPM,
                      style: torch.Tensor | None = None, corpus_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Guidance distillation (Meng et al. 2023, its first stage): a `guided` student, given the
    weights, predicts in one row the eps its teacher mixes from its views (`guided_views`), at
    the noisy windows, known chunks and styles the teacher was trained on (`draw_step`), scored
    as the teacher was. The classifier-free weight goes to rows with something to weigh (known
    chunks or a style), the context weight to rows with nothing known, as
    `MelodyDiffusion.sample_latents` gives them."""
    student = unwrap(net)
    assert isinstance(student, TransformerDDPM)  # nn.Module types its attributes as Tensor | Module
    d = draw_step(student.config, x0, mask, gen, schedule, style, corpus_weight)
    nothing_known = ~d.cond["keep"].any(1)
    has_style = d.cond["style"] > 0 if style is not None else torch.zeros_like(nothing_known)
    w = draw_guidance(DEFAULT_GUIDANCE, DISTILL_RANGE["guidance"], ~nothing_known | has_style, gen)
    c = draw_guidance(CONTEXT_GUIDANCE, DISTILL_RANGE["context"], nothing_known, gen)
    x_t, level = d.noise.x_t, d.noise.noise_level
    with torch.no_grad(), rt.autocast(bf16):
        target = guided_views(teacher, x_t, level, w[:, None, None], c[:, None, None], mask=mask, **d.cond).float()
    with rt.autocast(bf16):
        pred = net(x_t, level, mask, guidance=torch.stack([w, c], dim=1), **d.cond)
    return diffusion_loss(pred, target, d.scored, d.weight)


def train_diffusion(cfg: DiffusionConfig, schedule: ScheduleConfig, recipe: Recipe, vae: Path, out: Path,
                    teacher: Path | None = None, **kwargs) -> dict:
    """Train a TransformerDDPM (`train_on_latents` takes the options); the schedule is stored with
    every checkpoint. With `teacher` (a checkpoint), distil it into a `guided` student of the
    same architecture (`distill_step_loss`; start it from the teacher's weights with `init_from`),
    on the teacher's own noise schedule."""
    if teacher is None:
        loss = functools.partial(diffusion_step_loss, schedule=schedule.build())
        objective = Objective(TransformerDDPM, loss, "valid_loss", "held-out loss {:.5f}", "train diffusion",
                              {"schedule": schedule})
        return train_on_latents(objective, cfg, recipe, vae, out, **kwargs)
    if not cfg.guided:
        raise TrainLatentsError("a student takes the guidance weights: distil into a config with guided=true "
                                "(--set guided=true)")
    net = TransformerDDPM.from_pretrained(teacher).eval().requires_grad_(False)
    schedule = ScheduleConfig.from_dict(net.sections.get("schedule", {}))
    loss = functools.partial(distill_step_loss, schedule=schedule.build(), teacher=net)
    objective = Objective(TransformerDDPM, loss, "valid_loss", "held-out distillation loss {:.5f}",
                          "distil diffusion", {"schedule": schedule, "teacher": {"path": str(teacher)}})
    return train_on_latents(objective, cfg, recipe, vae, out, **kwargs)
