"""The training progress display: a rich bar on a terminal, plain lines in a log."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from harness.budget import format_seconds

if TYPE_CHECKING:
    from harness.stagerun import StageRun


class ProgressBar:
    """A rich progress bar on a terminal; plain lines every log interval otherwise."""

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
        if self.progress is not None:
            self.progress.__exit__(*exc)


class TrainLog:
    """Losses averaged over the steps since the last train line, and the images/s of the budget
    clock over the same window."""

    def __init__(self, r: "StageRun"):
        self.sums: dict[str, float] = {}
        self.n = 0
        self.at = -1e9  # perf_counter() of the last line: the first step always writes one
        self.window = (r.clock.elapsed, r.progress.images)

    def add(self, r: "StageRun", now: float, every_s: float) -> tuple[dict[str, float], float] | None:
        """Count the step `r` just took; every `every_s` (and at step 1) return (mean losses,
        images/s) since the last line, bring `r.progress.wall_s` up to date and start a new window."""
        for k, v in r.losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        if now - self.at < every_s and r.progress.step != 1:
            return None
        clock_s, images = r.clock.elapsed, r.progress.images
        dt = clock_s - self.window[0]
        ips = (images - self.window[1]) / dt if dt > 0 else float("nan")
        avg = {k: v / self.n for k, v in self.sums.items()}
        r.progress.wall_s = r.wall(now)
        self.sums, self.n, self.at, self.window = {}, 0, now, (clock_s, images)
        return avg, ips
