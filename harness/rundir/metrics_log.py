"""metrics.jsonl: one JSON line per train line, evaluation or divergence (harness.rundir.records says
what a line holds). Appended one write() per line, so concurrent writers (a parallel layout's stage
jobs) do not interleave; read back skipping torn lines."""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.rundir.atomic import atomic_write_bytes
from harness.rundir.records import line_problem


class MetricsLog:
    """metrics.jsonl of the run directory `folder`; `mirror` (harness.rundir.tblog, or None) also
    receives every line; `readonly` (a data-parallel rank other than 0) writes nothing."""

    def __init__(self, folder: Path, readonly: bool = False):
        self.path = Path(folder) / "metrics.jsonl"
        self.readonly = readonly
        self.mirror = None

    def append(self, record: dict) -> None:
        """Append one JSON line, fsynced."""
        if self.readonly:
            return
        line = json.dumps(record, allow_nan=True) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self.mirror is not None:
            self.mirror.line(record)

    def read(self, problems: list[str] | None = None) -> list[dict]:
        """The records of metrics.jsonl. A line that does not parse (torn by a crash mid-write, bytes
        that are not UTF-8) or is no record (`null`, a string step) is skipped, and named in
        `problems` (file and line number) when a list is given."""
        if not self.path.is_file():
            return []
        out = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
            if line.strip():
                record, why = _parse(line)
                if why is None:
                    out.append(record)
                elif problems is not None:
                    problems.append(f"{self.path}:{number}: skipped {why}")
        return out

    def set_aside_lost(self, stage: str, step: int) -> dict | None:
        """On resuming `stage` from its checkpoint at `step`: move that stage's lines past it
        (written by a process that died before its next checkpoint) to metrics.lost.jsonl, never
        deleting them, so metrics.jsonl reads as one history. Returns what the lost segment cost
        (its lines, budget seconds, wall seconds, kWh beyond the checkpoint's), or None."""
        if self.readonly or not self.path.is_file():
            return None
        keep, lost, records = [], [], []
        for line in self.path.read_bytes().splitlines(keepends=True):  # bytes: a line that is not text is kept as it is
            record, why = _parse(line)
            if why is None and record["stage"] == stage and record["step"] > step:
                lost.append(line)
                records.append(record)
            else:
                keep.append(line)  # other stages' lines, and lines that are not ours to judge (`harness report` names them)
        if not lost:
            return None
        with open(self.path.with_name("metrics.lost.jsonl"), "ab") as f:
            f.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lost))
            f.flush()
            os.fsync(f.fileno())
        atomic_write_bytes(self.path, b"".join(keep))

        def last(key: str) -> float | None:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            return max(values) if values else None

        return {"lines": len(lost), "to_step": last("step"), "budget_s": last("budget_s"), "wall_s": last("wall_s"),
                "kwh": last("kwh")}


def _parse(line: bytes) -> tuple[dict | None, str | None]:
    """(the record a line holds, None) or (None, why it is skipped)."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return None, "a line that is not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"an unparseable line ({e.msg})"
    why = line_problem(record)
    return (None, f"a line that is no record ({why})") if why else (record, None)
