"""Issue 10, parts 1, 3 and 5: precision chosen by the hardware, safe writes, clear errors.

Everything here is real: the CLI run in this process or as a subprocess, real files and
devices (/dev/full), a real file-size limit standing in for a full disk, and real training runs
killed with SIGKILL. SYMDIFF_PRECISION=fp32 makes `auto` behave as on a CPU without native
bf16 (an AVX2-only EPYC), so those paths run on any machine.
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from symdiff import atomic
from symdiff.cli import main
from symdiff.dataset import DEFAULT_PATH, Lines
from symdiff.errors import SymdiffError
from symdiff.options import DEFAULT_VAE
from symdiff.precision import ENV, resolve_precision

REPO = Path(__file__).resolve().parent.parent
SONG = REPO / "tests" / "data" / "midi" / "foster_brown_hair_lead_sheet.mid"
TINY_VAE = ["--config", "cat-mel_2bar_small", "--set", "enc_size=16", "dec_sizes=16,16", "z_size=8", "batch_size=16"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def cli(*args: str, env: dict | None = None, limit_bytes: int | None = None, timeout: float = 120):
    """`python -m symdiff.cli ARGS` as a user runs it; `limit_bytes` caps the size of any file it
    writes (RLIMIT_FSIZE: writes past it fail as on a full disk)."""
    def cap() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "symdiff.cli", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("symdiff: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """Real corpus lines: enough for a tiny VAE's batches and a held-out set."""
    lines = Lines.load(DEFAULT_PATH)
    train, valid = lines.select("train"), lines.select("valid")
    path = tmp_path_factory.mktemp("data") / "small.npz"
    Lines(train.tokens[:24] + valid.tokens[:6], train.meta[:24] + valid.meta[:6]).save(path)
    return path


# --- part 1: precision ----------------------------------------------------------------------------

