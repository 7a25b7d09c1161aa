"""From command-line settings to a trained run: resolve config, data, metrics, run directory.

A run's identity is its method, resolved config, data spec, seed, budget and schedule. `--resume`
and `--run-dir` of an existing run continue it only if every setting given on the command line
agrees with run.json; anything else is refused before a byte is written.

Under torchrun, rank 0 validates and creates (or opens) the run directory; the other ranks get
its path, or its error, and open a read-only view of the same run (harness.distributed).
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from harness import errors
from harness.engine import distributed
from harness.launch import layout
from harness.engine.budget import Budget, Every, parse_budget, parse_every
from harness.engine import allocator
from harness.engine.allocator import keep_freed_memory
from harness.config import apply_overrides, parse_overrides, to_jsonable
from harness.data import DataSplits, open_run_data, parse_data_spec
from harness.engine.distributed import Dist
from harness.engine.energy import EnergyMeter, default_country
from harness.errors import ConfigError, HarnessError, RunDirError
from harness.engine.loop import Trainer
from harness.engine.options import DEFAULT_CHECKPOINT_EVERY, LoopOptions
from harness.rundir.provenance import provenance
from harness.rundir.records import FINISHED, Status
from harness.registry import MethodInfo, get_method, recorded_method
from harness.rundir.rundir import FollowerRunDir, RunDir
from harness.engine.seeding import seed_everything
from harness.engine.signals import Interrupted
from harness.rundir.tblog import check_logger, open_logger

SMOKE_EVAL_SAMPLES = 200  # default on the embedded `shapes` data: smoke-sized (Inception on a CPU is ~0.5 s/image), labelled so


@dataclass(frozen=True)
class RunSettings:
    """The run-level settings recorded in run.json["run"]; all must match when a run is continued."""

    method: str
    budget: str
    data: str = "shapes"
    seed: int = 0
    devices: int = 1
    eval_every: str | None = None
    eval_samples: int = SMOKE_EVAL_SAMPLES
    fid_backbone: str = "inception"
    max_steps: int | None = None


def identity_fields() -> tuple[str, ...]:
    """Every run setting is part of the run's identity: a continued run must agree on all."""
    return tuple(f.name for f in dataclasses.fields(RunSettings))


@dataclass
class RunRequest:
    """What the user typed; None means "not given" (take the default or the run's value)."""

    method: str | None = None
    budget: str | None = None
    data: str | None = None
    seed: int | None = None
    devices: int | None = None
    eval_every: str | None = None
    eval_samples: int | None = None
    fid_backbone: str | None = None
    max_steps: int | None = None
    keep_samples: int | None = None
    overrides: tuple[str, ...] = ()
    run_dir: str | None = None
    resume: str | None = None
    stage: str | None = None
    device: str | None = None
    inception: str | None = None
    country: str | None = None
    energy: bool = True
    progress: bool = True
    results: str = "results/runs"
    layout: str = "auto"  # auto | sequential | parallel (harness.layout)
    checkpoint_every: str | None = None  # budget time, steps or epochs (default: the loop's, 5m)
    profile: int = 0  # torch.profiler trace of this many steps per stage (harness.profiling); 0 = off
    log: str | None = None  # a live view of the run's lines besides metrics.jsonl: tensorboard (harness.tblog)


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got '{name}'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def _devices(req: RunRequest, d: Dist, slots: list[layout.Slot] | None = None) -> int:
    """Devices = training processes: 1, or what torchrun started, or every stage's together in the
    parallel layout. `--devices` may only confirm it."""
    if slots:
        total = sum(s.processes for s in slots)
        if req.devices is not None and req.devices != total:
            raise ConfigError(f"--devices {req.devices}, but the parallel layout uses {total} "
                              f"({', '.join(f'{s.stage}: {s.processes}' for s in slots)})")
        return total
    if req.devices is not None and req.devices != d.world:
        if d.enabled:
            raise ConfigError(f"--devices {req.devices}, but torchrun started {d.world} processes")
        raise ConfigError(f"--devices {req.devices} needs {req.devices} processes: start the run with "
                          f"`torchrun --nproc-per-node {req.devices} -m harness run ...`")
    return d.world


