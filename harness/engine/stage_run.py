"""The state of one stage being trained, and the reasons a stretch of its training stops.

The loop (harness.loop) keeps one `StageRun` per stage it trains; `StageProgress` is the part of
it that lives in the checkpoint beside the stage's own state (the stream and the clock have
their own state dicts).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from harness.engine.budget import DeviceClock
from harness.data.loader import BatchStream
from harness.method import Stage
from harness.rundir import records
from harness.rundir.records import Status


@dataclass
class StageProgress:
    """Loop bookkeeping that lives in the checkpoint beside the stage's own state."""

    step: int = 0
    wall_s: float = 0.0
    last_eval: dict[str, float] = field(default_factory=lambda: {"seconds": 0.0, "epochs": 0.0, "steps": 0.0})
    last_checkpoint: dict[str, float] = field(default_factory=lambda: {"seconds": 0.0, "epochs": 0.0, "steps": 0.0})
    best: float | None = None
    evals: int = 0
    images: int = 0
    last_step_s: float = 0.0  # duration of the latest step: the run may overshoot its budget by this much
    # the share of the machine the stage's stretches had so far (harness.engine.exclusivity.combine)
    exclusive: dict[str, Any] = field(default_factory=dict)


class Stop(enum.Enum):
    """Why a training segment ended."""

    BUDGET = Status.BUDGET_EXHAUSTED  # the stage's budget share is spent
    STEPS = Status.COMPLETED  # the method's own step limit (or --max-steps) is reached
    EVAL = "eval"  # the evaluation schedule is due
    CHECKPOINT = "checkpoint"  # the wall-clock checkpoint interval has passed
    SIGNAL = Status.INTERRUPTED
    DIVERGED = Status.DIVERGED  # a non-finite loss (on any rank)


@dataclass
class StageRun:
    """One stage being trained, and where its training stands."""

    stage: Stage
    stream: BatchStream
    clock: DeviceClock
    progress: StageProgress
    budget_s: float
    max_steps: int | None  # None: no limit but the budget
    losses: dict[str, Any] = field(default_factory=dict)  # of the latest step, as the stage returned them
    diverged: tuple[int, dict[str, float]] | None = None  # (step number, its losses): the first non-finite
    step_began: float | None = None  # the clock's reading when the segment's latest step began
    signum: int | None = None  # the signal every rank agreed on (data-parallel runs)
    wall_base: float = 0.0  # wall seconds of the stage's earlier runs (before a resume)
    started: float = 0.0  # perf_counter() when this process started training the stage

    def wall(self, now: float | None = None) -> float:
        """Wall seconds the stage has trained, evaluations and checkpoints included, over resumes."""
        return self.wall_base + (time.perf_counter() if now is None else now) - self.started

    def ended(self) -> Stop | None:
        """BUDGET or STEPS if training of this stage is over, else None."""
        if self.clock.elapsed >= self.budget_s:
            return Stop.BUDGET
        if self.max_steps is not None and self.progress.step >= self.max_steps:
            return Stop.STEPS
        return None

    def where(self) -> dict[str, Any]:
        """The position fields of a metrics.jsonl line."""
        return {"step": self.progress.step, "epoch": self.stream.epochs_done, "budget_s": self.clock.elapsed,
                "wall_s": self.progress.wall_s}

    def schedule_position(self) -> dict[str, float]:
        return {"seconds": self.clock.elapsed, "epochs": self.stream.epochs_done, "steps": float(self.progress.step)}

    def summary(self, devices: int, energy: dict, energy_by_node: list[dict] | None, hours: str) -> dict:
        """run.json's stage_state figures of this stage now; `hours` is its device-hours field."""
        p = self.progress
        return records.stage_summary(steps=p.step, last_step_s=p.last_step_s, epochs=self.stream.epochs_done,
                                     images=p.images, budget_s=self.clock.elapsed, wall_s=p.wall_s, devices=devices,
                                     evals=p.evals, energy=energy, energy_by_node=energy_by_node, hours=hours)
