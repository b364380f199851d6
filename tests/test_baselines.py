"""The paper's baselines: TransformerMDN (NLL, causality, storage, sampling, `train mdn`),
slerp interpolation and the N(0, I) prior."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from symdiff.atomic import CheckpointError
from symdiff.baselines import (
    MDN_CONFIGS,
    PAPER_INFILL_MASK,
    MDNConfig,
    Mixture,
    TransformerMDN,
    interpolate_infill,
    mdn_loss,
    mixture_log_prob,
    prior_latents,
    shift_right,
    slerp,
)
from symdiff.cli import main
from symdiff.codec import FLAG_SILENT, SILENCE_VALUE, CodecConfig, LatentCodec, LatentScaler
from symdiff.data import latents as L
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.precision import autocast, resolve_precision
from symdiff.train.mdn import PRESETS as MDN_PRESETS
from symdiff.vae import MusicVAE, VAEConfig, vae_hash

torch.set_num_threads(1)

SMALL = replace(MDN_CONFIGS["cpu"], data_dim=12, width=32, layers=2, heads=4, mlp=64, dense=64, mixtures=5)


@pytest.fixture(scope="module")
def small_model() -> TransformerMDN:
    torch.manual_seed(0)
    return TransformerMDN(SMALL).eval()


def test_paper_config_has_the_papers_size():
    model = TransformerMDN(MDN_CONFIGS["paper"])
    n = model.num_parameters()
    cpu = TransformerMDN(replace(MDN_CONFIGS["cpu"], data_dim=256)).num_parameters()
    print(f"paper config: {n:,} parameters at d = 42; cpu config: {cpu:,} at d = 256")
    assert abs(n - 38e6) < 0.1e6  # the paper: "about 38M"
    assert len(model.layers) == 6 and len(model.blocks) == 2 and model.config.mixtures == 100
    recipe = MDN_PRESETS["paper"][1]
    assert recipe.learning_rate == 3e-4 and recipe.batch_size == 128 and recipe.lr_decay_every == 4000


def _random_mixture(g: torch.Generator, shape=(3, 4), k=5, d=6, dtype=torch.float64) -> tuple[Mixture, torch.Tensor]:
    logits = torch.randn(*shape, k, generator=g, dtype=dtype)
    mu = torch.randn(*shape, k, d, generator=g, dtype=dtype)
    log_sigma = 0.5 * torch.randn(*shape, k, d, generator=g, dtype=dtype) - 0.3
    x = mu[..., 0, :] + 0.7 * torch.randn(*shape, d, generator=g, dtype=dtype)  # near one component
    return Mixture(logits, mu, log_sigma), x


def _reference(mix: Mixture, x: torch.Tensor, lo=-math.inf, hi=math.inf) -> torch.Tensor:
    sigma = mix.log_sigma.clamp(lo, hi).exp()
    dist = MixtureSameFamily(Categorical(logits=mix.logits), Independent(Normal(mix.mu, sigma), 1))
    return dist.log_prob(x)


def test_nll_is_the_mixture_log_likelihood():
    """Values and gradients against torch.distributions.MixtureSameFamily, also with log-sigma
    beyond the clamp (no gradient there) and in float32."""
    g = torch.Generator().manual_seed(0)
    mix, x = _random_mixture(g)
    params = [t.clone().requires_grad_() for t in mix[:3]]
    ours = mixture_log_prob(Mixture(*params), x)
    ref_params = [t.clone().requires_grad_() for t in mix[:3]]
    ref = _reference(Mixture(*ref_params), x)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(params, ref_params, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)

    # clamped log-sigma: the value of the clamped mixture, zero gradient where clamped
    lo, hi = -0.6, 0.2
    params = [t.clone().requires_grad_() for t in mix[:3]]
    ours = mixture_log_prob(Mixture(*params, bounds=(lo, hi)), x)
    ref_params = [t.clone().requires_grad_() for t in mix[:3]]
    ref = _reference(Mixture(*ref_params), x, lo, hi)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    ours.sum().backward()
    ref.sum().backward()
    outside = (mix.log_sigma < lo) | (mix.log_sigma > hi)
    assert outside.any() and (~outside).any()
    assert torch.all(params[2].grad[outside] == 0)
    torch.testing.assert_close(params[2].grad, ref_params[2].grad, rtol=1e-9, atol=1e-10)

    # float32 (bf16 head outputs are computed in float32 the same way)
    mix32 = Mixture(*(t.float() for t in mix[:3]))
    torch.testing.assert_close(mixture_log_prob(mix32, x.float()), _reference(mix, x).float(), rtol=1e-4, atol=1e-3)


def test_loss_is_the_mean_over_real_positions():
    g = torch.Generator().manual_seed(1)
    mix, x = _random_mixture(g, dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    nll = -mixture_log_prob(mix, x)
    torch.testing.assert_close(mdn_loss(mix, x, mask), nll[mask].mean())
    torch.testing.assert_close(mdn_loss(mix, x), nll.mean())
    x2 = x.clone()
    x2[~mask] = 100.0
    torch.testing.assert_close(mdn_loss(mix, x2, mask), mdn_loss(mix, x, mask))


def test_causal_and_shifted(small_model):
    """The mixture at position i sees x_0..x_{i-1} only: changing x_j changes positions > j."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 10, 12, generator=g) * 2 - 1
    assert torch.equal(shift_right(x)[:, 0], torch.zeros(1, 12)) and torch.equal(shift_right(x)[:, 1:], x[:, :-1])
    with torch.no_grad():
        base = small_model(x)
        for j in (0, 4, 9):
            y = x.clone()
            y[0, j] += 1.0
            out = small_model(y)
            for a, b in zip(base[:3], out[:3], strict=True):
                torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], rtol=0, atol=0)
                if j < 9:
                    assert (a[:, j + 1] - b[:, j + 1]).abs().max() > 1e-4  # the next position sees it
    assert base.mu.shape == (1, 10, 5, 12) and base.log_sigma.shape == (1, 10, 5, 12)
    assert base.logits.shape == (1, 10, 5)


