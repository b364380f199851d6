"""Atomic file writes: a file is written under a temporary name and renamed, so a kill at any
moment leaves either the old file or the new one, never half of one."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, fmt: str | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": fmt} if fmt else None)
    tmp.replace(path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
