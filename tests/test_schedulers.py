"""Schedule, training noise and samplers, checked against theory and a hand-written loop.

The samplers are driven by the closed-form optimal eps of Gaussian data: for x0 ~ N(m, s^2 I)
(in model space), E[eps | x_t] = (x_t - sqrt(ab) m) sqrt(1 - ab) / (ab s^2 + 1 - ab). With it
every step is linear in x_t, so the exact std a chain produces can also be computed in closed
form, which separates sampler bugs from the discretisation error of few-step chains.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from symdiff.schedulers import (
    DDIM,
    SAMPLERS,
    DDPMAncestral,
    DPMSolverPP,
    Noise,
    NoiseSchedule,
    Sampler,
    diffusion_loss,
)

torch.set_num_threads(1)

M, S = 0.3, 0.2  # data N(M, S^2): about what latents scaled to [-1, 1] look like per dim
SHAPE = (1000, 8, 8)


def gaussian_eps(m: float = M, s: float = S):
    def eps_fn(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        ab = level.double().pow(2).reshape(-1, *([1] * (x.dim() - 1)))
        return ((x.double() - ab.sqrt() * m) * (1 - ab).sqrt() / (ab * s * s + 1 - ab)).float()

    return eps_fn


def chain_std(sampler: Sampler, s: float = S) -> float:
    """Exact output std of a sampler's chain for N(m, s^2) data with the optimal eps (no clipping
    matters at these values), started from N(0, 1)."""
    var = 1.0
    last = sampler.num_steps - 1
    for i in range(sampler.num_steps):
        ab, abp = sampler.alpha_bar[i], sampler.alpha_bar_prev[i]
        k0 = math.sqrt(ab) * s * s / (ab * s * s + 1 - ab)  # d x0_hat / d x_t
        if isinstance(sampler, DDIM):
            sig = sampler.eta * math.sqrt((1 - abp) / (1 - ab) * (1 - ab / abp))
            a = math.sqrt(abp) * k0 + math.sqrt(1 - abp - sig * sig) * (1 - math.sqrt(ab) * k0) / math.sqrt(1 - ab)
            v = sig * sig if i < last else 0.0
        else:
            beta = sampler.betas[i]
            a = beta * math.sqrt(abp) / (1 - ab) * k0 + (1 - abp) * math.sqrt(1 - beta) / (1 - ab)
            v = max(beta * (1 - abp) / (1 - ab), 1e-20) if i < last else 0.0
        var = a * a * var + v
    return math.sqrt(var)


def dpmpp_chain_std(sampler: DPMSolverPP, s: float = S) -> float:
    """The same for DPM-Solver++(2M): x_{i+1} = a x_i + b x_{i-1} + const + n z is linear in the
    last two states, so their 2x2 covariance is carried along the chain."""
    cov = np.array([[1.0, 0.0], [0.0, 0.0]])  # (x_i, x_{i-1}); x_{-1} unused
    k_prev, lam_prev = 0.0, None
    for i in range(sampler.num_steps):
        ab, abp = sampler.alpha_bar[i], sampler.alpha_bar_prev[i]
        k0 = math.sqrt(ab) * s * s / (ab * s * s + 1 - ab)
        lam_s = 0.5 * math.log(ab / (1 - ab))
        if i == sampler.num_steps - 1:
            return math.sqrt(k0 * k0 * cov[0, 0])
        h = 0.5 * math.log(abp / (1 - abp)) - lam_s
        c = math.sqrt(abp) * (1 - math.exp(-2 * h if sampler.sde else -h))
        a = math.sqrt((1 - abp) / (1 - ab)) * (math.exp(-h) if sampler.sde else 1.0)
        b = 0.0
        if lam_prev is not None:
            w = 1 / (2 * (lam_s - lam_prev) / h)
            a, b = a + c * (1 + w) * k0, -c * w * k_prev
        else:
            a = a + c * k0
        n2 = (1 - abp) * (1 - math.exp(-2 * h)) if sampler.sde else 0.0
        m = np.array([[a, b], [1.0, 0.0]])
        cov = m @ cov @ m.T + np.diag([n2, 0.0])
        k_prev, lam_prev = k0, lam_s
    raise AssertionError("unreachable")


# --- schedule -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_request_in_a_batch_draws_its_own_noise(name):
    """`Noise`: each group of rows draws from its own seed, so a chain's rows batched with others
    come out as that chain alone (closed-form eps: no model rounding in between)."""
    sched = NoiseSchedule()
    eps_fn = gaussian_eps()
    alone = [SAMPLERS[name](sched, 10).sample(eps_fn, (n, 4, 3), seed=seed) for n, seed in ((2, 1), (1, 9))]
    both = SAMPLERS[name](sched, 10).sample(eps_fn, (3, 4, 3), generator=Noise.from_seeds([1, 9], [2, 1]))
    assert torch.allclose(both, torch.cat(alone), atol=1e-6)
    with pytest.raises(ValueError, match="noise for 3 rows"):
        SAMPLERS[name](sched, 10).sample(eps_fn, (3, 4, 3), generator=Noise.from_seeds([1], [2]))


def test_schedule_numbers():
    sch = NoiseSchedule()
    assert sch.num_steps == 1000 and sch.betas.dtype == torch.float64
    assert sch.betas[0].item() == pytest.approx(1e-6, rel=1e-12)
    assert sch.betas[-1].item() == pytest.approx(0.01, rel=1e-12)
    ab = sch.alpha_bar.numpy()
    assert np.all(np.diff(ab) < 0) and 0 < ab[-1] < ab[0] < 1
    ref = np.cumprod(1 - np.linspace(1e-6, 0.01, 1000))
    np.testing.assert_allclose(ab, ref, rtol=1e-12)
    assert ab[0] == pytest.approx(1 - 1e-6, abs=1e-15)  # alpha_bar_1
    # log alpha_bar_N = sum log(1 - beta) ~ -sum beta - sum beta^2 / 2 = -5.0005 - 0.0167:
    # alpha_bar_N = 0.00662, sqrt = 0.081, so x_N still holds 8% of the signal
    assert ab[-1] == pytest.approx(math.exp(-5.0005 - 0.0167), rel=2e-3)
    assert ab[-1] == pytest.approx(0.0066226, abs=1e-7)
    assert ab[499] == pytest.approx(float(np.prod(1 - np.linspace(1e-6, 0.01, 1000)[:500])), rel=1e-12)
    assert sch.alpha_bar_ext[0] == 1.0 and sch.noise_level(0) == 1.0
    assert sch.noise_level(1000) == pytest.approx(math.sqrt(ab[-1]))
    assert sch.posterior_variance[0] == 0.0  # beta_tilde_1 = 0: why the sampler floors it
    assert torch.all(sch.posterior_variance[1:] < sch.betas[1:])


def test_training_noise_level_distribution():
    """sqrt(alpha_bar) with t ~ U{1..N}, alpha_bar ~ U(ab_t, ab_{t-1}): the CDF of alpha_bar is
    the piecewise-linear interpolation of (ab_t, 1 - t/N); a KS test checks the draws."""
    sch = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    level = sch.sample_noise_level(100_000, g)
    ab = (level**2).numpy()
    assert ab.min() >= sch.alpha_bar[-1].item() and ab.max() <= 1.0
    xs = sch.alpha_bar_ext.numpy()[::-1]  # ascending: ab_N .. ab_0 = 1
    ps = np.linspace(0.0, 1.0, 1001)  # P(alpha_bar <= ab_t) = (N - t) / N
    cdf = lambda a: np.interp(a, xs, ps)
    assert stats.kstest(ab, cdf).pvalue > 1e-3
    # and the step index is uniform: as many levels below ab_500 as above
    assert abs((ab < sch.alpha_bar[499].item()).mean() - 0.5) < 0.01


def test_training_noise_is_the_forward_process():
    sch = NoiseSchedule()
    x0 = torch.rand(64, 32, 42, generator=torch.Generator().manual_seed(0)) * 2 - 1
    n = sch.training_noise(x0, torch.Generator().manual_seed(1))
    assert n.x_t.shape == x0.shape and n.eps.shape == x0.shape and n.noise_level.shape == (64,)
    # same draws in the same order: the level (float64), then eps
    g = torch.Generator().manual_seed(1)
    a = sch.sample_noise_level(64, g).reshape(-1, 1, 1)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(eps, n.eps) and torch.equal(a.float().flatten(), n.noise_level)
    expect = a * x0.double() + (1 - a * a).sqrt() * eps.double()
    torch.testing.assert_close(n.x_t.double(), expect, atol=1e-6, rtol=0)
    n2 = sch.training_noise(x0, torch.Generator().manual_seed(1))
    assert torch.equal(n.x_t, n2.x_t) and torch.equal(n.noise_level, n2.noise_level)


def test_loss_mask():
    eps = torch.zeros(2, 4, 3)
    pred = torch.ones(2, 4, 3)
    pred[:, 2:] = 10.0  # only at padded positions
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert diffusion_loss(pred, eps, mask).item() == pytest.approx(1.0)
    assert diffusion_loss(pred, eps).item() == pytest.approx((1 + 100) / 2)


# --- timesteps ----------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", ["linear", "quadratic", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 10, 50, 1000])
def test_respaced_timesteps(steps, spacing):
    smp = DDPMAncestral(steps=steps, spacing=spacing)
    ts = smp.timesteps
    assert len(ts) == steps and ts[0] == 1000 and (steps == 1 or ts[-1] == 1)
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    # the respaced betas rebuild the subset's alpha_bar exactly
    ab = np.cumprod([1 - b for b in smp.betas[::-1]])[::-1]
    np.testing.assert_allclose(ab, smp.alpha_bar, rtol=1e-10)
    assert smp.alpha_bar_prev[-1] == 1.0


def test_full_schedule_uses_the_schedule_betas_exactly():
    smp = DDPMAncestral()
    sch = smp.schedule
    assert smp.timesteps == list(range(1000, 0, -1))
    assert smp.betas == sch.betas.flip(0).tolist()


# --- samplers -----------------------------------------------------------------------------

def test_ancestral_matches_hand_written_paper_loop():
    """The paper's equations, written out plainly in float64 numpy coefficients, on the same
    seeded noise (x_N first, then one draw per step except the last)."""
    shape = (16, 5, 3)
    eps_fn = gaussian_eps()
    betas = np.linspace(1e-6, 0.01, 1000)
    alphas = 1 - betas
    ab = np.cumprod(alphas)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g)
    for t in range(1000, 0, -1):  # paper's 1-indexed t
        b, a, a_bar = betas[t - 1], alphas[t - 1], ab[t - 1]
        a_bar_prev = ab[t - 2] if t > 1 else 1.0
        eps = eps_fn(x, torch.full((shape[0],), math.sqrt(a_bar)))
        x0 = ((x - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)).clamp(-1, 1)
        mean = b * math.sqrt(a_bar_prev) / (1 - a_bar) * x0 + (1 - a_bar_prev) * math.sqrt(a) / (1 - a_bar) * x
        var = max(b * (1 - a_bar_prev) / (1 - a_bar), 1e-20)
        x = mean + math.sqrt(var) * torch.randn(shape, generator=g) if t > 1 else mean
    ours = DDPMAncestral().sample(eps_fn, shape, seed=7)
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_ddpm_1000_steps_recovers_gaussian_data():
    x = DDPMAncestral().sample(gaussian_eps(), SHAPE, seed=0)
    assert x.mean().item() == pytest.approx(M, abs=0.004)
    assert x.std().item() == pytest.approx(S, rel=0.03)
    assert x.std().item() == pytest.approx(chain_std(DDPMAncestral()), rel=0.015)


@pytest.mark.parametrize("make", [
    lambda: DDIM(steps=50),
    lambda: DDIM(steps=50, spacing="quadratic"),
    lambda: DDPMAncestral(steps=50),
    lambda: DDPMAncestral(steps=50, spacing="quadratic"),
    lambda: DDIM(steps=50, eta=0.5, spacing="quadratic"),
], ids=["ddim50", "ddim50q", "ddpm50", "ddpm50q", "ddim50q-eta0.5"])
def test_few_step_samplers_recover_gaussian_data(make):
    """Right mean; the std is exactly what the discrete chain gives (closed form), which for
    these short chains is up to ~20% below the data's: few steps under-disperse small-spread data."""
    smp = make()
    x = smp.sample(gaussian_eps(), SHAPE, seed=1)
    assert x.mean().item() == pytest.approx(M, abs=0.01)
    assert x.std().item() == pytest.approx(chain_std(smp), rel=0.015)
    assert x.std().item() == pytest.approx(S, rel=0.2)


