"""One writer per stage of a run directory, and per comparison folder: an exclusive, non-blocking
flock, which the kernel drops when its holder dies, so a killed run never blocks the next."""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from harness.errors import RunDirError


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _take(lockfile: Path) -> tuple[IO[str] | None, str]:
    """(the open file, now locked and naming this process, "") or (None, who holds it)."""
    f = open(lockfile, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n")
    f.flush()
    return f, ""


class WriterLock:
    """Exclusive per-stage writer locks of a run directory (files .writer-<stage> beside run.json,
    holding the holder's pid, host and start time)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.files: dict[str, Any] = {}

    def acquire(self, stage: str) -> None:
        if stage in self.files:
            return
        f, holder = _take(self.path / f".writer-{stage}")
        if f is None:
            raise RunDirError(f"{self.path}: stage {stage} is being trained by {holder}; wait for it, or stop it "
                              f"first (one writer per stage)")
        self.files[stage] = f

    def release(self) -> None:
        for f in self.files.values():
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self.files.clear()


def hold(path: Path, stages: list[str]) -> WriterLock:
    """Become the one writer of these stages of the run in `path` (for the life of this process, or
    until the returned lock is released); a stage held by a live process is a RunDirError naming its
    pid and host."""
    lock = WriterLock(path)
    try:
        for stage in stages:
            lock.acquire(stage)
    except BaseException:
        lock.release()
        raise
    return lock


def holders(path: Path) -> dict[str, str]:
    """{stage: its holder} of the stages of the run in `path` a live process trains now. A probe:
    a shared lock taken and dropped at once, so a stage whose writer is gone reads as free."""
    found = {}
    for lockfile in sorted(Path(path).glob(".writer-*")):
        try:
            f = open(lockfile)
        except OSError:
            continue
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                found[lockfile.name.removeprefix(".writer-")] = f.read().strip() or "another process"
            else:
                fcntl.flock(f, fcntl.LOCK_UN)
    return found


def hold_folder(folder: Path, what: str) -> WriterLock:
    """Become the one writer of `folder` (a comparison's: `what` says whose), through its file
    .writer-folder; held by a live process, it is a RunDirError naming its pid and host."""
    lock = WriterLock(folder)
    f, holder = _take(Path(folder) / ".writer-folder")
    if f is None:
        raise RunDirError(f"{folder} is being run by {holder} (another {what}); wait for it, or stop it first "
                          f"(one {what} per folder)")
    lock.files["folder"] = f
    return lock
