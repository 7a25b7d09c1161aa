"""One runner for the harness's child jobs: the stage jobs of a parallel layout and the runs of a
`compare`. Each job runs as its own process in a free slot (at most one job per slot), its output
to a log file the runner owns and closes, or to this terminal. Ctrl-C / SIGTERM is passed on to the
running jobs (they checkpoint and stop); no new job starts, and `Interrupted` is raised once they
have stopped."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

from harness.engine.signals import Interrupted, forwarded

J = TypeVar("J")
S = TypeVar("S")


@dataclass
class Launch:
    """How to start one job: its command line, environment, where its output goes (None: this
    terminal; else appended to that file) and the CPUs it may run on (None: this process's)."""

    argv: list[str]
    env: dict[str, str]
    log: Path | None = None
    cpus: tuple[int, ...] | None = None


@dataclass
class _Running(Generic[J, S]):
    job: J
    slot: S
    proc: subprocess.Popen
    log: object | None  # the open log file, closed when the job ends


def run_jobs(jobs: Sequence[J], launch: Callable[[J, S], Launch], slots: Sequence[S],
             done: Callable[[J, int], None], poll_s: float = 0.2) -> None:
    """Run every job in a free slot; `launch(job, slot)` says how, `done(job, exit code)` is called
    as each finishes (in the order they finish)."""
    queue, free, running = list(jobs), list(slots), []
    with forwarded(lambda: [r.proc for r in running]) as received:
        while queue or running:
            while queue and free and not received:
                job, slot = queue.pop(0), free.pop(0)
                how = launch(job, slot)
                log = open(how.log, "a") if how.log is not None else None
                try:
                    proc = subprocess.Popen(how.argv, env=how.env, stdout=log,
                                            stderr=subprocess.STDOUT if log else None)
                    if how.cpus:  # before the interpreter has started a thread (each inherits the mask then)
                        os.sched_setaffinity(proc.pid, how.cpus)
                except BaseException:
                    if log is not None:
                        log.close()
                    raise
                running.append(_Running(job, slot, proc, log))
            if not running:
                break
            for r in list(running):
                code = r.proc.poll()
                if code is not None:
                    running.remove(r)
                    if r.log is not None:
                        r.log.close()
                    free.append(r.slot)
                    done(r.job, code)
            time.sleep(poll_s)
    if received:
        raise Interrupted(received[0])
