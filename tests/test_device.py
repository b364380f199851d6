"""--device: the plumbing of `MelodyDiffusion.from_pretrained(device=...)`, the CLI's generation
commands and the app, on the CPU (a GPU run needs a machine with one: `--device cuda`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from symdiff.cli import main
from symdiff.errors import SymdiffError
from symdiff.options import DEFAULT_DIFFUSION
from symdiff.precision import resolve_device

SONG = Path(__file__).resolve().parent / "data" / "midi" / "oneills_003_4-4_melody.mid"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_auto_takes_cuda_where_there_is_one_else_the_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(SymdiffError, match="device must be one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_the_pipeline_and_its_codec_run_where_they_are_put(tmp_path):
    from symdiff.generate import MelodyDiffusion

    pipe = MelodyDiffusion.from_pretrained(DEFAULT_DIFFUSION, device="cpu")
    assert pipe.device.type == pipe.codec.device.type == "cpu"
    out = pipe.generate(1, 4, "ddim", 2, seed=0, repair=False)
    assert out.latents.device.type == "cpu" and len(out.tokens[0]) == 64


def test_sample_on_the_cpu_is_the_sample_auto_gives_here(tmp_path):
    """--device cpu works, and a seed draws the same noise wherever auto lands (a CPU generator)."""
    runs = {}
    for device in ("cpu", "auto"):
        out = tmp_path / device
        assert main(["sample", "--bars", "4", "--steps", "2", "--seed", "0", "--device", device, "--out", str(out),
                     "--quiet"]) == 0
        runs[device] = (out / "sample_0.mid").read_bytes()
    if not torch.cuda.is_available():
        assert runs["cpu"] == runs["auto"]


@no_cuda
@pytest.mark.parametrize("args", [
    ["sample", "--bars", "2"],
    ["infill", str(SONG), "--bars", "1-2"],
    ["extend", str(SONG), "--bars", "2"],
    ["evaluate", "--task", "coherence", "--num", "1"],
], ids=lambda a: a[0])
def test_cuda_without_a_gpu_is_one_clear_error(args, tmp_path, capsys):
    assert main([*args, "--device", "cuda", "--out", str(tmp_path / "out.mid"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["symdiff: error: --device cuda: torch sees no CUDA GPU on this machine "
                   "(use --device cpu or auto)"]
    assert not (tmp_path / "out.mid").exists()


@no_cuda
def test_the_app_refuses_cuda_without_a_gpu(capsys):
    import app

    with pytest.raises(SystemExit) as stop:
        app.main(["--device", "cuda"])
    assert stop.value.code == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
