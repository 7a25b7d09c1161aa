"""What the loop is told about one run: its budget, seed, schedules and limits."""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.engine.budget import Budget, Every, parse_every


DEFAULT_CHECKPOINT_EVERY = "5m"  # of budget time: a kill -9 loses at most five minutes of training


@dataclass
class LoopOptions:
    budget: Budget
    seed: int = 0
    eval_every: Every | None = None
    eval_samples: int = 0
    max_steps: int | None = None
    keep_samples: int | None = None  # of the final evaluation, in samples/<stage>-final.npz (None: all)
    only_stage: str | None = None
    log_every_s: float = 10.0  # wall seconds between train lines in metrics.jsonl
    # checkpoints besides those after evaluations and at the end: budget time, steps or epochs (at
    # most this much training is lost to a kill -9); never off
    checkpoint_every: Every = field(default_factory=lambda: parse_every(DEFAULT_CHECKPOINT_EVERY))
    progress: bool = True
    profile_steps: int = 0  # --profile: trace this many steps of each stage (harness.profiling); 0 = off
