"""Import a Magenta MusicVAE TensorFlow checkpoint (cat-mel_2bar_*) into our `MusicVAE`.

In the style of nanoGPT's `from_pretrained`: list the checkpoint's variables, check that
they are exactly the ones the config needs (optimizer slots and counters are ignored,
anything else unknown is an error), then copy every variable through an explicit table of
(TF name -> our parameter names, transform), asserting every shape, and write our format
with `MusicVAE.save_pretrained`. TensorFlow is only used to read the checkpoint.

What the transforms undo (magenta `lstm_utils.rnn_cell` builds `LSTMBlockCell`s):
- LSTMBlockCell kernel is (input + hidden, 4 * units): rows [input ; hidden], columns the
  gates i, j (cell input), f, o. torch wants weight_ih (4H, input) and weight_hh (4H, H)
  with gates i, f, g (cell input), o: transpose, split the rows, move the gate blocks.
- LSTMBlockCell adds forget_bias=1.0 to the forget gate at run time (it is not stored), so
  the imported forget-gate bias gets +1. The single TF bias goes to bias_ih; bias_hh is 0.
- Dense kernels are (in, out): transposed for nn.Linear.
The decoder's first-layer input is [previous one-hot (90) ; z] in both (magenta
`BaseLstmDecoder.reconstruction_loss` / `sample` concatenate in that order), and the
initial state tanh(Dense(z)) is split as c0, h0, c1, h1, ... (`tf.nest.flatten` of the
`LSTMStateTuple(c, h)`s), which is what `Decoder.initial_state` reads.

Verified against magenta's own graph in tests/test_magenta_parity_vae.py (small) and
scripts/magenta_parity_big.py (big).
"""
from __future__ import annotations

import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import SymdiffError
from .vae import CONFIGS, MusicVAE, VAEConfig

TF_INSTALL_HINT = (
    "reading a Magenta checkpoint needs TensorFlow: pip install tensorflow==2.21.0 "
    "(or bash scripts/install-magenta.sh for the whole Magenta test stack)"
)
FORGET_BIAS = 1.0  # LSTMBlockCell's default, added at run time, never stored

# Variables a checkpoint may hold that are not model weights: training counters and
# optimizer slots (Adam's m and v are saved as `<var>/Adam` and `<var>/Adam_1`).
IGNORED = (
    r"^global_step$",
    r"^beta[12]_power(_\d+)?$",
    r"/(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad|ExponentialMovingAverage)$",
)


class MagentaImportError(SymdiffError):
    """The checkpoint is not the model the config describes; the message says how."""


@dataclass(frozen=True)
class Entry:
    """One TF variable: its expected shape, and the torch tensors made from it."""

    tf_name: str
    tf_shape: tuple[int, ...]
    targets: tuple[str, ...]  # our state_dict names, in the order `transform` returns them
    transform: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    note: str  # what the transform does, for the mapping table


# --- transforms ---------------------------------------------------------------------------

def _gates_ijfo_to_ifgo(a: np.ndarray, axis: int) -> np.ndarray:
    """Reorder the 4 gate blocks along `axis` from TF (i, j, f, o) to torch (i, f, g=j, o)."""
    i, j, f, o = np.split(a, 4, axis=axis)
    return np.concatenate([i, f, j, o], axis=axis)


