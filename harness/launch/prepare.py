"""Prepare a run: command-line settings -> method, config, data, schedule and run directory.

A run's identity is its method, resolved config, data spec, seed, budget and schedule. `--resume`
and `--run-dir` of an existing run continue it only if every setting given on the command line
agrees with run.json; anything else is refused before a byte is written. The method is built once
here, with the run's seed, and handed on to everything that needs it.

Under torchrun, rank 0 validates and creates (or opens) the run directory; the other ranks get
its path, or its error, and open a read-only view of the same run (`prepare_all`). Every rank
resolves the same feature network: evaluations are split over all of them.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import errors
from harness.config import MethodConfig, apply_overrides, parse_overrides, to_jsonable
from harness.data import DataSplits, open_run_data, parse_data_spec
from harness.engine import allocator, distributed
from harness.engine.budget import Budget, Every, parse_budget, parse_every
from harness.engine.checkpoints import checked
from harness.engine.distributed import Dist
from harness.engine.seeding import seed_everything
from harness.errors import ConfigError, HarnessError, MetricError, RunDirError
from harness.launch import layout
from harness.launch.request import SMOKE_EVAL_SAMPLES, RunRequest, RunSettings, identity_fields, resolve_device
from harness.method import Method
from harness.metrics.networks import check_backbone_spec
from harness.metrics.reference import Selection
from harness.metrics.suite import parse_metrics
from harness.registry import MethodInfo, get_method, recorded_method
from harness.rundir.manifest import new_manifest
from harness.rundir import records
from harness.rundir.provenance import provenance
from harness.rundir.records import FINISHED, Status
from harness.rundir.rundir import FollowerRunDir, RunDir
from harness.rundir.samples import REAL_GRID


@dataclass
class PreparedRun:
    """A validated run, ready to train: its directory, method (built once), settings and data."""

    run: RunDir
    info: MethodInfo
    cfg: MethodConfig
    method: Method
    settings: RunSettings
    budget: Budget
    eval_every: Every | None
    data: DataSplits
    device: torch.device
    created: bool
    slots: list[layout.Slot] | None = None  # the parallel layout this process starts (None: train here)


def build_method(info: MethodInfo, cfg: MethodConfig, seed: int) -> Method:
    """The method, built with the run's seed so that anything its factory draws depends on it alone."""
    seed_everything(seed)
    return info.build(cfg)


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
    # the official protocol: the whole training split (computed once, cached); the embedded shapes
    # data, a smoke test, a class-stratified subset as large as the samples scored
    reference = req.fid_reference or ("stratified" if data_kind == "shapes" else "all")
    Selection.parse(reference)  # a bad value stops us before any write
    check_backbone_spec(req.fid_backbone or "inception")
    metrics = ",".join(parse_metrics(req.metrics or info.metrics))
    return RunSettings(
        method=info.name, budget=req.budget, data=data, seed=req.seed if req.seed is not None else 0,
        devices=_devices(req, d, slots), eval_every=req.eval_every or info.eval_every,
        eval_samples=int(eval_samples), fid_backbone=req.fid_backbone or "inception", max_steps=req.max_steps,
        fid_reference=reference, metrics=metrics,
    )


def _check_same(recorded: RunSettings, req: RunRequest, cfg_recorded: MethodConfig, cfg_requested: MethodConfig,
                where: Path) -> None:
    for name in identity_fields():
        given = getattr(req, name)
        if name == "metrics" and given is not None:
            given = ",".join(parse_metrics(given))  # as recorded: in one order
        if given is not None and given != getattr(recorded, name):
            flag = "--" + name.replace("_", "-")
            raise RunDirError(f"{where} was run with {flag} {getattr(recorded, name)}, not {given}; "
                              f"a continued run keeps its settings (start a new --run-dir instead)")
    if cfg_requested != cfg_recorded:
        diff = [f.name for f in dataclasses.fields(cfg_recorded)
                if getattr(cfg_recorded, f.name) != getattr(cfg_requested, f.name)]
        raise RunDirError(f"{where} holds a run whose config differs in: {', '.join(diff)}")