@pytest.mark.parametrize("name,steps", [("dpmpp", 10), ("dpmpp", 20), ("dpmpp-sde", 10), ("dpmpp-sde", 20)])
def test_dpmpp_recovers_gaussian_data(name, steps):
    """DPM-Solver++(2M) with the optimal eps: right mean, the std its discrete chain gives in
    closed form (the second-order term included), and within 10% of the data's in 10 steps,
    where DDPM and DDIM need 50 for 20%."""
    smp = SAMPLERS[name](steps=steps)
    x = smp.sample(gaussian_eps(), SHAPE, seed=1)
    assert x.mean().item() == pytest.approx(M, abs=0.01)
    assert x.std().item() == pytest.approx(dpmpp_chain_std(smp), rel=0.015)
    assert x.std().item() == pytest.approx(S, rel=0.1)


def test_dpmpp_first_order_steps_are_ddim_and_ancestral():
    """Its first step (no previous estimate) is DDIM's deterministic step, and the SDE variant's
    is the ancestral step, noise draw included; later steps add the second-order term."""
    eps_fn = gaussian_eps()
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0))
    for ref, smp in ((DDIM(steps=15, spacing="logsnr"), DPMSolverPP(steps=15)),
                     (DDPMAncestral(steps=15, spacing="logsnr"), DPMSolverPP(steps=15, sde=True))):
        eps = eps_fn(x, smp.noise_levels(0, 4))
        a = ref.step(eps, 0, x, torch.Generator().manual_seed(1))
        b = smp.step(eps, 0, x, torch.Generator().manual_seed(1))
        torch.testing.assert_close(b.prev_sample, a.prev_sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample)
        x1 = b.prev_sample
        eps1 = eps_fn(x1, smp.noise_levels(1, 4))
        a1 = ref.step(eps1, 1, x1, torch.Generator().manual_seed(2))
        b1 = smp.step(eps1, 1, x1, torch.Generator().manual_seed(2))
        assert not torch.allclose(b1.prev_sample, a1.prev_sample, atol=1e-4)