def _settings_from(req: RunRequest, info: MethodInfo, data_kind: str, d: Dist,
                   slots: list[layout.Slot] | None = None) -> RunSettings:
    if req.budget is None:
        raise ConfigError("--budget is required for a new run (e.g. --budget 30m, 168h or 672gpuh)")
    data = req.data or "shapes"
    eval_samples = req.eval_samples
    if eval_samples is None:
        # a method without image metrics (eval_samples 0) keeps none on shapes too
        eval_samples = min(SMOKE_EVAL_SAMPLES, info.eval_samples) if data_kind == "shapes" else info.eval_samples
    return RunSettings(
        method=info.name, budget=req.budget, data=data, seed=req.seed if req.seed is not None else 0,
        devices=_devices(req, d, slots), eval_every=req.eval_every or info.eval_every,
        eval_samples=int(eval_samples), fid_backbone=req.fid_backbone or "inception", max_steps=req.max_steps,
    )


def _check_same(recorded: RunSettings, req: RunRequest, cfg_recorded: Any, cfg_requested: Any, where: Path) -> None:
    for name in identity_fields():
        given = getattr(req, name)
        if given is not None and given != getattr(recorded, name):
            flag = "--" + name.replace("_", "-")
            raise RunDirError(f"{where} was run with {flag} {getattr(recorded, name)}, not {given}; "
                              f"a continued run keeps its settings (start a new --run-dir instead)")
    if cfg_requested != cfg_recorded:
        diff = [f.name for f in dataclasses.fields(cfg_recorded)
                if getattr(cfg_recorded, f.name) != getattr(cfg_requested, f.name)]
        raise RunDirError(f"{where} holds a run whose config differs in: {', '.join(diff)}")


def _check_stage(info: MethodInfo, cfg: Any, stage: str | None) -> None:
    stages = info.stage_names(cfg)
    if stage is not None and stage not in stages:
        raise ConfigError(f"method {info.name} has stages {', '.join(stages)}, not '{stage}'")


def default_run_dir(settings: RunSettings, root: str) -> Path:
    budget = re.sub(r"[^0-9a-zA-Z.]", "", settings.budget)
    base = Path(root) / f"{settings.method}-{parse_data_spec(settings.data).kind}-{budget}-s{settings.seed}-" \
                        f"{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def _schedule(settings: RunSettings) -> tuple[Budget, Every | None]:
    """The run's --budget and --eval-every, parsed (once per run: every later use takes these)."""
    budget = parse_budget(settings.budget, settings.devices)
    return budget, parse_every(settings.eval_every) if settings.eval_every else None


# top-level run.json fields the harness writes after creation (run.py, loop.py, evaluations.py, here);
# a method's run_fields may not take these names
HARNESS_FIELDS = {"format", "created", "status", "error", "device", "layout", "stage_state", "totals", "heartbeat",
                  "last_eval", "energy", "fid", "distributed"}


def _manifest(info: MethodInfo, cfg: Any, settings: RunSettings, budget: Budget, data: DataSplits,
              device: torch.device) -> dict:
    manifest = {
        "method": info.name,
        "paper": info.paper,
        "paper_table": info.table,
        "stages": list(info.stage_names(cfg)),
        "config": to_jsonable(cfg),
        "run": {**to_jsonable(settings), "budget_s": budget.seconds, "budget_gpu_h": budget.gpu_hours},
        "dataset": {**data.train.describe(), "spec": settings.data, "train_images": len(data.train),
                    "val_images": len(data.val),
                    # how the images reached training: rendered live (shapes) or read from a prepared memmap
                    "storage": getattr(data.train, "storage", "prepared"),
                    # stages trained on another preparation of the same images (their own dataset id)
                    **({"stages": {name: {**d.train.describe(), "train_images": len(d.train), "val_images": len(d.val)}
                                   for name, d in data.stages.items()}} if data.stages else {})},
        "precision": precision(cfg, device),
        "provenance": provenance(device, allocator.describe()),
    }
    extra = info.build(cfg).run_fields  # the method's own top-level fields (Method.run_fields)
    if clash := sorted(set(extra) & (set(manifest) | HARNESS_FIELDS)):
        raise RuntimeError(f"method {info.name} sets run.json fields the harness writes: {', '.join(clash)}")
    return {**manifest, **to_jsonable(extra)}


