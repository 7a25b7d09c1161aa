"""Execute a prepared run: devices and processes, the energy meter, the loop, and the parallel
layout's stage jobs; the run's end state in run.json whatever happens."""
from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from harness.engine import distributed
from harness.engine.allocator import keep_freed_memory
from harness.engine.budget import parse_every
from harness.engine.distributed import Dist
from harness.engine import nvml
from harness.engine.energy import EnergyMeter, default_country
from harness.engine.loop import Trainer
from harness.engine.options import DEFAULT_CHECKPOINT_EVERY, LoopOptions
from harness.engine.seeding import check_seed
from harness.engine.signals import Interrupted
from harness.engine.threads import ThreadPolicy
from harness.errors import ConfigError
from harness.launch import layout
from harness.launch.allocation import allocation
from harness.launch.prepare import PreparedRun, prepare_all
from harness.launch.request import RunRequest, resolve_device
from harness.rundir import records
from harness.rundir.records import FINISHED, Status
from harness.rundir.rundir import RunDir
from harness.rundir.tblog import check_logger, open_logger


def execute(req: RunRequest, console: Console | None = None) -> tuple[Path, str, int]:
    """Prepare and train; returns (run dir, final status, exit code). Under torchrun every process
    calls this; rank 0 writes the run directory."""
    d = distributed.from_env()
    if req.keep_samples is not None and req.keep_samples < 0:
        raise ConfigError(f"--keep-samples must be 0 or more, got {req.keep_samples}")
    parse_every(req.checkpoint_every or DEFAULT_CHECKPOINT_EVERY)  # a bad value stops us before any write
    if req.profile < 0:
        raise ConfigError(f"--profile takes a number of steps (0: off), got {req.profile}")
    check_request(req)
    check_logger(req.log)
    if req.threads is not None and req.threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {req.threads}")
    device = resolve_device(req.device)
    if d.enabled and device.index is not None:
        raise ConfigError("under torchrun give --device cuda (each process takes cuda:LOCAL_RANK) or cpu")
    device = distributed.init(d, device)
    if device.type == "cpu":
        keep_freed_memory()  # batch-sized tensors reuse the heap instead of fresh mmaps (harness.engine.allocator)
    # before anything computes: the data's preparation and the evaluations run with these threads too
    threads = ThreadPolicy.start(device, req.threads, processes=d.local_world if d.enabled else 1)
    try:
        result = _execute(req, console, d, device, threads)
    except BaseException:
        distributed.shutdown(clean=False)  # other ranks may be gone: no barrier to hang on
        raise
    distributed.shutdown()
    return result


def check_request(req: RunRequest) -> None:
    """Values a run cannot use, refused before anything is written: a seed out of numpy's and
    torch's range, a step limit below one."""
    if req.seed is not None:
        check_seed(req.seed)
    if req.max_steps is not None and req.max_steps < 1:
        raise ConfigError(f"--max-steps must be 1 or more (leave it out for no limit), got {req.max_steps}")


def _fid_record(scorer) -> dict:
    return scorer.provenance() if scorer else {"disabled": "no image metrics in this run (--eval-samples 0, or a "
                                                           "--stage whose evaluation has none)"}


def _meter(req: RunRequest, p: PreparedRun, d: Dist, gpus: list[nvml.Gpu]) -> EnergyMeter:
    """One meter per node (codecarbon measures the whole machine; the counters every GPU this process
    sees): node 0's files in the run directory, node K's under energy/nodeK/; kWh and joules on every
    line are all nodes' (summed at checkpoints)."""
    country, source = (req.country.upper(), "--country") if req.country else default_country()
    energy_dir = p.run.path
    if req.energy and d.local_rank == 0 and not d.main:
        energy_dir = p.run.path / "energy" / f"node{d.rank // d.local_world}"
        energy_dir.mkdir(parents=True, exist_ok=True)
    return EnergyMeter(energy_dir, country, source, enabled=req.energy and d.local_rank == 0,
                       segments_dir=None if energy_dir == p.run.path else energy_dir, gpus=gpus,
                       sync=lambda: torch.cuda.synchronize(p.device) if p.device.type == "cuda" else None)


