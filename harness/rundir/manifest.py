"""The run.json schema: every top-level field, who writes it, and the manifest a new run starts with.

`RunDir.update` writes only the fields named here; a method's own `run_fields` are written once,
when the run is created. This table and those fields are what `harness report` reads.
"""
from __future__ import annotations

from typing import Any

# top-level field -> what it holds (and who writes it)
FIELDS: dict[str, str] = {
    "format": "the run.json format version (rundir)",
    "created": "creation time (rundir)",
    "updated": "time of the latest write (rundir)",
    "status": "running | completed | budget_exhausted | diverged | failed | interrupted (launch, engine)",
    "error": "why a run failed, one line (launch)",
    "method": "the registered method's name (launch)",
    "paper": "the paper the method reproduces (launch)",
    "paper_table": "the paper's table or figure it reproduces (launch)",
    "stages": "stage names in training order (launch)",
    "config": "the resolved config, nested configs as objects (launch)",
    "run": "the run settings (harness.launch.request.RunSettings) with budget_s and budget_gpu_h (GPU) or "
           "budget_cpu_h (CPU) (launch)",
    "dataset": "dataset id, index sha256, sizes, preparation, storage; stages' own preparations (launch)",
    "precision": "fp32, or bf16 where any stage trains under bf16 autocast (launch)",
    "stage_precision": "each stage's precision, as the stage reports it (launch)",
    "provenance": "git commit and dirty flag, packages, devices, host, allocator, argv (launch)",
    "layout": "the parallel layout's stages, processes and devices (launch)",
    "device": "the training device (launch)",
    "distributed": "torchrun processes, nodes, backend (launch)",
    "fid": "FID backbone, weights sha256, resize mode, reference statistics used (launch, posthoc)",
    "energy": "how energy was measured: codecarbon components and country, GPU counters, each figure's source "
              "(counter, sampled power, estimate) (launch)",
    "threads": "CPU threads: the usable cores, other processes' load at the start, intra-op and prefetch threads, "
               "each change (launch, engine)",
    "exclusive_share": "per stage: the share of the machine its training had, and its parts (engine)",
    "stage_state": "per stage: status, steps, budget, wall time, energy, model facts (engine)",
    "totals": "the stages' figures summed, the run's exclusive_share and min_share (engine, launch for a "
              "parallel layout)",
    "heartbeat": "per stage: when it last logged a step, and which process (engine)",
    "last_eval": "per stage: its latest evaluation line (engine)",
}


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