def precision(cfg: Any, device: torch.device) -> str:
    """run.json's top-level "precision": "bf16" where any part of the config asks for bf16 autocast
    (`amp=bf16` or the sampler's `sampler_amp=bf16`, on any device; a boolean `amp=true` only on
    CUDA, where those methods enable it), else "fp32", the papers' precision."""
    asked = [getattr(cfg, k) for k in ("amp", "sampler_amp") if hasattr(cfg, k)]
    bf16 = any(a == "bf16" for a in asked if isinstance(a, str)) or (True in asked and device.type == "cuda")
    return "bf16" if bf16 else "fp32"


@dataclass
class Prepared:
    run: RunDir
    info: MethodInfo
    cfg: Any
    settings: RunSettings
    budget: Budget
    eval_every: Every | None
    data: DataSplits
    device: torch.device
    created: bool
    slots: list[layout.Slot] | None = None  # the parallel layout this process starts (None: train here)


def _recorded(run: RunDir) -> tuple[MethodInfo, Any, RunSettings]:
    """The method, config and settings a run directory was started with."""
    m = run.manifest()
    info, cfg = recorded_method(m)
    return info, cfg, RunSettings(**{k: v for k, v in m["run"].items() if k in identity_fields()})


def prepare_run(req: RunRequest, device: torch.device | None = None, d: Dist = distributed.SINGLE) -> Prepared:
    """Validate everything and open or create the run directory (no training yet)."""
    device = device if device is not None else resolve_device(req.device)
    existing = req.resume or (req.run_dir if req.run_dir and RunDir.is_run(Path(req.run_dir)) else None)
    if req.resume and not RunDir.is_run(Path(req.resume)):
        raise RunDirError(f"--resume {req.resume}: not a run directory (no run.json)")
    overrides = parse_overrides(req.overrides)
    if existing:
        run = RunDir.open(Path(existing))
        m = run.manifest()
        info, cfg_recorded, recorded = _recorded(run)
        if req.method is not None and req.method != m["method"]:
            raise RunDirError(f"{existing} is a run of '{m['method']}', not '{req.method}'")
        _check_stage(info, cfg_recorded, req.stage)
        cfg_requested = apply_overrides(cfg_recorded, overrides, info.name)
        _check_same(recorded, req, cfg_recorded, cfg_requested, Path(existing))
        recorded_layout = m.get("layout") or {}
        slots = _recorded_slots(recorded_layout) if req.stage is None and not d.enabled else None
        expected = recorded.devices
        if recorded_layout and req.stage is not None:  # one stage's job of the parallel layout
            expected = recorded_layout["stages"][req.stage]["processes"]
        if slots is None and expected != d.world:
            raise RunDirError(f"{existing} was trained by {expected} process(es), not {d.world}; "
                              f"continue it with the same torchrun layout")
        data = open_run_data(recorded.data, cfg_recorded, info.build(cfg_recorded).stages)
        if data.train.id != m["dataset"]["id"]:
            raise RunDirError(f"{existing} was trained on dataset {m['dataset']['id']}, but {recorded.data} "
                              f"now resolves to {data.train.id}")
        # a corrupt checkpoint with no good fallback stops us before any write (of this job's stages)
        for name in [req.stage] if req.stage else info.stage_names(cfg_recorded):
            if m.get("stage_state", {}).get(name, {}).get("status") not in FINISHED:
                run.checkpoints.load(name, keep=True)
        budget, eval_every = _schedule(recorded)
        if recorded_layout and req.stage is not None:  # this job's GPU-hours are its own processes'
            budget = dataclasses.replace(budget, devices=d.world)
        return Prepared(run, info, cfg_recorded, recorded, budget, eval_every, data, device, created=False,
                        slots=slots)

    if req.method is None:
        raise ConfigError("--method is required for a new run (see `harness list`)")
    info = get_method(req.method)
    cfg = apply_overrides(info.config, overrides, info.name)
    if not hasattr(cfg, "resolution"):
        raise ConfigError(f"method {info.name}'s config has no 'resolution' field")
    spec = parse_data_spec(req.data or "shapes")
    _check_stage(info, cfg, req.stage)
    slots = None
    if req.stage is None and not d.enabled:
        slots = layout.plan(info.build(cfg).stages, device, req.layout)
    elif req.layout == "parallel":
        raise ConfigError("--layout parallel starts the stages' jobs itself: give no --stage and no torchrun")
    settings = _settings_from(req, info, spec.kind, d, slots)
    budget, eval_every = _schedule(settings)
    data = open_run_data(settings.data, cfg, info.build(cfg).stages)
    path = Path(req.run_dir) if req.run_dir else default_run_dir(settings, req.results)
    manifest = _manifest(info, cfg, settings, budget, data, device)
    if slots:
        manifest["layout"] = layout.describe(slots)
    run = RunDir.create(path, manifest)
    return Prepared(run, info, cfg, settings, budget, eval_every, data, device, created=True, slots=slots)


