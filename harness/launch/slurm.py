"""`harness compare --launcher slurm`: a comparison's jobs submitted to Slurm through submitit.

Every job is the same `harness run` a local comparison starts, run by a `SlurmJob` inside its own
allocation (jobs alike go out as one job array). Slurm's warning before a time limit or a
preemption (`--signal`, USR2) makes submitit call `SlurmJob.checkpoint`: the run checkpoints on
SIGTERM and the job is requeued; the requeued job runs the same command, which continues the run
from its checkpoint on the same budget clock (`--run-dir` of an existing run continues it). A
requeue or cancel from outside sends SIGTERM to the run directly, with the same effect.

Submitting returns at once: the same command again shows each job's state, submits only the jobs
that are neither done nor queued or running, and writes the report once none is waiting.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.errors import ClusterError, ConfigError, RunDirError
from harness.launch.allocation import queue
from harness.launch.compare import (Comparison, Job, Outcome, job_processes, jobs_table, open_folder, read_record,
                                    save_record, validate)
from harness.launch.jobs import parent_death_signal
from harness.rundir.rundir import RunDir
from harness.rundir.tblog import check_logger

# a week-long run under 24-hour limits is requeued 7 times on time-outs alone (submitit's default: 3)
MAX_TIMEOUTS = 1000
# Slurm warns this long before the time limit (USR2); the run stops at its next step boundary and
# writes its checkpoint in that time
SIGNAL_S = 120
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(m|min|h|d)?\s*$")


@dataclass(frozen=True)
class SlurmOptions:
    """The allocation of every job: `--partition`, `--time`, `--account`, `--gpus-per-job` (0: CPU
    jobs) and other sbatch options as KEY=VALUE (`--slurm-option cpus-per-task=16`)."""

    partition: str | None = None
    time: str | None = None
    account: str | None = None
    gpus_per_job: int = 1
    options: tuple[str, ...] = ()
    signal_s: int = SIGNAL_S

    def minutes(self) -> int:
        """--time in minutes: 90m, 24h, 2d or a number of minutes [default: 24h]."""
        m = _TIME_RE.match(self.time or "24h")
        if not m or float(m.group(1)) <= 0:
            raise ConfigError(f"--time takes a positive duration such as 90m, 24h or 2d, got '{self.time}'")
        minutes = float(m.group(1)) * {None: 1, "m": 1, "min": 1, "h": 60, "d": 1440}[m.group(2)]
        if minutes * 60 <= 2 * self.signal_s:
            raise ConfigError(f"--time {self.time}: a job needs more than {2 * self.signal_s} s (Slurm warns it "
                              f"{self.signal_s} s before the limit, to checkpoint)")
        return math.ceil(minutes)

    def extra(self) -> dict[str, str]:
        """--slurm-option KEY=VALUE as sbatch's `--KEY=VALUE`."""
        extra = {}
        for o in self.options:
            key, eq, value = o.partition("=")
            key = key.strip().lstrip("-")
            if not eq or not key:
                raise ConfigError(f"--slurm-option takes KEY=VALUE (an sbatch option without its dashes, e.g. "
                                  f"cpus-per-task=16), got '{o}'")
            extra[key] = value.strip()
        return extra

    def describe(self) -> dict:
        """compare.json's record of the allocation a job asked for."""
        return {"partition": self.partition, "time_min": self.minutes(), "account": self.account,
                "gpus": self.gpus_per_job, "options": self.extra(), "signal_s": self.signal_s}