def test_precision_resolves_by_hardware_and_the_env_forces_it(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    if flags:
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cpu", sampling=True) == "fp32"  # a sample's few rows a call
    assert resolve_precision("bf16", "cpu", sampling=True) == "bf16"
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setenv(ENV, "fp32")  # as on an AVX2-only CPU
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # asked for explicitly: taken as asked
    monkeypatch.setenv(ENV, "fp16")
    with pytest.raises(SymdiffError, match=ENV):
        resolve_precision("auto")
    with pytest.raises(SymdiffError, match="precision must be one of"):
        resolve_precision("half")


@pytest.mark.slow
def test_train_vae_runs_in_fp32_untold_on_a_cpu_without_native_bf16(small_data, tmp_path):
    """The issue's criterion: `symdiff train vae --max-steps 2`, no precision flag, on a CPU
    without native bf16; the choice is in the log, the progress output and the checkpoints."""
    out = tmp_path / "run"
    proc = cli("train", "vae", *TINY_VAE, "--data", str(small_data), "--out", str(out), "--max-steps", "2",
               "--eval-every", "2", env={ENV: "fp32"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped at step 2" in proc.stdout and "train vae (fp32)" in proc.stderr
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["precision"] == "fp32"
    for folder in ("last", "best"):
        assert json.loads((out / folder / "config.json").read_text())["training"]["precision"] == "fp32"


def test_old_flags_are_gone_and_precision_is_offered_everywhere():
    for command in (["train", "vae"], ["train", "diffusion"], ["train", "mdn"], ["data", "latents"], ["evaluate"],
                    ["sample"], ["infill", "x.mid", "--bars", "1-2", "--out", "y.mid"],
                    ["extend", "x.mid", "--bars", "2", "--out", "y.mid"]):
        with pytest.raises(SystemExit) as bad:
            main([*command, "--precision", "half"])
        assert bad.value.code == 2
    for old in (["train", "vae", "--no-bf16"], ["evaluate", "--bf16"]):
        with pytest.raises(SystemExit):
            main(old)


# --- part 3: safe writes --------------------------------------------------------------------------

def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.txt"
    atomic.write_text(path, "old")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK  # as open() would make it
    with pytest.raises(RuntimeError):
        with atomic.open_atomic(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with pytest.raises(atomic.WriteError, match="/dev/full: No space left on device"):
        atomic.write_bytes("/dev/full", b"x" * 100_000)
    with pytest.raises(atomic.WriteError, match="it is a directory"):
        atomic.write_text(tmp_path, "x")
    with pytest.raises(atomic.WriteError, match="no folder"):
        atomic.write_text(tmp_path / "missing" / "a.txt", "x")


def test_infill_to_a_full_disk_fails_loudly(tmp_path, capsys):
    """Was: exit 0 and "wrote /dev/full" (the file written unclosed, the error dropped)."""
    before = SONG.read_bytes()
    assert main(["infill", str(SONG), "--bars", "17-18", "--steps", "2", "--seed", "0", "--out", "/dev/full",
                 "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == "symdiff: error: cannot write /dev/full: No space left on device"
    assert SONG.read_bytes() == before


@pytest.mark.slow
def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    """A regular file on a disk that fills up mid-write (a real file-size limit): exit 2, the
    previous --out intact, no temporary file left beside it."""
    out = tmp_path / "out.mid"
    out.write_bytes(b"the previous result")
    proc = cli("reconstruct", str(SONG), "--out", str(out), limit_bytes=200)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == f"symdiff: error: cannot write {out}: File too large"
    assert out.read_bytes() == b"the previous result" and sorted(p.name for p in tmp_path.iterdir()) == ["out.mid"]


@pytest.mark.parametrize("case", ["input", "directory", "read-only", "no folder"])
def test_bad_out_is_refused_before_any_work(case, tmp_path, capsys):
    song = tmp_path / "song.mid"
    shutil.copy(SONG, song)
    before = song.read_bytes()
    out = {"input": tmp_path / "." / "song.mid", "directory": tmp_path, "read-only": tmp_path / "ro.mid",
           "no folder": tmp_path / "nowhere" / "x.mid"}[case]
    if case == "read-only":
        out.write_bytes(b"keep me")
        out.chmod(0o444)
    for command in (["infill", str(song), "--bars", "17-18", "--steps", "2"], ["extend", str(song), "--bars", "2"],
                    ["reconstruct", str(song)]):
        assert main([*command, "--out", str(out)]) == 2, command
        line = one_error_line(capsys.readouterr().err)
        expected = {"input": f"--out {out} is the input file {song}",
                    "directory": f"cannot write {out}: it is a directory",
                    "read-only": f"cannot write {out}: the file is read-only",
                    "no folder": f"cannot write {out}: no folder {out.parent}"}[case]
        assert expected in line, line
    assert song.read_bytes() == before
    if case == "read-only":
        assert out.read_bytes() == b"keep me"


def corrupt(case: str, folder: Path) -> Path:
    """Damage one file of a copied checkpoint the way a disk, a crash or a user would."""
    if case == "malformed config":
        target = folder / "config.json"
        target.write_text(target.read_text()[:-20])
    elif case == "config not of this model":
        target = folder / "config.json"
        target.write_text(json.dumps({"name": "x", "unknown_field": 1}))
    elif case == "oversized config":
        target = folder / "config.json"
        target.write_bytes(b" " * (atomic.MAX_JSON_BYTES + 1))
    elif case == "truncated weights":
        target = folder / "model.safetensors"
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:  # weights of another shape than the config says: the weights are named
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model"]["z_size"] = cfg["model"]["z_size"] * 2
        (folder / "config.json").write_text(json.dumps(cfg))
        target = folder / "model.safetensors"
    return target


@pytest.mark.parametrize("case", ["malformed config", "config not of this model", "oversized config",
                                  "truncated weights", "weights not matching"])
def test_corrupt_vae_checkpoint_is_one_line_naming_the_file(case, tmp_path, capsys):
    ckpt = shutil.copytree(DEFAULT_VAE, tmp_path / "vae")
    bad = corrupt(case, ckpt)
    out = tmp_path / "out.mid"
    assert main(["reconstruct", str(SONG), "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "Error" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("case", ["malformed config", "truncated weights"])
def test_corrupt_diffusion_checkpoint_is_one_line_naming_the_file(case, tmp_path, capsys):
    from symdiff.generate import DEFAULT_DIFFUSION

    ckpt = shutil.copytree(DEFAULT_DIFFUSION, tmp_path / "diffusion")
    bad = corrupt(case, ckpt)
    assert main(["sample", "--bars", "2", "--steps", "2", "--checkpoint", str(ckpt), "--vae", str(DEFAULT_VAE),
                 "--out", str(tmp_path / "s"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "Error" not in line, line


def test_recover_dir_resolves_every_state_a_kill_can_leave(tmp_path):
    """The states a kill inside `replace_dir` leaves, made by hand: each resolves to one whole
    folder, old or new, and nothing else is left."""
    def folder(name: str, step: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "state.json").write_text(json.dumps({"step": step}))
        return d

    def step_of_last() -> int:
        atomic.recover_dir(tmp_path / "last")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
        return json.loads((tmp_path / "last" / "state.json").read_text())["step"]

    folder("last", 1), folder("last.tmp-abc", 2)  # killed while writing the new one
    assert step_of_last() == 1
    folder("last.old", 2), folder("last.tmp-abc", 3)  # killed between the two renames
    shutil.rmtree(tmp_path / "last")
    assert step_of_last() == 2
    folder("last.old", 2)  # killed before the old one was removed
    assert step_of_last() == 2
    atomic.replace_dir(tmp_path / "last", lambda d: (d / "state.json").write_text(json.dumps({"step": 5})))
    assert step_of_last() == 5


def checkpoint_step(last: Path) -> int:
    """The step of a recovered `last/`, checked to be the same in every file of it."""
    state = json.loads((last / "state.json").read_text())
    config = json.loads((last / "config.json").read_text())
    adam = load_file(str(last / "optimizer.safetensors"))
    load_file(str(last / "model.safetensors"))  # whole, readable
    steps = {float(v) for k, v in adam.items() if k.endswith(".step")}
    assert steps == {float(state["step"])} and config["training"]["train_step"] == state["step"], (state, config, steps)
    return state["step"]


@pytest.mark.slow
def test_training_killed_at_random_moments_always_resumes_consistently(small_data, tmp_path):
    """Real `train vae` runs, checkpointing every step, each killed (SIGKILL) at a random moment
    and resumed by the next: every time the checkpoint left is of one step in all its files, the
    resumed run continues from it, and a last resume completes the run."""
    out, rng, steps, seen = tmp_path / "run", random.Random(10), 10_000, []
    args = ["train", "vae", *TINY_VAE, "--data", str(small_data), "--out", str(out), "--eval-every", "7",
            "--save-minutes", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", ENV: "fp32"}
    for _ in range(6):
        before = checkpoint_step(out / "last") if (out / "last").exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "symdiff.cli", *args, "--max-steps", str(steps)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = out / "log.jsonl"
        starts = log.read_text().count('"start"') if log.exists() else 0
        deadline = time.time() + 60
        while (not log.exists() or log.read_text().count('"start"') == starts) and time.time() < deadline:
            time.sleep(0.05)  # until this run has loaded its data and begun its steps
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, "the run ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(p.name for p in out.iterdir())
        atomic.recover_dir(out / "last")  # what the next run does first
        # a kill before the first save leaves no checkpoint: the next run starts from step 0
        step = checkpoint_step(out / "last") if (out / "last").exists() else 0
        assert step >= before, (step, before, left)
        seen.append((step, left))
        start = [json.loads(r) for r in log.read_text().splitlines() if '"start"' in r][-1]
        assert start["step"] == before  # each run resumed from the checkpoint the kill before left
    assert len({s for s, _ in seen}) >= 2, seen  # the kills fell at different moments (few steps on a busy machine)
    final = seen[-1][0] + 2
    proc = cli(*args, "--max-steps", str(final), env={ENV: "fp32"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_step(out / "last") == final
    assert sorted(p.name for p in out.iterdir()) == ["best", "last", "log.jsonl"]


# --- part 5: one error base class -----------------------------------------------------------------

def test_user_errors_share_one_base_class():
    from symdiff.atomic import CheckpointError, WriteError
    from symdiff.audio import AudioError
    from symdiff.cli import UsageError
    from symdiff.data.midi_corpus import BuildError
    from symdiff.generate import GenerateError
    from symdiff.magenta_import import MagentaImportError
    from symdiff.melody import MelodyError
    from symdiff.train.latents import TrainLatentsError

    for cls in (MelodyError, GenerateError, BuildError, TrainLatentsError, MagentaImportError, AudioError, UsageError,
                WriteError, CheckpointError):
        assert issubclass(cls, SymdiffError) and issubclass(cls, ValueError), cls