def _lstm_kernel(input_size: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def transform(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = _gates_ijfo_to_ifgo(kernel.T, axis=0)  # (4H, input + H)
        return w[:, :input_size], w[:, input_size:]

    return transform


def _lstm_bias(bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = _gates_ijfo_to_ifgo(bias, axis=0).copy()
    n = len(b) // 4
    b[n : 2 * n] += FORGET_BIAS  # torch order i, f, g, o: block 1 is the forget gate
    return b, np.zeros_like(b)


def _dense_kernel(kernel: np.ndarray) -> tuple[np.ndarray]:
    return (kernel.T,)


def _same(a: np.ndarray) -> tuple[np.ndarray]:
    return (a,)


# --- the table ----------------------------------------------------------------------------

def variable_table(cfg: VAEConfig) -> list[Entry]:
    """Every model variable of a magenta cat-mel_2bar checkpoint for `cfg`, and its mapping."""
    c, h, z = cfg.num_classes, cfg.enc_size, cfg.z_size
    table: list[Entry] = []

    def lstm(scope: str, input_size: int, n: int, ours: str, suffix: str = "") -> list[Entry]:
        """A TF LSTMBlockCell's kernel and bias -> torch's {weight,bias}_{ih,hh}{suffix} under `ours`."""
        return [
            Entry(f"{scope}/kernel", (input_size + n, 4 * n),
                  (f"{ours}.weight_ih{suffix}", f"{ours}.weight_hh{suffix}"),
                  _lstm_kernel(input_size),
                  "transpose; rows [input ; hidden] -> weight_ih, weight_hh; gates i,j,f,o -> i,f,g,o"),
            Entry(f"{scope}/bias", (4 * n,), (f"{ours}.bias_ih{suffix}", f"{ours}.bias_hh{suffix}"), _lstm_bias,
                  "gates i,j,f,o -> i,f,g,o; forget gate + 1.0 (forget_bias) -> bias_ih; bias_hh = 0"),
        ]

    for tf_dir, ours in (("fw", ""), ("bw", "_reverse")):
        table += lstm(f"encoder/cell_0/bidirectional_rnn/{tf_dir}/multi_rnn_cell/cell_0/lstm_cell", c, h,
                      "encoder.lstm", f"_l0{ours}")
    for name in ("mu", "sigma"):
        table.append(Entry(f"encoder/{name}/kernel", (2 * h, z), (f"encoder.{name}.weight",),
                           _dense_kernel, "transpose"))
        table.append(Entry(f"encoder/{name}/bias", (z,), (f"encoder.{name}.bias",), _same, "copy"))
    sizes = cfg.dec_sizes
    for k, n in enumerate(sizes):
        input_size = c + z if k == 0 else sizes[k - 1]
        table += lstm(f"decoder/multi_rnn_cell/cell_{k}/lstm_cell", input_size, n, f"decoder.cells.{k}")
    for name, n_in, n_out in (("z_to_initial_state", z, 2 * sum(sizes)),
                              ("output_projection", sizes[-1], c)):
        table.append(Entry(f"decoder/{name}/kernel", (n_in, n_out), (f"decoder.{name}.weight",),
                           _dense_kernel, "transpose"))
        table.append(Entry(f"decoder/{name}/bias", (n_out,), (f"decoder.{name}.bias",), _same, "copy"))
    return table


def mapping_table_markdown(cfg: VAEConfig) -> str:
    """The table as markdown (for the model card)."""
    rows = ["| TF variable | shape | ours | transform |", "|---|---|---|---|"]
    for e in variable_table(cfg):
        rows.append(f"| `{e.tf_name}` | {list(e.tf_shape)} | {', '.join(f'`{t}`' for t in e.targets)} | {e.note} |")
    return "\n".join(rows)


# --- checking a variable list -------------------------------------------------------------

def is_ignored(name: str, extra_ignore: Iterable[str] = ()) -> bool:
    return any(re.search(p, name) for p in (*IGNORED, *extra_ignore))


def _problems(shapes: dict[str, tuple[int, ...]], cfg: VAEConfig,
              extra_ignore: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape) variable names against the table for `cfg`."""
    expected = {e.tf_name: e for e in variable_table(cfg)}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(n for n in shapes if n not in expected and not is_ignored(n, extra_ignore))
    wrong = sorted(f"{n}: checkpoint {list(shapes[n])}, {cfg.name} needs {list(expected[n].tf_shape)}"
                   for n in expected if n in shapes and tuple(shapes[n]) != expected[n].tf_shape)
    return missing, unexpected, wrong


def check_variables(shapes: dict[str, tuple[int, ...]], cfg: VAEConfig,
                    extra_ignore: Iterable[str] = ()) -> list[Entry]:
    """Compare a checkpoint's {name: shape} with the table for `cfg` -> the table, or raise
    MagentaImportError naming every missing, unexpected and wrongly shaped variable."""
    extra_ignore = tuple(extra_ignore)
    missing, unexpected, wrong = _problems(shapes, cfg, extra_ignore)
    if not (missing or unexpected or wrong):
        return variable_table(cfg)
    lines = [f"checkpoint does not match the {cfg.name} MusicVAE:"]
    if missing:
        lines.append(f"  missing variables ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  unexpected variables ({len(unexpected)}): " + ", ".join(
            f"{n} {list(shapes[n])}" for n in unexpected))
    if wrong:
        shown = "; ".join(wrong[:4]) + (f"; ... ({len(wrong) - 4} more)" if len(wrong) > 4 else "")
        lines.append(f"  wrong shapes ({len(wrong)}): {shown}")
    others = [name for name, other in CONFIGS.items()
              if name != cfg.name and not any(_problems(shapes, other, extra_ignore))]
    if others:
        lines.append(f"  the checkpoint matches config {others[0]!r}: pass --config {others[0]}")
    elif unexpected and not missing and not wrong:
        lines.append("  if these are known non-model variables, --ignore REGEX skips them")
    lines.append("  (released checkpoints can differ from what training writes, magenta issue #1854; "
                 "only the cat-mel_2bar LSTMBlockCell layout is supported)")
    raise MagentaImportError("\n".join(lines))


# --- reading ------------------------------------------------------------------------------

def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"{TF_INSTALL_HINT} (import failed: {e})") from e
    return tf


def _resolve_prefix(path: str | Path, tmp: str) -> str:
    """A checkpoint prefix from: a prefix (x.ckpt for x.ckpt.index), a directory (its latest
    checkpoint, or the only .index in it) or a bundled .tar (Magenta's download format)."""
    p = Path(path)
    if p.is_file() and tarfile.is_tarfile(p):
        with tarfile.open(p) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and not m.name.startswith(("/", ".."))]
            tar.extractall(tmp, members=members, filter="data")
        p = Path(tmp)
    if p.is_dir():
        indexes = sorted(p.rglob("*.index"))
        tf = _tensorflow()
        latest = tf.train.latest_checkpoint(str(p))
        if latest:
            return latest
        if len(indexes) == 1:
            return str(indexes[0])[: -len(".index")]
        raise FileNotFoundError(f"{path}: expected one checkpoint (*.index) in it, found {len(indexes)}")
    if p.suffix == ".index" or re.search(r"\.data-\d+-of-\d+$", p.name):
        p = p.with_name(re.sub(r"(\.index|\.data-\d+-of-\d+)$", "", p.name))
    if not Path(str(p) + ".index").is_file():
        raise FileNotFoundError(f"{path}: no TF checkpoint there (expected {p}.index)")
    return str(p)


def read_checkpoint(path: str | Path) -> tuple[str, dict[str, tuple[int, ...]], Callable[[str], np.ndarray]]:
    """-> (prefix, {name: shape} from tf.train.list_variables, get(name) -> ndarray).

    A .tar is unpacked to a temporary folder that lives as long as the returned getter."""
    tf = _tensorflow()
    tmp = tempfile.TemporaryDirectory(prefix="magenta-ckpt-")
    prefix = _resolve_prefix(path, tmp.name)
    shapes = {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
    reader = tf.train.load_checkpoint(prefix)

    def get(name: str, _keep=tmp) -> np.ndarray:
        return reader.get_tensor(name)

    return prefix, shapes, get


# --- import -------------------------------------------------------------------------------

def convert(shapes: dict[str, tuple[int, ...]], get: Callable[[str], np.ndarray], cfg: VAEConfig,
            extra_ignore: Iterable[str] = ()) -> MusicVAE:
    """Checkpoint variables -> a MusicVAE for `cfg` (every variable and shape checked)."""
    table = check_variables(shapes, cfg, extra_ignore)
    model = MusicVAE(cfg)
    ours = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for e in table:
        value = np.asarray(get(e.tf_name))
        assert value.shape == e.tf_shape, (e.tf_name, value.shape, e.tf_shape)
        if value.dtype != np.float32:
            raise MagentaImportError(f"{e.tf_name}: dtype {value.dtype}, expected float32")
        outputs = e.transform(value)
        assert len(outputs) == len(e.targets), e.tf_name
        for target, out in zip(e.targets, outputs, strict=True):
            if target not in ours:
                raise AssertionError(f"{e.tf_name} -> {target}: no such parameter in MusicVAE")
            if target in state:
                raise AssertionError(f"{target} written twice")
            if tuple(out.shape) != tuple(ours[target].shape):
                raise AssertionError(f"{e.tf_name} -> {target}: shape {tuple(out.shape)}, "
                                     f"MusicVAE has {tuple(ours[target].shape)}")
            state[target] = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    left = sorted(set(ours) - set(state))
    if left:
        raise AssertionError(f"parameters the table does not fill: {left}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def import_magenta(ckpt_prefix: str | Path, config_name: str = "cat-mel_2bar_big",
                   out_dir: str | Path | None = None, ignore: Iterable[str] = ()) -> MusicVAE:
    """Read a Magenta MusicVAE checkpoint (prefix, directory or .tar), convert it to our
    MusicVAE for `config_name`, and (if `out_dir`) save it there with `save_pretrained`.

    `ignore`: extra regexes for variables to skip (optimizer slots and step counters are
    always skipped); any other unknown variable is an error."""
    if config_name not in CONFIGS:
        raise MagentaImportError(f"unknown config {config_name!r}; choose from {', '.join(CONFIGS)}")
    ignore = tuple(ignore)
    prefix, shapes, get = read_checkpoint(ckpt_prefix)
    skipped = sorted(n for n in shapes if is_ignored(n, ignore))
    source = {
        "format": "magenta-tf-checkpoint",
        "checkpoint": str(Path(ckpt_prefix).resolve()),
        "prefix": Path(prefix).name,
        "magenta_config": config_name,
        "model_variables": len(variable_table(CONFIGS[config_name])),
        "skipped_variables": len(skipped),
        "forget_bias_added": FORGET_BIAS,
    }
    if "global_step" in shapes:
        source["global_step"] = int(np.asarray(get("global_step")))
    model = convert(shapes, get, CONFIGS[config_name], ignore)
    model.sections = {"training": {"imported_from": source}}
    if out_dir is not None:
        model.save_pretrained(out_dir, model.sections)
    return model
