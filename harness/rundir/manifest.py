"""The run.json schema: every top-level field, who writes it, and the manifest a new run starts with.

`RunDir.update` writes only the fields named here; a method's own `run_fields` are written once,
when the run is created. This table and those fields are what `harness report` reads.
"""
from __future__ import annotations

from typing import Any

from harness.rundir.schema import NONE, NUMBER, ListOf, MapOf, Obj, problem

# the kinds of values the readers of run.json rely on (checked whenever it is read)
_STAGE = Obj(status=str, error=(str, NONE), steps=int, epochs=NUMBER, images=int, budget_s=NUMBER, wall_s=NUMBER,
             gpu_h=NUMBER, cpu_h=NUMBER, last_step_s=NUMBER, images_per_s=(NUMBER, NONE), steps_per_s=(NUMBER, NONE), evals=int,
             energy=Obj(), model=Obj(), lost=Obj(), budget_share_s=NUMBER, max_steps=(int, NONE))
_RUN = Obj(method=str, budget=str, data=str, seed=int, devices=int, eval_every=(str, NONE), eval_samples=int,
           fid_backbone=str, max_steps=(int, NONE), budget_s=NUMBER, budget_gpu_h=(NUMBER, NONE),
           budget_cpu_h=(NUMBER, NONE))
_BEAT = Obj(time=NUMBER, step=int, pid=int, host=str)
_TOTAL = (NUMBER, NONE)

# top-level field -> (its kind, what it holds (and who writes it))
FIELDS: dict[str, tuple[Any, str]] = {
    "format": (int, "the run.json format version (rundir)"),
    "created": (str, "creation time (rundir)"),
    "updated": (str, "time of the latest write (rundir)"),
    "status": (str, "running | completed | budget_exhausted | diverged | failed | interrupted (launch, engine)"),
    "error": ((str, NONE), "why a run failed, one line (launch)"),
    "method": (str, "the registered method's name (launch)"),
    "paper": (str, "the paper the method reproduces (launch)"),
    "paper_table": (str, "the paper's table or figure it reproduces (launch)"),
    "stages": (ListOf(str), "stage names in training order (launch)"),
    "config": (Obj(), "the resolved config, nested configs as objects (launch)"),
    "run": (_RUN, "the run settings (harness.launch.request.RunSettings) with budget_s and budget_gpu_h "
                   "(GPU) or budget_cpu_h (CPU) (launch)"),
    "dataset": (Obj(id=str, name=str, spec=str), "dataset id, index sha256, sizes, preparation, storage; stages' own "
                                                 "preparations (launch)"),
    "precision": (str, "fp32, or bf16 where any stage trains under bf16 autocast (launch)"),
    "deviations": (ListOf(str), "how this run's setting differs from the paper's, one line each (launch)"),
    "stage_precision": (MapOf(str), "each stage's precision, as the stage reports it (launch)"),
    "provenance": (Obj(git_commit=(str, NONE), git_dirty=(bool, NONE), devices=ListOf(str)),
                   "git commit and dirty flag, packages, devices, host, allocator, argv (launch)"),
    "layout": (Obj(stages=MapOf(Obj(processes=int, devices=ListOf((int, str))))),
               "the parallel layout's stages, processes and devices (launch)"),
    "device": (str, "the training device (launch)"),
    "distributed": (Obj(), "torchrun processes, nodes, backend (launch)"),
    "fid": (Obj(backbone=Obj()), "FID backbone, weights sha256, resize mode, reference statistics used (launch, posthoc)"),
    "energy": (Obj(), "how energy was measured: codecarbon components and country, GPU counters, each figure's "
                      "source (counter, sampled power, estimate) (launch)"),
    "threads": (Obj(), "CPU threads: the usable cores, other processes' load at the start, intra-op and prefetch "
                       "threads, each change (launch, engine)"),
    "exclusive_share": (MapOf(Obj()), "per stage: the share of the machine its training had, and its parts (engine)"),
    "stage_state": (MapOf(_STAGE), "per stage: status, steps, budget, wall time, energy, model facts (engine)"),
    "totals": (Obj(steps=_TOTAL, images=_TOTAL, budget_s=_TOTAL, wall_s=_TOTAL, gpu_h=_TOTAL, cpu_h=_TOTAL,
                   train_hours=_TOTAL,
                   kwh=_TOTAL, kwh_train=_TOTAL, kwh_eval=_TOTAL, kg_co2e=_TOTAL,
                   exclusive_share=_TOTAL, min_share=_TOTAL),
               "the stages' figures summed, the run's exclusive_share and min_share (engine, launch for a "
               "parallel layout)"),
    "heartbeat": (MapOf(_BEAT), "per stage: when it last logged a step, and which process (engine, launch)"),
    "last_eval": (MapOf(Obj()), "per stage: its latest evaluation line (engine)"),
}


def manifest_problem(data: Any) -> str | None:
    """Where a run.json's contents depart from the kinds above ("run.seed is 'zero', not an
    integer"), or None. Fields an older harness did not write are simply absent."""
    if not isinstance(data, dict):
        return f"it holds {type(data).__name__}, not an object"
    for name, (kind, _) in FIELDS.items():
        if name in data and (p := problem(data[name], kind, name)):
            return p
    return None


def check_fields(fields: dict[str, Any]) -> None:
    """A RuntimeError for a top-level field the schema does not name: a bug, not a user's error."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise RuntimeError(f"run.json has no field {', '.join(unknown)} (harness.rundir.manifest.FIELDS)")


def new_manifest(*, method: str, paper: str, paper_table: str, stages: list[str], config: dict, run: dict,
                 dataset: dict, stage_precision: dict[str, str], provenance: dict,
                 method_fields: dict[str, Any]) -> dict:
    """The manifest of a new run (RunDir.create adds format, created and status). `method_fields`
    are the method's own top-level facts (harness.method.Method.run_fields); they may not take a
    name of the schema."""
    if clash := sorted(set(method_fields) & set(FIELDS)):
        raise RuntimeError(f"method {method} sets run.json fields the harness writes: {', '.join(clash)}")
    manifest = {
        "method": method,
        "paper": paper,
        "paper_table": paper_table,
        "stages": stages,
        "config": config,
        "run": run,
        "dataset": dataset,
        "precision": "bf16" if "bf16" in stage_precision.values() else "fp32",
        "stage_precision": stage_precision,
        "provenance": provenance,
    }
    return {**manifest, **method_fields}