def _check_stage(info: MethodInfo, method: Method, stage: str | None) -> None:
    names = [s.name for s in method.stages]
    if stage is not None and stage not in names:
        raise ConfigError(f"method {info.name} has stages {', '.join(names)}, not '{stage}'")


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


def _manifest(info: MethodInfo, cfg: MethodConfig, method: Method, settings: RunSettings, budget: Budget,
              data: DataSplits, device: torch.device) -> dict:
    return new_manifest(
        method=info.name, paper=info.paper, paper_table=info.table, stages=[s.name for s in method.stages],
        config=to_jsonable(cfg),
        run={**to_jsonable(settings), "budget_s": budget.seconds,
             f"budget_{records.hours_key(device.type)}": budget.gpu_hours},
        dataset={**data.train.describe(), "spec": settings.data, "train_images": len(data.train),
                 "val_images": len(data.val),
                 # how the images reached training: rendered live (shapes) or read from a prepared memmap
                 "storage": data.train.storage,
                 # stages trained on another preparation of the same images (their own dataset id)
                 **({"stages": {name: {**d.train.describe(), "train_images": len(d.train), "val_images": len(d.val)}
                                for name, d in data.stages.items()}} if data.stages else {})},
        stage_precision={s.name: s.precision(device) for s in method.stages},
        provenance=provenance(device, allocator.describe()),
        method_fields=to_jsonable(method.run_fields))


def _recorded(run: RunDir) -> tuple[MethodInfo, MethodConfig, RunSettings]:
    """The method, config and settings a run directory was started with."""
    m = run.manifest()
    info, cfg = recorded_method(m, str(run.path / "run.json"))
    try:
        settings = RunSettings(**{k: v for k, v in (m.get("run") or {}).items() if k in identity_fields()})
    except TypeError:  # a setting every run records is missing
        missing = [f.name for f in dataclasses.fields(RunSettings) if f.default is dataclasses.MISSING
                   and f.name not in (m.get("run") or {})]
        raise RunDirError(f"{run.path / 'run.json'}: run lacks {', '.join(missing)}") from None
    return info, cfg, settings


def prepare_run(req: RunRequest, device: torch.device | None = None, d: Dist = distributed.SINGLE) -> PreparedRun:
    """Validate everything and open or create the run directory (no training yet)."""
    device = device if device is not None else resolve_device(req.device)
    existing = req.resume or (req.run_dir if req.run_dir and RunDir.is_run(Path(req.run_dir)) else None)
    if req.resume and not RunDir.is_run(Path(req.resume)):
        raise RunDirError(f"--resume {req.resume}: not a run directory (no run.json)")
    overrides = parse_overrides(req.overrides)
    if req.pipeline_eval and (not existing or req.stage is not None):
        raise ConfigError("--pipeline-eval evaluates a trained run: give --resume RUN and no --stage")
    if existing:
        return _continue(Path(existing), req, overrides, device, d)
    if req.method is None:
        raise ConfigError("--method is required for a new run (see `harness list`)")
    info = get_method(req.method)
    cfg = apply_overrides(info.config, overrides, info.name)
    spec = parse_data_spec(req.data or "shapes")
    method = build_method(info, cfg, req.seed if req.seed is not None else 0)
    _check_stage(info, method, req.stage)
    slots = None
    if req.stage is None and not d.enabled:
        slots = layout.plan(method.stages, device, req.layout)
    elif req.layout == "parallel":
        raise ConfigError("--layout parallel starts the stages' jobs itself: give no --stage and no torchrun")
    settings = _settings_from(req, info, spec.kind, d, slots)
    budget, eval_every = _schedule(settings)
    data = open_run_data(settings.data, cfg, method.stage_data_options())
    path = Path(req.run_dir) if req.run_dir else default_run_dir(settings, req.results)
    manifest = _manifest(info, cfg, method, settings, budget, data, device)
    if slots:
        manifest["layout"] = layout.describe(slots)
    if device.type == "cuda" and info.paper_devices and settings.devices != info.paper_devices:
        manifest["deviations"] = [f"trained on {settings.devices} GPU(s); the paper trained {info.name} on "
                                  f"{info.paper_devices}"]
    run = RunDir.create(path, manifest)
    save_real_grid(run, data)
    return PreparedRun(run, info, cfg, method, settings, budget, eval_every, data, device, created=True, slots=slots)


