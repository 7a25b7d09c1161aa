"""A run directory: create or reopen it, read and update run.json; its other files through the
objects that own them.

```
run.json        method, stages, resolved config, run settings, dataset identity, provenance, status
metrics.jsonl   one JSON line per train log / evaluation          (RunDir.metrics: harness.rundir.metrics_log)
energy.csv      codecarbon's own output (energy/ holds its per-segment task files)
checkpoints/    <stage>-last.pt, -prev.pt, -best.pt, sha256 inside (RunDir.checkpoints: .checkpoint_files)
samples/        PNG grids per evaluation, real.png, <stage>-final.npz (RunDir.save_grid, harness.rundir.samples)
```
run.json is the one file `harness report` needs; every write replaces it atomically, under a lock
shared by the processes of one run (the stage jobs of a parallel layout).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from harness.errors import RunDirError
from harness.rundir.atomic import atomic_write_bytes, fsync_dir
from harness.rundir.checkpoint_files import CheckpointFiles
from harness.rundir.manifest import check_fields, manifest_problem
from harness.rundir.metrics_log import MetricsLog
from harness.rundir.records import Status
from harness.rundir.samples import save_grid
from harness.rundir.writer_lock import WriterLock, hold, now_iso

FORMAT = 1


class RunDir:
    """A run directory on disk. Use `create` for a new run and `open` for an existing one."""

    readonly = False  # FollowerRunDir: a data-parallel rank other than 0 reads, rank 0 writes

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics = MetricsLog(self.path, readonly=self.readonly)
        self.checkpoints = CheckpointFiles(self.path, readonly=self.readonly)
        self._mirror = None

    @property
    def mirror(self):
        """A live view of the lines and grids written (harness.rundir.tblog, `--log tensorboard`), or None."""
        return self._mirror

    @mirror.setter
    def mirror(self, view) -> None:
        self._mirror = self.metrics.mirror = view

    # --- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, manifest: dict) -> "RunDir":
        path = Path(path).absolute()  # `--run-dir .` names the folder it is in
        check_parents(path)
        if path.exists() and (not path.is_dir() or not _unused(path)):
            raise RunDirError(f"{path} already exists and is not empty; pick another --run-dir")
        manifest = {"format": FORMAT, "created": now_iso(), "status": Status.RUNNING, **manifest}
        if path.is_dir():
            # an empty folder the user made (perhaps the one they are in): filled in place, run.json
            # last and never over another's, so a crash leaves it unused and a second creator fails
            for sub in SUBFOLDERS:
                (path / sub).mkdir(exist_ok=True)
            _create_manifest(path, manifest)
            return cls(path)
        # built beside its final name and renamed into place, so a crash never leaves a directory
        # without run.json that a second `harness run --run-dir` would refuse as "not empty"
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{path.name}.creating{os.getpid()}")
        building.mkdir()
        try:
            for sub in SUBFOLDERS:
                (building / sub).mkdir()
            _write_manifest(building, manifest)
            os.rename(building, path)  # onto nothing, or onto an empty directory made meanwhile
        except OSError as e:
            shutil.rmtree(building, ignore_errors=True)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise RunDirError(f"{path} was created by another process meanwhile; pick another --run-dir") from None
            raise
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        fsync_dir(path.parent)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / "run.json").is_file():
            raise RunDirError(f"{path} is not a run directory (no run.json)")
        run = cls(path)
        run.manifest()  # validates that it parses
        return run

    @staticmethod
    def is_run(path: Path) -> bool:
        return (Path(path) / "run.json").is_file()

    # --- run.json -------------------------------------------------------------------------------
    def manifest(self) -> dict:
        try:
            data = json.loads((self.path / "run.json").read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RunDirError(f"{self.path / 'run.json'} is unreadable: it is not UTF-8 text ({e.reason} at byte "
                              f"{e.start})") from None
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.path / 'run.json'} is unreadable: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or "method" not in data:
            raise RunDirError(f"{self.path / 'run.json'} is not a harness run manifest")
        if found := manifest_problem(data):
            raise RunDirError(f"{self.path / 'run.json'}: {found} (edited by hand?)")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of run.json between processes sharing the run (stages
        of one method may train as separate jobs into the same directory)."""
        with open(self.path / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def update(self, **fields: Any) -> dict:
        """Merge top-level fields into run.json (dict values merge one level deep)."""
        if self.readonly:
            return {}
        check_fields(fields)
        with self._locked():
            data = self.manifest()
            for k, v in fields.items():
                if isinstance(v, dict) and isinstance(data.get(k), dict):
                    data[k] = {**data[k], **v}
                else:
                    data[k] = v
            _write_manifest(self.path, data)
            return data

    def update_stage(self, stage: str, **fields: Any) -> dict:
        """Merge fields into run.json's stage_state[`stage`]."""
        if self.readonly:
            return {}
        with self._locked():
            data = self.manifest()
            stages = data.setdefault("stage_state", {})
            stages[stage] = {**stages.get(stage, {}), **fields}
            _write_manifest(self.path, data)
            return data

    def hold(self, stages: list[str]) -> WriterLock:
        """Become the one writer of these stages (harness.rundir.writer_lock)."""
        return hold(self.path, stages)

    # --- samples --------------------------------------------------------------------------------
    def save_grid(self, images: torch.Tensor, name: str, nrow: int | None = None) -> Path:
        """Save (N, 3, H, W) uint8 images as one PNG grid under samples/."""
        if self.readonly:
            return self.path / "samples" / f"{name}.png"
        path = save_grid(self.path, images, name, nrow)
        if self.mirror is not None:
            self.mirror.grid(images[:64].detach().cpu(), name)
        return path


class FollowerRunDir(RunDir):
    """A non-zero rank's view of a data-parallel run: it reads run.json and checkpoints like
    rank 0, but writing the directory is rank 0's job alone, so every write here does nothing."""

    readonly = True


SUBFOLDERS = ("checkpoints", "samples", "energy")


def check_parents(path: Path, flag: str = "--run-dir") -> None:
    """A RunDirError if something on the way to `path` is a file (`--run-dir notes.txt/run`)."""
    for parent in reversed(Path(path).absolute().parents):
        if parent.exists() and not parent.is_dir():
            raise RunDirError(f"{flag} {path}: {parent} is a file, not a folder; pick another {flag}")


def _unused(folder: Path) -> bool:
    """Empty, or holding only the empty subfolders a creation interrupted in place left."""
    return all(p.name in SUBFOLDERS and p.is_dir() and not any(p.iterdir()) for p in folder.iterdir())


def _create_manifest(folder: Path, data: dict) -> None:
    """Write a new run.json that must not exist yet (another creator's is never replaced)."""
    data["updated"] = now_iso()
    tmp = folder / f".run.json.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write((json.dumps(data, indent=1) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, folder / "run.json")
        except FileExistsError:
            raise RunDirError(f"{folder} was made a run directory by another process meanwhile; pick another "
                              f"--run-dir") from None
        except OSError as e:  # a file system without hard links: a check, then a plain rename
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) or (folder / "run.json").exists():
                raise
            os.replace(tmp, folder / "run.json")
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)


def _write_manifest(folder: Path, data: dict) -> None:
    data["updated"] = now_iso()
    atomic_write_bytes(Path(folder) / "run.json", (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())
