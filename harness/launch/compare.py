"""`harness compare`: several methods x seeds under one budget, into one folder, then its report.

    harness compare dcgan octave-dcgan:variant=combi --budget 30m --seeds 0,1,2

A comparison folder holds `compare.json` (the command that made it), `runs/<job>/` (one run
directory per method x seed) and `report/` (index.html, index.md, tables/, figures/).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.rundir.atomic import atomic_write_bytes
from harness.engine import cores
from harness.engine.budget import parse_budget, parse_every
from harness.engine.seeding import check_seed
from harness.engine.exclusivity import machine_line, machine_now
from harness.config import apply_overrides, parse_overrides
from harness.data import parse_data_spec
from harness.errors import ConfigError, RunDirError
from harness.rundir.records import FINISHED
from harness.registry import get_method
from harness.rundir.rundir import RunDir
from harness.launch.jobs import Launch, run_jobs
from harness.metrics.networks import check_backbone_spec
from harness.metrics.reference import Selection
from harness.metrics.suite import parse_metrics
from harness.rundir.rundir import check_parents
from harness.rundir.tblog import check_logger
from harness.rundir.writer_lock import WriterLock, hold_folder, holders

if TYPE_CHECKING:
    from harness.report import Report

FORMAT = 1
# an override starts at a comma followed by `key=`; commas inside values (betas=[0.5,0.999]) stay
_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


@dataclass(frozen=True)
class Entry:
    """One method of a comparison, with its own config overrides: `METHOD[:key=value,...]`."""

    method: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.method + (":" + ",".join(self.overrides) if self.overrides else "")

    @property
    def slug(self) -> str:
        """A folder-safe name: octave-dcgan:variant=combi -> octave-dcgan_variant-combi."""
        parts = [self.method] + [re.sub(r"[^A-Za-z0-9.]+", "-", o).strip("-") for o in self.overrides]
        return "_".join(parts)[:80]


def parse_entry(text: str) -> Entry:
    method, _, rest = text.partition(":")
    method = method.strip()
    if not method:
        raise ConfigError(f"'{text}': expected METHOD or METHOD:key=value,...")
    overrides = tuple(p.strip() for p in _OVERRIDE_SPLIT.split(rest) if p.strip()) if rest else ()
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"'{text}': '{o}' is not key=value (METHOD:key=value,key=value)")
    return Entry(method, overrides)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got '{text}'")
    for seed in seeds:
        check_seed(seed, "--seeds")
    return seeds


@dataclass(frozen=True)
class Comparison:
    """What defines a comparison: every job's settings. Two commands with the same Comparison
    are the same comparison (the second continues the first)."""

    entries: tuple[Entry, ...]
    seeds: tuple[int, ...]
    budget: str
    data: str = "shapes"
    eval_every: str | None = None
    eval_samples: int | None = None
    sets: tuple[str, ...] = ()  # --set for every job; an entry's own overrides come after (and win)
    fid_backbone: str | None = None
    max_steps: int | None = None
    fid_reference: str | None = None
    metrics: str | None = None

    def identity(self) -> dict:
        d = asdict(self)
        d["entries"] = [e.label for e in self.entries]
        for late in ("fid_reference", "metrics"):  # a comparison made before the setting existed keeps its identity
            if d[late] is None:
                del d[late]
        return json.loads(json.dumps(d))  # as compare.json holds it (lists, not tuples)

    @classmethod
    def from_identity(cls, d: dict) -> "Comparison":
        """The comparison a compare.json's `comparison` describes (`harness compare --status DIR`)."""
        try:
            return cls(entries=tuple(parse_entry(e) for e in d["entries"]), seeds=tuple(d["seeds"]),
                       budget=d["budget"], data=d.get("data", "shapes"), eval_every=d.get("eval_every"),
                       eval_samples=d.get("eval_samples"), sets=tuple(d.get("sets", ())),
                       fid_backbone=d.get("fid_backbone"), max_steps=d.get("max_steps"),
                       fid_reference=d.get("fid_reference"))
        except (KeyError, TypeError, AttributeError) as e:
            raise RunDirError(f"compare.json's comparison is incomplete or malformed ({e!r})") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    def default_folder(self, root: str = "results/compare") -> Path:
        names = "_vs_".join(e.slug for e in self.entries)[:100]
        budget = re.sub(r"[^0-9a-zA-Z.]", "", self.budget)
        return Path(root) / f"{names}-{budget}-{self.digest()}"

    def method_config(self, e: Entry):
        """(MethodInfo, config) of an entry: its paper defaults, then --set, then its own overrides."""
        info = get_method(e.method)
        return info, apply_overrides(info.config, parse_overrides((*self.sets, *e.overrides)), info.name)

    def jobs(self, folder: Path) -> list["Job"]:
        return [Job(f"{e.slug}-s{seed}", e, seed, folder / "runs" / f"{e.slug}-s{seed}")
                for e in self.entries for seed in self.seeds]


