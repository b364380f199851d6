"""The latent dataset (`symdiff.data.latents`) on real corpus lines with a tiny random MusicVAE.

The lines are real: a few voices of the valid split of the music21 corpus (long ones with and
without silent chunks, short ones with and without), re-split train/valid/test among
themselves and saved to a temporary corpus file. The VAE is a tiny random one whose first three
z dims are made to collapse (posterior sigma ~3), so the active-dim rule has something to drop.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from symdiff import melody
from symdiff.codec import SILENCE_VALUE, CodecConfig, LatentCodec, LatentScaler, silence_chunk
from symdiff.data import latents as L
from symdiff.dataset import DEFAULT_PATH, WINDOW_CHUNKS, Lines
from symdiff.vae import MusicVAE, VAEConfig, vae_hash

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)

COLLAPSED = 3
Z = 12


def tiny_corpus() -> Lines:
    """14 real lines: long (>= 32 chunks) and short, with and without silent chunks."""
    v = Lines.load(DEFAULT_PATH).select("valid")
    kinds = {"long_sil": [], "long": [], "short_sil": [], "short": []}
    for t, m in zip(v.tokens, v.meta, strict=True):
        ch = melody.to_chunks(t)
        kind = ("long" if len(ch) >= WINDOW_CHUNKS else "short") + ("_sil" if melody.silent_chunks(ch).any() else "")
        kinds[kind].append((t, m))
    picked = kinds["long_sil"][:3] + kinds["long"][:2] + kinds["short_sil"][:3] + kinds["short"][:6]
    assert len(picked) == 14
    splits = ["train"] * 9 + ["valid"] * 3 + ["test"] * 2
    order = [0, 1, 3, 5, 6, 8, 9, 10, 11,  2, 7, 12,  4, 13]  # valid: a long silent, a short silent, a short
    lines = Lines()
    for i, split in zip(order, splits, strict=True):
        t, m = picked[i]
        lines.tokens.append(t)
        lines.meta.append({**m, "split": split})
    return lines


def tiny_vae(seed: int = 0) -> MusicVAE:
    torch.manual_seed(seed)
    vae = MusicVAE(VAEConfig(enc_size=16, dec_sizes=(16,), z_size=Z))
    with torch.no_grad():  # spread mu a little, and collapse the first dims (softplus(3) ~ 3.05)
        vae.encoder.mu.weight.normal_(0, 0.3)
        vae.encoder.sigma.bias[:COLLAPSED] = 3.0
    return vae


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    corpus = tiny_corpus()
    corpus.save(root / "corpus.npz")
    tiny_vae().save_pretrained(root / "vae")
    settings = L.LatentSettings(transpositions=3, bf16=False, seed=3)
    ds = L.ensure_latents(root / "vae", root / "corpus.npz", root / "cache", settings, batch_size=64, progress=False)
    return {"root": root, "corpus": corpus, "settings": settings, "ds": ds}


def chunk_split(ds: L.LatentDataset) -> np.ndarray:
    return np.repeat(ds.split, ds.lengths())


def test_shapes_and_layout(setup):
    ds, corpus = setup["ds"], setup["corpus"]
    assert ds.latents.dtype == np.float16 and ds.latents.shape == (ds.offsets[-1], Z - COLLAPSED)
    assert ds.silent.shape == (len(ds.latents),) and ds.silent.dtype == bool
    assert list(ds.dims) == list(range(COLLAPSED, Z))  # the collapsed dims are left out
    assert (ds.sigma_mean[:COLLAPSED] > 0.98).all() and (ds.sigma_mean[COLLAPSED:] < 0.98).all()
    assert ds.scaler().dim == ds.dim == Z - COLLAPSED
    splits = [m["split"] for m in corpus.meta]
    for s in range(len(ds.split)):  # each sequence: the chunks of its line
        assert ds.split[s] == splits[ds.line[s]]
        assert ds.lengths()[s] == len(melody.to_chunks(corpus.tokens[ds.line[s]]))
    # train: every line untransposed and at two distinct non-zero shifts; valid/test: once, as written
    for i, split in enumerate(splits):
        shifts = sorted(ds.shift[ds.line == i].tolist())
        if split == "train":
            assert len(shifts) == 3 and shifts.count(0) == 1 and len(set(shifts)) == 3
            assert all(-5 <= s <= 5 for s in shifts)
        else:
            assert shifts == [0]
    assert ds.split[0] == "train" and (ds.shift[: 9] == 0).all()  # untransposed training lines first


def test_sampled_z_not_mu(setup):
    """Training sequences hold z = mu + sigma * eps: (z - mu) / sigma looks like N(0, 1)."""
    ds, corpus = setup["ds"], setup["corpus"]
    vae = MusicVAE.from_pretrained(setup["root"] / "vae")
    s = 0  # first sequence: a training line, untransposed
    chunks, silent = L.line_chunks(corpus.tokens[ds.line[s]])
    with torch.no_grad():
        mu, sigma = vae.encode(torch.from_numpy(chunks[~silent]).long())
    z = ds.latents[ds.offsets[s] : ds.offsets[s + 1]][~silent].astype(np.float32)
    u = (z - mu[:, ds.dims].numpy()) / sigma[:, ds.dims].numpy()
    assert u.size > 300 and abs(u.mean()) < 0.2 and 0.8 < u.std() < 1.2


def test_transposition_moves_whole_lines(setup):
    ds, corpus = setup["ds"], setup["corpus"]
    for s in np.flatnonzero(ds.shift != 0):
        t = corpus.tokens[ds.line[s]]
        lo, hi = L.shift_range(t)
        assert lo <= ds.shift[s] <= hi
        moved = L.transpose_line(t, int(ds.shift[s]))
        notes = t >= 2
        assert (moved[notes].astype(int) - t[notes] == ds.shift[s]).all() and (moved[~notes] == t[~notes]).all()
        same = np.flatnonzero((ds.line == ds.line[s]) & (ds.shift == 0))[0]
        a = ds.latents[ds.offsets[s] : ds.offsets[s + 1]]
        b = ds.latents[ds.offsets[same] : ds.offsets[same + 1]]
        assert not np.array_equal(a, b)
    top = np.array([2, 0, melody.NUM_CLASSES - 3, 1], dtype=np.uint8)  # lowest note and 2 below the top
    assert L.shift_range(top) == (0, 2)
    with pytest.raises(ValueError):
        L.transpose_line(top, 3)


def test_silent_chunks_token_rule(setup):
    ds, corpus = setup["ds"], setup["corpus"]
    for s in range(len(ds.split)):
        _, silent = L.line_chunks(corpus.tokens[ds.line[s]])
        np.testing.assert_array_equal(ds.silent[ds.offsets[s] : ds.offsets[s + 1]], silent)
    assert ds.silent.sum() > 20
    x = ds.model_space()
    assert (x[ds.silent] == SILENCE_VALUE).all() and (ds.latents[ds.silent] == 0).all()
    # real chunks are never taken for silence; the silence latent always is
    codec = LatentCodec(MusicVAE.from_pretrained(setup["root"] / "vae"), ds.scaler(),
                        CodecConfig(silence_threshold=ds.silence_threshold))
    assert not codec.is_silent(torch.from_numpy(x[~ds.silent])).any()
    assert codec.is_silent(torch.full((3, ds.dim), SILENCE_VALUE)).all()
    # decoding: silence -> 2 bars of rest; the others through the VAE
    tokens = codec.decode(torch.from_numpy(x[ds.offsets[0] : ds.offsets[1]]))
    chunks = tokens.reshape(-1, melody.CHUNK_STEPS)
    sil = ds.silent[ds.offsets[0] : ds.offsets[1]]
    assert sil.any() and (chunks[sil] == silence_chunk()).all()
    assert (silence_chunk()[0] == melody.NOTE_OFF) and (silence_chunk()[1:] == melody.NO_EVENT).all()
    # encoding a line gives the silence latent at its silent chunks
    enc = codec.encode(corpus.tokens[ds.line[0]])
    assert enc.shape == (len(sil), ds.dim) and (enc[torch.from_numpy(sil)] == SILENCE_VALUE).all()


def test_windows(setup):
    ds = setup["ds"]
    for split in ("train", "valid"):
        w = ds.windows(split)
        seqs = ds.sequences(split)
        n = ds.lengths()[seqs]
        assert len(w) == sum(max(1, k - WINDOW_CHUNKS + 1) for k in n)
        assert set(w[:, 1]) <= set(np.minimum(n, WINDOW_CHUNKS))
        assert (w[:, 1] < WINDOW_CHUNKS).any() and (w[:, 1] == WINDOW_CHUNKS).any()  # short lines give one short window
        kept = ds.windows(split, drop_silent=True)  # the paper's rule
        brute = [r for r in w if not ds.silent[r[0] : r[0] + r[1]].any()]
        np.testing.assert_array_equal(kept, np.array(brute).reshape(-1, 2))
        assert 0 < len(kept) < len(w)
    x = ds.model_space()
    w = ds.windows("valid")[[0, -1]]
    batch, mask = L.gather_windows(x, w)
    assert batch.shape == (2, w[:, 1].max(), ds.dim) and mask.dtype == torch.bool
    for i, (a, k) in enumerate(w):
        assert mask[i].sum() == k and torch.equal(batch[i, :k], torch.from_numpy(x[a : a + k]))
        assert (batch[i, k:] == 0).all()


def test_scaler_fitted_on_training_data(setup):
    ds = setup["ds"]
    x = ds.model_space()
    train = (chunk_split(ds) == "train") & ~ds.silent
    assert x[train].min() == -1.0 and x[train].max() == 1.0  # exactly, at the extremes
    held = (chunk_split(ds) != "train") & ~ds.silent
    assert np.abs(x[held]).max() < 1.5  # not refitted on held-out data
    lo, hi = ds.latents[train].astype(np.float32).min(), ds.latents[train].astype(np.float32).max()
    assert ds.range == (float(lo), float(hi))
    z = torch.randn(5, Z)
    sc = ds.scaler()
    back = LatentScaler.from_dict(sc.to_dict())
    torch.testing.assert_close(back.transform(z), sc.transform(z))


def test_deterministic_with_a_seed(setup):
    root, settings = setup["root"], setup["settings"]
    again = L.build_latents(root / "vae", root / "corpus.npz", settings, batch_size=7, progress=False)
    ds = setup["ds"]
    for name in ("latents", "silent", "offsets", "split", "line", "shift", "dims"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ds, name), err_msg=name)
    other = L.build_latents(root / "vae", root / "corpus.npz", L.LatentSettings(transpositions=3, bf16=False, seed=4),
                            progress=False)
    assert not np.array_equal(other.latents[: len(ds.latents) // 3], ds.latents[: len(ds.latents) // 3])


def test_cache_reused_and_rebuilt(setup, monkeypatch):
    root, settings, ds = setup["root"], setup["settings"], setup["ds"]
    path = ds.path
    assert path.parent == root / "cache" and path.is_file()
    assert not list(path.parent.glob("*.tmp*"))
    mtime = path.stat().st_mtime_ns

    def no_build(*a, **k):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(L, "build_latents", no_build)
    t0 = time.process_time()  # CPU time: a loaded machine does not make it grow
    cached = L.ensure_latents(root / "vae", root / "corpus.npz", root / "cache", settings, progress=False)
    assert time.process_time() - t0 < 2.0 and cached.path == path and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(cached.latents, ds.latents)
    assert cached.key == ds.key and cached.key["vae_sha256"] == vae_hash(root / "vae")
    monkeypatch.undo()

    # A changed VAE file: another key, another file, rebuilt.
    tiny_vae(seed=1).save_pretrained(root / "vae")
    rebuilt = L.ensure_latents(root / "vae", root / "corpus.npz", root / "cache", settings, progress=False)
    assert rebuilt.path != path and rebuilt.key["vae_sha256"] != ds.key["vae_sha256"]
    assert not np.array_equal(rebuilt.latents, ds.latents)
    # ... and a changed setting too
    p2, _ = L.cache_path(root / "vae", root / "corpus.npz", root / "cache", L.LatentSettings(transpositions=2))
    assert p2 != rebuilt.path
    tiny_vae().save_pretrained(root / "vae")  # the module's other tests see the original again


def test_posterior_mean_holds_mu_and_the_default_key_is_unchanged(setup):
    """posterior="mean" stores the VAE's mu (what `LatentCodec.encode` gives) in a cache of its
    own; the default settings name the cache as before the field existed (the shipped model's)."""
    root = setup["root"]
    settings = L.LatentSettings(transpositions=1, bf16=False, seed=3, posterior="mean")
    ds = L.ensure_latents(root / "vae", root / "corpus.npz", root / "cache", settings, batch_size=64, progress=False)
    assert ds.path != setup["ds"].path
    codec = LatentCodec(MusicVAE.from_pretrained(root / "vae"), ds.scaler(),
                        CodecConfig(silence_threshold=ds.silence_threshold))
    s = int(ds.sequences("train")[0])
    a, b = ds.offsets[s], ds.offsets[s + 1]
    live = ~ds.silent[a:b]
    mu = ds.scaler().unscale(codec.encode(setup["corpus"].tokens[int(ds.line[s])]))[live]
    assert np.allclose(ds.latents[a:b][live].astype(np.float32), mu.numpy(), atol=2e-2)  # float16 storage
    sampled = setup["ds"]
    assert np.abs(sampled.latents[a:b][live].astype(np.float32) - mu.numpy()).mean() > 0.1
    with pytest.raises(ValueError, match="posterior"):
        L.LatentSettings(posterior="mode")
    shipped = json.loads((REPO / "checkpoints" / "diffusion-cpu" / "config.json").read_text())["training"]["latents"]
    assert "posterior" not in shipped["settings"]
    assert L.key_name(shipped["settings"]) == Path(shipped["path"]).name
    fields = ("transpositions", "max_shift", "seed", "threshold", "bf16")
    key = L.LatentSettings(**{k: shipped["settings"][k] for k in fields})
    assert L.key_name(key.key(REPO / "checkpoints" / "musicvae-mel2bar-small", REPO / "data" / "corpus.npz")) \
        == Path(shipped["path"]).name
