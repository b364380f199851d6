"""Noise schedule, training noise and samplers of the paper's DDPM, kept apart from the model.

In the spirit of diffusers' models/schedulers split, a sampler never sees a network: it takes
any noise-prediction callable

    eps_fn(x_t: Tensor (B, k, d), noise_level: Tensor (B,)) -> Tensor (B, k, d)

where `noise_level` is sqrt(alpha_bar), the continuous conditioning the paper trains with
(WaveGrad-style). A trained `TransformerDDPM` is such a callable; so is the closed-form optimal
eps of Gaussian data, which the tests use to check the samplers against theory.

Timesteps are 1-indexed as in the paper (t = 1..N, alpha_bar_0 = 1); the arrays below are
0-indexed, so alpha_bar[t - 1] is the paper's alpha_bar_t. Coefficients are computed in float64
and applied as Python floats, so a chain is bit-for-bit repeatable on CPU for a given seed.

Samplers:
- `DDPMAncestral`: the paper's 1000-step ancestral sampler (clipped x0 prediction, posterior
  mean of q(x_{t-1} | x_t, x0_hat), variance beta_tilde floored at 1e-20, no noise at the end),
  optionally on a respaced subset of S timesteps (Nichol & Dhariwal 2021: betas recomputed from
  the subset's alpha_bar).
- `DDIM` (Song et al. 2021), eta configurable (0 = deterministic), with the same clipping.
- `DPMSolverPP` (Lu et al. 2022, DPM-Solver++(2M)): second-order multistep in x0 prediction,
  deterministic or, as `DPMSolverPP(sde=True)`, its stochastic variant, whose first-order step
  is exactly the ancestral one: the few-step samplers.
All do the paper's infilling (Algorithm 1) for any boolean mask over the chunk axis.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .checkpoint import ConfigIO
from .errors import SymdiffError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], object]  # what it returns is ignored


@dataclass(frozen=True)
class ScheduleConfig(ConfigIO):
    """The forward process a diffusion model was trained with: N steps, betas linear from
    beta_start to beta_end (paper sec. 3; the "schedule" section of its checkpoint)."""

    beta_start: float = 1e-6
    beta_end: float = 0.01
    num_steps: int = 1000

    def build(self) -> NoiseSchedule:
        """The schedule, built once per setting (the training loss asks every step)."""
        return _build(self.beta_start, self.beta_end, self.num_steps)


@functools.lru_cache(maxsize=8)
def _build(beta_start: float, beta_end: float, num_steps: int) -> NoiseSchedule:
    return NoiseSchedule(beta_start, beta_end, num_steps)


class NoiseSchedule:
    """The paper's linear schedule: betas = linspace(1e-6, 0.01, 1000), in float64."""

    def __init__(self, beta_start: float = 1e-6, beta_end: float = 0.01, num_steps: int = 1000):
        self.beta_start, self.beta_end, self.num_steps = beta_start, beta_end, num_steps
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)  # alpha_bar[t-1] = paper's alpha_bar_t
        # alpha_bar with the paper's alpha_bar_0 = 1 in front: alpha_bar_ext[t] = alpha_bar_t
        self.alpha_bar_ext = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        self.alpha_bar_prev = self.alpha_bar_ext[:-1]
        # beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t): the posterior variance
        self.posterior_variance = self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    def __repr__(self) -> str:
        return f"NoiseSchedule(beta_start={self.beta_start}, beta_end={self.beta_end}, num_steps={self.num_steps})"

    def noise_level(self, t: int) -> float:
        """sqrt(alpha_bar_t) for a 1-indexed t in 0..N (t = 0 is clean data)."""
        return math.sqrt(float(self.alpha_bar_ext[t]))

    @staticmethod
    def q_sample(x0: torch.Tensor, noise_level: torch.Tensor | float, eps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): sqrt(ab) x0 + sqrt(1 - ab) eps, with noise_level = sqrt(ab)."""
        a = torch.as_tensor(noise_level, dtype=torch.float64, device=x0.device)
        a = a.reshape(-1, *([1] * (x0.dim() - 1))) if a.dim() else a
        s = (1.0 - a * a).clamp_min(0.0).sqrt()
        return (a.to(x0.dtype) * x0 + s.to(x0.dtype) * eps).to(x0.dtype)

    def sample_noise_level(self, batch: int, generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
        """Continuous training level (WaveGrad; the official `diffusion_loss`):
        t ~ U{1..N}, alpha_bar ~ U(alpha_bar_{t-1}, alpha_bar_t) with alpha_bar_0 = 1;
        returns sqrt(alpha_bar), shape (batch,), float64 on `device`."""
        dev = generator.device if generator is not None else torch.device(device)
        t = torch.randint(1, self.num_steps + 1, (batch,), generator=generator, device=dev)
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64)
        ext = self.alpha_bar_ext.to(dev)
        hi, lo = ext[t - 1], ext[t]
        return (lo + u * (hi - lo)).sqrt().to(device)

    def training_noise(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> TrainingNoise:
        """(x_t, eps, sqrt(alpha_bar)) for a batch x0 (B, ...): the inputs and target of eq. 6."""
        level = self.sample_noise_level(x0.shape[0], generator, x0.device)
        dev = generator.device if generator is not None else x0.device
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32).to(x0.device, x0.dtype)
        x_t = self.q_sample(x0, level, eps)
        return TrainingNoise(x_t, eps, level.to(torch.float32))


@dataclass
class TrainingNoise:
    x_t: torch.Tensor
    eps: torch.Tensor
    noise_level: torch.Tensor  # sqrt(alpha_bar), (B,), float32


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor, mask: torch.Tensor | None = None,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean((eps - eps_pred)^2) in float32; with a (B, k) padding mask (True = real position)
    the mean runs over real positions only, so windows of any length weigh per latent. `weight`
    (B,) scales each example's squared error (v-prediction: 1 / alpha_bar)."""
    err = (eps.float() - eps_pred.float()).pow(2)
    if weight is not None:
        err = err * weight.to(err).reshape(-1, *([1] * (err.dim() - 1)))
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).unsqueeze(-1)
    return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)


