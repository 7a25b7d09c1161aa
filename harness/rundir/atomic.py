"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

Every writer of a file that others read (run.json, checkpoints, sample grids, kept samples,
cached statistics, spectra) goes through here: write a temporary file in the same folder, fsync
it, rename it into place, fsync the folder (so the rename itself survives a power cut).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

from harness.faults import crash_point


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file name (np.savez,
    torchvision's save_image, zipfile); on success it is fsynced and renamed to `path`, on an
    exception it is removed. The temporary name keeps `path`'s suffix, which some writers need."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        crash_point("atomic-written", path)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crash_point("atomic-renamed", path)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
