"""The losses of a training segment, kept on the device and read in one transfer per train line."""
from __future__ import annotations

import math

import torch

from harness.engine.stage_run import StageRun


class TrainLog:
    """The losses of the steps since the last train line, brought to the host together, and the
    images/s of the budget clock over the same window.

    A stage returns its losses as floats or as tensors on its device (harness.method.Stage); the
    loop hands each step's to `add`, which keeps them without reading them. `read()` transfers
    every pending loss at once (one host-device synchronisation, not one or more per step): at
    each train line and before anything that must not see a diverged state (a checkpoint, an
    evaluation, the end of training). It returns the first step whose losses are not all finite.
    """

    MAX_PENDING = 1000  # steps: read at least this often (memory; a divergence's wasted steps)

    def __init__(self, r: StageRun):
        self.pending: list[tuple[int, dict]] = []  # (step number, losses as the stage returned them)
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # a loss of some steps only (WGAN's generator) averages over those
        self.at = -1e9  # perf_counter() of the last line: the first step always writes one
        self.window = (r.clock.elapsed, r.progress.images)

    def add(self, step: int, losses: dict) -> None:
        """Keep the losses of step number `step` (1 = the first), unread."""
        self.pending.append((step, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}))

    def read(self) -> tuple[int, dict[str, float]] | None:
        """Bring the pending losses to the host into the window's sums; (step, its losses) of the
        first step with a non-finite loss, else None. The window keeps only the steps before it."""
        pending, self.pending = self.pending, []
        tensors = [v for _, losses in pending for v in losses.values() if isinstance(v, torch.Tensor)]
        if tensors:
            device = tensors[0].device
            host = iter(torch.stack([t.reshape(()).to(device, torch.float64) for t in tensors]).tolist())
        for step, losses in pending:
            values = {k: next(host) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}
            if not all(math.isfinite(v) for v in values.values()):
                return step, values
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
        return None

    def due(self, r: StageRun, now: float, every_s: float) -> bool:
        """A train line is due: every `every_s` and at step 1."""
        return now - self.at >= every_s or r.progress.step == 1

    @property
    def full(self) -> bool:
        """MAX_PENDING steps are unread: read them even though no line is due."""
        return len(self.pending) >= self.MAX_PENDING

    def line(self, r: StageRun, now: float) -> tuple[dict[str, float], float]:
        """(mean losses, images/s) since the last line (call `read()` first); brings
        `r.progress.wall_s` up to date and starts a new window."""
        clock_s, images = r.clock.elapsed, r.progress.images
        dt = clock_s - self.window[0]
        ips = (images - self.window[1]) / dt if dt > 0 else float("nan")
        avg = {k: v / self.counts[k] for k, v in self.sums.items()}
        r.progress.wall_s = r.wall(now)
        self.sums, self.counts, self.at, self.window = {}, {}, now, (clock_s, images)
        return avg, ips
