"""VAE parity with Magenta: a checkpoint written by magenta's own MusicVAE graph, imported
with symdiff.magenta_import, must give the same mu, sigma and decoder logits as magenta.

The reference side is magenta 2.1.4 itself:
  1. `CONFIG_MAP['cat-mel_2bar_small'].model` is built as `music_vae_train` builds it
     (is_training=True, `model.train(...)` + Adam `minimize` with the global step), so the
     checkpoint holds what training writes: the model, global_step, beta1/2_power and the
     Adam slots. All model variables are re-drawn at random (`random_value`), biases included
     (LSTMBlockCell starts them at 0, which would hide a forget-bias mistake), and saved
     with tf Saver.
  2. magenta's `TrainedModel` restores that checkpoint and gives mu, sigma
     (`encode_tensors`) and the free-running decode from z = mu (`decode_to_tensors`, with
     the categorical sampler replaced by argmax: the paper decodes at temperature 0.001).
  3. The teacher-forced logits come from `decoder.reconstruction_loss` in a second graph
     restored from the same checkpoint, built with sampling_schedule constant 0 (teacher
     forcing) and fed `x_input = [0 ; targets[:-1]]` exactly as `_compute_model_loss` does.
Our side: `import_magenta` -> `save_pretrained` -> `MusicVAE.from_pretrained`, then
`encode`, `decoder.run(z, targets=...)` and `decoder.run(z)` on the same chunks and the
same z (magenta's mu). Inputs are 2-bar windows from the real MIDI files in
tests/data/midi (read_midi + melody.windows). Tolerance 1e-4 (absolute), exact tokens.

scripts/magenta_parity_big.py runs the same helpers for cat-mel_2bar_big.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from symdiff import magenta_import, melody
from symdiff.vae import CONFIGS, MusicVAE

pytestmark = pytest.mark.magenta  # a tier of its own: needs TensorFlow + Magenta (conftest skips importing it)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import magenta_env  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "midi"
TOL = 1e-4
NUM_CHUNKS = 32


# --- inputs -------------------------------------------------------------------------------

def real_chunks(n: int, folder: Path = DATA) -> np.ndarray:
    """`n` distinct 2-bar windows (with at least one note) from real MIDI files, taken
    round-robin over the files (each file's default melody) so every file contributes."""
    per_file = []
    for path in sorted(folder.glob("*.mid")):
        try:
            line = melody.read_midi(path).chosen
        except melody.MelodyError:
            continue
        w = melody.windows(line.tokens, melody.BARS_PER_CHUNK, 1)
        per_file.append([row for row in w if not melody.silent_chunks(row[None])[0]])
    seen, out = set(), []
    for k in range(max(len(w) for w in per_file)):
        for rows in per_file:
            if k < len(rows) and rows[k].tobytes() not in seen:
                seen.add(rows[k].tobytes())
                out.append(rows[k])
                if len(out) == n:
                    return np.stack(out).astype(np.int64)
    raise AssertionError(f"only {len(out)} distinct chunks in {folder}, wanted {n}")


def one_hot(chunks: np.ndarray, depth: int = melody.NUM_CLASSES) -> np.ndarray:
    return np.eye(depth, dtype=np.float32)[chunks]


# --- magenta's side -----------------------------------------------------------------------

def _magenta():
    configs = magenta_env.music_vae_configs()  # skips the module if magenta is missing
    import tensorflow.compat.v1 as tf
    from magenta.models.music_vae import lstm_models, trained_model

    return tf, configs, lstm_models, trained_model


def _session_config(tf):
    return tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


def write_magenta_checkpoint(config_name: str, prefix: Path, seed: int = 0, optimizer: bool = True,
                             batch_size: int = 4) -> dict[str, tuple[int, ...]]:
    """Build `config_name` with magenta's code as training does, re-draw every model
    variable at random, save with tf Saver at `prefix` -> {variable: shape} as saved."""
    tf, configs, _, _ = _magenta()
    config = copy.deepcopy(configs.CONFIG_MAP[config_name])
    config.hparams.batch_size = batch_size
    rng = np.random.default_rng(seed)
    depth = config.data_converter.output_depth
    with tf.Graph().as_default():
        model = config.model
        model.build(config.hparams, config.data_converter.output_depth, is_training=True)
        # The training loss graph creates the variables (model.build alone creates none).
        x = tf.placeholder(tf.float32, [batch_size, 32, depth])
        opt = model.train(x, x, tf.fill([batch_size], 32))
        if optimizer:  # what a training run also writes: Adam slots, beta powers
            opt.minimize(model.loss, global_step=model.global_step)
        model_vars = tf.trainable_variables()
        with tf.Session(config=_session_config(tf)) as sess:
            sess.run(tf.global_variables_initializer())
            for v in model_vars:
                v.load(random_value(v.name[:-2], tuple(v.shape.as_list()), rng, depth), sess)
            model.global_step.load(1234, sess)
            prefix.parent.mkdir(parents=True, exist_ok=True)
            tf.train.Saver().save(sess, str(prefix), write_meta_graph=False)
    return {name: tuple(shape) for name, shape in tf.train.list_variables(str(prefix))}


def random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator, depth: int) -> np.ndarray:
    """Random weights under which every part of the model matters: biases N(0, 0.2^2)
    (they start at 0, which would hide a gate-order or forget-bias mistake); kernels
    (in, out) N(0, 1/in), except N(0, 1) for the rows that read a one-hot (encoder input,
    decoder's previous token) and N(0, 9/in) for the output projection, so that the argmax
    decode follows its own feedback (varied tokens) instead of repeating one token."""
    if name.endswith("/bias"):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    value = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
    if name.endswith("output_projection/kernel"):
        value *= 3.0
    if name.endswith("cell_0/lstm_cell/kernel"):  # rows [one-hot (depth) ; ...]
        value[:depth] = rng.normal(0.0, 1.0, (depth, shape[1]))
    return value.astype(np.float32)


