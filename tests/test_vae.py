"""MusicVAE (symdiff.vae): shapes, the decoder's step loop against plain `torch.nn.LSTM`
layers, scheduled sampling, storage, `evaluate`, `reconstruct` and `symdiff reconstruct`.

Models are the small config (shapes only) and tiny ones (enc 16, dec 16+12, z 8) so every
test runs in well under a second. Where a value must be known exactly, the test builds a
model whose answer it can work out by hand (constant mu/sigma, a constant output layer).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from symdiff import melody
from symdiff.atomic import CheckpointError
from symdiff.cli import main as cli_main
from symdiff.options import DEFAULT_VAE
from symdiff.vae import CONFIGS, MusicVAE, VAEConfig, evaluate, kl_divergence, reconstruct

REPO = Path(__file__).resolve().parent.parent
SMALL = CONFIGS["cat-mel_2bar_small"]
TINY = dataclasses.replace(SMALL, enc_size=16, dec_sizes=(16, 16), z_size=8)
TINY_UNEVEN = dataclasses.replace(SMALL, enc_size=16, dec_sizes=(16, 12), z_size=8)  # layer sizes differ
C, T = melody.NUM_CLASSES, melody.CHUNK_STEPS
NOTE = melody.pitch_to_token(72)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def tiny_model(cfg: VAEConfig = TINY, seed: int = 0) -> MusicVAE:
    torch.manual_seed(seed)
    return MusicVAE(cfg).eval()


def random_tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, C, (n, T), generator=g)


@pytest.fixture(scope="module")
def real_chunks() -> torch.Tensor:
    """Non-silent 2-bar chunks of a real MIDI melody, as the VAE sees them."""
    line = melody.read_midi(REPO / "tests/data/midi/oneills_003_4-4_melody.mid").chosen
    chunks = melody.windows(line.tokens)
    return torch.from_numpy(chunks[~melody.silent_chunks(chunks)]).long()


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(y))


# --- shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [SMALL, TINY], ids=["small", "tiny"])
def test_shapes(cfg):
    model = tiny_model(cfg)
    x = random_tokens(3)
    mu, sigma = model.encode(x)
    assert mu.shape == sigma.shape == (3, cfg.z_size)
    assert (sigma > 0).all()
    logits, mu2, sigma2 = model(x, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (3, T, C) and logits.dtype == torch.float32
    assert torch.equal(mu, mu2) and torch.equal(sigma, sigma2)
    tokens = model.decode(mu)
    assert tokens.shape == (3, T) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < C
    # uint8 input (what the datasets hold) is accepted as well
    assert torch.equal(model.encode(x.to(torch.uint8))[0], mu)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg is SMALL:  # MusicVAE cat-mel_2bar_small: 2x512 BiLSTM, 2x256 LSTM, z 256
        assert model.decoder.cells[0].input_size == C + 256 and len(model.decoder.cells) == 2
        assert 4_000_000 < n_params < 6_000_000


# --- the decoder against plain torch.nn.LSTM layers --------------------------------------------

def reference_layers(model: MusicVAE) -> list[nn.LSTM]:
    """The decoder's cells as single-layer nn.LSTMs with the same weights."""
    layers = []
    for cell in model.decoder.cells:
        lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(cell.weight_ih)
            lstm.weight_hh_l0.copy_(cell.weight_hh)
            lstm.bias_ih_l0.copy_(cell.bias_ih)
            lstm.bias_hh_l0.copy_(cell.bias_hh)
        layers.append(lstm)
    return layers