def _threads_note(threads: ThreadPolicy, console: Console) -> None:
    """One line on the threads, and a warning where other processes keep the machine busy."""
    t = threads.describe()
    usable, others = threads.cores.usable, threads.others_at_start
    console.print(f"[dim]threads: {t['intra_op']} intra-op, {t['prefetch']} prefetch ({t['policy']}; "
                  f"{usable:g} usable core(s))[/dim]")
    if threads.fixed is not None and threads.device.type == "cpu" and threads.fixed > threads.cores.count:
        console.print(f"[yellow]--threads {threads.fixed} is more than the {usable:g} core(s) this process may "
                      f"use: its threads will wait for each other[/yellow]")
    if others is not None and threads.cores.available(others) / usable < records.BUSY_BELOW:
        console.print(f"[yellow]the machine is busy: other processes keep {others:.1f} of {usable:g} core(s) busy; "
                      f"this run trains on what they leave, and its share is recorded (run.json "
                      f"exclusive_share) and flagged by the report[/yellow]")


def _cluster(before: dict, req: RunRequest) -> dict | None:
    """run.json's `cluster` inside a Slurm job: the latest job, node and allocation, and every start
    (a requeued job's restarts included); None outside Slurm and for a layout's stage jobs (their
    launcher records the allocation they share)."""
    now = allocation()
    if now is None or req.stage:
        return None
    starts = [*(before.get("cluster") or {}).get("starts", []),
              {k: now[k] for k in ("job_id", "node", "restart_count", "started")}]
    return {**now, "starts": starts}


def _execute(req: RunRequest, console: Console | None, d: Dist, device: torch.device,
             threads: ThreadPolicy) -> tuple[Path, str, int]:
    console = console or Console(stderr=True, soft_wrap=True)
    if not d.main:
        console = Console(stderr=True, quiet=True)
    p, scorer = prepare_all(req, d, device)
    gpus = nvml.open_gpus(nvml.visible_gpus()) if device.type == "cuda" else []
    meter = _meter(req, p, d, gpus)
    options = LoopOptions(budget=p.budget, seed=p.settings.seed, eval_every=p.eval_every,
                          checkpoint_every=parse_every(req.checkpoint_every or DEFAULT_CHECKPOINT_EVERY),
                          eval_samples=p.settings.eval_samples, max_steps=p.settings.max_steps, only_stage=req.stage,
                          keep_samples=req.keep_samples,
                          progress=req.progress and d.main, profile_steps=req.profile)
    stages = [req.stage] if req.stage else [s.name for s in p.method.stages]
    # one writer per stage: the stage jobs of a parallel layout take theirs, its launcher all of them after
    lock = p.run.hold(stages) if d.main and not p.slots else None
    before = p.run.manifest()
    if lock is not None and not p.created and before.get("status") == Status.RUNNING:
        # run.json says running, yet no process holds the run: its last one could not record its end
        console.print(f"[yellow]{p.run.path}: run.json says running, but no process holds it: its last process "
                      f"ended without recording its end (killed, or its disk was full); continuing from its last "
                      f"checkpoint[/yellow]")
    # the heartbeat starts with the run, so one that dies before its first train line is not `running` forever
    done = before.get("stage_state") or {}
    beats = {k: v for name in stages if (done.get(name) or {}).get("status") not in FINISHED
             for k, v in records.heartbeat(name, int((done.get(name) or {}).get("steps") or 0)).items()}
    p.run.update(status=Status.RUNNING, device=str(p.device), fid=_fid_record(scorer), threads=threads.describe(),
                 **({"heartbeat": beats} if beats and d.main else {}),
                 **({"cluster": cluster} if (cluster := _cluster(before, req)) else {}))
    console.print(f"[bold]{p.info.name}[/bold] on {p.data.train.id} ({len(p.data.train)} train / "
                  f"{len(p.data.val)} held-out), budget {p.settings.budget}, device {p.device}"
                  f"{f' x {d.world} processes' if d.enabled else ''} -> {p.run.path}")
    _threads_note(threads, console)
    mine = f"cuda:{p.device.index if p.device.index is not None else torch.cuda.current_device()}" \
        if p.device.type == "cuda" else None
    trainer = Trainer(p.run, p.method, p.data, p.device, options, meter, scorer, console, dist=d, threads=threads,
                      gpus=[g for g in gpus if g.label == mine])
    p.run.mirror = open_logger(req.log, p.run.path) if d.main else None
    code = 0
    try:
        if p.slots:
            failed = _train_in_parallel(req, p, meter, console)
            if not failed and p.method.evaluate is not None:
                failed = _evaluate_in_parallel(req, p, meter, console)
            if failed:
                return p.run.path, Status.FAILED, 1
            lock = p.run.hold(stages)
        # in a parallel layout every stage is trained and the pipeline evaluated by now: this records the end
        status = trainer.train(evaluate_pipeline=not p.slots)
        if p.slots:
            _layout_totals(p.run, meter)
    except Interrupted as e:
        status, code = Status.INTERRUPTED, e.exit_code
        console.print(f"[yellow]interrupted ({e}): checkpoint saved; continue with "
                      f"`harness run --resume {p.run.path}`[/yellow]")
    finally:
        meter.close()
        if d.main:  # a parallel layout's evaluation job recorded the network and the statistics it used
            p.run.update(energy=meter.describe(), **({} if p.slots else {"fid": _fid_record(scorer)}))
        if lock is not None:
            lock.release()
        if p.run.mirror is not None:
            p.run.mirror.close()
    return p.run.path, status, code