@contextlib.contextmanager
def argmax_sampler(lstm_models, tf):
    """Replace CategoricalLstmDecoder's sampler by argmax (a one-hot, as it returns)."""
    cls = lstm_models.CategoricalLstmDecoder
    original = cls._sample

    def _sample(self, rnn_output, temperature=1.0):
        return tf.one_hot(tf.argmax(rnn_output, axis=-1), self._output_depth, dtype=tf.float32)

    cls._sample = _sample
    try:
        yield
    finally:
        cls._sample = original


def magenta_reference(config_name: str, prefix: Path, chunks: np.ndarray) -> dict[str, np.ndarray]:
    """Magenta's mu, sigma (TrainedModel.encode_tensors), free-running argmax decode from
    z = mu (TrainedModel.decode_to_tensors) and teacher-forced logits from z = mu
    (decoder.reconstruction_loss) for `chunks` (n, 32) class indices."""
    tf, configs, lstm_models, trained_model = _magenta()
    n, steps = chunks.shape
    x = one_hot(chunks)
    timings = {}
    t0 = time.perf_counter()
    with argmax_sampler(lstm_models, tf):
        tm = trained_model.TrainedModel(configs.CONFIG_MAP[config_name], batch_size=n,
                                        checkpoint_dir_or_path=str(prefix))
    timings["magenta_build_restore_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, mu, sigma = tm.encode_tensors(list(x), [steps] * n)
    timings["magenta_encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # With batch_size == n the full results are the fields of one LstmDecodeResults.
    rnn_input, free_logits, samples = tm.decode_to_tensors(mu, length=steps, return_full_results=True)[:3]
    timings["magenta_decode_s"] = time.perf_counter() - t0
    tm._sess.close()
    assert np.asarray(samples).shape == (n, steps, melody.NUM_CLASSES)

    config = copy.deepcopy(configs.CONFIG_MAP[config_name])
    config.hparams.batch_size = n
    config.hparams.sampling_schedule, config.hparams.sampling_rate = "constant", 0.0  # teacher forcing
    t0 = time.perf_counter()
    with tf.Graph().as_default():
        model = config.model
        model.build(config.hparams, config.data_converter.output_depth, is_training=False)
        x_ph = tf.placeholder(tf.float32, [n, steps, config.data_converter.output_depth])
        z_ph = tf.placeholder(tf.float32, [n, config.hparams.z_size])
        x_input = tf.pad(x_ph[:, :-1], [(0, 0), (1, 0), (0, 0)])  # as _compute_model_loss
        _, _, results = model.decoder.reconstruction_loss(x_input, x_ph, tf.fill([n], steps), z_ph)
        with tf.Session(config=_session_config(tf)) as sess:
            tf.train.Saver().restore(sess, str(prefix))
            tf_logits = sess.run(results.rnn_output, {x_ph: x, z_ph: mu})
    timings["magenta_teacher_forced_s"] = time.perf_counter() - t0
    return {
        "mu": mu, "sigma": sigma, "z": mu,
        "free_tokens": np.asarray(samples).argmax(-1), "free_logits": np.asarray(free_logits),
        "free_inputs": np.asarray(rnn_input), "tf_logits": tf_logits, "timings": timings,
    }


# --- our side -----------------------------------------------------------------------------

@torch.no_grad()
def ours(model: MusicVAE, chunks: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.from_numpy(chunks)
    mu, sigma = model.encode(x)
    z = torch.from_numpy(np.asarray(z, dtype=np.float32))
    tf_logits, _ = model.decoder.run(z, targets=x)
    free_logits, free_tokens = model.decoder.run(z)
    return {"mu": mu.numpy(), "sigma": sigma.numpy(), "tf_logits": tf_logits.numpy(),
            "free_logits": free_logits.numpy(), "free_tokens": free_tokens.numpy()}


def differences(ref: dict, got: dict) -> dict[str, float]:
    """Max abs differences, and the share of tokens that differ in the free decode."""
    out = {k: float(np.abs(np.asarray(ref[k]) - got[k]).max()) for k in ("mu", "sigma", "tf_logits")}
    same = ref["free_tokens"] == got["free_tokens"]
    out["free_tokens_mismatch"] = float(1.0 - same.mean())
    # Free-running logits are comparable while both decodes agree so far (all, if they agree).
    agree = np.cumprod(same, axis=1).astype(bool)
    agree = np.concatenate([np.ones_like(agree[:, :1]), agree[:, :-1]], axis=1)
    out["free_logits"] = float(np.abs(ref["free_logits"] - got["free_logits"])[agree].max())
    return out


# --- tests without TensorFlow ------------------------------------------------------------

def _shapes(cfg) -> dict[str, tuple[int, ...]]:
    return {e.tf_name: e.tf_shape for e in magenta_import.variable_table(cfg)}


def test_table_covers_every_parameter_once():
    small = CONFIGS["cat-mel_2bar_small"]
    shapes = _shapes(small)
    rng = np.random.default_rng(0)
    model = magenta_import.convert(shapes, lambda n: rng.normal(size=shapes[n]).astype(np.float32), small)
    # every TF number lands in exactly one parameter; bias_hh (not in TF) stays zero
    params = dict(model.named_parameters())
    assert sum(int(np.prod(s)) for s in shapes.values()) == sum(
        p.numel() for n, p in params.items() if "bias_hh" not in n)
    assert all(not p.any() for n, p in params.items() if "bias_hh" in n)
    for cfg in CONFIGS.values():  # the big one by shapes only (meta tensors, no memory)
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in MusicVAE(cfg).state_dict().items()}
        got = {}
        for e in magenta_import.variable_table(cfg):
            outs = e.transform(np.broadcast_to(np.float32(0), e.tf_shape))
            got.update({t: tuple(o.shape) for t, o in zip(e.targets, outs, strict=True)})
        assert got == want


def test_lstm_transform_gate_order_and_forget_bias():
    cfg = CONFIGS["cat-mel_2bar_small"]
    entry = {e.tf_name: e for e in magenta_import.variable_table(cfg)}
    k_name = "decoder/multi_rnn_cell/cell_1/lstm_cell/kernel"
    n, inp = 256, 256
    kernel = np.zeros((inp + n, 4 * n), np.float32)
    for g in range(4):  # TF gate g (i, j, f, o) marked with value g + 1, hidden rows * 10
        kernel[:inp, g * n:(g + 1) * n] = g + 1
        kernel[inp:, g * n:(g + 1) * n] = 10 * (g + 1)
    w_ih, w_hh = entry[k_name].transform(kernel)
    assert w_ih.shape == (4 * n, inp) and w_hh.shape == (4 * n, n)
    # torch rows i, f, g, o hold TF gates i (1), f (3), j (2), o (4)
    assert [w_ih[b * n, 0] for b in range(4)] == [1, 3, 2, 4]
    assert [w_hh[b * n, 0] for b in range(4)] == [10, 30, 20, 40]
    b_ih, b_hh = entry[k_name.replace("kernel", "bias")].transform(np.zeros(4 * n, np.float32))
    assert [b_ih[b * n] for b in range(4)] == [0, 1, 0, 0] and not b_hh.any()


def test_ignores_optimizer_slots_and_reports_unknown_variables():
    cfg = CONFIGS["cat-mel_2bar_small"]
    shapes = _shapes(cfg)
    noisy = dict(shapes, global_step=(), beta1_power=(), beta2_power=())
    for name, shape in shapes.items():
        noisy[name + "/Adam"] = noisy[name + "/Adam_1"] = shape
    assert magenta_import.check_variables(noisy, cfg)  # no error
    bad = dict(noisy)
    del bad["encoder/mu/bias"]
    bad["decoder/opaque_kernel"] = (12345,)
    bad["decoder/output_projection/kernel"] = (256, 91)
    with pytest.raises(magenta_import.MagentaImportError) as e:
        magenta_import.check_variables(bad, cfg)
    msg = str(e.value)
    assert "missing variables (1): encoder/mu/bias" in msg
    assert "unexpected variables (1): decoder/opaque_kernel [12345]" in msg
    assert "decoder/output_projection/kernel: checkpoint [256, 91], cat-mel_2bar_small needs [256, 90]" in msg
    assert magenta_import.check_variables(bad | {"encoder/mu/bias": (256,),
                                                 "decoder/output_projection/kernel": (256, 90)},
                                          cfg, extra_ignore=[r"opaque_kernel$"])


def test_wrong_config_names_the_right_one():
    big = _shapes(CONFIGS["cat-mel_2bar_big"])
    with pytest.raises(magenta_import.MagentaImportError, match="matches config 'cat-mel_2bar_big'"):
        magenta_import.check_variables(big, CONFIGS["cat-mel_2bar_small"])


def test_missing_tensorflow_says_how_to_install(monkeypatch, tmp_path):
    from symdiff import cli

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` fails
    with pytest.raises(ImportError, match=r"pip install tensorflow==2\.21\.0.*install-magenta\.sh"):
        magenta_import.import_magenta(tmp_path / "model.ckpt", "cat-mel_2bar_small")
    assert cli.main(["import-magenta", str(tmp_path / "model.ckpt"), "--out", str(tmp_path / "o")]) == 2


# --- parity with magenta ------------------------------------------------------------------

@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    _magenta()  # skip before doing any work if magenta is missing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("magenta_vae")
        prefix = tmp / "train" / "model.ckpt-1234"
        variables = write_magenta_checkpoint("cat-mel_2bar_small", prefix, seed=0)
        chunks = real_chunks(NUM_CHUNKS)
        ref = magenta_reference("cat-mel_2bar_small", prefix, chunks)
        magenta_import.import_magenta(prefix, "cat-mel_2bar_small", tmp / "ours")
        model = MusicVAE.from_pretrained(tmp / "ours")
        got = ours(model, chunks, ref["z"])
        yield {"tmp": tmp, "prefix": prefix, "variables": variables, "chunks": chunks,
               "ref": ref, "got": got, "model": model}
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_is_what_training_writes(parity):
    names = set(parity["variables"])
    model_vars = {e.tf_name for e in magenta_import.variable_table(CONFIGS["cat-mel_2bar_small"])}
    assert model_vars <= names
    assert {"global_step", "beta1_power", "beta2_power"} <= names
    assert names - model_vars - {"global_step", "beta1_power", "beta2_power"} == {
        f"{n}/{slot}" for n in model_vars for slot in ("Adam", "Adam_1")}
    source = MusicVAE.from_pretrained(parity["tmp"] / "ours").sections["training"]["imported_from"]
    assert source["magenta_config"] == "cat-mel_2bar_small" and source["global_step"] == 1234
    assert source["checkpoint"] == str(parity["prefix"].resolve()) and source["model_variables"] == 16


def test_inputs_are_real_melodies(parity):
    chunks = parity["chunks"]
    assert chunks.shape == (NUM_CHUNKS, 32) and len({c.tobytes() for c in chunks}) == NUM_CHUNKS
    assert (chunks >= 2).sum(1).min() >= 1 and len(np.unique(chunks)) > 20


def test_encoder_matches_magenta(parity):
    ref, got = parity["ref"], parity["got"]
    d = differences(ref, got)
    assert d["mu"] < TOL and d["sigma"] < TOL, d
    assert ref["mu"].std() > 0.1 and ref["sigma"].std() > 0.05  # not a trivial encoder


def test_teacher_forced_logits_match_magenta(parity):
    ref, got = parity["ref"], parity["got"]
    d = differences(ref, got)
    assert d["tf_logits"] < TOL, d
    assert ref["tf_logits"].std() > 0.5


def test_argmax_decode_matches_magenta(parity):
    ref, got = parity["ref"], parity["got"]
    d = differences(ref, got)
    assert d["free_tokens_mismatch"] == 0.0 and d["free_logits"] < TOL, d
    # magenta feeds back [one-hot(previous sample) ; z] (zeros at step 0)
    inputs = ref["free_inputs"]
    assert not inputs[:, 0].any()
    assert (inputs[:, 1:].argmax(-1) == ref["free_tokens"][:, :-1]).all()
    # the decode is not trivial: several tokens per sequence, and teacher forcing changes it
    assert np.mean([len(set(row)) for row in ref["free_tokens"]]) > 2
    assert len({row.tobytes() for row in ref["free_tokens"]}) > NUM_CHUNKS // 2
    assert np.abs(ref["free_logits"] - ref["tf_logits"]).max() > 0.1


def test_forget_bias_matters(parity):
    """Negative control: without the +1 forget bias the encoder is off by far more than TOL."""
    model = copy.deepcopy(parity["model"])
    with torch.no_grad():
        for name in ("bias_ih_l0", "bias_ih_l0_reverse"):
            b = getattr(model.encoder.lstm, name)
            n = b.shape[0] // 4
            b[n:2 * n] -= 1.0
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(parity["chunks"]))
    assert np.abs(mu.numpy() - parity["ref"]["mu"]).max() > 100 * TOL


def test_directory_tar_and_cli_give_the_same_weights(parity, tmp_path):
    from symdiff import cli

    prefix = parity["prefix"]
    want = parity["model"].state_dict()
    (tmp_path / "ckpt").mkdir()
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, tmp_path / "ckpt" / f.name)
    with tarfile.open(tmp_path / "bundle.ckpt.tar", "w") as tar:
        for f in sorted((tmp_path / "ckpt").iterdir()):
            tar.add(f, arcname=f.name)
    for source in (tmp_path / "ckpt", tmp_path / "bundle.ckpt.tar", str(prefix) + ".index"):
        got = magenta_import.import_magenta(source, "cat-mel_2bar_small").state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want), source
    out = tmp_path / "cli"
    assert cli.main(["import-magenta", str(prefix), "--config", "cat-mel_2bar_small", "--out", str(out)]) == 0
    got = MusicVAE.from_pretrained(out).state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert cli.main(["import-magenta", str(prefix), "--config", "cat-mel_2bar_big", "--out", str(out)]) == 2