class Noise:
    """A chain's randomness: its rows in groups, each group drawn from a generator of its own in
    a fixed order. Why: the requests batched into one chain (`MelodyDiffusion.generate_batch`)
    each get the noise they would get alone, so a seed gives the same melody however many other
    requests share its model calls."""

    def __init__(self, generators: Sequence[torch.Generator], rows: Sequence[int]):
        if len(generators) != len(rows) or any(n < 0 for n in rows):
            raise ValueError("Noise needs one generator per group of rows")
        self.generators, self.rows = list(generators), [int(n) for n in rows]

    @classmethod
    def from_seeds(cls, seeds: Sequence[int | None], rows: Sequence[int]) -> Noise:
        """One CPU generator per group (the same noise on every device); None: fresh entropy."""
        gens = []
        for seed in seeds:
            g = torch.Generator()
            if seed is None:
                g.seed()  # without touching torch's global generator
            else:
                g.manual_seed(int(seed))
            gens.append(g)
        return cls(gens, rows)

    def randn(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """N(0, I) of `shape` (B, ...): each group's rows from its generator, B the rows' sum."""
        if shape[0] != sum(self.rows):
            raise ValueError(f"noise for {shape[0]} rows asked of groups of {self.rows}")
        parts = [torch.randn((n, *shape[1:]), generator=g, device=g.device, dtype=torch.float32)
                 for g, n in zip(self.generators, self.rows, strict=True) if n]
        return torch.cat(parts).to(device, dtype)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x at the next (lower) noise level
    pred_original_sample: torch.Tensor  # clipped x0_hat predicted at this step


class Sampler:
    """Shared machinery: timesteps (full or respaced), the sampling loop, infilling, callbacks.

    `timesteps` is the descending list of 1-indexed t the chain visits; `alpha_bar[i]` and
    `alpha_bar_prev[i]` are the levels before and after step i (alpha_bar_prev = 1 at the last
    step). A subclass only writes `step`.
    """

    default_steps: int = 1000

    def __init__(self, schedule: NoiseSchedule | None = None, steps: int | Sequence[int] | None = None,
                 clip: float | None = 1.0, spacing: str = "linear"):
        self.schedule = schedule or NoiseSchedule()
        self.clip = clip
        self.spacing = spacing
        self.set_timesteps(steps if steps is not None else min(self.default_steps, self.schedule.num_steps))

    def set_timesteps(self, steps: int | Sequence[int], spacing: str | None = None) -> None:
        """S timesteps from N down to 1 (both ends kept), or an explicit list of t in 1..N.

        spacing "linear" (Nichol & Dhariwal's evenly spaced respacing, the default) or
        "quadratic" (t ~ i^2, DDIM's choice for CIFAR-10): denser at low noise, where data with a
        small spread (latents scaled to [-1, 1] have a per-dim std of ~0.2) gets its detail. With
        the exact eps of N(m, 0.2^2) data the sample std comes out, relative to 0.2: ancestral
        1000 steps 0.988; 50 steps 0.84 linear / 0.92 quadratic; DDIM 50 steps 0.92 / 0.96.
        "logsnr" (even steps in log(sqrt(ab / (1 - ab))), DPM-Solver's choice for few steps):
        DPM-Solver++(2M) 10 steps 1.04, 20 steps 1.02, where on linear spacing its second-order
        term overshoots (1.57 at 10 steps, 1.60 at 20: a long last step in lambda extrapolates
        from a short one).
        """
        n = self.schedule.num_steps
        spacing = spacing or self.spacing
        if isinstance(steps, int):
            if not 1 <= steps <= n:
                raise ValueError(f"steps must be in 1..{n}, got {steps}")
            u = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.ones(1, dtype=torch.float64)
            if spacing == "logsnr":
                ts = self._logsnr_steps(u)
            elif spacing in ("linear", "quadratic"):
                u = u * u if spacing == "quadratic" else u
                ts = (1 + u * (n - 1)).round().long().tolist()
            else:
                raise ValueError(f"unknown spacing {spacing!r}")
            for j in range(1, steps):  # keep S distinct steps where rounding collides
                ts[j] = max(ts[j], ts[j - 1] + 1)
            for j in range(steps - 2, -1, -1):
                ts[j] = min(ts[j], ts[j + 1] - 1)
        else:
            ts = sorted(int(t) for t in steps)
        if len(set(ts)) != len(ts) or ts[0] < 1 or ts[-1] > n:
            raise ValueError(f"timesteps must be distinct and in 1..{n}")
        ts = ts[::-1]  # descending: the chain goes from high noise to clean
        self.timesteps = ts
        ext = self.schedule.alpha_bar_ext
        prev = ts[1:] + [0]
        self.alpha_bar = [float(ext[t]) for t in ts]
        self.alpha_bar_prev = [float(ext[p]) for p in prev]
        # Respaced betas (Nichol & Dhariwal): beta'_t = 1 - ab_t / ab_prev. Where the subset is
        # contiguous (always, for the full schedule) the schedule's own beta is used, exactly.
        self.betas = [
            float(self.schedule.betas[t - 1]) if p == t - 1 else 1.0 - float(ext[t]) / float(ext[p])
            for t, p in zip(ts, prev, strict=True)
        ]

    def _logsnr_steps(self, u: torch.Tensor) -> list[int]:
        """Ascending t at evenly spaced log-SNR, lambda = log(sqrt(ab) / sqrt(1 - ab)), from
        lambda_1 (u = 0) to lambda_N (u = 1), each the t of nearest lambda."""
        ab = self.schedule.alpha_bar
        lam = 0.5 * (ab.log() - (-ab).log1p())  # decreasing in t
        target = lam[0] + u * (lam[-1] - lam[0])
        return [int((lam - v).abs().argmin()) + 1 for v in target]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def noise_levels(self, i: int, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The eps_fn conditioning at step i: sqrt(alpha_bar_t), shape (batch,), float32."""
        return torch.full((batch,), math.sqrt(self.alpha_bar[i]), dtype=torch.float32, device=device)

    def predict_x0(self, eps: torch.Tensor, i: int, x_t: torch.Tensor) -> torch.Tensor:
        """x0_hat = clip((x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), -1, 1)."""
        ab = self.alpha_bar[i]
        x0 = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        return x0.clamp(-self.clip, self.clip) if self.clip is not None else x0

    def step(self, eps: torch.Tensor, t_index: int, x_t: torch.Tensor,
             generator: torch.Generator | Noise | None = None) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        eps_fn: EpsFn,
        shape: Sequence[int],
        steps: int | Sequence[int] | None = None,
        generator: torch.Generator | Noise | None = None,
        seed: int | None = None,
        callback: Callback | None = None,
        mask: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Run the reverse chain from x_N ~ N(0, I) -> x_0 of `shape` (B, k, d).

        steps: S (or an explicit list of timesteps); None keeps the current ones.
        generator / seed: all randomness (start, step noise, infill noise) comes from one
            generator drawn in a fixed order, so a seed gives the same output bit for bit; the
            default generator is the CPU's, so a seed draws the same noise on every device. A
            `Noise` instead: a generator per group of rows (a batch of requests).
        callback(i, total, x_t, x0_hat): after every step i = 0..total-1, with the new sample
            (known positions already overwritten) and that step's clipped x0 prediction.
        mask, known: infilling (paper Algorithm 1). mask (k,) or (B, k) bool over the chunk
            axis, or (B, k, d) over single values, True = generate; known (B, k, d) holds the
            data at the False positions (its values at True positions are ignored). After each step
            the known positions are
            replaced by a forward-diffused copy of `known` at the step's new noise level, and
            by `known` itself at the end, so they come back exactly.
        init, strength: SDEdit (Meng et al. 2022): the chain starts at the step `start_index(strength)`
            from `init` (B, k, d) forward-diffused to that step's level, not from pure noise, and
            runs the chain's remaining steps; the callback then counts those steps alone.
        """
        if steps is not None:
            self.set_timesteps(steps)
        shape = tuple(shape)
        if generator is None:
            generator = Noise.from_seeds([seed], [shape[0]])
        elif isinstance(generator, torch.Generator):
            if seed is not None:
                generator.manual_seed(seed)
            generator = Noise([generator], [shape[0]])
        keep = None
        if mask is not None or known is not None:
            if mask is None or known is None:
                raise ValueError("infilling needs both mask and known")
            mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
            if mask.dim() == 1:
                mask = mask.unsqueeze(0)
            keep = ~mask if mask.dim() == len(shape) else \
                (~mask).reshape(mask.shape[0], mask.shape[1], *([1] * (len(shape) - 2)))
            keep = keep.expand(shape[0], *keep.shape[1:])
            known = torch.as_tensor(known, device=device).to(dtype).expand(shape)
        # Start from N(0, I), as Algorithm 1 says. BUG in the official code: its infilling chain
        # started from uniform [0, 1) noise (jax.random.uniform in sample_ncsn.infill_samples).
        x = self._randn(shape, generator, device, dtype)
        first, total = 0, self.num_steps
        if init is not None:
            first = self.start_index(strength)
            level = math.sqrt(self.alpha_bar[first])
            x = level * torch.as_tensor(init, device=device).to(dtype).expand(shape) + math.sqrt(1.0 - level**2) * x
        for i in range(first, total):
            eps = eps_fn(x, self.noise_levels(i, shape[0], device)).to(dtype)
            out = self.step(eps, i, x, generator)
            x = out.prev_sample
            if keep is not None and known is not None:  # infilling: both set above
                ab_prev = self.alpha_bar_prev[i]
                if i < total - 1:
                    # Diffuse the known data to the level x now sits at (alpha_bar_{t-1}). The
                    # paper's Algorithm 1 and the official code use alpha_bar_t here, one step
                    # behind the sample they overwrite; with 1000 steps the two barely differ,
                    # with a respaced chain only the new level matches x's marginal.
                    noise = self._randn(shape, generator, device, dtype)
                    y = math.sqrt(ab_prev) * known + math.sqrt(1.0 - ab_prev) * noise
                else:
                    y = known
                x = torch.where(keep, y, x)
            if callback is not None:
                callback(i - first, total - first, x, out.pred_original_sample)
        return x

    def steps_run(self, strength: float = 1.0) -> int:
        """How many steps a chain of `strength` runs (`start_index`; all of them at 1)."""
        return self.num_steps - self.start_index(strength)

    def start_index(self, strength: float) -> int:
        """The step an SDEdit chain of `strength` (0 < strength <= 1, the share of the schedule's
        N steps noised) starts at: the first of the chain's timesteps at or below strength * N, at
        least the last step (a chain of one step)."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be above 0 and at most 1, got {strength}")
        top = strength * self.schedule.num_steps
        return next((i for i, t in enumerate(self.timesteps) if t <= top), self.num_steps - 1)

    @staticmethod
    def _randn(shape, generator: torch.Generator | Noise, device, dtype) -> torch.Tensor:
        if isinstance(generator, Noise):
            return generator.randn(shape, device, dtype)
        return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device, dtype)


class DDPMAncestral(Sampler):
    """The paper's ancestral sampler (the official `diffusion_dynamics`), on N or S steps.

    x0_hat = clip((x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), -1, 1)
    x_{t-1} = beta_t sqrt(ab_{t-1}) / (1 - ab_t) x0_hat + (1 - ab_{t-1}) sqrt(alpha_t) / (1 - ab_t) x_t
              + sqrt(max(beta_tilde_t, 1e-20)) z,   z = 0 at the last step,
    with beta_t, alpha_t, ab_{t-1} those of the (respaced) chain.
    """

    default_steps = 1000

    def step(self, eps: torch.Tensor, t_index: int, x_t: torch.Tensor,
             generator: torch.Generator | Noise | None = None) -> StepOutput:
        i = t_index
        ab, ab_prev, beta = self.alpha_bar[i], self.alpha_bar_prev[i], self.betas[i]
        alpha = 1.0 - beta
        x0 = self.predict_x0(eps, i, x_t)
        c0 = beta * math.sqrt(ab_prev) / (1.0 - ab)
        ct = (1.0 - ab_prev) * math.sqrt(alpha) / (1.0 - ab)
        mean = c0 * x0 + ct * x_t
        if i == self.num_steps - 1:
            return StepOutput(mean, x0)
        var = max(beta * (1.0 - ab_prev) / (1.0 - ab), 1e-20)
        z = self._randn(x_t.shape, generator, x_t.device, x_t.dtype) if generator is not None \
            else torch.randn_like(x_t)
        return StepOutput(mean + math.sqrt(var) * z, x0)


class DDIM(Sampler):
    """DDIM (Song et al. 2021) with the same x0 clipping; eta = 0 is deterministic, eta = 1
    matches the ancestral sampler's mean and variance.

    As in Nichol & Dhariwal's `ddim_sample`, eps is re-derived from the clipped x0_hat, so the
    step stays on the line between x0_hat and x_t:
    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps' + sigma z,
    sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev).
    """

    default_steps = 50

    def __init__(self, schedule: NoiseSchedule | None = None, steps: int | Sequence[int] | None = None,
                 clip: float | None = 1.0, spacing: str = "linear", eta: float = 0.0):
        self.eta = eta
        super().__init__(schedule, steps, clip, spacing)

    def step(self, eps: torch.Tensor, t_index: int, x_t: torch.Tensor,
             generator: torch.Generator | Noise | None = None) -> StepOutput:
        i = t_index
        ab, ab_prev = self.alpha_bar[i], self.alpha_bar_prev[i]
        x0 = self.predict_x0(eps, i, x_t)
        eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        sigma = self.eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma * sigma, 0.0)) * eps
        if sigma > 0.0 and i < self.num_steps - 1:
            z = self._randn(x_t.shape, generator, x_t.device, x_t.dtype) if generator is not None \
                else torch.randn_like(x_t)
            prev = prev + sigma * z
        return StepOutput(prev, x0)


class DPMSolverPP(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022), on the clipped x0 prediction D of each step.

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma) and h the step in
    lambda from s to t, the first-order step is DDIM's
        x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^-h) D_s,
    the second-order one replaces D_s by D_s + (D_s - D_prev) / (2 r), r = h_prev / h, the
    previous step's x0 estimate extrapolated along lambda (the "midpoint" form). With `sde`
    (SDE-DPM-Solver++), x_t = sigma_t / sigma_s e^-h x_s + alpha_t (1 - e^-2h) D
    + sigma_t sqrt(1 - e^-2h) z, whose first-order form is exactly the ancestral step: fresh
    noise every step, as DDPM, which the deterministic chain lacks (DDIM 50 overshot silence).
    The first step has no previous estimate and the last, to alpha_bar = 1 where lambda is
    infinite, returns D: both are first order. The step keeps the previous D, so a chain's
    steps must run in order (`sample` does).
    """

    default_steps = 20

    def __init__(self, schedule: NoiseSchedule | None = None, steps: int | Sequence[int] | None = None,
                 clip: float | None = 1.0, spacing: str = "logsnr", sde: bool = False):
        self.sde = sde
        self._prev: tuple[int, torch.Tensor] | None = None  # (step index, its x0 estimate)
        super().__init__(schedule, steps, clip, spacing)

    def _lambda(self, ab: float) -> float:
        return 0.5 * math.log(ab / (1.0 - ab))

    def step(self, eps: torch.Tensor, t_index: int, x_t: torch.Tensor,
             generator: torch.Generator | Noise | None = None) -> StepOutput:
        i = t_index
        ab, ab_prev = self.alpha_bar[i], self.alpha_bar_prev[i]
        x0 = self.predict_x0(eps, i, x_t)
        prev, self._prev = self._prev, (i, x0)
        if i == self.num_steps - 1:  # to alpha_bar = 1: sigma_t = 0, e^-h = 0
            return StepOutput(x0, x0)
        lam_s, lam_t = self._lambda(ab), self._lambda(ab_prev)
        h = lam_t - lam_s
        d = x0
        if prev is not None and prev[0] == i - 1:
            r = (lam_s - self._lambda(self.alpha_bar[i - 1])) / h
            d = x0 + (x0 - prev[1]) / (2.0 * r)
        alpha_t, sigma_t, sigma_s = math.sqrt(ab_prev), math.sqrt(1.0 - ab_prev), math.sqrt(1.0 - ab)
        if not self.sde:
            return StepOutput(sigma_t / sigma_s * x_t + alpha_t * -math.expm1(-h) * d, x0)
        z = self._randn(x_t.shape, generator, x_t.device, x_t.dtype) if generator is not None \
            else torch.randn_like(x_t)
        e2 = -math.expm1(-2.0 * h)  # 1 - e^-2h
        prev_sample = sigma_t / sigma_s * math.exp(-h) * x_t + alpha_t * e2 * d + sigma_t * math.sqrt(e2) * z
        return StepOutput(prev_sample, x0)


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "ddpm": DDPMAncestral,
    "ddim": DDIM,
    "dpmpp": DPMSolverPP,
    "dpmpp-sde": functools.partial(DPMSolverPP, sde=True),
}


class SamplerError(SymdiffError):
    """Sampler settings that cannot run (unknown name, steps outside 1..N); the message is for the user."""


def make_sampler(name: str, schedule: NoiseSchedule, steps: int | Sequence[int] | None, *,
                 clip: float | None) -> Sampler:
    """The one place sampler settings are checked: a name of `SAMPLERS`, and `steps` a count in
    1..N or a list of distinct timesteps in 1..N (None: the sampler's default, at most N).
    `clip` has no default: it is the x0 clip of the model's space (`CodecConfig.clip`), and a
    default of 1 clamped the standardized space (std 1, values up to 10.8) to [-1, 1], so a
    reverse run of the Learn tab ended further from its melody than its noisy start (issue 27)."""
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    n = schedule.num_steps
    if isinstance(steps, int) and not 1 <= steps <= n:
        raise SamplerError(f"steps must be between 1 and {n}, got {steps}")
    if steps is not None and not isinstance(steps, int) and not all(1 <= int(t) <= n for t in steps):
        raise SamplerError(f"timesteps must lie in 1..{n}")
    return SAMPLERS[name](schedule, steps, clip=clip)