@dataclass
class Job:
    name: str
    entry: Entry
    seed: int
    run_dir: Path
    outcome: dict = field(default_factory=dict)  # exit code, status, timing; written to compare.json

    def status(self) -> str | None:
        """Its run's status in run.json; None before the run exists or where run.json is unreadable."""
        if not RunDir.is_run(self.run_dir):
            return None
        try:
            return RunDir.open(self.run_dir).manifest().get("status")
        except RunDirError:
            return None

    def state(self) -> str:
        """new | finished (a finished run status) | unfinished | broken (an unreadable run.json)."""
        if not RunDir.is_run(self.run_dir):
            return "new"
        status = self.status()
        return "broken" if status is None else "finished" if status in FINISHED else "unfinished"

    def holders(self) -> dict[str, str]:
        """{stage: holder} of its run's stages that a live process is training now."""
        return holders(self.run_dir) if self.run_dir.is_dir() else {}

    def argv(self, c: Comparison, device: str | None, inception: str | None, energy: bool, progress: bool,
             processes: int = 1, log: str | None = None, threads: int | None = None) -> list[str]:
        """`harness run ...` of this job; with `processes` > 1 under torchrun (data parallel).

        Every job is an ordinary `harness run` started as its own process with the same `--budget`,
        `--data`, `--eval-every` and `--eval-samples`, so it is trained, checkpointed, resumed and
        recorded exactly as a single run is (the same launch path)."""
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
            if processes > 1 else [sys.executable]
        cmd = [*launcher, "-m", "harness", "run", "--method", self.entry.method, "--budget", c.budget,
               "--data", c.data, "--seed", str(self.seed), "--run-dir", str(self.run_dir)]
        for key, value in (("--eval-every", c.eval_every), ("--eval-samples", c.eval_samples),
                           ("--fid-backbone", c.fid_backbone), ("--max-steps", c.max_steps),
                           ("--fid-reference", c.fid_reference), ("--metrics", c.metrics),
                           ("--device", device), ("--inception", inception), ("--log", log),
                           ("--threads", threads)):
            if value is not None:
                cmd += [key, str(value)]
        for s in (*c.sets, *self.entry.overrides):
            cmd += ["--set", s]
        return cmd + ([] if energy else ["--no-energy"]) + ([] if progress else ["--no-progress"])


def validate(c: Comparison) -> None:
    """Every job's method, config, budget, schedule and data spec, checked before any job runs
    (a typo in the third method must not surface an hour into the comparison)."""
    parse_budget(c.budget)
    if c.eval_every:
        parse_every(c.eval_every)
    if c.eval_samples is not None and c.eval_samples < 0:
        raise ConfigError(f"--eval-samples must be 0 or more, got {c.eval_samples}")
    if c.max_steps is not None and c.max_steps < 1:
        raise ConfigError(f"--max-steps must be 1 or more (leave it out for no limit), got {c.max_steps}")
    parse_data_spec(c.data)
    if c.fid_reference is not None:
        Selection.parse(c.fid_reference)
    if c.fid_backbone is not None:
        check_backbone_spec(c.fid_backbone, files=True)
    if c.metrics is not None:
        parse_metrics(c.metrics)
    if len({e.slug for e in c.entries}) != len(c.entries):
        raise ConfigError("the same method and overrides are listed twice")
    for e in c.entries:
        try:
            c.method_config(e)
        except ConfigError as err:
            raise ConfigError(f"{e.label}: {err}") from None


def open_folder(folder: Path, c: Comparison) -> tuple[dict, WriterLock]:
    """(compare.json of `folder`, the folder's writer lock): created for a new comparison; for an
    existing one, the same comparison must have made it (a different command into the same folder
    is refused before anything runs), and no other `compare` may be running in it."""
    path = folder / "compare.json"
    check_parents(folder, "--out")
    if not path.is_file() and folder.exists() and any(p.name != ".writer-folder" for p in folder.iterdir()):
        raise RunDirError(f"{folder} exists and is not a comparison folder (no compare.json); give another --out")
    folder.mkdir(parents=True, exist_ok=True)
    lock = hold_folder(folder, "compare")
    try:
        return read_record(folder, c), lock
    except BaseException:
        lock.release()
        raise