def save_real_grid(run: RunDir, data: DataSplits) -> Path:
    """samples/real.png: the first 64 training images, in the layout of the evaluations' sample grids,
    so that the report shows real images beside generated ones without opening the data."""
    images, _ = data.train.first(64)
    return run.save_grid(images, REAL_GRID)


def _continue(path: Path, req: RunRequest, overrides: dict, device: torch.device, d: Dist) -> PreparedRun:
    """The run in `path`, continued as it was started: every setting given must agree."""
    run = RunDir.open(path)
    m = run.manifest()
    info, cfg, recorded = _recorded(run)
    if req.method is not None and req.method != m["method"]:
        raise RunDirError(f"{path} is a run of '{m['method']}', not '{req.method}'")
    method = build_method(info, cfg, recorded.seed)
    _check_stage(info, method, req.stage)
    _check_same(recorded, req, cfg, apply_overrides(cfg, overrides, info.name), path)
    recorded_layout = m.get("layout") or {}
    slots = _recorded_slots(recorded_layout) if req.stage is None and not d.enabled and not req.pipeline_eval else None
    expected = recorded.devices
    if recorded_layout and req.stage is not None:  # one stage's job of the parallel layout
        expected = recorded_layout["stages"][req.stage]["processes"]
    if req.pipeline_eval:  # on any number of processes: the evaluation's samples do not depend on it
        _check_trained(path, m, method)
    elif slots is None and expected != d.world:
        raise RunDirError(f"{path} was trained by {expected} process(es), not {d.world}; "
                          f"continue it with the same torchrun layout")
    data = open_run_data(recorded.data, cfg, method.stage_data_options())
    if data.train.id != m["dataset"]["id"]:
        raise RunDirError(f"{path} was trained on dataset {m['dataset']['id']}, but {recorded.data} "
                          f"now resolves to {data.train.id}")
    # a corrupt, foreign or edited checkpoint (or a run.json edited against it) stops us before any
    # write (of this job's stages)
    for name in [req.stage] if req.stage else [s.name for s in method.stages]:
        if m.get("stage_state", {}).get(name, {}).get("status") not in FINISHED:
            loaded = run.checkpoints.load(name, keep=True)
            if loaded is not None:
                checked(loaded, name, m)
    budget, eval_every = _schedule(recorded)
    if recorded_layout and req.stage is not None:  # this job's GPU-hours are its own processes'
        budget = dataclasses.replace(budget, devices=d.world)
    return PreparedRun(run, info, cfg, method, recorded, budget, eval_every, data, device, created=False, slots=slots)


def _check_trained(path: Path, m: dict, method: Method) -> None:
    """--pipeline-eval: every stage of the run has finished training."""
    state = m.get("stage_state", {})
    untrained = [s.name for s in method.stages if (state.get(s.name) or {}).get("status") not in FINISHED]
    if untrained:
        raise RunDirError(f"{path}: stage(s) {', '.join(untrained)} not trained yet; --pipeline-eval evaluates the "
                          f"pipeline of a run whose stages are all trained")


def _recorded_slots(recorded: dict) -> list[layout.Slot] | None:
    if recorded.get("mode") != "parallel":
        return None
    return [layout.Slot(name, v["processes"], tuple(v["devices"])) for name, v in recorded["stages"].items()]


def _follower(path: str, device: torch.device) -> PreparedRun:
    """A non-zero rank's view of the run rank 0 prepared: same method, config, settings and data."""
    run = FollowerRunDir.open(Path(path))
    info, cfg, settings = _recorded(run)
    method = build_method(info, cfg, settings.seed)
    return PreparedRun(run, info, cfg, method, settings, *_schedule(settings),
                       open_run_data(settings.data, cfg, method.stage_data_options()), device, created=False)


