"""The package's layers (symdiff/__init__.py, ARCHITECTURE.md): what may import what, checked on
the source of every module, and what importing the inference pipeline really loads."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "symdiff"
APP = PACKAGE.parent / "app.py"
TOP = ("cli",)  # the command: may import anything; the app (demo.py, app.py) runs on inference alone
# layer of each subpackage; the modules directly in symdiff/ are layer 0 (inference)
SUBPACKAGES = {"data": 1, "train": 2, "evaluation": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_symdiff_modules(path: Path) -> set[str]:
    """Every symdiff module a file imports, relative imports resolved, lazy imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("symdiff")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("symdiff"):
                continue
            if node.module is None or base in ("symdiff", "symdiff.data", "symdiff.train", "symdiff.evaluation"):
                found |= {f"{base}.{a.name}" for a in node.names}  # from . import melody
            else:
                found.add(base)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[1] in SUBPACKAGES:  # the subpackage itself (its __init__) or one of its modules
        return SUBPACKAGES[parts[1]]
    return 3 if parts[1] in TOP else 0


def test_every_module_imports_only_from_its_own_layer_or_below():
    """Every module of the package and the app (app.py, which sits on inference like demo.py)."""
    wrong = []
    for path in [*sorted(PACKAGE.rglob("*.py")), APP]:
        name = module_name(path)
        if name == "symdiff":
            continue
        for target in imported_symdiff_modules(path):
            if target in ("symdiff",):
                continue
            if layer(target) > (0 if path == APP else layer(name)):
                wrong.append(f"{name} imports {target}")
            if name.startswith("symdiff.evaluation") and target.startswith("symdiff.train"):
                wrong.append(f"{name} imports {target} (evaluation never uses training code)")
    assert not wrong, "\n".join(wrong)


def test_the_checker_resolves_relative_and_lazy_imports():
    """The rule above can fail: it sees `from . import melody`, `from ..codec import`, and the
    imports inside functions (the CLI's are all lazy)."""
    names = imported_symdiff_modules(PACKAGE / "generate.py")
    assert {"symdiff.diffusion", "symdiff.melody", "symdiff.codec"} <= names
    names = imported_symdiff_modules(PACKAGE / "data" / "latents.py")
    assert {"symdiff.dataset", "symdiff.codec", "symdiff.melody"} <= names
    assert "symdiff.train.diffusion" in imported_symdiff_modules(PACKAGE / "cli.py")
    assert {"symdiff.demo", "symdiff.generate", "symdiff.melody"} <= imported_symdiff_modules(APP)
    assert layer("symdiff.train.loop") > layer("symdiff.data.latents") > layer("symdiff.generate")


@pytest.mark.parametrize("imports, loads", [
    ("symdiff.generate, symdiff.baselines, symdiff.pianoroll, symdiff.arrangement",
     ("symdiff.generate", "symdiff.codec")),
    ("app", ("symdiff.demo", "symdiff.metrics", "symdiff.dataset")),  # the Gradio app and the Space
], ids=["pipeline", "app"])
def test_importing_the_pipeline_or_the_app_loads_no_data_training_or_evaluation_module(imports, loads):
    """Nor what only they need: music21 (the `data` extra), scipy and note_seq (tests and Magenta
    parity), none of which the app's requirements.txt installs."""
    code = f"import sys, {imports}\nprint('\\n'.join(sorted(sys.modules)))"
    everything = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=PACKAGE.parent).stdout.split()
    loaded = [m for m in everything if m.startswith("symdiff")]
    assert set(loads) <= set(loaded), loaded
    outside = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in SUBPACKAGES]
    assert not outside, f"importing {imports} loads {outside}"
    extras = sorted({m.split(".")[0] for m in everything} & {"music21", "scipy", "note_seq"})
    assert not extras, f"importing {imports} loads {extras}"


# Run `symdiff ARGS` in a fresh interpreter and list the modules it loaded (after a marker line).
CLI_RUNNER = ("import sys\nfrom symdiff.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print('--modules--')\nprint('\\n'.join(sorted(sys.modules)))")
HEAVY = ("torch", "note_seq", "librosa", "numba", "scipy", "music21", "matplotlib", "tensorflow")


@pytest.mark.parametrize("args", [["--help"], ["inspect", "tests/data/midi/oneills_003_4-4_melody.mid"],
                                  ["sample", "--help"], ["evaluate", "--help"]], ids=" ".join)
def test_light_commands_load_no_torch(args):
    """`symdiff --help` and `inspect` start in a fraction of a second: the CLI imports model and
    evaluation code only inside the subcommands that run it (issue 26)."""
    out = subprocess.run([sys.executable, "-c", CLI_RUNNER, *args], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    printed, loaded = out.split("--modules--\n")
    assert "usage: symdiff" in printed or "oneills_003" in printed
    heavy = sorted({m.split(".")[0] for m in loaded.split()} & set(HEAVY))
    assert not heavy, f"symdiff {' '.join(args)} loads {heavy}"


def test_stdout_is_what_symdiff_writes_even_under_ci():
    """pyfluidsynth prints "'fluidsynth' was found at ..." on import whenever $CI is set, and
    pretty_midi imports it: in CI that line once led every JSON and every message of the CLI
    (7 tests failed). The gateway to pretty_midi (`notes.py`) silences it."""
    pytest.importorskip("fluidsynth")
    cli = "import sys\nfrom symdiff.cli import main\nmain(sys.argv[1:])"
    out = subprocess.run([sys.executable, "-c", cli, "inspect", "--json", "tests/data/midi/oneills_003_4-4_melody.mid"],
                         capture_output=True, text=True, check=True, cwd=PACKAGE.parent, env=dict(os.environ, CI="1"))
    assert json.loads(out.stdout)["bars"] == 16, out.stdout[:200]


def test_the_cli_offers_every_registered_sampler():
    """`options.SAMPLER_NAMES` (what --sampler offers without importing torch) names the samplers
    `schedulers.SAMPLERS` registers."""
    from symdiff.options import SAMPLER_NAMES
    from symdiff.schedulers import SAMPLERS

    assert SAMPLER_NAMES == tuple(SAMPLERS)


def test_the_cli_offers_every_training_preset():
    """`options.DIFFUSION_PRESETS` and `MDN_PRESETS` (what `train --config` lists without importing
    torch) name the presets the trainers hold, the shipped default's among them."""
    from symdiff.options import DEFAULT_DIFFUSION, DIFFUSION_PRESETS, MDN_PRESETS
    from symdiff.train import diffusion, mdn

    assert tuple(DIFFUSION_PRESETS) == tuple(diffusion.PRESETS) and tuple(MDN_PRESETS) == tuple(mdn.PRESETS)
    shipped = json.loads((DEFAULT_DIFFUSION / "config.json").read_text())["model"]["name"]
    assert shipped in DIFFUSION_PRESETS