def read_record(folder: Path, c: Comparison) -> dict:
    """compare.json of `folder` (created for a new comparison); another comparison's is refused."""
    path = folder / "compare.json"
    if path.is_file():
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path} is unreadable ({e}); give another --out") from None
        if not isinstance(record, dict) or not isinstance(record.get("jobs", {}), dict):
            raise RunDirError(f"{path} is not a comparison record; give another --out")
        record.setdefault("jobs", {})
        if record.get("comparison") != c.identity():
            old = record.get("comparison") if isinstance(record.get("comparison"), dict) else {}
            diff = sorted(k for k in c.identity() if old.get(k) != c.identity()[k])
            raise RunDirError(f"{folder} holds another comparison (it differs in: {', '.join(diff) or 'format'}); "
                              f"re-run its own command to continue it, or give another --out")
        return record
    record = {"format": FORMAT, "comparison": c.identity(), "jobs": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return record


def save_record(folder: Path, record: dict) -> None:
    atomic_write_bytes(folder / "compare.json", json.dumps(record, indent=1).encode())


def gpu_slots(device: str | None, per_job: int = 1) -> list[str | None]:
    """Where jobs run at the same time: groups of `per_job` visible GPUs (CUDA_VISIBLE_DEVICES
    values), or a single CPU slot. So jobs run one after another on a CPU; with GPUs, as many at a
    time as there are groups of `gpus_per_job` GPUs (default 1), each job seeing its own."""
    import torch

    if per_job < 1:
        raise ConfigError(f"--gpus-per-job must be 1 or more, got {per_job}")
    if device == "cpu" or not torch.cuda.is_available():
        return [None]
    if device and device.startswith("cuda:"):
        return [device.split(":", 1)[1]]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) < per_job:
        raise ConfigError(f"--gpus-per-job {per_job}, but {len(ids)} GPU(s) are visible")
    return [",".join(ids[k:k + per_job]) for k in range(0, len(ids) - per_job + 1, per_job)] or [None]


@dataclass
class Outcome:
    folder: Path
    jobs: list[Job]
    report: "Report | None" = None  # harness.report.Report; None when no job made a run directory
    pending: list[Job] = field(default_factory=list)  # jobs still queued or running on the cluster (no report yet)


def job_processes(job: Job, c: Comparison, gpus: int) -> int:
    """Training processes of a job on `gpus` GPUs: a one-stage method trains data-parallel on all
    of them (torchrun); a method of several stages is one process that lays its stages out on
    them (harness.layout: NSBGAN's sampler on 2, each decoder on 1). With 4 GPUs per job NSBGAN lays
    its stages out as the paper did and a one-stage method such as BigGAN trains data-parallel; with
    1, a multi-stage method trains its stages one after another inside its job."""
    if gpus <= 1:
        return 1
    info, cfg = c.method_config(job.entry)
    return gpus if len(info.stage_names(cfg)) == 1 else 1


def compare(c: Comparison, folder: Path | None = None, *, device: str | None = None, inception: str | None = None,
            energy: bool = True, progress: bool = True, targets: list[float] | None = None, gpus_per_job: int = 1,
            run_log: str | None = None, threads: int | None = None, log: Callable[[str], None] = print,
            machine_s: float = 1.0) -> Outcome:
    """Run (or continue) the comparison `c` in `folder`, then write its report; `run_log` is every
    job's `--log` (tensorboard), `threads` every job's `--threads` (default: each job chooses from
    the cores it may use and the load it finds). The machine is measured for `machine_s` first."""
    validate(c)
    check_logger(run_log)
    slots = gpu_slots(device, gpus_per_job)
    usable = cores.usable_cores()
    on_cpu = slots == [None]
    if threads is not None and (threads < 1 or (on_cpu and threads > usable.count)):
        raise ConfigError(f"--threads {threads}: jobs of a comparison never oversubscribe the cores; this process "
                          f"may use {usable.count} (1 to {usable.count})")
    folder = Path(folder) if folder is not None else c.default_folder()
    record, lock = open_folder(folder, c)
    try:
        return _compare(c, folder, record, slots, device=device, inception=inception, energy=energy,
                        progress=progress, targets=targets, run_log=run_log, gpus_per_job=gpus_per_job, log=log,
                        threads=threads, usable=usable, machine_s=machine_s)
    finally:
        lock.release()