def _needs_scorer(req: RunRequest, p: PreparedRun) -> bool:
    """Whether this process computes image metrics: not with --eval-samples 0, and not for a
    `--stage` job whose stage has none (an NSBGAN decoder needs no Inception weights)."""
    if p.settings.eval_samples <= 0:
        return False
    return p.method.stage(req.stage).image_metrics if req.stage else True


def resolve_scorer(req: RunRequest, p: PreparedRun):
    """The run's ImageScorer (FID/IS), or None where this process computes no image metrics."""
    if not _needs_scorer(req, p):
        return None
    from harness.metrics.networks import resolve_backbone
    from harness.metrics.scorer import ImageScorer

    try:
        return ImageScorer(resolve_backbone(req.inception, p.settings.fid_backbone, p.device), p.device,
                           mode=p.cfg.fid_mode, selection=Selection.parse(p.settings.fid_reference),
                           metrics=p.settings.metrics)
    except Exception:
        if p.created:
            p.run.update(status=Status.FAILED, error="no FID backbone")
        raise


def prepare_all(req: RunRequest, d: Dist, device: torch.device):
    """(PreparedRun, scorer): rank 0 validates and opens the run, then tells the others its path
    or its error, so that a bad input stops every process with the same one-line message; then
    every rank resolves its scorer, and all agree on the network (`_agreed_scorer`)."""
    if not d.enabled:
        p = prepare_run(req, device, d)
        return p, resolve_scorer(req, p)
    if not d.main:
        verdict = distributed.broadcast_object(d, None)
        if verdict[0] == "error":
            raise getattr(errors, verdict[1], HarnessError)(verdict[2])
        p = _follower(verdict[1], device)
        try:
            scorer, failed = resolve_scorer(req, p), None
        except HarnessError as e:
            scorer, failed = None, str(e)
        return p, _agreed_scorer(d, p, scorer, failed)
    try:
        p = prepare_run(req, device, d)
        scorer = resolve_scorer(req, p)
    except HarnessError as e:
        distributed.broadcast_object(d, ("error", type(e).__name__, str(e)))
        raise
    except Exception as e:
        distributed.broadcast_object(d, ("error", "HarnessError", f"rank 0 failed: {type(e).__name__}: {e}"))
        raise
    distributed.broadcast_object(d, ("ok", str(p.run.path)))
    scorer = _agreed_scorer(d, p, scorer, None)
    if req.pipeline_eval:  # the layout's evaluation job: run.json's layout names its processes
        return p, scorer
    p.run.update(distributed={"processes": d.world, "nodes": d.nodes, "per_node": d.local_world,
                              "backend": "nccl" if device.type == "cuda" else "gloo",
                              "data_parallel": "each process trains on batch/processes images; gradients "
                                               "all-reduced (mean) before every optimiser step",
                              "evaluation": "every process draws and featurises its share of the samples "
                                            "(chunk k on rank k % processes); rank 0 gathers them in chunk "
                                            "order and computes the metrics"})
    return p, scorer


def _agreed_scorer(d: Dist, p: PreparedRun, scorer, failed: str | None):
    """Every rank's scorer, split over the job (harness.metrics.sharding), once all ranks resolved the
    same network (weights of the same sha256); otherwise every rank stops with one message."""
    seen = distributed.all_gather_object(d, (failed, scorer.backbone.key if scorer is not None else None))
    problems = [f"rank {rank}: {error}" for rank, (error, _) in enumerate(seen) if error]
    if not problems and len({key for _, key in seen}) > 1:
        problems = ["the ranks resolved different feature networks (" +
                    ", ".join(f"rank {rank}: {key}" for rank, (_, key) in enumerate(seen)) + "): give --inception PATH"]
    if problems:
        if d.main and p.created:
            p.run.update(status=Status.FAILED, error=problems[0])
        raise MetricError(problems[0])
    if scorer is not None:
        scorer.group = distributed.EvalGroup(d)
    return scorer
