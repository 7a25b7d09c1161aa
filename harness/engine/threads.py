"""Threads for training: torch's intra-op threads and the batch prefetch threads, from the cores this
process may use and what other processes leave of them; `--threads N` fixes the intra-op count.

On a CPU the count is chosen when the run starts and checked again at every train line, so a run
that a busy process joins steps down (and back up when it leaves). run.json's `threads` says what
was chosen, from what, and each change.
"""
from __future__ import annotations

import math
import os
import time

import torch

from harness.data.loader import default_workers
from harness.engine import cores as cpu
from harness.engine.cores import Cores

# An intra-op thread too many costs more than one too few: every parallel region waits for its
# slowest thread, and a thread that shares its core with a busy process is descheduled half the
# time (issue 23: 0.442 s/step with 2 threads beside one busy process on 2 cores, 0.170 with 1).
# So the count is the available cores rounded half down, and it rises again only once the cores
# are clearly free (MARGIN), so that a load near a boundary does not switch it at every line.
MARGIN = 0.15
START_SAMPLE_S = 0.3  # how long the machine is watched before the first choice
MIN_RECHECK_S = 1.0  # a shorter window (the first train line's) is too coarse to act on: /proc/stat counts 10 ms
KEEP_CHANGES = 20  # run.json keeps the latest changes; metrics.jsonl's stretch lines have every count


def threads_for(available: float, cores: Cores, current: int | None = None) -> int:
    """Intra-op threads for `available` free cores: rounded half down, between 1 and the usable
    cores; from `current`, down as soon as a thread would wait, up only past the margin."""
    target = min(cores.count, max(1, math.ceil(available - 0.5)))
    if current is not None and target > current and available < current + 0.5 + MARGIN:
        return current
    return target


def omp_threads() -> int | None:
    """The thread count $OMP_NUM_THREADS asks for (its first level), None where unset or not a count."""
    text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


class ThreadPolicy:
    """The threads of one training process on `device`: `fixed` (--threads) or chosen from the
    usable `cores` and the load of other processes (`others`, in cores; None: unknown)."""

    def __init__(self, device: torch.device, cores: Cores, fixed: int | None = None, others: float | None = None,
                 processes: int = 1, source: str = "--threads"):
        self.device, self.cores, self.fixed, self.processes = torch.device(device), cores, fixed, processes
        self.source = source  # what fixed the count: --threads or $OMP_NUM_THREADS
        self.others_at_start = others
        self.changes: list[dict] = []
        if fixed is not None:
            self.intra_op = fixed
        elif self.device.type == "cpu":
            self.intra_op = threads_for(cores.available(others) / processes, cores)
        else:  # a GPU run's host threads launch kernels and convert batches: never more than the usable cores
            self.intra_op = min(torch.get_num_threads(), cores.count)

    @classmethod
    def start(cls, device: torch.device, fixed: int | None = None, processes: int = 1) -> "ThreadPolicy":
        """Measure the machine (START_SAMPLE_S on a CPU without --threads), choose, apply. A count set
        in $OMP_NUM_THREADS is kept as --threads would be: whoever set it wanted that many."""
        cores = cpu.usable_cores()
        source = "--threads"
        if fixed is None and (env := omp_threads()) is not None:
            fixed, source = env, "$OMP_NUM_THREADS"
        others = None
        if fixed is None and torch.device(device).type == "cpu":
            others = cpu.measure_others(cores, START_SAMPLE_S)
        policy = cls(device, cores, fixed, others, processes, source)
        policy.apply()
        return policy

    @property
    def adaptive(self) -> bool:
        return self.fixed is None and self.device.type == "cpu" and self.processes == 1

    @property
    def prefetch(self) -> int:
        """Prefetch threads of the batch stream (harness.data.loader): one on a CPU, where they only
        overlap the next batch's reading with the step; on a GPU up to eight of the usable cores."""
        return default_workers(self.device, self.processes, self.cores.count)

    def apply(self) -> None:
        if torch.get_num_threads() != self.intra_op:
            torch.set_num_threads(self.intra_op)

    def recheck(self, others: float | None, stage: str, step: int, seconds: float = MIN_RECHECK_S) -> int | None:
        """At a train line: the new intra-op count where the load of other processes (`others`
        cores, measured over the line's window of `seconds`) calls for one, applied; else None."""
        if not self.adaptive or others is None or seconds < MIN_RECHECK_S:
            return None
        count = threads_for(self.cores.available(others), self.cores, self.intra_op)
        if count == self.intra_op:
            return None
        self.changes = [*self.changes, {"time": time.time(), "stage": stage, "step": step, "from": self.intra_op,
                                        "to": count, "others": round(others, 2)}][-KEEP_CHANGES:]
        self.intra_op = count
        self.apply()
        return count

    def describe(self) -> dict:
        """run.json's `threads`."""
        how = (self.source if self.fixed is not None else
               "chosen from the usable cores and other processes' load, checked at every train line"
               if self.adaptive else "at most the usable cores")
        return {"device": self.device.type, "policy": how, "cores": self.cores.describe(),
                "others_at_start": None if self.others_at_start is None else round(self.others_at_start, 2),
                "intra_op": self.intra_op, "prefetch": self.prefetch, "changes": self.changes}