def _compare(c: Comparison, folder: Path, record: dict, slots: list[str | None], *, device: str | None,
             inception: str | None, energy: bool, progress: bool, targets: list[float] | None, run_log: str | None,
             gpus_per_job: int, log: Callable[[str], None], threads: int | None, usable: cores.Cores,
             machine_s: float) -> Outcome:
    jobs = c.jobs(folder)
    on_cpu = slots == [None]
    parallel = len(slots) > 1
    # Re-running the same command continues unfinished jobs (`--run-dir` of an existing run continues
    # it) and skips finished ones, so a comparison survives a reboot.
    todo = []
    for job in jobs:
        state = job.state()
        if state == "finished":
            log(f"{job.name}: finished before, skipped")
            continue
        todo.append(job)
    log(f"comparison {folder}: {len(jobs)} job(s), {len(todo)} to run"
        + (f", {len(slots)} at a time ({gpus_per_job} GPU(s) each)" if parallel else ", one after another"))
    if todo:  # the conditions the jobs will start in; each run records the share it had
        machine = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine_now(not on_cpu, machine_s)}
        record["machine"] = [*record.get("machine", []), machine]
        log(machine_line(machine))
    # jobs side by side run on CPUs of their own, so that their host threads never oversubscribe the cores
    groups = dict(zip(slots, cores.split(usable, len(slots)))) if parallel else {}

    if parallel and energy:
        record["energy_note"] = ("jobs ran side by side: codecarbon measures the whole machine's CPU and RAM "
                                 "(and every GPU it sees), so their kWh overlap; compare energy of jobs run one "
                                 "at a time")
        log(f"note: {record['energy_note']}")

    def launch(job: Job, slot: str | None) -> Launch:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = job.argv(c, "cuda" if slot is not None else device, inception, energy, progress and not parallel,
                       processes=job_processes(job, c, len(slot.split(","))) if slot is not None else 1, log=run_log,
                       threads=threads)
        job.outcome = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "gpu": slot, "argv": cmd[1:]}
        log(f"{job.name}: {'continuing' if RunDir.is_run(job.run_dir) else 'starting'}"
            + (f" on GPU {slot}" if slot is not None else ""))
        if not parallel:  # one at a time: the job's own progress bar on this terminal
            return Launch(cmd, env)
        logs = folder / "logs"  # side by side: each job's output to its own log
        logs.mkdir(exist_ok=True)
        job.outcome["log"] = str(logs / f"{job.name}.log")
        return Launch(cmd, env, logs / f"{job.name}.log", groups.get(slot))

    def done(job: Job, code: int) -> None:
        job.outcome.update(exit_code=code, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), state=job.state())
        record["jobs"][job.name] = job.outcome
        save_record(folder, record)
        if code != 0:  # a job that fails or diverges is reported; it never stops the others
            log(f"{job.name}: exit code {code} ({job.outcome['state']}); the other jobs go on")

    waiting: set[str] = set()

    def ready(job: Job) -> bool:
        """A job whose run another process still trains (the job of a compare killed a moment ago,
        stopping on its SIGTERM; a `harness run` of the same directory) waits for it to stop."""
        held = job.holders()
        if held and job.name not in waiting:
            waiting.add(job.name)
            log(f"{job.name}: waiting for {', '.join(sorted(set(held.values())))} to stop training its run")
        elif not held:
            waiting.discard(job.name)
        return not held

    try:
        run_jobs(todo, launch, slots, done, ready=ready)
    finally:
        # what the job directories say now, whatever an earlier attempt recorded
        for job in jobs:
            job.outcome = {**record["jobs"].get(job.name, {}), "state": job.state(), "status": job.status()}
            record["jobs"][job.name] = job.outcome
        save_record(folder, record)
    from harness.report import write_report

    runs = [j.run_dir for j in jobs if RunDir.is_run(j.run_dir)]
    if not runs:
        return Outcome(folder, jobs)
    return Outcome(folder, jobs, write_report(runs, folder / "report", targets=targets, jobs=jobs_table(jobs),
                                              title=f"comparison: {' vs '.join(e.label for e in c.entries)}"))


def jobs_table(jobs: list[Job]) -> list[dict]:
    """One row per job for the report: jobs that failed before their run directory existed are
    only here."""
    rows = [{"job": j.name, "method": j.entry.label, "seed": j.seed, "state": j.outcome.get("state"),
             "exit_code": j.outcome.get("exit_code"), "run_dir": str(j.run_dir)} for j in jobs]
    if any("slurm" in j.outcome for j in jobs):  # submitted to Slurm: which job, on which node
        for row, j in zip(rows, jobs):
            row.update(slurm_job=j.outcome.get("slurm", {}).get("job_id"), node=j.outcome.get("slurm", {}).get("node"))
    return rows