def test_right_padding_leaves_real_positions_untouched(small_model):
    g = torch.Generator().manual_seed(0)
    long, short = torch.randn(1, 16, 12, generator=g), torch.randn(1, 7, 12, generator=g)
    batch = torch.zeros(2, 16, 12)
    batch[0], batch[1, :7] = long[0], short[0]
    batch[1, 7:] = 50 * torch.randn(9, 12, generator=g)
    with torch.no_grad():
        out = small_model(batch)
        alone = small_model(short)
    for a, b in zip(out[:3], alone[:3], strict=True):
        torch.testing.assert_close(a[1, :7], b[0], atol=1e-5, rtol=1e-5)


def test_incremental_head_matches_the_full_forward(small_model):
    """Sampling runs the head on the newest position only: the same mixture as the full pass."""
    x = torch.rand(2, 9, 12, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        full = small_model(x)
        for i in (0, 3, 8):
            step = small_model._head(small_model._hidden(x[:, : i + 1], last_only=True))
            for a, b in zip(full[:3], step[:3], strict=True):
                torch.testing.assert_close(a[:, i], b[:, 0], atol=1e-5, rtol=1e-5)


def test_seeded_sampling_and_prompts(small_model):
    a = small_model.sample(4, 8, seed=3)
    assert a.shape == (4, 8, 12) and a.dtype == torch.float32 and a.abs().max() <= 1.0
    assert torch.equal(small_model.sample(4, 8, seed=3), a)
    assert not torch.equal(small_model.sample(4, 8, seed=4), a)
    assert small_model.sample(2, seed=0).shape == (2, SMALL.seq_len, 12)
    prompt = torch.rand(3, 12) * 2 - 1
    c = small_model.sample(4, 8, seed=3, prompt=prompt)
    assert torch.equal(c[:, :3], prompt.expand(4, 3, 12))
    assert not torch.equal(c[0, 3:], c[1, 3:])  # continuations differ per sample
    per_row = torch.rand(4, 2, 12) * 2 - 1
    assert torch.equal(small_model.sample(4, 5, seed=1, prompt=per_row)[:, :2], per_row)
    with pytest.raises(ValueError):
        small_model.sample(1, 2, prompt=torch.zeros(3, 12))


def test_sampling_follows_the_mixture():
    """One position, a model whose mixture is known: sample mean and spread match it."""
    torch.manual_seed(0)
    model = TransformerMDN(replace(SMALL, mixtures=2)).eval()
    with torch.no_grad():
        for p in (model.mu, model.log_sigma, model.logits):
            p.weight.zero_()
        model.mu.bias.copy_(torch.tensor([0.5] * 12 + [-0.5] * 12))
        model.log_sigma.bias.fill_(math.log(0.1))
        model.logits.bias.copy_(torch.tensor([math.log(3.0), 0.0]))  # weights 3/4, 1/4
    x = model.sample(4000, 1, seed=0)[:, 0]
    assert abs(x.mean().item() - (0.75 * 0.5 - 0.25 * 0.5)) < 0.02
    assert abs((x[:, 0] > 0).float().mean().item() - 0.75) < 0.03
    near = x[x[:, 0] > 0][:, 0]
    assert abs(near.std().item() - 0.1) < 0.01


def test_save_load_round_trip(tmp_path, small_model):
    scaler = LatentScaler(list(range(12)), z_size=16, min=-2.5, max=3.0)
    small_model.save_pretrained(tmp_path / "mdn", scaler=scaler)
    assert sorted(p.name for p in (tmp_path / "mdn").iterdir()) == [
        "config.json", "model.safetensors", "scaler.safetensors"]
    loaded = TransformerMDN.from_pretrained(tmp_path / "mdn")
    assert loaded.config == small_model.config and isinstance(loaded.config, MDNConfig) and not loaded.training
    saved = json.loads((tmp_path / "mdn" / "config.json").read_text())
    assert saved["kind"] == "mdn" and saved["model"]["mixtures"] == 5
    x = torch.randn(2, 7, 12)
    with torch.no_grad():
        for a, b in zip(loaded(x)[:3], small_model(x)[:3], strict=True):
            assert torch.equal(a, b)
    assert torch.equal(loaded.sample(2, 4, seed=0), small_model.sample(2, 4, seed=0))
    assert loaded.scaler is not None and (loaded.scaler.min, loaded.scaler.max, loaded.scaler.z_size) == (-2.5, 3.0, 16)
    assert set(load_file(str(tmp_path / "mdn" / "model.safetensors"))) == set(small_model.state_dict())
    with pytest.raises(CheckpointError):
        TransformerMDN.from_pretrained(tmp_path / "nothing")


def test_a_few_steps_fit_smooth_sequences():
    """The training precision this CPU gets (bf16 where native), padding mask, the paper's clip:
    NLL on held-out sequences drops."""
    torch.manual_seed(0)
    cfg = replace(SMALL, data_dim=8)
    model = TransformerMDN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def smooth(n):
        j = torch.arange(12).float()[None, :, None]
        f = 0.05 + 0.1 * torch.rand(n, 1, 8, generator=g)
        return 0.8 * torch.sin(2 * math.pi * f * j + 6.3 * torch.rand(n, 1, 8, generator=g))

    held = smooth(64)
    before = mdn_loss(model(held), held).item()
    for _ in range(60):
        x = smooth(32)
        mask = torch.arange(12)[None, :] < torch.randint(3, 13, (32, 1), generator=g)
        with autocast(resolve_precision("auto")):
            mix = model(x * mask[..., None])
        loss = mdn_loss(mix, x, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = mdn_loss(model(held), held).item()
    print(f"held-out NLL {before:.2f} -> {after:.2f} nats per latent")
    assert after < before - 5.0


# --- `symdiff train mdn` ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Real corpus lines (60 valid-split lines re-split among themselves) and a tiny random VAE."""
    root = tmp_path_factory.mktemp("train_mdn")
    v = Lines.load(DEFAULT_PATH).select("valid")
    lines = Lines(v.tokens[600:660], [dict(m) for m in v.meta[600:660]])
    for i, m in enumerate(lines.meta):
        m["split"] = "valid" if i % 6 == 0 else "train"
    lines.save(root / "corpus.npz")
    torch.manual_seed(0)
    MusicVAE(VAEConfig(enc_size=16, dec_sizes=(16,), z_size=8)).save_pretrained(root / "vae")
    return root


def run_cli(root, out, steps, *more) -> int:
    return main(
        ["train", "mdn", "--vae", str(root / "vae"), "--data", str(root / "corpus.npz"), "--out", str(out),
         "--set", "width=32", "layers=1", "heads=4", "mlp=64", "dense=64", "mixtures=4", "batch_size=16",
         "learning_rate=0.003", "--max-steps", str(steps), "--eval-every", "5", "--transpositions", "2",
         "--log-every", "1", *more])


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_lowers_the_nll_and_resumes(tiny_data, capsys):
    out = tiny_data / "run"
    run_cli(tiny_data, out, 20)
    assert "stopped at step 20" in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "scaler.safetensors", "optimizer.safetensors", "state.json"):
        assert (out / "last" / name).is_file(), name
    rows = read_log(out)
    evals = [r for r in rows if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 21))
    first, last_loss = rows[1]["loss"], rows[20]["loss"]
    print(f"training NLL {first:.2f} -> {last_loss:.2f}; "
          f"held-out {evals[0]['valid_nll']:.2f} -> {evals[-1]['valid_nll']:.2f}")
    assert last_loss < first and evals[-1]["valid_nll"] < evals[0]["valid_nll"]
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 20 and state["best"]["valid_nll"] == state["best_loss"]

    model = TransformerMDN.from_pretrained(out / "best")
    training, codec = model.sections["training"], LatentCodec.from_pretrained(out / "best").config
    ds = L.LatentDataset.load(training["latents"]["path"])
    assert model.config.data_dim == ds.dim == model.scaler.dim and model.config.mixtures == 4
    assert codec.vae_sha256 == vae_hash(tiny_data / "vae")
    assert codec.silence_rule == "token" and training["train_step"] == state["best"]["step"]
    x = model.sample(2, 6, seed=0)
    assert x.shape == (2, 6, ds.dim)

    # resume: continues from step 20 with its Adam moments
    before = load_file(str(out / "last" / "model.safetensors"))
    run_cli(tiny_data, out, 23)
    rows = read_log(out)
    assert [r["step"] for r in rows if r.get("event") == "start"] == [0, 20]
    assert [r["step"] for r in rows if "loss" in r][-3:] == [21, 22, 23]
    assert float(load_file(str(out / "last" / "optimizer.safetensors"))["0.step"]) == 23.0
    after = load_file(str(out / "last" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


# --- interpolation ------------------------------------------------------------------------------

def test_slerp_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    # equal norms: the midpoint keeps the norm and halves the angle
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    mid = slerp(a, b, 0.5)
    cos = lambda u, v: (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    omega = torch.arccos(cos(a, b))
    torch.testing.assert_close(mid.norm(dim=-1), a.norm(dim=-1))
    torch.testing.assert_close(torch.arccos(cos(a, mid)), omega / 2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.arccos(cos(mid, b)), omega / 2, atol=1e-4, rtol=1e-4)
    # per-row t, and the numpy formula (MusicVAE's _slerp)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    out = slerp(a, b, t).numpy()
    for i in range(5):
        p0, p1, tt = a[i].double().numpy(), b[i].double().numpy(), float(t[i])
        om = np.arccos(np.dot(p0 / np.linalg.norm(p0), p1 / np.linalg.norm(p1)))
        ref = np.sin((1 - tt) * om) / np.sin(om) * p0 + np.sin(tt * om) / np.sin(om) * p1
        np.testing.assert_allclose(out[i], ref, atol=1e-5)
    # parallel vectors: a straight line
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_interpolate_infill_the_papers_gap():
    g = torch.Generator().manual_seed(0)
    scaler = LatentScaler(list(range(10)), z_size=16, min=-3.0, max=3.5)
    x = scaler.transform(torch.randn(3, 32, 16, generator=g))
    out = interpolate_infill(x, PAPER_INFILL_MASK, scaler)
    keep = ~PAPER_INFILL_MASK
    assert torch.equal(out[:, keep], x[:, keep])  # real latents kept exactly
    z7, z24 = scaler.unscale(x[:, 7]), scaler.unscale(x[:, 24])
    for j in (8, 15, 23):
        want = scaler.scale(slerp(z7, z24, (j - 7) / 17))
        torch.testing.assert_close(out[:, j], want)
    # a single (k, d) sequence, and slerp in model space without a scaler
    torch.testing.assert_close(interpolate_infill(x[0], PAPER_INFILL_MASK, scaler), out[0])
    torch.testing.assert_close(interpolate_infill(x, PAPER_INFILL_MASK)[:, 12], slerp(x[:, 7], x[:, 24], 5 / 17))
    # the unconditional variant: only latents 0 and 31 known
    mask = torch.ones(32, dtype=torch.bool)
    mask[[0, 31]] = False
    ends = interpolate_infill(x, mask, scaler)
    middle = slerp(scaler.unscale(x[:, 0]), scaler.unscale(x[:, 31]), 16 / 31)
    torch.testing.assert_close(ends[:, 16], scaler.scale(middle))


def test_interpolate_infill_edges_and_silence():
    s = SILENCE_VALUE
    x = torch.rand(1, 8, 4, generator=torch.Generator().manual_seed(0)) * 0.8 - 0.4  # never read as silent
    # gaps at the start and the end repeat their one neighbour
    mask = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    out = interpolate_infill(x, mask)
    assert torch.equal(out[0, 0], x[0, 2]) and torch.equal(out[0, 1], x[0, 2])
    assert torch.equal(out[0, 5], x[0, 4]) and torch.equal(out[0, 7], x[0, 4])
    assert torch.equal(out[0, 2:5], x[0, 2:5])
    # a silent neighbour carries nothing to interpolate: the other side is repeated
    y = x.clone()
    y[0, 2] = s
    mask = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0], dtype=torch.bool)
    out = interpolate_infill(y, mask)
    assert torch.equal(out[0, 3], y[0, 5]) and torch.equal(out[0, 4], y[0, 5])
    # both neighbours silent: the gap stays silent
    y[0, 5] = s
    out = interpolate_infill(y, mask)
    assert torch.all(out[0, 3:5] == s) and torch.equal(out[0, 2], y[0, 2])
    # an explicit silent mask overrides the default rule
    out = interpolate_infill(x, mask, silent=torch.zeros(1, 8, dtype=torch.bool))
    torch.testing.assert_close(out[0, 3], slerp(x[0, 2], x[0, 5], 1 / 3))
    with pytest.raises(ValueError):
        interpolate_infill(x, torch.ones(8, dtype=torch.bool))


def test_interpolate_infill_with_a_silence_flag():
    """The flag rule's model space: the music dims are interpolated, the flag says which
    positions are silent, and a gap between silent neighbours stays silent."""
    config = CodecConfig(silence_rule="flag", silence_value=FLAG_SILENT, silence_threshold=0.0)
    music = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(0))
    silent = torch.tensor([[False, False, True, False, False, False, True, False]])
    x = config.join(music, silent)
    assert x.shape == (1, 8, 5) and config.is_silent(x).equal(silent)
    mask = torch.tensor([0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)  # neighbours 0 and 4
    out = interpolate_infill(x, mask, config=config)
    torch.testing.assert_close(out[0, 2, :4], slerp(music[0, 0], music[0, 4], 2 / 4))
    assert not config.is_silent(out[:, 1:4]).any() and torch.equal(out[0, ~mask], x[0, ~mask])
    mask = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0], dtype=torch.bool)
    ends = x.clone()
    ends[0, 5], ends[0, 7] = config.join(torch.zeros(4), torch.tensor(True)), config.join(torch.zeros(4),
                                                                                           torch.tensor(True))
    out = interpolate_infill(ends, mask, config=config)
    assert config.is_silent(out[0, 6]) and torch.equal(out[0, 6], ends[0, 5])
    p = prior_latents(3, 4, LatentScaler([0, 1, 2, 3], z_size=6, min=-3.0, max=3.0), seed=0, config=config)
    assert p.shape == (3, 4, 5) and (p[..., -1] == -FLAG_SILENT).all()


# --- prior --------------------------------------------------------------------------------------

def test_prior_latents_are_the_vae_prior_in_model_space():
    scaler = LatentScaler([1, 4, 5, 9, 12], z_size=16, min=-3.0, max=4.0)
    x = prior_latents(500, 32, scaler, seed=0)
    assert x.shape == (500, 32, 5) and x.dtype == torch.float32
    assert torch.equal(prior_latents(500, 32, scaler, seed=0), x)
    assert not torch.equal(prior_latents(500, 32, scaler, seed=1), x)
    z = scaler.unscale(x).reshape(-1, 5)
    assert z.mean(0).abs().max() < 0.03 and (z.std(0) - 1).abs().max() < 0.03
    assert abs(float(((z[:, 0] - z.mean()) ** 3).mean())) < 0.05  # symmetric
    assert abs(float(torch.corrcoef(z.T)[0, 1])) < 0.03  # independent dims
