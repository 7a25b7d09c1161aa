"""The training progress display: a rich bar on a terminal, plain lines in a log."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.engine.budget import format_seconds

if TYPE_CHECKING:
    from harness.engine.stage_run import StageRun


class ProgressBar:
    """A rich progress bar on a terminal; plain lines every log interval otherwise. The bar in
    use is `ProgressBar.active`, so that an evaluation can pause it for its own (`EvalProgress`)."""

    active: "ProgressBar | None" = None

    def __init__(self, console: Console, name: str, budget_s: float, enabled: bool):
        self.console, self.name, self.budget_s = console, name, budget_s
        self.live = enabled and console.is_terminal
        self.enabled = enabled
        self.progress = None

    def __enter__(self):
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.fields[name]}"), BarColumn(),
                TextColumn("{task.fields[spent]} / {task.fields[budget]} ({task.fields[left]} left)"),
                TextColumn("step {task.fields[step]}"), TextColumn("{task.fields[rate]} img/s"),
                TextColumn("{task.fields[losses]}"), console=self.console, transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.budget_s, name=self.name, spent="0s",
                                               budget=format_seconds(self.budget_s), left=format_seconds(self.budget_s),
                                               step=0, rate="-", losses="")
        ProgressBar.active = self
        return self

    def show(self, spent: float, step: int, rate: float, losses: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:4])
        if self.progress is not None:
            self.progress.update(self.task, completed=min(spent, self.budget_s), spent=format_seconds(spent),
                                 left=format_seconds(self.budget_s - spent),
                                 step=step, rate=f"{rate:.1f}", losses=text)
        elif self.enabled:
            print(f"[{self.name}] {format_seconds(spent)}/{format_seconds(self.budget_s)} "
                  f"({format_seconds(self.budget_s - spent)} left) step {step} "
                  f"{rate:.1f} img/s {text}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        ProgressBar.active = None
        if self.progress is not None:
            self.progress.__exit__(*exc)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing the training bar meanwhile (rich draws one live display at a time)."""
        if self.progress is None:
            yield
            return
        live = self.progress.live
        transient, live.transient = live.transient, True  # erased while paused, redrawn after
        self.progress.stop()
        try:
            yield
        finally:
            live.transient = transient
            self.progress.start()


class EvalProgress:
    """Progress of an evaluation's images (sampling and feature extraction), with an ETA: a rich
    bar on a terminal (the training bar paused meanwhile), a line about every 10% or 30 s in a
    log (none in its first `quiet_s`), nothing when disabled. `task(label, total)` yields
    `advance(count)`."""

    def __init__(self, console: Console, enabled: bool = True, log_every_s: float = 30.0, quiet_s: float = 5.0):
        self.console, self.enabled, self.log_every_s, self.quiet_s = console, enabled, log_every_s, quiet_s

    @contextlib.contextmanager
    def task(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled or total <= 0:
            yield lambda k: None
            return
        if self.console.is_terminal:
            bar = ProgressBar.active
            with bar.paused() if bar is not None else contextlib.nullcontext():
                with Progress(TextColumn("[cyan]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("images"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                              console=self.console, transient=True) as progress:
                    task = progress.add_task(label, total=total)
                    yield lambda k: progress.advance(task, k)
            return
        state = {"done": 0, "said": 0, "at": time.perf_counter()}
        t0 = state["at"]

        def advance(k: int) -> None:
            state["done"] += k
            done, now = state["done"], time.perf_counter()
            if now - t0 < self.quiet_s:  # a short evaluation needs no progress lines
                return
            if done < total and done - state["said"] < total / 10 and now - state["at"] < self.log_every_s:
                return
            eta = (now - t0) / done * (total - done) if done else float("nan")
            print(f"[{label}] {done}/{total} images, {format_seconds(now - t0)} elapsed"
                  + (f", ETA {format_seconds(eta)}" if done < total else ""), file=sys.stderr, flush=True)
            state.update(said=done, at=now)

        yield advance


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

    def __init__(self, r: "StageRun"):
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

    def due(self, r: "StageRun", now: float, every_s: float) -> bool:
        """A train line is due: every `every_s` and at step 1."""
        return now - self.at >= every_s or r.progress.step == 1

    @property
    def full(self) -> bool:
        """MAX_PENDING steps are unread: read them even though no line is due."""
        return len(self.pending) >= self.MAX_PENDING

    def line(self, r: "StageRun", now: float) -> tuple[dict[str, float], float]:
        """(mean losses, images/s) since the last line (call `read()` first); brings
        `r.progress.wall_s` up to date and starts a new window."""
        clock_s, images = r.clock.elapsed, r.progress.images
        dt = clock_s - self.window[0]
        ips = (images - self.window[1]) / dt if dt > 0 else float("nan")
        avg = {k: v / self.counts[k] for k, v in self.sums.items()}
        r.progress.wall_s = r.wall(now)
        self.sums, self.counts, self.at, self.window = {}, {}, now, (clock_s, images)
        return avg, ips
