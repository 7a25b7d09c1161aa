"""Budgets and schedules: parse "168h", "672gpuh", "1epoch"; count training time on the device.

The budget is training time on the run's device layout, the way the papers state it: NSBGAN's
"168 hours on four V100s" is `168h` on four GPUs, or `672gpuh` (wall budget = GPU-hours / devices).
Only training counts (data loading included; evaluation and checkpointing excluded, as AlgoPerf does).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import torch

from harness.errors import BudgetError

_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|d|gpuh)\s*$")


@dataclass(frozen=True)
class Budget:
    """A training-time budget. `seconds` is wall training time on `devices` devices."""

    text: str
    seconds: float
    devices: int = 1

    @property
    def gpu_hours(self) -> float:
        """Device-hours: GPU-hours on GPUs, CPU-hours (per training process) on a CPU."""
        return self.seconds * self.devices / 3600.0


def parse_budget(text: str, devices: int = 1) -> Budget:
    """Parse `30s`, `90m`, `168h`, `7d` (wall time) or `672gpuh` (GPU-hours over `devices`)."""
    m = _BUDGET_RE.match(str(text).lower())
    if not m:
        raise BudgetError(
            f"malformed budget '{text}': use a number and a unit, e.g. 30s, 90m, 168h, 7d or 672gpuh"
        )
    value, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget '{text}' must be positive")
    if devices < 1:
        raise BudgetError(f"a budget needs at least one device, got {devices}")
    seconds = value * 3600.0 / devices if unit == "gpuh" else value * _SECONDS[unit]
    return Budget(text=str(text).strip(), seconds=seconds, devices=devices)


_EVERY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|d|epochs?|steps?)\s*$")


@dataclass(frozen=True)
class Every:
    """A schedule period: `amount` of budget seconds, epochs or steps."""

    text: str
    amount: float
    unit: str  # "seconds" | "epochs" | "steps"

    def due(self, last: float, now: float) -> bool:
        """True when `now` (in this schedule's unit) has crossed the next multiple after `last`."""
        return math.floor(now / self.amount + 1e-9) > math.floor(last / self.amount + 1e-9)


def parse_every(text: str) -> Every:
    """Parse an evaluation period: budget time (`6h`, `30s`), `1epoch`/`2epochs` or `500steps`."""
    m = _EVERY_RE.match(str(text).lower())
    if not m:
        raise BudgetError(
            f"malformed schedule '{text}': use budget time (30s, 6h), epochs (1epoch) or steps (500steps)"
        )
    value, unit = float(m.group(1)), m.group(2)
    if value <= 0:
        raise BudgetError(f"schedule '{text}' must be positive")
    if unit.startswith("epoch"):
        return Every(str(text).strip(), value, "epochs")
    if unit.startswith("step"):
        return Every(str(text).strip(), value, "steps")
    return Every(str(text).strip(), value * _SECONDS[unit], "seconds")


class DeviceClock:
    """Accumulates training time only, measured on the device.

    The loop starts the clock when a training segment begins and stops it when the segment ends
    (an evaluation, a checkpoint, the budget, a signal; data loading is inside). Both ends
    synchronise CUDA: work queued before the segment is not training, work queued in it is.
    Readings in between are host-side and never synchronise, so the steps of a segment queue
    behind each other as in a bare loop; they lag the device by what is queued (a few steps at
    most), which the segment's `stop()` counts. The elapsed total is part of every checkpoint,
    so a killed and resumed run spends exactly the budget of one that was not.
    """

    def __init__(self, device: torch.device | str = "cpu", elapsed: float = 0.0):
        self.device = torch.device(device)
        self._elapsed = float(elapsed)
        self._started: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self._started is not None:
            raise RuntimeError("DeviceClock.start() called twice without stop()")
        self._sync()
        self._started = time.perf_counter()

    def stop(self) -> float:
        """Stop the running segment (after the device has finished its work) and return the total
        elapsed seconds."""
        if self._started is None:
            raise RuntimeError("DeviceClock.stop() called without start()")
        self._sync()
        self._elapsed += time.perf_counter() - self._started
        self._started = None
        return self._elapsed

    def agree(self, elapsed: float) -> None:
        """Adopt another clock's total (rank 0's, in a data-parallel run) as of now, between steps."""
        if self._started is None:
            self._elapsed = float(elapsed)
        else:  # the running segment continues from the agreed reading
            self._elapsed = float(elapsed) - (time.perf_counter() - self._started)

    @property
    def running(self) -> bool:
        return self._started is not None

    @property
    def elapsed(self) -> float:
        """Total training seconds, including the running segment's so far (a host-side reading:
        exact once the segment has stopped)."""
        if self._started is None:
            return self._elapsed
        return self._elapsed + time.perf_counter() - self._started

    def state_dict(self) -> dict:
        if self._started is not None:
            raise RuntimeError("cannot checkpoint a DeviceClock while it is running")
        return {"elapsed": self._elapsed}

    def load_state_dict(self, state: dict) -> None:
        self._elapsed = float(state["elapsed"])
        self._started = None


def stage_budgets(stages: list, budget: Budget, only: str | None) -> dict[str, float]:
    """Seconds of training for each stage: the whole budget for `--stage`, otherwise the stages'
    shares of it (normalised, so shares need not sum to one)."""
    if only is not None:
        return {s.name: (budget.seconds if s.name == only else 0.0) for s in stages}
    total = sum(s.budget_share for s in stages)
    return {s.name: budget.seconds * s.budget_share / total for s in stages}
