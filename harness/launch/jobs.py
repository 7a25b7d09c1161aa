"""One runner for the harness's child jobs: the stage jobs of a parallel layout and the runs of a
`compare`. Each job runs as its own process in a free slot (at most one job per slot), its output
to a log file the runner owns and closes, or to this terminal. Ctrl-C / SIGTERM / SIGHUP is passed
on to the running jobs (they checkpoint and stop); no new job starts, and `Interrupted` is raised
once they have stopped. A job never outlives the runner: killed with -9, its jobs get SIGTERM."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send the child SIGTERM when this process dies (kill -9, a
    lost session), so that a job checkpoints and stops instead of training on as an orphan; None
    where there is no prctl (not Linux). libc is loaded here, before the fork: the child only
    makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would tell us
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


def run_jobs(jobs: Sequence[J], launch: Callable[[J, S], Launch], slots: Sequence[S],
             done: Callable[[J, int], None], poll_s: float = 0.2,
             ready: Callable[[J], bool] = lambda job: True) -> None:
    """Run every job in a free slot; `launch(job, slot)` says how, `done(job, exit code)` is called
    as each finishes (in the order they finish). A job for which `ready(job)` is False (its run is
    still held by another process) waits in the queue while the others go ahead."""
    queue, free, running = list(jobs), list(slots), []
    preexec = _parent_death_signal()
    with forwarded(lambda: [r.proc for r in running]) as received:
        while queue or running:
            while queue and free and not received:
                job = next((j for j in queue if ready(j)), None)
                if job is None:
                    break
                queue.remove(job)
                slot = free.pop(0)
                how = launch(job, slot)
                log = open(how.log, "a") if how.log is not None else None
                try:
                    proc = subprocess.Popen(how.argv, env=how.env, stdout=log,
                                            stderr=subprocess.STDOUT if log else None, preexec_fn=preexec)
                    if how.cpus:  # before the interpreter has started a thread (each inherits the mask then)
                        os.sched_setaffinity(proc.pid, how.cpus)
                except BaseException:
                    if log is not None:
                        log.close()
                    raise
                running.append(_Running(job, slot, proc, log))
            if not running and (received or not queue):
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
