"""`pip install .` gives a working package: pyproject.toml declares what the library imports,
and the built wheel (every subpackage, the `symdiff` command) samples a melody on its own."""
from __future__ import annotations

import ast
import os
import site
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
# Imported only inside a function that says what to install when they are missing.
OPTIONAL = {"tensorflow": "scripts/install-magenta.sh", "fluidsynth": "the app extra",
            "music21": "the data extra"}


def third_party_imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("symdiff", "__future__")}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {r.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-") for r in reqs}


def distribution(module: str) -> str:
    return packages_distributions()[module][0].lower().replace("_", "-")


def test_pyproject_declares_every_library_import():
    imports = third_party_imports(sorted((REPO / "symdiff").rglob("*.py"))) - set(OPTIONAL)
    missing = {m: distribution(m) for m in imports if distribution(m) not in declared()}
    assert not missing, f"imported by symdiff but not in pyproject's dependencies: {missing}"
    app = third_party_imports([REPO / "app.py"]) - imports - set(OPTIONAL)
    missing = {m: distribution(m) for m in app if distribution(m) not in declared() | declared("app")}
    assert not missing, f"imported by app.py but not declared (dependencies or the app extra): {missing}"


@pytest.mark.slow
def test_the_built_wheel_samples_a_melody(tmp_path):
    """Build the wheel, install it (no dependencies: this machine has them) into a venv that
    sees the site-packages of the Python running the tests, and run `symdiff sample` from
    outside the checkout. A .pth file, not `--system-site-packages`: run from a venv, that option
    gives the base Python's site-packages, not the venv's that hold the dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True)
    wheel = next((tmp_path / "dist").glob("symdiff-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    py = tmp_path / "venv" / "bin" / "python"
    venv_site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                               capture_output=True, text=True).stdout.strip()
    # after the venv's own site-packages, so the wheel's symdiff comes first; addsitedir reads
    # their own .pth files too
    outer = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (Path(venv_site) / "outer.pth").write_text(f"import site; list(map(site.addsitedir, {outer!r}))\n")
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    where = subprocess.run([py, "-c", "import symdiff.train.diffusion, symdiff.evaluation.table1, symdiff.data.latents;"
                            "import symdiff; print(symdiff.__file__)"], check=True, capture_output=True, text=True,
                           cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in where  # the wheel's copy, not the checkout
    env = {**os.environ, "SYMDIFF_CHECKPOINTS": str(REPO / "checkpoints")}
    subprocess.run([tmp_path / "venv" / "bin" / "symdiff", "sample", "--num", "1", "--bars", "4", "--steps", "5",
                    "--seed", "0", "--quiet", "--out", str(tmp_path / "out")], check=True, cwd=tmp_path, env=env)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sample_0.mid"]
