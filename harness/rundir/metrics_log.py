"""metrics.jsonl: one JSON line per train line, evaluation or divergence (harness.rundir.records says
what a line holds). Appended one write() per line, so concurrent writers (a parallel layout's stage
jobs) do not interleave; read back skipping torn lines."""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.rundir.atomic import atomic_write_bytes


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
        """The lines of metrics.jsonl. A line that does not parse (torn by a crash mid-write) is
        skipped, and named in `problems` (file and line number) when a list is given."""
        if not self.path.is_file():
            return []
        out = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    if problems is not None:
                        problems.append(f"{self.path}:{number}: skipped an unparseable line ({e.msg})")
        return out

    def set_aside_lost(self, stage: str, step: int) -> dict | None:
        """On resuming `stage` from its checkpoint at `step`: move that stage's lines past it
        (written by a process that died before its next checkpoint) to metrics.lost.jsonl, never
        deleting them, so metrics.jsonl reads as one history. Returns what the lost segment cost
        (its lines, budget seconds, wall seconds, kWh beyond the checkpoint's), or None."""
        if self.readonly or not self.path.is_file():
            return None
        keep, lost = [], []
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                keep.append(line)  # not ours to judge: `harness report` names it
                continue
            past = isinstance(record, dict) and record.get("stage") == stage and record.get("step", 0) > step
            (lost if past else keep).append(line)
        if not lost:
            return None
        with open(self.path.with_name("metrics.lost.jsonl"), "a") as f:
            f.write("".join(line if line.endswith("\n") else line + "\n" for line in lost))
            f.flush()
            os.fsync(f.fileno())
        atomic_write_bytes(self.path, "".join(keep).encode())
        records = [json.loads(line) for line in lost]

        def last(key: str) -> float | None:
            values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
            return max(values) if values else None

        return {"lines": len(lost), "to_step": last("step"), "budget_s": last("budget_s"), "wall_s": last("wall_s"),
                "kwh": last("kwh")}