def _ended(pid: int) -> bool:
    """The process has exited (a zombie counts: its parent reaps it later, outside a signal handler)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


class SlurmJob:
    """What a Slurm job runs (submitit pickles it): one comparison job's `harness run` as a child
    process, its output to the job's log. Exit code 0 returns; any other raises, so that submitit
    records the job as failed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], grace_s: float):
        self.name, self.argv, self.env, self.grace_s = name, argv, env, grace_s
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None}

    def __call__(self) -> int:
        die_with_parent = parent_death_signal()

        def child() -> None:
            # Slurm's warning signal reaches every process of the job; the run must not die of it: this
            # process turns it into the run's SIGTERM (checkpoint()).
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            if die_with_parent is not None:
                die_with_parent()

        proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, preexec_fn=child)
        self._pid = proc.pid
        # poll, not wait(): submitit's signal handler runs on this thread, between these calls
        while (code := proc.poll()) is None:
            time.sleep(0.5)
        if code != 0:
            raise RuntimeError(f"{self.name}: harness run exited with code {code}")
        return code

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on Slurm's warning (time limit near, preemption): the run checkpoints
        and stops on SIGTERM (at its next step boundary); the same job, requeued, continues it."""
        from submitit.helpers import DelayedSubmission

        if self._pid is not None and not _ended(self._pid):
            os.kill(self._pid, signal.SIGTERM)
            end = time.monotonic() + self.grace_s
            while not _ended(self._pid) and time.monotonic() < end:
                time.sleep(0.2)
        return DelayedSubmission(SlurmJob(self.name, self.argv, self.env, self.grace_s))


def executor_parameters(opts: SlurmOptions, folder: Path) -> dict:
    """submitit's SlurmExecutor parameters of every job's allocation."""
    return {"job_name": f"harness-{folder.name}"[:60], "time": opts.minutes(), "partition": opts.partition,
            "account": opts.account, "gpus_per_node": opts.gpus_per_job or None, "signal_delay_s": opts.signal_s,
            "stderr_to_stdout": True, "additional_parameters": opts.extra()}


def _submit(jobs: list[Job], argvs: list[list[str]], opts: SlurmOptions, folder: Path) -> list[str]:
    """Submit the jobs (one job array) with the allocation `opts`; returns their Slurm job ids."""
    import submitit
    from submitit.core.utils import FailedJobError

    executor = submitit.SlurmExecutor(folder=folder / "slurm", max_num_timeout=MAX_TIMEOUTS)
    try:
        executor.update_parameters(**executor_parameters(opts, folder))
    except ValueError as e:
        raise ConfigError(f"Slurm options: {e}") from None
    grace = max(1.0, opts.signal_s - 15.0)  # what is left of the warning once the run has stopped: requeue
    try:
        # submitit prints sbatch's refusal itself; it goes into the one line below instead
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            subs = [executor.submit(SlurmJob(j.name, argv, {}, grace)) for j, argv in zip(jobs, argvs)]
    except FailedJobError as e:
        lines = [re.sub(r"^sbatch: (error: )?", "", line.strip()) for line in str(e).splitlines()]
        said = "; ".join(line for line in lines if line and not line.startswith("Try ")) or "no reason given"
        raise ClusterError(f"sbatch refused the jobs: {said}") from None
    except FileNotFoundError:
        raise ClusterError("sbatch not found: --launcher slurm needs Slurm's client commands on PATH") from None
    return [s.job_id for s in subs]


def refresh(jobs: list[Job], record: dict) -> None:
    """Each job's state now, into `job.outcome` and record["jobs"]: done (its run finished), queued
    or running (its Slurm job in the queue, or its run trained by a process here), failed (it ran,
    or was submitted, and is neither) or new."""
    ids = [s["job_id"] for j in jobs if (s := record["jobs"].get(j.name, {}).get("slurm"))]
    live = queue(ids)
    for job in jobs:
        outcome = dict(record["jobs"].get(job.name, {}))
        slurm = dict(outcome.get("slurm") or {})
        run_state = job.state()
        cluster = _cluster(job) if run_state != "new" else None
        if cluster and cluster.get("job_id") == slurm.get("job_id"):
            slurm.update(node=cluster.get("node"), restarts=cluster.get("restart_count"))
        on = live.get(slurm.get("job_id")) if slurm else None
        if slurm:  # the controller's state while it lists the job; ENDED once it has left the queue
            slurm.update(slurm_state=on["slurm_state"] if on else "ENDED",
                         node=(on["node"] if on else None) or slurm.get("node"))
        if run_state == "finished":
            state = "done"
        elif on:
            state = on["state"]
        elif job.holders():
            state = "running"
        elif slurm or run_state != "new" or "exit_code" in outcome:
            state = "failed"  # submitted or started, and ended without finishing its run (cancelled, crashed)
        else:
            state = "new"
        outcome.update(state=run_state, status=job.status(), queue=state)
        if slurm:
            outcome["slurm"] = slurm
        job.outcome = outcome
        record["jobs"][job.name] = outcome


def _cluster(job: Job) -> dict | None:
    try:
        return RunDir.open(job.run_dir).manifest().get("cluster")
    except RunDirError:
        return None


def status_lines(jobs: list[Job]) -> list[str]:
    """The table `harness compare` prints: job, state, Slurm job id, node, run status."""
    rows = [("job", "state", "slurm job", "node", "run")]
    for j in jobs:
        s = j.outcome.get("slurm") or {}
        rows.append((j.name, j.outcome.get("queue", "new"), s.get("job_id") or "-", s.get("node") or "-",
                     j.outcome.get("status") or "-"))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def status(folder: Path) -> list[Job]:
    """The jobs of the comparison in `folder` and their states, without submitting anything."""
    path = folder / "compare.json"
    if not path.is_file():
        raise RunDirError(f"{folder} is not a comparison folder (no compare.json)")
    try:
        record = json.loads(path.read_text())
        c = Comparison.from_identity(record["comparison"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} is unreadable ({e})") from None
    jobs = c.jobs(folder)
    refresh(jobs, record)
    return jobs


def compare_on_slurm(c: Comparison, folder: Path | None, opts: SlurmOptions, *, device: str | None = None,
                     inception: str | None = None, energy: bool = True, targets: list[float] | None = None,
                     run_log: str | None = None, threads: int | None = None, wait: bool = False,
                     log: Callable[[str], None] = print, poll_s: float = 30.0) -> Outcome:
    """Submit the jobs of `c` that are neither done nor queued or running, each in an allocation
    of `opts`; then (with `wait`, asking squeue at most every `poll_s`, once none is queued or
    running) write the report. Without
    `wait`, returns after submitting with `Outcome.pending` the jobs still waiting."""
    validate(c)
    check_logger(run_log)
    if missing := [cmd for cmd in ("sbatch", "srun", "squeue") if shutil.which(cmd) is None]:
        raise ClusterError(f"{', '.join(missing)} not found: --launcher slurm needs Slurm's client commands on "
                           f"PATH (a login node of the cluster)")
    if opts.gpus_per_job < 0:
        raise ConfigError(f"--gpus-per-job must be 0 (CPU jobs) or more, got {opts.gpus_per_job}")
    gpus = 0 if device == "cpu" else opts.gpus_per_job
    opts = SlurmOptions(opts.partition, opts.time, opts.account, gpus, opts.options, opts.signal_s)
    allocation = opts.describe()  # checks --time and --slurm-option before anything is submitted
    folder = Path(folder) if folder is not None else c.default_folder()
    record, lock = open_folder(folder, c)
    try:
        jobs = c.jobs(folder)
        refresh(jobs, record)
        todo = [j for j in jobs if j.outcome["queue"] in ("new", "failed")]
        for j in jobs:
            if j.outcome["queue"] != "new" and j not in todo:
                log(f"{j.name}: {j.outcome['queue']}" + (f" (slurm job {j.outcome['slurm']['job_id']})"
                                                         if j.outcome.get("slurm") else "") + ", not submitted")
        if todo:
            argvs = []
            for j in todo:
                j.run_dir.parent.mkdir(parents=True, exist_ok=True)
                argvs.append(j.argv(c, "cuda" if gpus else "cpu", inception, energy, False,
                                    processes=job_processes(j, c, gpus), log=run_log, threads=threads))
            ids = _submit(todo, argvs, opts, folder)
            now = time.strftime("%Y-%m-%dT%H:%M:%S")
            for j, argv, job_id in zip(todo, argvs, ids):
                array, _, index = job_id.partition("_")
                slurm = {"job_id": job_id, "array_job_id": array if index else None,
                         "array_index": int(index) if index else None, "submitted": now, "allocation": allocation,
                         "log": str(folder / "slurm" / f"{job_id}_0_log.out"),
                         "previous": [*j.outcome.get("slurm", {}).get("previous", []),
                                      *([j.outcome["slurm"]["job_id"]] if j.outcome.get("slurm") else [])]}
                record["jobs"][j.name] = {**j.outcome, "argv": argv[1:], "slurm": slurm, "queue": "queued"}
                j.outcome = record["jobs"][j.name]
                log(f"{j.name}: submitted as slurm job {job_id}")
        save_record(folder, record)
    finally:
        lock.release()
    for line in status_lines(jobs):
        log(line)
    pending = [j for j in jobs if j.outcome["queue"] in ("queued", "running")]
    waited = time.monotonic()
    while wait and pending:
        # every second at first (short jobs, tests), then less often, up to every `poll_s`: a week of
        # waiting asks the controller ~20,000 times, not 600,000
        time.sleep(min(poll_s, 1.0 + 0.05 * (time.monotonic() - waited)))
        before = {j.name: j.outcome["queue"] for j in jobs}
        refresh(jobs, read_record(folder, c))
        for j in jobs:
            if j.outcome["queue"] != before[j.name]:
                log(f"{j.name}: {j.outcome['queue']}")
        pending = [j for j in jobs if j.outcome["queue"] in ("queued", "running")]
    if pending:
        return Outcome(folder, jobs, pending=pending)
    return _report(c, folder, jobs, targets)


def _report(c: Comparison, folder: Path, jobs: list[Job], targets: list[float] | None) -> Outcome:
    """None waiting: the record of every job and the comparison's report (as a local comparison's)."""
    from harness.report import write_report
    from harness.rundir.writer_lock import hold_folder

    lock = hold_folder(folder, "compare")
    try:
        record = read_record(folder, c)
        for j in jobs:
            record["jobs"][j.name] = j.outcome
        save_record(folder, record)
    finally:
        lock.release()
    runs = [j.run_dir for j in jobs if RunDir.is_run(j.run_dir)]
    if not runs:
        return Outcome(folder, jobs)
    return Outcome(folder, jobs, write_report(runs, folder / "report", targets=targets, jobs=jobs_table(jobs),
                                              title=f"comparison: {' vs '.join(e.label for e in c.entries)}"))
