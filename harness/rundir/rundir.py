"""Run directories: create or reopen, run.json provenance and status, atomic checkpoints.

```
run.json        method, stages, resolved config, run settings, dataset identity, provenance, status
metrics.jsonl   one JSON line per train log / evaluation
energy.csv      codecarbon's own output (energy/ holds its per-segment task files)
checkpoints/    <stage>-last.pt (+ -prev.pt, the one before), <stage>-best.pt, each with its sha256 inside
samples/        PNG grids per evaluation
```
run.json is the one file `harness report` needs; every write replaces it atomically.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from harness.rundir.atomic import atomic_path, atomic_write_bytes, fsync_dir
from harness.errors import CheckpointError, RunDirError
from harness.faults import crash_point
from harness.rundir.records import Status

FORMAT = 1
CHECKPOINT_MAGIC = b"fsgan-harness checkpoint v2 sha256="  # then 64 hex digits, a newline, torch.save's bytes


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


_TEMPORARY = re.compile(r"^\..+\.(?:tmp|raw)(\d+)")  # harness.atomic's and harness.samples' temporary names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LoadedCheckpoint:
    state: dict
    path: Path
    note: str | None  # set when a fallback was used


class RunDir:
    """A run directory on disk. Use `create` for a new run and `open` for an existing one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._loaded: dict[tuple[str, str], LoadedCheckpoint | None] = {}  # read once, until the next save
        # a live view of the lines and grids written (harness.tblog, `--log tensorboard`); None: none
        self.mirror = None

    # --- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, manifest: dict) -> "RunDir":
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"{path} already exists and is not empty; pick another --run-dir")
        # built beside its final name and renamed into place, so a crash never leaves a directory
        # without run.json that a second `harness run --run-dir` would refuse as "not empty"
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{path.name}.creating{os.getpid()}")
        building.mkdir()
        try:
            for sub in ("checkpoints", "samples", "energy"):
                (building / sub).mkdir()
            manifest = {"format": FORMAT, "created": now_iso(), "status": Status.RUNNING, **manifest}
            cls(building)._write_manifest(manifest)
            os.rename(building, path)  # onto nothing, or onto the empty directory the user made
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
            data = json.loads((self.path / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.path / 'run.json'} is unreadable: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or "method" not in data:
            raise RunDirError(f"{self.path / 'run.json'} is not a harness run manifest")
        return data

    def _write_manifest(self, data: dict) -> None:
        data["updated"] = now_iso()
        atomic_write_bytes(self.path / "run.json", (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())

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

    def hold(self, stages: list[str]) -> "WriterLock":
        """Become the one writer of these stages (for the life of this process, or until the
        returned lock is released): an exclusive, non-blocking flock per stage, which the kernel
        drops when the holder dies, so a killed run never blocks the next. A stage held by a
        live process is a RunDirError naming its pid and host."""
        lock = WriterLock(self.path)
        try:
            for stage in stages:
                lock.acquire(stage)
        except BaseException:
            lock.release()
            raise
        return lock

    def update(self, **fields: Any) -> dict:
        """Merge top-level fields into run.json (dict values merge one level deep)."""
        with self._locked():
            data = self.manifest()
            for k, v in fields.items():
                if isinstance(v, dict) and isinstance(data.get(k), dict):
                    data[k] = {**data[k], **v}
                else:
                    data[k] = v
            self._write_manifest(data)
            return data

    def update_stage(self, stage: str, **fields: Any) -> dict:
        with self._locked():
            data = self.manifest()
            stages = data.setdefault("stage_state", {})
            stages[stage] = {**stages.get(stage, {}), **fields}
            self._write_manifest(data)
            return data

    # --- metrics.jsonl --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON line; one write() per line, so concurrent writers do not interleave."""
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self.mirror is not None:
            self.mirror.line(record)

    def set_aside_lost(self, stage: str, step: int) -> dict | None:
        """On resuming `stage` from its checkpoint at `step`: move that stage's metrics.jsonl lines
        past it (written by a process that died before its next checkpoint) to metrics.lost.jsonl,
        never deleting them, so metrics.jsonl reads as one history. Returns what the lost segment
        cost (its lines, budget seconds, wall seconds, kWh beyond the checkpoint's), or None."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return None
        keep, lost = [], []
        for line in path.read_text().splitlines(keepends=True):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                keep.append(line)  # not ours to judge: `harness report` names it
                continue
            past = isinstance(record, dict) and record.get("stage") == stage and record.get("step", 0) > step
            (lost if past else keep).append(line)
        if not lost:
            return None
        with open(self.path / "metrics.lost.jsonl", "a") as f:
            f.write("".join(line if line.endswith("\n") else line + "\n" for line in lost))
            f.flush()
            os.fsync(f.fileno())
        atomic_write_bytes(path, "".join(keep).encode())
        records = [json.loads(line) for line in lost]

        def last(key: str) -> float | None:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            return max(values) if values else None

        return {"lines": len(lost), "to_step": last("step"), "budget_s": last("budget_s"), "wall_s": last("wall_s"),
                "kwh": last("kwh")}

    def records(self, problems: list[str] | None = None) -> list[dict]:
        """The lines of metrics.jsonl. A line that does not parse (torn by a crash mid-write) is
        skipped, and named in `problems` (file and line number) when a list is given."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        out = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    if problems is not None:
                        problems.append(f"{path}:{number}: skipped an unparseable line ({e.msg})")
        return out

    # --- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, stage: str, kind: str = "last") -> Path:
        return self.path / "checkpoints" / f"{stage}-{kind}.pt"

    def save_checkpoint(self, stage: str, state: dict, kind: str = "last") -> Path:
        """Atomically write a checkpoint, its sha256 inside the same file (CHECKPOINT_MAGIC, the
        digest, a newline, then torch.save's bytes), so no crash can separate the two; the previous
        `last` becomes `prev` by one rename before the new `last` is renamed into place."""
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getbuffer()  # no copy: a BigGAN-256 checkpoint is ~2.5 GB
        digest = hashlib.sha256(data).hexdigest().encode()
        path = self.checkpoint_path(stage, kind)
        if kind == "last" and path.exists():
            os.replace(path, self.checkpoint_path(stage, "prev"))
            crash_point("ckpt-rotated")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(CHECKPOINT_MAGIC + digest + b"\n")
            f.write(data)
        del data
        self._loaded.pop((stage, kind), None)
        return path

    def _load_verified(self, path: Path) -> dict:
        raw = path.read_bytes()
        head = len(CHECKPOINT_MAGIC)
        if not raw.startswith(CHECKPOINT_MAGIC) or raw[head + 64:head + 65] != b"\n":
            raise CheckpointError(f"{path} carries no sha256 (not a checkpoint of this harness, or its first bytes "
                                  f"are damaged): it is not loaded unverified")
        data = memoryview(raw)[head + 65:]
        if raw[head:head + 64].decode("ascii", "replace") != hashlib.sha256(data).hexdigest():
            raise CheckpointError(f"{path} does not match its sha256 (truncated or corrupt)")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises several types for a damaged zip; all mean "corrupt"
            raise CheckpointError(f"{path} cannot be loaded ({type(e).__name__}: {e})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} does not hold a harness checkpoint")
        return state

    def remove_stale_temporaries(self) -> list[str]:
        """Temporary files (.<name>.tmp<pid>..., .<name>.raw<pid>) that a process on this machine
        left when it died mid-write: removed, their names returned. Files of live processes (other
        stages' jobs writing now) are left alone."""
        gone = []
        for folder in (self.path, self.path / "checkpoints", self.path / "samples"):
            for tmp in folder.glob(".*"):
                m = _TEMPORARY.match(tmp.name)
                if m and tmp.is_file() and not _alive(int(m.group(1))):
                    tmp.unlink(missing_ok=True)
                    gone.append(str(tmp.relative_to(self.path)))
        return gone

    def load_checkpoint(self, stage: str, kind: str = "last", keep: bool = False) -> LoadedCheckpoint | None:
        """The newest loadable checkpoint of `stage` (`last`, else `prev`), or None if there is
        none. A corrupt `last` with a good `prev` loads `prev` and says so in `note`; corrupt
        files with no good fallback are a CheckpointError.

        `keep=True` keeps the result for exactly one later call (so checking a run before training
        does not read its checkpoints twice); it is never served twice, because whoever loads it
        into a model may share its tensors and mutate them while training."""
        if (stage, kind) in self._loaded:
            return self._loaded.pop((stage, kind))
        found = self._find_checkpoint(stage, kind)
        if keep:
            self._loaded[(stage, kind)] = found
        return found

    def _find_checkpoint(self, stage: str, kind: str) -> LoadedCheckpoint | None:
        candidates = [self.checkpoint_path(stage, kind)]
        if kind == "last":
            candidates.append(self.checkpoint_path(stage, "prev"))
        errors = []
        for path in candidates:
            if not path.exists():
                if path == candidates[0] and len(candidates) > 1 and candidates[1].exists():
                    errors.append(f"{path.name} is missing")
                continue
            try:
                state = self._load_verified(path)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            note = f"{errors[0]}; resumed from {path.name} instead" if errors else None
            return LoadedCheckpoint(state, path, note)
        if errors:
            raise CheckpointError("no loadable checkpoint: " + "; ".join(errors))
        return None

    # --- samples --------------------------------------------------------------------------------
    def save_grid(self, images: torch.Tensor, name: str, nrow: int | None = None) -> Path:
        """Save (N, 3, H, W) uint8 images as one PNG grid under samples/."""
        import torchvision.utils

        images = images[:64].detach().cpu()
        nrow = nrow or max(1, int(len(images) ** 0.5))
        path = self.path / "samples" / f"{name}.png"
        grid = torchvision.utils.make_grid(images.float() / 255.0, nrow=nrow, padding=2)
        with atomic_path(path) as tmp:
            torchvision.utils.save_image(grid, tmp)
        if self.mirror is not None:
            self.mirror.grid(images, name)
        return path


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


class FollowerRunDir(RunDir):
    """A non-zero rank's view of a data-parallel run: it reads run.json and checkpoints like
    rank 0, but writing the directory is rank 0's job alone, so every write here does nothing."""

    def update(self, **fields: Any) -> dict:
        return {}

    def update_stage(self, stage: str, **fields: Any) -> dict:
        return {}

    def log(self, record: dict) -> None:
        pass

    def set_aside_lost(self, stage: str, step: int) -> dict | None:
        return None

    def save_checkpoint(self, stage: str, state: dict, kind: str = "last") -> Path:
        return self.checkpoint_path(stage, kind)

    def save_grid(self, images: torch.Tensor, name: str, nrow: int | None = None) -> Path:
        return self.path / "samples" / f"{name}.png"

    def load_file(self, path: Path) -> LoadedCheckpoint:
        """Exactly the checkpoint file rank 0 resumed from (no fallback of its own)."""
        return LoadedCheckpoint(self._load_verified(Path(path)), Path(path), None)