def _recorded_slots(recorded: dict) -> list[layout.Slot] | None:
    if recorded.get("mode") != "parallel":
        return None
    return [layout.Slot(name, v["processes"], tuple(v["devices"])) for name, v in recorded["stages"].items()]


def build_method(p: Prepared):
    """Build the method's modules with the run's seed, so initial weights depend on it alone."""
    seed_everything(p.settings.seed)
    return p.info.build(p.cfg)


def _follower(path: str, device: torch.device) -> Prepared:
    """A non-zero rank's view of the run rank 0 prepared: same method, config, settings and data."""
    run = FollowerRunDir.open(Path(path))
    info, cfg, settings = _recorded(run)
    return Prepared(run, info, cfg, settings, *_schedule(settings),
                    open_run_data(settings.data, cfg, info.build(cfg).stages), device, created=False)


def _needs_scorer(req: RunRequest, p: Prepared) -> bool:
    """Whether this process computes image metrics: not with --eval-samples 0, and not for a
    `--stage` job whose stage has none (an NSBGAN decoder needs no Inception weights)."""
    if p.settings.eval_samples <= 0:
        return False
    method = p.info.build(p.cfg)
    return method.stage(req.stage).image_metrics if req.stage else True


def _fid_record(scorer) -> dict:
    return scorer.provenance() if scorer else {"disabled": "no image metrics in this run (--eval-samples 0, or a "
                                                           "--stage whose evaluation has none)"}


def _resolve_scorer(req: RunRequest, p: Prepared):
    if not _needs_scorer(req, p):
        return None
    from harness.metrics.inception import resolve_backbone
    from harness.metrics.scorer import ImageScorer, fid_mode_of

    try:
        return ImageScorer(resolve_backbone(req.inception, p.settings.fid_backbone, p.device), p.device,
                           mode=fid_mode_of(p.cfg))
    except Exception:
        if p.created:
            p.run.update(status=Status.FAILED, error="no FID backbone")
        raise


def _prepare_all(req: RunRequest, d: Dist, device: torch.device):
    """(Prepared, scorer): rank 0 validates and opens the run, then tells the others its path
    or its error, so that a bad input stops every process with the same one-line message."""
    if not d.enabled:
        p = prepare_run(req, device, d)
        return p, _resolve_scorer(req, p)
    if not d.main:
        verdict = distributed.broadcast_object(d, None)
        if verdict[0] == "error":
            raise getattr(errors, verdict[1], HarnessError)(verdict[2])
        return _follower(verdict[1], device), None
    try:
        p = prepare_run(req, device, d)
        scorer = _resolve_scorer(req, p)
    except HarnessError as e:
        distributed.broadcast_object(d, ("error", type(e).__name__, str(e)))
        raise
    except Exception as e:
        distributed.broadcast_object(d, ("error", "HarnessError", f"rank 0 failed: {type(e).__name__}: {e}"))
        raise
    distributed.broadcast_object(d, ("ok", str(p.run.path)))
    p.run.update(distributed={"processes": d.world, "nodes": d.nodes, "per_node": d.local_world,
                              "backend": "nccl" if device.type == "cuda" else "gloo",
                              "data_parallel": "each process trains on batch/processes images; gradients "
                                               "all-reduced (mean) before every optimiser step"})
    return p, scorer