def test_dpmpp_last_step_returns_the_x0_estimate():
    smp = DPMSolverPP(steps=5, sde=True)
    x = torch.full((2, 3, 4), 5.0)
    out = smp.step(torch.zeros_like(x), 4, x, torch.Generator().manual_seed(0))
    assert out.pred_original_sample.max().item() == 1.0
    assert torch.equal(out.prev_sample, out.pred_original_sample)


def test_ddim_eta1_step_is_the_ancestral_step():
    eps_fn = gaussian_eps()
    a, d = DDPMAncestral(steps=30), DDIM(steps=30, eta=1.0)
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0))
    for i in (0, 7, 28, 29):
        eps = eps_fn(x, a.noise_levels(i, 4))
        sa = a.step(eps, i, x, torch.Generator().manual_seed(i))
        sd = d.step(eps, i, x, torch.Generator().manual_seed(i))
        torch.testing.assert_close(sa.prev_sample, sd.prev_sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sa.pred_original_sample, sd.pred_original_sample)


def test_x0_prediction_is_clipped():
    smp = DDPMAncestral()
    x = torch.full((2, 3, 4), 5.0)
    out = smp.step(torch.zeros_like(x), 999, x, torch.Generator().manual_seed(0))
    assert out.pred_original_sample.max().item() == 1.0
    assert torch.equal(out.prev_sample, out.pred_original_sample)  # last step: x0_hat, no noise


