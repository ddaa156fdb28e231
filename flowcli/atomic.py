"""Atomic file output: write to a temp file in the destination folder, then rename.

A reader (or a crash) never sees a half-written file, and an existing file is
never replaced unless the caller says so.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs should get the usual mode (0666 & ~umask), like open() would.
_FILE_MODE = 0o666 & ~_umask()


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Raise OutputExistsError if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temp file keeps the destination's suffix so writers that choose a format
    by extension (cv2.imwrite, imageio) still work. On any exception the temp
    file is removed and ``path`` is left untouched.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield tmp
        if not overwrite and path.exists():
            raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")
        os.chmod(tmp, _FILE_MODE)  # again: some writers (safetensors) recreate the file as 0600
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before rename)."""
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