def execute(req: RunRequest, console: Console | None = None) -> tuple[Path, str, int]:
    """Prepare and train; returns (run dir, final status, exit code). Under torchrun every process
    calls this; rank 0 writes the run directory."""
    d = distributed.from_env()
    if req.keep_samples is not None and req.keep_samples < 0:
        raise ConfigError(f"--keep-samples must be 0 or more, got {req.keep_samples}")
    parse_every(req.checkpoint_every or DEFAULT_CHECKPOINT_EVERY)  # a bad value stops us before any write
    if req.profile < 0:
        raise ConfigError(f"--profile takes a number of steps (0: off), got {req.profile}")
    check_logger(req.log)
    device = resolve_device(req.device)
    if d.enabled and device.index is not None:
        raise ConfigError("under torchrun give --device cuda (each process takes cuda:LOCAL_RANK) or cpu")
    device = distributed.init(d, device)
    if device.type == "cpu":
        keep_freed_memory()  # batch-sized tensors reuse the heap instead of fresh mmaps (harness.allocator)
    try:
        result = _execute(req, console, d, device)
    except BaseException:
        distributed.shutdown(clean=False)  # other ranks may be gone: no barrier to hang on
        raise
    distributed.shutdown()
    return result


def _execute(req: RunRequest, console: Console | None, d: Dist, device: torch.device) -> tuple[Path, str, int]:
    console = console or Console(stderr=True, soft_wrap=True)
    if not d.main:
        console = Console(stderr=True, quiet=True)
    p, scorer = _prepare_all(req, d, device)
    country, source = (req.country.upper(), "--country") if req.country else default_country()
    # one codecarbon tracker per node (it measures the whole machine): node 0's files in the run
    # directory, node K's under energy/nodeK/; kWh on every line are all nodes' (summed at checkpoints)
    energy_dir = p.run.path
    if req.energy and d.local_rank == 0 and not d.main:
        energy_dir = p.run.path / "energy" / f"node{d.rank // d.local_world}"
        energy_dir.mkdir(parents=True, exist_ok=True)
    meter = EnergyMeter(energy_dir, country, source, enabled=req.energy and d.local_rank == 0,
                        segments_dir=None if energy_dir == p.run.path else energy_dir)
    options = LoopOptions(budget=p.budget, seed=p.settings.seed, eval_every=p.eval_every,
                          checkpoint_every=parse_every(req.checkpoint_every or DEFAULT_CHECKPOINT_EVERY),
                          eval_samples=p.settings.eval_samples, max_steps=p.settings.max_steps, only_stage=req.stage,
                          keep_samples=req.keep_samples,
                          progress=req.progress and d.main, profile_steps=req.profile)
    method = build_method(p)
    stages = [req.stage] if req.stage else [s.name for s in method.stages]
    # one writer per stage: the stage jobs of a parallel layout take theirs, its launcher all of them after
    lock = p.run.hold(stages) if d.main and not p.slots else None
    p.run.update(status=Status.RUNNING, device=str(p.device),
                 fid=_fid_record(scorer))
    console.print(f"[bold]{p.info.name}[/bold] on {p.data.train.id} ({len(p.data.train)} train / "
                  f"{len(p.data.val)} held-out), budget {p.settings.budget}, device {p.device}"
                  f"{f' x {d.world} processes' if d.enabled else ''} -> {p.run.path}")
    trainer = Trainer(p.run, method, p.data, p.device, options, meter, scorer, console, dist=d)
    p.run.mirror = open_logger(req.log, p.run.path) if d.main else None
    code = 0
    try:
        if p.slots:
            failed = _train_in_parallel(req, p, meter, console)
            if failed:
                return p.run.path, Status.FAILED, 1
            lock = p.run.hold(stages)
        status = trainer.train()
        if p.slots:
            _layout_totals(p.run, meter)
    except Interrupted as e:
        status, code = Status.INTERRUPTED, e.exit_code
        console.print(f"[yellow]interrupted ({e}): checkpoint saved; continue with "
                      f"`harness run --resume {p.run.path}`[/yellow]")
    finally:
        meter.close()
        if d.main:
            p.run.update(energy=meter.describe(),
                         fid=_fid_record(scorer))
        if lock is not None:
            lock.release()
        if p.run.mirror is not None:
            p.run.mirror.close()
    return p.run.path, status, code


def _train_in_parallel(req: RunRequest, p: Prepared, meter: EnergyMeter, console: Console) -> list[str]:
    """Train every stage at once in its own job (harness.layout); returns the stages that failed."""
    passthrough = ["--device", p.device.type]
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
    try:
        with meter.segment("train"):
            codes = layout.run_stages(p.slots, str(p.run.path), passthrough,
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
