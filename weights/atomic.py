"""Crash-safe file writes, shared by weights, checkpoints and episodes: nothing a user made is half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], sync_dir: bool = True) -> Path:
    """Call `write(f)` on a hidden temporary file beside `path`, fsync it, rename it over `path`, then (unless
    sync_dir=False, for a caller that syncs the folder once after many writes) fsync the folder so the rename
    survives a power cut. On any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder (its renamed-in entries survive a power cut); a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
