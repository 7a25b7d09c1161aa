"""Checkpoint files of a run directory: checkpoints/<stage>-last.pt (+ -prev.pt, the one before) and
<stage>-best.pt, each carrying its sha256 inside (CHECKPOINT_MAGIC, 64 hex digits, a newline, then
torch.save's bytes), so that no crash can separate a file from its digest. They are read with
torch's weights-only unpickler, which builds nothing but the types this harness writes. What a
checkpoint holds is the engine's business (harness.engine.checkpoints); this module writes,
verifies and finds files."""
from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import CheckpointError, UnsafeCheckpointError
from harness.faults import crash_point
from harness.rundir.atomic import atomic_path
from harness.rundir.records import process_alive

CHECKPOINT_MAGIC = b"fsgan-harness checkpoint v2 sha256="
_HEADER = len(CHECKPOINT_MAGIC) + 65  # the magic, 64 hex digits, a newline
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|raw)(\d+)")  # harness.rundir.atomic's and samples' temporary names


@dataclass
class LoadedCheckpoint:
    state: dict
    path: Path
    note: str | None  # set when a fallback was used


class CheckpointFiles:
    """The checkpoints/ folder of the run directory `folder`; `readonly` (a data-parallel rank other
    than 0) reads like rank 0 and writes nothing."""

    def __init__(self, folder: Path, readonly: bool = False):
        self.folder = Path(folder)
        self.readonly = readonly
        self._kept: dict[tuple[str, str], LoadedCheckpoint | None] = {}  # read once, until the next save

    def path(self, stage: str, kind: str = "last") -> Path:
        return self.folder / "checkpoints" / f"{stage}-{kind}.pt"

    def save(self, stage: str, state: dict, kind: str = "last") -> Path:
        """Atomically write a checkpoint with its digest; the previous `last` becomes `prev` by one
        rename before the new `last` is renamed into place."""
        path = self.path(stage, kind)
        if self.readonly:
            return path
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getbuffer()  # no copy: a BigGAN-256 checkpoint is ~2.5 GB
        digest = hashlib.sha256(data).hexdigest().encode()
        if kind == "last" and path.exists():
            os.replace(path, self.path(stage, "prev"))
            crash_point("ckpt-rotated")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(CHECKPOINT_MAGIC + digest + b"\n")
            f.write(data)
        del data
        self._kept.pop((stage, kind), None)
        return path

    def load(self, stage: str, kind: str = "last", keep: bool = False) -> LoadedCheckpoint | None:
        """The newest loadable checkpoint of `stage` (`last`, else `prev`), or None if there is
        none. A corrupt `last` with a good `prev` loads `prev` and says so in `note`; corrupt files
        with no good fallback are a CheckpointError.

        `keep=True` keeps the result for exactly one later call (so checking a run before training
        does not read its checkpoints twice); it is never served twice, because whoever loads it
        into a model may share its tensors and mutate them while training."""
        if (stage, kind) in self._kept:
            return self._kept.pop((stage, kind))
        found = self._find(stage, kind)
        if keep:
            self._kept[(stage, kind)] = found
        return found

    def load_file(self, path: Path) -> LoadedCheckpoint:
        """Exactly this checkpoint file (no fallback): the one rank 0 resumed from."""
        return LoadedCheckpoint(_load_verified(Path(path)), Path(path), None)

    def _find(self, stage: str, kind: str) -> LoadedCheckpoint | None:
        candidates = [self.path(stage, kind)]
        if kind == "last":
            candidates.append(self.path(stage, "prev"))
        errors = []
        for path in candidates:
            if not path.exists():
                if path == candidates[0] and len(candidates) > 1 and candidates[1].exists():
                    errors.append(f"{path.name} is missing")
                continue
            try:
                state = _load_verified(path)
            except UnsafeCheckpointError:
                raise  # planted, not damaged: never stepped over to an older file
            except CheckpointError as e:
                errors.append(str(e))
                continue
            note = f"{errors[0]}; resumed from {path.name} instead" if errors else None
            return LoadedCheckpoint(state, path, note)
        if errors:
            raise CheckpointError("no loadable checkpoint: " + "; ".join(errors))
        return None

    def remove_stale_temporaries(self) -> list[str]:
        """Temporary files (.<name>.tmp<pid>..., .<name>.raw<pid>) that a process on this machine
        left when it died mid-write: removed, their names returned. Files of live processes (other
        stages' jobs writing now) are left alone."""
        gone = []
        if self.readonly:
            return gone
        for sub in (self.folder, self.folder / "checkpoints", self.folder / "samples"):
            for tmp in sub.glob(".*"):
                m = _TEMPORARY.match(tmp.name)
                if m and tmp.is_file() and not process_alive(int(m.group(1))):
                    tmp.unlink(missing_ok=True)
                    gone.append(str(tmp.relative_to(self.folder)))
        return gone


def _numpy_globals() -> list:
    """What numpy.random.get_state() pickles as (the RNG state in every checkpoint: a uint32 array),
    beside torch's own tensors, containers and scalars. numpy 2 moved `_reconstruct` from
    numpy.core to numpy._core; files name either."""
    multiarray = getattr(np, "_core", None) or np.core
    reconstruct = multiarray.multiarray._reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            (reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct")]


def _allowed_names(allowed: list) -> set[str]:
    return {x[1] if isinstance(x, tuple) else f"{x.__module__}.{x.__qualname__}" for x in allowed}


def _foreign_globals(data: bytes, allowed: list) -> list[str]:
    """The classes and functions the pickle in `data` names beyond what the weights-only unpickler
    builds and `allowed` adds (read from the pickle's opcodes; nothing is run)."""
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception:  # a damaged file: it is reported as corrupt
        return []
    return sorted(set(named) - _allowed_names(allowed))


def _load_weights_only(data: bytes, allowed: list) -> object:
    with torch.serialization.safe_globals(allowed):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _load_verified(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(_HEADER)
        # the payload in a bytes object of its own: BytesIO shares it (a memoryview slice of the
        # whole file would be copied once more, 2.3 GB for BigGAN-256)
        data = f.read()
    if not head.startswith(CHECKPOINT_MAGIC) or head[-1:] != b"\n" or len(head) != _HEADER:
        raise CheckpointError(f"{path} carries no sha256 (not a checkpoint of this harness, or its first bytes "
                              f"are damaged): it is not loaded unverified")
    if head[len(CHECKPOINT_MAGIC):-1].decode("ascii", "replace") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{path} does not match its sha256 (truncated or corrupt)")
    # the digest proves the file intact, not who wrote it: a pickle that names anything else (a
    # class whose __reduce__ runs a command) is refused before any of it is built
    allowed = _numpy_globals()
    try:
        state = _load_weights_only(data, allowed)
    except Exception as e:  # torch raises several types for a damaged zip; all mean "corrupt"
        if foreign := _foreign_globals(data, allowed):
            raise UnsafeCheckpointError(
                f"{path} names {', '.join(foreign)}, which no checkpoint of this harness holds: refused, "
                f"nothing in it was loaded (it could run code); remove it if you did not put it there") from None
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path} cannot be loaded ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a harness checkpoint")
    return state
