"""TransformerDDPM and LatentScaler: size, shapes, encodings, masks, storage, a little training."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from symdiff.atomic import CheckpointError
from symdiff.checkpoint import load_tensors
from symdiff.codec import LatentScaler
from symdiff.diffusion import (
    CONFIGS,
    DiffusionConfig,
    TransformerDDPM,
    sinusoid,
)
from symdiff.precision import autocast, resolve_precision
from symdiff.schedulers import DDIM, ScheduleConfig, diffusion_loss
from symdiff.train.diffusion import PRESETS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cpu_model() -> TransformerDDPM:
    torch.manual_seed(0)
    return TransformerDDPM(CONFIGS["cpu"]).eval()


def test_paper_config_has_the_papers_size():
    model = TransformerDDPM(CONFIGS["paper"])
    n = model.num_parameters()
    print(f"paper config: {n:,} parameters; cpu config: {TransformerDDPM(CONFIGS['cpu']).num_parameters():,}")
    assert n == 25_579_946  # the paper: "25.58M trainable parameters"
    assert abs(n - 25.58e6) < 0.01e6
    by_part = {
        "trunk": sum(p.numel() for p in model.layers.parameters()),
        "res": sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.films.parameters()),
    }
    assert by_part["res"] > 0.8 * n  # most are in the 2048-wide dense layers
    assert len(model.layers) == 6 and len(model.blocks) == 2 and model.layers[0].attn.heads == 8


def test_cpu_config_is_the_same_code_smaller():
    cfg = CONFIGS["cpu"]
    assert (cfg.seq_len, cfg.heads, cfg.res_blocks) == (32, 8, 2)
    schedule, recipe = PRESETS["cpu"][1:]
    assert schedule.beta_start == 1e-6 and schedule.beta_end == 0.01 and schedule.num_steps == 1000
    assert recipe == PRESETS["paper"][2]
    assert TransformerDDPM(cfg).num_parameters() < 0.2 * TransformerDDPM(CONFIGS["paper"]).num_parameters()
    # wide enough for the shipped VAE's active dims (a narrower trunk cannot carry x_t through)
    shipped = json.loads((Path(__file__).parent.parent / "checkpoints/diffusion-cpu/config.json").read_text())
    assert cfg.width >= shipped["model"]["data_dim"] == 256


@pytest.mark.parametrize("k", [32, 7, 1])
def test_shapes_and_noise_level_forms(cpu_model, k):
    x = torch.randn(3, k, 42)
    level = torch.tensor([0.1, 0.5, 0.99])
    with torch.no_grad():
        eps = cpu_model(x, level)
        assert eps.shape == (3, k, 42) and eps.dtype == torch.float32 and torch.isfinite(eps).all()
        same = cpu_model(x, torch.full((3,), 0.5))
        torch.testing.assert_close(same, cpu_model(x, 0.5))  # a scalar level broadcasts
        torch.testing.assert_close(same[1], eps[1])
        assert not torch.allclose(eps[0], cpu_model(x, 0.5)[0])  # the level matters


def test_data_dim_follows_the_config():
    model = TransformerDDPM(replace(CONFIGS["cpu"], data_dim=17, layers=1))
    assert model(torch.randn(2, 5, 17), 0.3).shape == (2, 5, 17)


def test_sinusoids_match_the_paper():
    """Positions (eq. 8): w_k = 10^(-4k/63) j; noise: the same with 5000 sqrt(alpha_bar)."""
    j = np.arange(32, dtype=np.float64)
    w = 10.0 ** (-4.0 * np.arange(64) / 63.0)
    ref = np.concatenate([np.sin(j[:, None] * w), np.cos(j[:, None] * w)], axis=1)
    np.testing.assert_allclose(sinusoid(torch.arange(32), 128).numpy(), ref, atol=2e-5)
    level = torch.tensor([0.0812, 0.5, 0.9999995], dtype=torch.float32)
    arg = 5000.0 * level.double().numpy()[:, None] * w
    ref = np.concatenate([np.sin(arg), np.cos(arg)], axis=1)
    np.testing.assert_allclose(sinusoid(5000.0 * level, 128).numpy(), ref, atol=2e-3)  # float32 args up to 5000 rad


def test_attention_is_bidirectional(cpu_model):
    x = torch.randn(1, 10, 42)
    y = x.clone()
    y[0, -1] += 1.0
    with torch.no_grad():
        a, b = cpu_model(x, 0.7), cpu_model(y, 0.7)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4  # the first position sees the last one


def test_padding_leaves_real_positions_untouched(cpu_model):
    """Two windows of 32 and 13 chunks in one batch: each real output equals the model run on
    that window alone; whatever sits in the padding changes nothing; padded eps is zero."""
    g = torch.Generator().manual_seed(0)
    long, short = torch.randn(1, 32, 42, generator=g), torch.randn(1, 13, 42, generator=g)
    batch = torch.zeros(2, 32, 42)
    batch[0], batch[1, :13] = long[0], short[0]
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0], mask[1, :13] = True, True
    level = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out = cpu_model(batch, level, mask)
        torch.testing.assert_close(out[0], cpu_model(long, level[:1])[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1, :13], cpu_model(short, level[1:])[0], atol=1e-5, rtol=1e-5)
        assert torch.all(out[1, 13:] == 0)
        batch[1, 13:] = 100 * torch.randn(19, 42, generator=g)
        torch.testing.assert_close(cpu_model(batch, level, mask)[1, :13], out[1, :13], atol=1e-5, rtol=1e-5)


def test_alone_rows_are_their_chunks_as_pieces_of_their_own(cpu_model):
    """A row marked `alone` gives every chunk what the model gives it as a one-chunk piece (context
    guidance's weak view), beside an ordinary row in the same batch, padding mask and all."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 42, generator=g)
    level = torch.tensor([0.4, 0.9])
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        out = cpu_model(x, level, mask, alone=torch.tensor([False, True]))
        torch.testing.assert_close(out[0], cpu_model(x[:1], level[:1])[0], atol=1e-5, rtol=1e-5)
        one = cpu_model(x[1].unsqueeze(1), level[1].expand(7))[:, 0]
        torch.testing.assert_close(out[1, :5], one[:5], atol=1e-5, rtol=1e-5)
        assert torch.all(out[1, 5:] == 0)


def test_model_is_a_sampler_eps_fn(cpu_model):
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    x = DDIM(steps=4).sample(partial(cpu_model, mask=mask), (2, 6, 42), seed=0)
    assert x.shape == (2, 6, 42) and x.abs().max() <= 1.0 + 1e-6


def test_bf16_autocast_forward(cpu_model):
    x = torch.randn(4, 32, 42)
    with torch.no_grad():
        ref = cpu_model(x, 0.6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = cpu_model(x, 0.6, torch.ones(4, 32, dtype=torch.bool))
    assert out.shape == ref.shape
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_save_load_round_trip(tmp_path, cpu_model):
    scaler = LatentScaler([3, 7, 11], z_size=16, min=-2.5, max=3.0)
    extra = {"train_mean": torch.arange(4.0)}
    cpu_model.save_pretrained(tmp_path / "ckpt", {"schedule": ScheduleConfig()}, {"extra": extra}, scaler)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "extra.safetensors", "model.safetensors", "scaler.safetensors"]
    loaded = TransformerDDPM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == cpu_model.config and not loaded.training
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["format"] == 2 and saved["kind"] == "diffusion" and saved["model"]["name"] == "cpu"
    assert loaded.sections["schedule"] == ScheduleConfig().to_dict()
    x = torch.randn(2, 9, 42)
    with torch.no_grad():
        assert torch.equal(loaded(x, 0.4), cpu_model(x, 0.4))
    assert loaded.scaler is not None and torch.equal(loaded.scaler.dims, scaler.dims)
    assert (loaded.scaler.min, loaded.scaler.max, loaded.scaler.z_size) == (-2.5, 3.0, 16)
    assert torch.equal(load_tensors(tmp_path / "ckpt", "extra")["train_mean"], extra["train_mean"])
    assert set(load_file(str(tmp_path / "ckpt" / "model.safetensors"))) == set(cpu_model.state_dict())
    with pytest.raises(CheckpointError, match="no config.json"):
        TransformerDDPM.from_pretrained(tmp_path / "nothing")


def test_config_round_trip():
    cfg = replace(CONFIGS["paper"], data_dim=40)
    assert DiffusionConfig.from_dict(json.loads(cfg.to_json())) == cfg


# --- latent scaler ------------------------------------------------------------------------

def _vae_like(n=5000, z=64, seed=0):
    """z's and sigmas shaped like a VAE's: 10 informative dims, the rest collapsed to the prior."""
    rng = np.random.default_rng(seed)
    active = np.sort(rng.choice(z, 10, replace=False))
    sigma = np.full((n, z), 1.0) + 0.01 * rng.standard_normal((n, z))
    sigma[:, active] = rng.uniform(0.05, 0.5, (n, 10))
    mu = np.zeros((n, z))
    mu[:, active] = 2.0 * rng.standard_normal((n, 10)) + 0.5
    zs = mu + sigma * rng.standard_normal((n, z))
    return zs.astype(np.float32), sigma.astype(np.float32), active


def test_scaler_fit_transform_inverse():
    zs, sigma, active = _vae_like()
    sc = LatentScaler.fit(zs, sigma)
    assert sc.dims.tolist() == active.tolist() and sc.dim == 10 and sc.z_size == 64
    assert LatentScaler.active_dims(sigma.mean(0)).tolist() == active.tolist()  # averaged sigma too
    sliced = zs[:, active]
    assert (sc.min, sc.max) == (float(sliced.min()), float(sliced.max()))  # one global min and max
    x = sc.transform(torch.from_numpy(zs))
    assert x.shape == (5000, 10) and x.min().item() == pytest.approx(-1.0) and x.max().item() == pytest.approx(1.0)
    z = sc.inverse(x, seed=3)
    assert z.shape == (5000, 64)
    torch.testing.assert_close(z[:, sc.dims], torch.from_numpy(sliced), atol=1e-5, rtol=1e-5)
    unused = np.setdiff1d(np.arange(64), active)
    noise = z[:, unused]
    assert noise.mean().abs().item() < 0.02 and noise.std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(sc.inverse(x, seed=3), z) and not torch.equal(sc.inverse(x, seed=4), z)
    assert sc.inverse(x[:7].reshape(7, 1, 10), seed=0).shape == (7, 1, 64)  # any leading shape


def test_scaler_streams_and_stores(tmp_path):
    zs, sigma, _ = _vae_like(seed=1)
    whole = LatentScaler.fit(zs, sigma)
    streamed = LatentScaler.fit((zs[i : i + 777] for i in range(0, len(zs), 777)), sigma)
    assert torch.equal(whole.dims, streamed.dims) and (whole.min, whole.max) == (streamed.min, streamed.max)
    d = whole.to_dict()
    assert all(torch.is_tensor(v) for v in d.values())
    back = LatentScaler.from_dict(d)
    assert torch.equal(back.dims, whole.dims) and (back.min, back.max, back.z_size) == (whole.min, whole.max, 64)
    whole.save(tmp_path / "s.safetensors")
    x = torch.rand(5, 10) * 2 - 1
    torch.testing.assert_close(LatentScaler.load(tmp_path / "s.safetensors").unscale(x), whole.unscale(x))
    with pytest.raises(ValueError):
        LatentScaler.fit(zs, np.ones_like(sigma))  # everything collapsed


# --- training -----------------------------------------------------------------------------

def _smooth(n: int, k: int, d: int, g: torch.Generator) -> torch.Tensor:
    """Sequences of sinusoids along the chunk axis, random frequency/phase/amplitude per dim."""
    j = torch.arange(k).float()[None, :, None]
    f = 0.05 + 0.2 * torch.rand(n, 1, d, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, d, generator=g)
    amp = 0.3 + 0.5 * torch.rand(n, 1, d, generator=g)
    return amp * torch.sin(2 * math.pi * f * j + phase)


def test_v_prediction_returns_eps_and_its_loss_is_mse_of_v():
    """A v net's forward is eps = sqrt(ab) v + sqrt(1 - ab) x_t, so samplers need not know; its
    training loss (eps MSE weighted by 1 / ab) is the MSE of v against a eps - s x0."""
    cfg = replace(CONFIGS["cpu"], data_dim=42, layers=1)
    assert cfg.prediction == "v" and CONFIGS["paper"].prediction == "eps"
    model = TransformerDDPM(cfg).eval()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.fill_(0.25)  # the net says v = 0.25 everywhere
    g = torch.Generator().manual_seed(0)
    x0 = 2 * torch.rand(3, 5, 42, generator=g) - 1
    eps = torch.randn(3, 5, 42, generator=g)
    a = torch.tensor([0.08, 0.5, 0.99])
    x_t = ScheduleConfig().build().q_sample(x0, a, eps)
    with torch.no_grad():
        eps_pred = model(x_t, a)
    a3, s3 = a.reshape(3, 1, 1), (1 - a * a).sqrt().reshape(3, 1, 1)
    torch.testing.assert_close(eps_pred, a3 * 0.25 + s3 * x_t)
    v = a3 * eps - s3 * x0
    torch.testing.assert_close(diffusion_loss(eps_pred, eps, weight=cfg.loss_weight(a)), ((0.25 - v) ** 2).mean())
    assert cfg.loss_weight(a)[0] == pytest.approx(1 / 0.0064) and CONFIGS["paper"].loss_weight(a) is None


def test_prediction_is_checked_and_old_configs_are_eps():
    with pytest.raises(ValueError, match="prediction"):
        DiffusionConfig(prediction="x0")
    saved = json.loads(CONFIGS["cpu"].to_json())
    del saved["prediction"]  # a checkpoint written before the field existed
    assert DiffusionConfig.from_dict(saved).prediction == "eps"


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_a_few_training_steps_reduce_the_loss(prediction):
    """The cpu config, the training precision this CPU gets, the paper's objective (or v's) and clipping, 40 steps on
    smooth windows of variable length (padding mask): held-out eps MSE drops below predicting
    eps = 0 (1.0)."""
    torch.manual_seed(0)
    cfg = replace(CONFIGS["cpu"], prediction=prediction)
    model = TransformerDDPM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sch = ScheduleConfig().build()
    g = torch.Generator().manual_seed(0)
    k = 16
    held = sch.training_noise(_smooth(64, k, 42, g), torch.Generator().manual_seed(9))

    def held_loss() -> float:
        with torch.no_grad():
            return diffusion_loss(model(held.x_t, held.noise_level), held.eps).item()

    before = held_loss()
    for _ in range(40):
        n = sch.training_noise(_smooth(32, k, 42, g), g)
        mask = torch.arange(k)[None, :] < torch.randint(4, k + 1, (32, 1), generator=g)
        with autocast(resolve_precision("auto")):
            pred = model(n.x_t, n.noise_level, mask)
        loss = diffusion_loss(pred, n.eps, mask, cfg.loss_weight(n.noise_level))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = held_loss()
    print(f"held-out loss {before:.3f} -> {after:.3f}")
    assert after < 0.75 and after < 0.5 * before


# --- the conditional, noise-in-the-trunk config (beyond the paper) ---------------------------------

@pytest.fixture(scope="module")
def cond_model() -> TransformerDDPM:
    torch.manual_seed(0)
    model = TransformerDDPM(replace(CONFIGS["cpu-cond"], data_dim=24)).eval()
    for layer in model.layers:  # trained gates are not zero: open them so the trunk is exercised
        torch.nn.init.normal_(layer.modulation.weight, std=0.05)
    return model


def test_adaln_layers_start_as_the_identity():
    model = TransformerDDPM(replace(CONFIGS["cpu-cond"], data_dim=24))
    h = torch.randn(2, 5, model.config.width)
    cond = torch.randn(2, model.config.film)
    for layer in model.layers:
        assert torch.equal(layer(h, cond=cond), h)


def test_the_trunk_sees_the_noise_level_only_with_adaln(cond_model):
    x = torch.randn(2, 6, 24)
    with torch.no_grad():
        t = cond_model.noise_embed(sinusoid(5000 * torch.tensor([0.1, 0.1]), 128))
        u = cond_model.noise_embed(sinusoid(5000 * torch.tensor([0.9, 0.9]), 128))
        inp = torch.cat([x, torch.zeros_like(x), torch.zeros(2, 6, 1)], -1)
        assert not torch.allclose(cond_model.trunk(inp, cond=t), cond_model.trunk(inp, cond=u))
    paper = TransformerDDPM(replace(CONFIGS["cpu"], data_dim=24))
    assert all(layer.modulation is None for layer in paper.layers)


def test_conditional_model_reads_known_chunks_only_where_kept(cond_model):
    g = torch.Generator().manual_seed(0)
    x, known = torch.randn(2, 8, 24, generator=g), torch.randn(2, 8, 24, generator=g)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[:, :3] = True
    level = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        base = cond_model(x, level, known=known, keep=keep)
        other = known.clone()
        other[:, 5:] += 1.0  # changed where not kept: invisible
        assert torch.equal(cond_model(x, level, known=other, keep=keep), base)
        other[:, 1] += 1.0  # changed where kept: seen everywhere
        assert not torch.allclose(cond_model(x, level, known=other, keep=keep)[:, 6], base[:, 6])
        # nothing known is the same as no conditioning at all
        none = cond_model(x, level)
        assert torch.equal(cond_model(x, level, known=known, keep=torch.zeros(2, 8, dtype=torch.bool)), none)


def test_a_paper_model_refuses_known_chunks(cpu_model):
    with pytest.raises(ValueError, match="not trained to see known latents"):
        cpu_model(torch.randn(1, 4, 42), 0.5, known=torch.randn(1, 4, 42), keep=torch.ones(1, 4, dtype=torch.bool))


# --- the copy head (beyond the paper) ---------------------------------------------------------------

def x0_of(eps: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    a = level.view(-1, 1, 1)
    return (x - (1 - a * a).sqrt() * eps) / a


def set_gate(model: TransformerDDPM, logit: float) -> None:
    torch.nn.init.zeros_(model.copy_head.gate.weight)
    torch.nn.init.constant_(model.copy_head.gate.bias, logit)


def test_an_open_copy_gate_restates_the_known_chunk_where_noise_hides_the_music():
    torch.manual_seed(0)
    model = TransformerDDPM(replace(CONFIGS["cpu-copy"], data_dim=24)).eval()
    g = torch.Generator().manual_seed(0)
    x, known = torch.randn(2, 8, 24, generator=g), torch.randn(2, 8, 24, generator=g)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[:, 2] = True  # one known chunk: every pointer lands on it
    with torch.no_grad():
        closed = model(x, torch.tensor([0.01, 0.01]), known=known, keep=keep)
        set_gate(model, 30.0)
        for level, claim in ((0.01, 1.0), (0.6, 0.8)):  # the copy claims s = sqrt(1 - ab) of x0
            a = torch.tensor([level, level])
            x0 = x0_of(model(x, a, known=known, keep=keep), x, a)
            set_gate(model, -30.0)
            x0_net = x0_of(model(x, a, known=known, keep=keep), x, a)
            set_gate(model, 30.0)
            want = (1 - claim) * x0_net[:, 5] + claim * known[:, 2]
            assert torch.allclose(x0[:, 5], want, atol=1e-4 / level)
    assert not torch.allclose(x0_of(closed, x, torch.tensor([0.01, 0.01]))[:, 5], known[:, 2], atol=0.1)


def test_the_pointer_finds_the_restated_chunk_untrained():
    """The pointer's posterior over the known chunks comes from the exact likelihood of x_t: a
    chunk noised from known chunk 1 points at it, at noise where the music can be told apart."""
    torch.manual_seed(0)
    head = TransformerDDPM(replace(CONFIGS["cpu-copy"], data_dim=24)).copy_head
    g = torch.Generator().manual_seed(1)
    known = torch.randn(1, 6, 24, generator=g)
    keep = torch.tensor([[True, True, True, True, False, False]])
    a, s = torch.full((1, 1, 1), 0.7), torch.full((1, 1, 1), math.sqrt(1 - 0.49))
    x = a * torch.randn(1, 6, 24, generator=g) + s * torch.randn(1, 6, 24, generator=g)
    x[0, 5] = a[0, 0] * known[0, 1] + s[0, 0] * torch.randn(24, generator=g)
    with torch.no_grad():
        proposal, share = head(torch.randn(1, 6, 512, generator=g), x, known, keep, a, s)
    assert torch.allclose(proposal[0, 5], known[0, 1], atol=1e-3)
    assert share[0, 5] > share[0, 4]  # the fit of the best source opens the gate wider


def test_the_copy_head_is_silent_when_nothing_is_known():
    torch.manual_seed(0)
    model = TransformerDDPM(replace(CONFIGS["cpu-copy"], data_dim=24)).eval()
    x, level = torch.randn(2, 8, 24), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        closed = model(x, level)
        set_gate(model, 30.0)
        assert torch.equal(model(x, level), closed)


def test_a_guided_copy_reaches_as_far_as_the_teachers_guidance():
    """`guided_copy`: a guided student's copy share is scaled by its classifier-free weight w, as
    far as its teacher's guided copy reaches. With the guidance embedding at its start (zero) the
    net is the same at every w, so the step from w = 1 grows exactly as w - 1, at every chunk of
    a row that knows some and nowhere in a row that knows none; at w = 1 it is the plain student."""
    torch.manual_seed(0)
    plain_cfg = replace(CONFIGS["cpu-copy"], data_dim=24, guided=True)
    plain = TransformerDDPM(plain_cfg).eval()
    model = TransformerDDPM(replace(plain_cfg, guided_copy=True)).eval()
    model.load_state_dict(plain.state_dict())
    set_gate(model, 0.0)
    set_gate(plain, 0.0)
    g = torch.Generator().manual_seed(0)
    x, known = torch.randn(2, 8, 24, generator=g), torch.randn(2, 8, 24, generator=g)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[0, :3] = True  # the second row knows nothing: no copy there
    level = torch.tensor([0.4, 0.4])

    def eps(net: TransformerDDPM, w: float) -> torch.Tensor:
        return net(x, level, known=known, keep=keep, guidance=torch.tensor([[w, 1.0]] * 2))

    with torch.no_grad():
        torch.testing.assert_close(eps(model, 1.0), eps(plain, 1.0))
        step = {w: eps(model, w) - eps(model, 1.0) for w in (2.0, 3.0)}
    torch.testing.assert_close(step[3.0], 2 * step[2.0])
    assert step[2.0][0, 3:].abs().amax(-1).min() > 0
    assert step[2.0][1].abs().max() == 0.0
    with pytest.raises(ValueError, match="guided_copy"):
        replace(CONFIGS["cpu-copy"], guided_copy=True)


def test_the_copy_head_needs_a_conditional_v_config():
    with pytest.raises(ValueError, match="copy head"):
        replace(CONFIGS["cpu-copy"], conditional=False)
    with pytest.raises(ValueError, match="copy head"):
        replace(CONFIGS["cpu-copy"], prediction="eps")


def test_configs_written_before_conditioning_load_unconditional():
    saved = json.loads(CONFIGS["cpu"].to_json())
    del saved["conditional"], saved["trunk_noise"], saved["copy"]
    cfg = DiffusionConfig.from_dict(saved)
    assert not cfg.conditional and not cfg.trunk_noise and not cfg.copy


def test_standardized_scaler_round_trip_and_storage(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 12, generator=g) * torch.linspace(0.1, 1.0, 12)  # dims of different spread
    base = LatentScaler(torch.arange(10), 12, float(z[:, :10].min()), float(z[:, :10].max()))
    sc = base.standardize(base.transform(z).numpy())
    x = sc.transform(z)
    assert abs(float(x.pow(2).mean()) - 1.0) < 1e-4 and float(x.mean(0).abs().max()) < 1e-4
    assert float(x.std(0)[-1] / x.std(0)[0]) > 1.5  # one global std keeps the dims' relative spread
    assert torch.allclose(sc.inverse(x, seed=0)[:, :10], z[:, :10], atol=1e-5)
    sc.save(tmp_path / "s.safetensors")
    back = LatentScaler.load(tmp_path / "s.safetensors")
    assert back.standardized and torch.allclose(back.transform(z), x)
    assert not LatentScaler.from_dict(base.to_dict()).standardized