def test_chain_starts_from_standard_normal():
    """The official infilling chain started from uniform [0, 1) (BUG); ours is N(0, I)."""
    seen = []

    def eps_fn(x, level):
        if not seen:
            seen.append(x.clone())
        return torch.zeros_like(x)

    mask = torch.tensor([False, True, True, False])
    DDIM(steps=3).sample(eps_fn, (4000, 4, 8), seed=0, mask=mask, known=torch.zeros(4000, 4, 8))
    x = seen[0]
    assert x.mean().abs().item() < 0.02 and x.std().item() == pytest.approx(1.0, abs=0.02)
    assert (x < 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_seeds_repeat_bit_for_bit():
    eps_fn = gaussian_eps()
    mask = torch.tensor([True, False, True, True, False])
    known = torch.rand(3, 5, 4)
    for smp in (DDPMAncestral(steps=40), DDIM(steps=10, eta=0.3), DPMSolverPP(steps=10, sde=True)):
        a = smp.sample(eps_fn, (3, 5, 4), seed=11, mask=mask, known=known)
        b = smp.sample(eps_fn, (3, 5, 4), generator=torch.Generator().manual_seed(11), mask=mask, known=known)
        c = smp.sample(eps_fn, (3, 5, 4), seed=12, mask=mask, known=known)
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_callback_sees_every_step():
    calls = []
    final = DDIM(steps=25).sample(
        gaussian_eps(), (2, 4, 3), seed=0,
        callback=lambda i, total, x_t, x0: calls.append((i, total, x_t.clone(), x0.clone())),
    )
    assert [c[0] for c in calls] == list(range(25)) and {c[1] for c in calls} == {25}
    assert all(c[2].shape == (2, 4, 3) and c[3].shape == (2, 4, 3) for c in calls)
    assert torch.equal(calls[-1][2], final)
    # x0_hat converges to the result as the refinement proceeds
    errs = [(c[3] - final).abs().mean().item() for c in calls]
    assert errs[-1] < errs[len(errs) // 2] < errs[0]


@pytest.mark.parametrize("make", [lambda: DDPMAncestral(), lambda: DDIM(steps=50), lambda: DDPMAncestral(steps=20),
                                  lambda: DPMSolverPP(steps=20), lambda: DPMSolverPP(steps=15, sde=True)],
                         ids=["ddpm1000", "ddim50", "ddpm20", "dpmpp20", "dpmpp-sde15"])
def test_infilling_keeps_known_and_generates_the_rest(make):
    """Independent positions: known positions come back exactly, generated ones are N(M, S^2)
    up to the chain's own discretisation (closed form)."""
    smp = make()
    g = torch.Generator().manual_seed(3)
    known = M + S * torch.randn(SHAPE, generator=g)
    mask = torch.zeros(SHAPE[1], dtype=torch.bool)
    mask[2:6] = True
    seen = []
    x = smp.sample(gaussian_eps(), SHAPE, seed=4, mask=mask, known=known,
                   callback=lambda i, n, x_t, x0: seen.append(x_t[:, ~mask].clone()))
    assert torch.equal(x[:, ~mask], known[:, ~mask])
    gen = x[:, mask]
    assert gen.mean().item() == pytest.approx(M, abs=0.01)
    expect = dpmpp_chain_std(smp) if isinstance(smp, DPMSolverPP) else chain_std(smp)
    assert gen.std().item() == pytest.approx(expect, rel=0.02)
    # mid-chain the known positions hold a forward-diffused copy at the new level, not the data
    i = smp.num_steps // 2
    ab = smp.alpha_bar_prev[i]
    resid = seen[i] - math.sqrt(ab) * known[:, ~mask]
    assert resid.mean().abs().item() < 0.01 and resid.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.02)


def test_infilling_uses_the_context():
    """Correlated positions (AR(1) along the chunk axis, rho 0.9) with the exact Gaussian eps:
    the infilled latents follow the conditional mean given the known ends. Algorithm 1's
    replacement is an approximation (it under-conditions), so the checks are loose; a per-row
    mask (B, k) is used, half the rows infilling the middle, half the last positions."""
    k, d, B, m, s, rho = 8, 4, 2000, 0.2, 0.3, 0.9
    idx = torch.arange(k, dtype=torch.float64)
    sigma = s * s * rho ** (idx[:, None] - idx[None, :]).abs()

    def eps_fn(x, level):
        ab = float(level[0]) ** 2
        inv = torch.linalg.inv(ab * sigma + (1 - ab) * torch.eye(k, dtype=torch.float64))
        return (math.sqrt(1 - ab) * torch.einsum("ij,bjd->bid", inv, x.double() - math.sqrt(ab) * m)).float()

    g = torch.Generator().manual_seed(5)
    chol = torch.linalg.cholesky(sigma)
    known = (m + torch.einsum("ij,bjd->bid", chol, torch.randn(B, k, d, generator=g, dtype=torch.float64))).float()
    mask = torch.zeros(B, k, dtype=torch.bool)
    mask[: B // 2, 2:6] = True
    mask[B // 2 :, 5:] = True
    x = DDPMAncestral().sample(eps_fn, (B, k, d), seed=6, mask=mask, known=known)
    assert torch.equal(x[~mask], known[~mask])
    rows = slice(0, B // 2)
    gi, ki = torch.arange(2, 6), torch.tensor([0, 1, 6, 7])
    w = sigma[gi][:, ki] @ torch.linalg.inv(sigma[ki][:, ki])
    cmean = m + torch.einsum("ij,bjd->bid", w, known[rows][:, ki].double() - m)
    gen = x[rows][:, gi].double()
    corr = torch.corrcoef(torch.stack([gen.flatten(), cmean.flatten()]))[0, 1].item()
    assert corr > 0.6
    assert (gen - cmean).std().item() < 0.8 * s  # tighter than the marginal: the context is used
    assert (gen - cmean).mean().abs().item() < 0.01


# --- SDEdit: a chain started from a noised init ---------------------------------------------


def test_start_index_follows_the_strength():
    smp = DDPMAncestral(steps=200)
    assert smp.start_index(1.0) == 0
    assert smp.timesteps[smp.start_index(0.3)] <= 300 < smp.timesteps[smp.start_index(0.3) - 1]
    assert smp.start_index(1e-4) == smp.num_steps - 1  # below the lowest timestep: one step
    assert smp.steps_run() == 200 and smp.steps_run(1e-4) == 1 and smp.steps_run(0.3) == 200 - smp.start_index(0.3)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strength"):
            smp.start_index(bad)


@pytest.mark.parametrize("strength", [0.1, 0.3])
def test_sdedit_chain_keeps_what_theory_says_of_the_init(strength):
    """Data N(M, S^2), the exact eps, the full 1000-step ancestral chain started at t = strength N
    from a data point x0 noised there: the result x0' is drawn from p(x0 | x_t), so it is again
    N(M, S^2) and its correlation with x0 is Var(E[x0 | x_t]) / S^2 = ab S^2 / (ab S^2 + 1 - ab)."""
    smp = DDPMAncestral()
    init = M + S * torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    steps = []
    x = smp.sample(gaussian_eps(), SHAPE, seed=6, init=init, strength=strength,
                   callback=lambda i, n, x_t, x0: steps.append((i, n)))
    ab = smp.alpha_bar[smp.start_index(strength)]
    expect = ab * S * S / (ab * S * S + 1 - ab)
    corr = float(np.corrcoef(x.flatten().numpy(), init.flatten().numpy())[0, 1])
    assert corr == pytest.approx(expect, abs=0.01)
    assert x.mean().item() == pytest.approx(M, abs=0.01) and x.std().item() == pytest.approx(S, rel=0.02)
    left = smp.num_steps - smp.start_index(strength)  # the callback counts the steps run
    assert steps == [(i, left) for i in range(left)]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_starts_where_asked(name):
    """Each sampler: the lower the strength, the closer the result stays to its init; at strength
    1 nothing of the init is left beyond chance."""
    smp = SAMPLERS[name](steps=20)
    init = M + S * torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    dist = [(smp.sample(gaussian_eps(), SHAPE, seed=8, init=init, strength=s) - init).pow(2).mean().item()
            for s in (0.02, 0.1, 0.3, 1.0)]
    assert dist[0] < dist[1] < dist[2] < dist[3]
    assert dist[0] < 0.1 * S * S and dist[3] > 1.2 * S * S  # independent: S^2 + the chain's variance apart
