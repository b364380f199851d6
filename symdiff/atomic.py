"""Every file symdiff writes goes through here, and our own files are read through here.

Writes: a temporary file in the same folder, flushed and fsynced, renamed over the target, then
the folder fsynced; a kill at any moment leaves the old file or the new one, never half of one,
and a failure (a full disk, a directory or read-only file in the way, a missing folder) raises
`WriteError` naming the file, with the temporary file removed. A target that exists but is not
a regular file (/dev/null, /dev/full, a pipe) is written in place: renaming over it would
replace the device. Folders that must change as a whole (training checkpoints) are written under
a temporary name and swapped in by `replace_dir`; `recover_dir` finishes or undoes a swap that a
kill interrupted.

Reads: `read_json` and `read_tensors` turn a malformed, truncated or oversized file into
`CheckpointError` naming it, instead of a parser's traceback.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import SymdiffError

if TYPE_CHECKING:  # torch is imported where tensors are saved or read, not by every writer
    import torch

MAX_JSON_BYTES = 16 * 1024 * 1024  # our config/state files are a few kB
_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


class WriteError(SymdiffError):
    """A file could not be written."""


class CheckpointError(SymdiffError):
    """A file of ours that cannot be read: malformed, truncated, oversized or mismatched."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: str | Path) -> Path:
    """Refuse, before any work is done, a target that cannot take a file: a directory, a
    read-only file, a missing folder."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a directory")
    if path.exists() and path.is_file() and not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise WriteError(f"cannot write {path}: the file is read-only")
    if not path.parent.is_dir():
        raise WriteError(f"cannot write {path}: no folder {path.parent}")
    return path


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through (see the module doc); replaced on success only."""
    path = check_writable(path)
    if path.exists() and not path.is_file():  # a device or pipe: in place
        try:
            with open(path, "wb") as f:
                yield f
                f.flush()  # a full device reports it here
        except OSError as e:
            raise WriteError(f"cannot write {path}: {_reason(e)}") from None
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would have made
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path}: {_reason(e)}") from None
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with open_atomic(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, fmt: str | None = None) -> Path:
    """A safetensors file (never a pickle)."""
    from safetensors.torch import save as tensors_to_bytes

    return write_bytes(path, tensors_to_bytes(tensors, metadata={"format": fmt} if fmt else None))


def save_npz(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """An .npz of plain arrays (no pickles)."""
    with open_atomic(path) as f:
        # mypy matches **arrays against numpy's keyword `allow_pickle: bool` in the stubs
        (np.savez_compressed if compressed else np.savez)(f, **arrays)  # type: ignore[arg-type]
    return Path(path)


def append_text(path: str | Path, text: str) -> None:
    """Append to a log or journal, flushed and fsynced; a torn last line is the reader's to skip."""
    path = Path(path)
    try:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_reason(e)}") from None


def savefig(fig, path: str | Path, **kwargs) -> Path:
    """A matplotlib figure, rendered in memory and written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return write_bytes(path, buf.getvalue())


# --- folders written as a whole ----------------------------------------------------------------

def _old(target: Path) -> Path:
    return target.with_name(target.name + ".old")


def replace_dir(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Fill a fresh folder with `write(folder)`, then swap it in for `target`: rename the old
    one to TARGET.old, the new one to TARGET, remove the old. A kill leaves a state that
    `recover_dir` resolves to the old folder or the new one, never a mix."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise WriteError(f"cannot write {target}: {_reason(e)}") from None
    try:
        write(tmp)
        fsync_dir(tmp)
        if target.exists():
            target.rename(_old(target))
        tmp.rename(target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _old(target).exists() and not target.exists():
            _old(target).rename(target)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {target}: {_reason(e)}") from None
        raise
    fsync_dir(target.parent)
    shutil.rmtree(_old(target), ignore_errors=True)
    return target


def recover_dir(target: str | Path) -> None:
    """Undo what a kill inside `replace_dir` left: a half-written TARGET.tmp-* is removed; a
    TARGET.old without TARGET (killed between the renames) becomes TARGET again; a TARGET.old
    beside a complete TARGET (killed before it was removed) is removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for tmp in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    old = _old(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(target)
        fsync_dir(target.parent)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


# --- reading our own files ------------------------------------------------------------------------

def read_json(path: str | Path) -> dict:
    """A JSON object from a file of ours; CheckpointError if it is missing, oversized or malformed."""
    path = Path(path)
    try:
        size = path.stat().st_size
        data = path.read_bytes() if size <= MAX_JSON_BYTES else b""
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {_reason(e)}") from None
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is corrupt ({size:,} bytes, far too large for a symdiff JSON file)")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is corrupt (expected a JSON object)")
    return value


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError if it is missing, truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {_reason(e)}") from None
    except (SafetensorError, ValueError, RuntimeError):
        raise CheckpointError(f"{path} is corrupt or truncated (not a readable safetensors file)") from None


def state_dict_mismatch(weights: Path, e: RuntimeError) -> CheckpointError:
    """torch's load_state_dict error as one line naming the file and the first bad tensor."""
    details = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
    first = details[0].split(":")[0] if details else "tensors differ"
    return CheckpointError(f"{weights} does not match its config.json ({first})")