def reference_initial_state(model: MusicVAE, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """tanh(Dense(z)) split in magenta's order c0, h0, c1, h1, ... -> [(h, c)] as (1, B, n)."""
    flat = torch.tanh(model.decoder.z_to_initial_state(z))
    state, at = [], 0
    for n in model.config.dec_sizes:
        c, h = flat[:, at : at + n], flat[:, at + n : at + 2 * n]
        state.append((h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        at += 2 * n
    assert at == flat.shape[1]
    return state


def reference_teacher_forced(model: MusicVAE, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logits with the whole [previous target one-hot ; z] sequence run through nn.LSTM."""
    prev = F.one_hot(targets[:, :-1].long(), C).float()
    prev = torch.cat([torch.zeros(len(z), 1, C), prev], dim=1)  # zeros before step 0
    x = torch.cat([prev, z.unsqueeze(1).expand(-1, T, -1)], dim=-1)
    for lstm, state in zip(reference_layers(model), reference_initial_state(model, z), strict=True):
        x, _ = lstm(x, state)
    return model.decoder.output_projection(x)


def reference_step_loop(model, z, pick) -> tuple[torch.Tensor, torch.Tensor]:
    """One step at a time; pick(t, logits) -> the token fed back at the next step."""
    layers, state = reference_layers(model), reference_initial_state(model, z)
    prev = torch.zeros(len(z), C)
    all_logits, fed = [], []
    for t in range(T):
        x = torch.cat([prev, z], dim=-1).unsqueeze(1)
        for k, lstm in enumerate(layers):
            x, state[k] = lstm(x, state[k])
        logits = model.decoder.output_projection(x[:, 0])
        tok = pick(t, logits)
        all_logits.append(logits)
        fed.append(tok)
        prev = F.one_hot(tok, C).float()
    return torch.stack(all_logits, 1), torch.stack(fed, 1)


@pytest.mark.parametrize("cfg", [TINY, TINY_UNEVEN], ids=["16-16", "16-12"])
@torch.no_grad()
def test_decoder_teacher_forced_equals_nn_lstm(cfg, real_chunks):
    model = tiny_model(cfg, seed=1)
    x = torch.cat([real_chunks[:6], random_tokens(2, seed=3)])
    z = torch.randn(len(x), cfg.z_size, generator=torch.Generator().manual_seed(2))
    logits, tokens = model.decoder.run(z, targets=x)
    expected = reference_teacher_forced(model, z, x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert torch.equal(tokens, logits.argmax(-1))


@pytest.mark.parametrize("cfg", [TINY, TINY_UNEVEN], ids=["16-16", "16-12"])
@torch.no_grad()
def test_decoder_argmax_decode_equals_nn_lstm(cfg):
    model = tiny_model(cfg, seed=4)
    with torch.no_grad():  # a sharper output layer: decodes that vary from step to step
        model.decoder.output_projection.weight.mul_(8)
    z = torch.randn(5, cfg.z_size, generator=torch.Generator().manual_seed(5)) * 2
    logits, tokens = model.decoder.run(z)
    ref_logits, ref_tokens = reference_step_loop(model, z, lambda t, lg: lg.argmax(-1))
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    assert torch.equal(tokens, ref_tokens)
    assert torch.equal(model.decode(z), ref_tokens)
    assert len(torch.unique(tokens)) > 3  # not a degenerate constant decode


@torch.no_grad()
def test_decoder_sampling_and_scheduled_sampling_equal_the_reference():
    """Tempered sampling feeds back multinomial(softmax(logits / T)) draws; scheduled sampling
    keeps each step's target with probability p (one uniform draw per example) and feeds the
    model's own temperature-1 sample otherwise; both with the caller's generator."""
    model = tiny_model(TINY, seed=6)
    z = torch.randn(4, TINY.z_size, generator=torch.Generator().manual_seed(7))
    targets = random_tokens(4, seed=8)

    g, g_ref = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    _, tokens = model.decoder.run(z, temperature=0.5, generator=g)
    _, ref = reference_step_loop(
        model, z, lambda t, lg: torch.multinomial(F.softmax(lg / 0.5, -1), 1, generator=g_ref).squeeze(-1))
    assert torch.equal(tokens, ref)
    assert torch.equal(model.decode(z, temperature=0.5, generator=torch.Generator().manual_seed(9)), ref)

    p = 0.5
    g, g_ref = torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)
    logits, _ = model.decoder.run(z, targets=targets, teacher_prob=p, generator=g)

    def scheduled(t, lg):
        keep = torch.rand(len(z), generator=g_ref) < p
        sample = torch.multinomial(F.softmax(lg, -1), 1, generator=g_ref).squeeze(-1)
        return torch.where(keep, targets[:, t], sample)

    ref_logits, fed = reference_step_loop(model, z, scheduled)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    assert 0 < (fed == targets).float().mean() < 1  # both kinds of step happened
    assert torch.equal(g.get_state(), g_ref.get_state())  # the same number of draws


@torch.no_grad()
def test_teacher_prob_1_uses_the_targets_and_not_the_generator(real_chunks):
    model = tiny_model(TINY, seed=11)
    x = real_chunks[:4]
    z = torch.randn(4, TINY.z_size, generator=torch.Generator().manual_seed(12))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state1 = g1.get_state()
    a, _ = model.decoder.run(z, targets=x, teacher_prob=1.0, generator=g1)
    b, _ = model.decoder.run(z, targets=x, teacher_prob=1.0, generator=g2)
    c, _ = model.decoder.run(z, targets=x)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(g1.get_state(), state1)  # no draw at all
    torch.testing.assert_close(a, reference_teacher_forced(model, z, x), rtol=0, atol=1e-5)
    # teacher_prob 0 feeds the model's own samples: different logits after step 0
    d, _ = model.decoder.run(z, targets=x, teacher_prob=0.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(d[:, 0], a[:, 0], rtol=0, atol=0)
    assert not torch.allclose(d, a)


def test_forward_samples_z_with_the_generator():
    model = tiny_model(TINY, seed=13)
    x = random_tokens(3, seed=14)
    a = model(x, teacher_prob=1.0, generator=torch.Generator().manual_seed(0))[0]
    b = model(x, teacher_prob=1.0, generator=torch.Generator().manual_seed(0))[0]
    c = model(x, teacher_prob=1.0, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    mu, sigma = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_teacher_forced(model, mu + sigma * eps, x)
    torch.testing.assert_close(a.detach(), expected, rtol=0, atol=1e-5)


# --- storage --------------------------------------------------------------------------------

def test_save_and_from_pretrained_round_trip(tmp_path):
    cfg = TINY_UNEVEN
    model = tiny_model(cfg, seed=15).train()
    out = model.save_pretrained(tmp_path / "ckpt", {"training": {"imported_from": {"global_step": 7}}})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "symdiff-vae"}
        assert set(f.keys()) == set(model.state_dict())
    back = MusicVAE.from_pretrained(out)
    assert back.config == cfg and back.config.dec_sizes == (16, 12)
    assert back.sections == {"training": {"imported_from": {"global_step": 7}}}
    assert not back.training
    for name, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    x = random_tokens(2)
    assert torch.equal(back.decode(back.encode(x)[0]), model.eval().decode(model.encode(x)[0]))
    # a bf16 model is stored as float32 (the values it has)
    bf16 = tiny_model(TINY, seed=16).to(torch.bfloat16)
    again = MusicVAE.from_pretrained(bf16.save_pretrained(tmp_path / "bf16"))
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    for name, value in bf16.state_dict().items():
        assert again.state_dict()[name].dtype == torch.float32
        assert torch.equal(again.state_dict()[name], value.float()), name
    assert sorted(p.name for p in (tmp_path / "bf16").iterdir()) == ["config.json", "model.safetensors"]


def test_from_pretrained_without_config_is_a_clear_error(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "ckpt")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json \(not a symdiff vae checkpoint\)"):
        MusicVAE.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="config.json"):
        MusicVAE.from_pretrained(tmp_path / "does-not-exist")


# --- evaluate -------------------------------------------------------------------------------

SIGMAS = [0.5, 0.97, 0.99, 1.5, 0.2, 0.9799, 0.9801, 1.0]  # 4 of them below 0.98
MUS = [0.0, 1.0, -2.0, 0.5, 0.0, 3.0, -0.25, 0.1]


def constant_model(token: int = 0, cfg: VAEConfig = TINY) -> MusicVAE:
    """mu and sigma independent of the input (MUS, SIGMAS) and a decoder whose every step
    says `token`: all that `evaluate` reports is then known by hand."""
    model = tiny_model(cfg, seed=17)
    enc, dec = model.encoder, model.decoder
    with torch.no_grad():
        enc.mu.weight.zero_()
        enc.mu.bias.copy_(torch.tensor(MUS))
        enc.sigma.weight.zero_()
        enc.sigma.bias.copy_(softplus_inverse(torch.tensor(SIGMAS)))
        dec.output_projection.weight.zero_()
        dec.output_projection.bias.copy_(F.one_hot(torch.tensor(token), C).float() * 10)
    return model


def test_evaluate_known_values(real_chunks):
    x = torch.cat([real_chunks, torch.zeros(3, T, dtype=torch.long)])  # 3 all-"no event" chunks too
    got = evaluate(constant_model(token=0), x, batch_size=5)
    zeros = (x == 0).double().mean().item()
    assert 0 < zeros < 1
    assert got["accuracy"] == got["accuracy_teacher_forced"] == pytest.approx(zeros, abs=1e-12)
    kl = 0.5 * sum(m * m + s * s - 1 - 2 * math.log(s) for m, s in zip(MUS, SIGMAS, strict=True))
    assert got["kl"] == pytest.approx(kl, rel=1e-5)
    assert got["active_dims"] == sum(s < 0.98 for s in SIGMAS) == 4

    got = evaluate(constant_model(token=NOTE), x)
    assert got["accuracy"] == pytest.approx((x == NOTE).double().mean().item(), abs=1e-12)


def test_evaluate_matches_its_definitions_on_a_random_model(real_chunks):
    model = tiny_model(TINY, seed=18).train()
    with torch.no_grad():  # magenta's init gives mu ~ 0: spread it so that z matters
        model.encoder.mu.weight.normal_(std=0.5)
    x = real_chunks
    got = evaluate(model, x, batch_size=512)
    assert not model.training
    assert 0.0 <= got["accuracy"] <= 1.0 and 0.0 <= got["accuracy_teacher_forced"] <= 1.0
    assert 0 <= got["active_dims"] <= TINY.z_size
    with torch.no_grad():
        mu, sigma = model.encode(x)
        free = (model.decode(mu) == x).double().mean().item()
        tf = (model.decoder.run(mu, targets=x)[0].argmax(-1) == x).double().mean().item()
        kl = kl_divergence(mu, sigma).mean().item()
        active = int((sigma.mean(0) < 0.98).sum())
    assert got["accuracy"] == pytest.approx(free, abs=1e-12)
    assert got["accuracy_teacher_forced"] == pytest.approx(tf, abs=1e-12)
    assert got["kl"] == pytest.approx(kl, rel=1e-5)
    assert got["active_dims"] == active
    small_batches = evaluate(model, x, batch_size=7)  # batching changes nothing
    assert {k: v for k, v in small_batches.items() if k != "kl"} == {k: v for k, v in got.items() if k != "kl"}
    assert small_batches["kl"] == pytest.approx(got["kl"], rel=1e-5)


def test_kl_divergence_by_hand():
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    sigma = torch.tensor([[1.0, 0.5], [2.0, 1.0]])
    expected = [0.5 * (0 + 1 - 1 - 0 + 1 + 0.25 - 1 - 2 * math.log(0.5)),
                0.5 * (4 + 4 - 1 - 2 * math.log(2.0) + 1 + 1 - 1 - 0)]
    torch.testing.assert_close(kl_divergence(mu, sigma), torch.tensor(expected))


# --- reconstruct ----------------------------------------------------------------------------

def line_with_silences() -> np.ndarray:
    """7 bars (not a whole number of chunks): a note held into bar 2, which is silent after
    its opening note-off; bars 2-3 silent (chunk 1), notes again in bars 4-6."""
    tokens = np.zeros(7 * 16, np.uint8)
    tokens[0], tokens[8], tokens[20] = NOTE, NOTE + 2, NOTE + 4  # chunk 0; the last held to its end
    tokens[32] = melody.NOTE_OFF  # chunk 1: the held note ends; nothing else
    tokens[64], tokens[70], tokens[71] = NOTE - 3, melody.NOTE_OFF, NOTE  # chunk 2
    tokens[100] = NOTE + 1  # chunk 3 (a half chunk)
    return tokens


def test_reconstruct_keeps_silent_chunks_silent_and_the_length():
    model = tiny_model(TINY, seed=19)
    tokens = line_with_silences()
    out = reconstruct(model, tokens)
    assert out.dtype == np.uint8 and out.shape == tokens.shape
    chunks = melody.as_vae_input(melody.to_chunks(tokens))
    silent = melody.silent_chunks(chunks)
    assert silent.tolist() == [False, True, False, False]
    out_chunks = melody.to_chunks(out)
    assert not (out_chunks[silent] >= 2).any()  # no note starts in a silent chunk
    with torch.no_grad():  # the others: argmax decode of mu, chunk by chunk
        live = torch.from_numpy(chunks[~silent]).long()
        expected = model.decode(model.encode(live)[0]).numpy()
    assert np.array_equal(out[0:32], expected[0])
    assert not (out[32:64] >= 2).any()
    assert np.array_equal(out[64:96], expected[1])
    assert np.array_equal(out[96:], expected[2][:16])  # the half chunk, cut to the line
    assert np.array_equal(reconstruct(model, tokens, batch_size=1), out)
    assert len(reconstruct(model, np.zeros(48, np.uint8))) == 48  # an all-silent line
    assert not reconstruct(model, np.zeros(48, np.uint8)).any()


def test_reconstruct_silent_chunk_ends_the_note_before_it():
    tokens = line_with_silences()
    out = reconstruct(tiny_model(TINY, seed=19), tokens)
    assert np.array_equal(out[32:64], tokens[32:64])  # the note-off that ends bar 1's note is kept


# --- symdiff reconstruct ----------------------------------------------------------------------

MULTI_TRACK = REPO / "tests/data/midi/bach_bwv26.6_chorale.mid"  # 4 voices, SATB


def constant_checkpoint(folder: Path) -> Path:
    """A tiny model that decodes every non-silent chunk as 32 onsets of NOTE."""
    return constant_model(token=NOTE).save_pretrained(folder)


def expected_constant_reconstruction(tokens: np.ndarray) -> np.ndarray:
    chunks = melody.as_vae_input(melody.to_chunks(tokens))
    out = np.where(melody.silent_chunks(chunks)[:, None], 0, NOTE).astype(np.uint8)
    return np.repeat(out, T, axis=1).reshape(-1)[: len(tokens)]


def test_reconstruct_cli_on_a_real_multi_track_file(tmp_path, capsys):
    found = melody.read_midi(MULTI_TRACK)
    assert len(found.candidates) >= 2 and found.default != 1
    line = found.pick(1)
    ckpt = constant_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "x.mid"
    rc = cli_main(["reconstruct", str(MULTI_TRACK), "--out", str(out), "--track", "1", "--checkpoint", str(ckpt)])
    printed = capsys.readouterr().out.strip()
    assert rc == 0, printed
    assert printed.count("\n") == 0 and "token accuracy" in printed and str(out) in printed
    assert printed.startswith(f"track 1 ({line.num_bars} bars, {line.num_notes} notes)")
    expected = expected_constant_reconstruction(line.tokens)
    acc = float(re.search(r"token accuracy ([0-9.]+)", printed).group(1))
    assert acc == pytest.approx(float((expected == line.tokens).mean()), abs=5e-5)
    notes = line.tokens >= 2
    note_acc = float(re.search(r"note accuracy ([0-9.]+)", printed).group(1))
    assert note_acc == pytest.approx(float((expected[notes] == line.tokens[notes]).mean()), abs=5e-5)
    back = melody.read_midi(out)  # a real MIDI file again, one track
    assert len(back.candidates) == 1
    assert back.chosen.num_bars == line.num_bars
    assert np.array_equal(back.chosen.tokens, expected)
    assert back.qpm == pytest.approx(found.qpm)


@pytest.mark.skipif(not (DEFAULT_VAE / "config.json").is_file(), reason="no shipped checkpoint")
def test_reconstruct_cli_with_the_shipped_checkpoint(tmp_path, capsys):
    line = melody.read_midi(MULTI_TRACK).pick(1)
    out = tmp_path / "x.mid"
    assert cli_main(["reconstruct", str(MULTI_TRACK), "--out", str(out), "--track", "1"]) == 0
    printed = capsys.readouterr().out
    acc = float(re.search(r"token accuracy ([0-9.]+)", printed).group(1))
    assert 0.5 < acc <= 1.0  # a trained 2-bar model reconstructs a chorale voice well
    back = melody.read_midi(out).chosen
    assert 0 < back.num_bars <= line.num_bars


def test_reconstruct_cli_errors(tmp_path, capsys):
    ckpt = constant_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "x.mid"
    rc = cli_main(["reconstruct", str(MULTI_TRACK), "--out", str(out), "--track", "9", "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("symdiff: error: ")
    assert "no melody track 9" in err and "0, 1, 2, 3" in err
    assert not out.exists()
    rc = cli_main(["reconstruct", str(MULTI_TRACK), "--out", str(out), "--checkpoint", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "config.json" in err
    assert not out.exists()