def _train_in_parallel(req: RunRequest, p: PreparedRun, meter: EnergyMeter, console: Console) -> list[str]:
    """Train every stage at once in its own job (harness.launch.layout); returns the stages that failed."""
    try:
        with meter.segment("train"):
            codes = layout.run_stages(p.slots, str(p.run.path), _passthrough(req, p),
                                      lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except Interrupted:
        p.run.update(status=Status.INTERRUPTED)
        raise
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        logs = ", ".join(str(p.run.path / "layout" / f"{name}.log") for name in failed)
        p.run.update(status=Status.FAILED, error=f"stage job(s) {', '.join(failed)} failed (see {logs})")
        console.print(f"[red]stage job(s) {', '.join(failed)} failed: see {logs}; continue with "
                      f"`harness run --resume {p.run.path}`[/red]")
    return failed


def _evaluate_in_parallel(req: RunRequest, p: PreparedRun, meter: EnergyMeter, console: Console) -> list[str]:
    """The whole pipeline's final evaluation as one job over every device of the layout
    (harness.launch.layout.run_evaluation); returns ["pipeline"] if it failed."""
    try:
        with meter.segment("eval"):
            code = layout.run_evaluation(p.slots, str(p.run.path), _passthrough(req, p),
                                         lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except Interrupted:
        p.run.update(status=Status.INTERRUPTED)
        raise
    if code == 0:
        return []
    log = p.run.path / "layout" / "pipeline.log"
    p.run.update(status=Status.FAILED, error=f"the pipeline's evaluation job failed (see {log})")
    console.print(f"[red]the pipeline's evaluation job failed: see {log}; evaluate it again with "
                  f"`harness run --resume {p.run.path}`[/red]")
    return ["pipeline"]


def _passthrough(req: RunRequest, p: PreparedRun) -> list[str]:
    """The options a parallel layout's jobs take from its launcher."""
    passthrough = ["--device", p.device.type]
    if req.threads is not None:
        passthrough += ["--threads", str(req.threads)]
    if req.inception:
        passthrough += ["--inception", str(req.inception)]
    if req.keep_samples is not None:
        passthrough += ["--keep-samples", str(req.keep_samples)]
    if req.checkpoint_every is not None:
        passthrough += ["--checkpoint-every", req.checkpoint_every]
    if req.profile:
        passthrough += ["--profile", str(req.profile)]
    if req.log:
        passthrough += ["--log", req.log]
    return passthrough


def _layout_totals(run: RunDir, meter: EnergyMeter) -> None:
    """run.json's totals of a parallel layout: the stages ran side by side, so the run's training
    hours are the longest stage's (GPU-hours stay their sum); the stage jobs measured no energy,
    this process measured the machine while they trained and while it evaluated."""
    stages = run.manifest().get("stage_state", {}).values()
    longest = max((s.get("budget_s") or 0.0) for s in stages)
    totals = {"budget_s": longest, "train_hours": longest / 3600.0, "layout": "parallel",
              "wall_s": max((s.get("wall_s") or 0.0) for s in stages)}
    e = meter.summary()
    if e["kwh_train"] is not None:
        totals.update(kwh_train=e["kwh_train"], kwh_eval=e["kwh_eval"], kwh=e["kwh_train"] + e["kwh_eval"],
                      kg_train=e["kg_train"], kg_eval=e["kg_eval"], kg_co2e=e["kg_train"] + e["kg_eval"])
    run.update(totals=totals)
