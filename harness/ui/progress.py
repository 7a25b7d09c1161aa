"""Progress displays: a rich bar on a terminal, plain lines in a log, for training and for evaluations."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.ui.units import format_seconds


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

    def show(self, spent: float, step: int, rate: float, losses: dict[str, float], share: float | None = None) -> None:
        """`share`: of the machine since the last line (harness.engine.exclusivity)."""
        text = " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:4])
        if share is not None:
            text += f" share={share:.2f}" + (" (machine busy)" if share < 0.9 else "")
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
