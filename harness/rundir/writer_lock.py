"""One writer per stage of a run directory: an exclusive, non-blocking flock per stage, which the
kernel drops when its holder dies, so a killed run never blocks the next."""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

from harness.errors import RunDirError


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class WriterLock:
    """Exclusive per-stage writer locks of a run directory (files .writer-<stage> beside run.json,
    holding the holder's pid, host and start time)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.files: dict[str, Any] = {}

    def acquire(self, stage: str) -> None:
        if stage in self.files:
            return
        f = open(self.path / f".writer-{stage}", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(f"{self.path}: stage {stage} is being trained by {holder}; wait for it, or stop it "
                              f"first (one writer per stage)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n")
        f.flush()
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
