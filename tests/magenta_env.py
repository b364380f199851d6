"""Import Magenta (MusicVAE's reference code) for the parity tests, or skip them.

Magenta is an optional test-only dependency: `scripts/install-magenta.sh` installs it
(magenta 2.1.4 with --no-deps next to TensorFlow 2.21; see requirements-magenta.txt).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

STUBS = Path(__file__).resolve().parent / "stubs"
INSTALL_HINT = "magenta not installed: run scripts/install-magenta.sh"


def _prepare() -> None:
    # tf-keras 2.x instead of Keras 3: must be set before TensorFlow is imported.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no oneDNN/CUDA chatter
    # tensorflow_datasets stub (magenta imports it at module level, never uses it here);
    # appended, so a real installation takes precedence.
    if str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))


def _import(name: str):
    _prepare()
    try:
        return __import__(name, fromlist=["_"])
    except ModuleNotFoundError as e:
        # Missing magenta, tensorflow, tf_keras, ...: an optional environment not set up.
        # Anything else (an installed but broken Magenta) is an error, not a skip.
        pytest.skip(f"{INSTALL_HINT} (cannot import {e.name!r})", allow_module_level=True)


def music_vae_data():
    """`magenta.models.music_vae.data`, or skip the calling test/module."""
    return _import("magenta.models.music_vae.data")


def music_vae_configs():
    """`magenta.models.music_vae.configs` (CONFIG_MAP), or skip the calling test/module."""
    return _import("magenta.models.music_vae.configs")
