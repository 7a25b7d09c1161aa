"""Read run directories (run.json + metrics.jsonl only) into pandas frames."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import RunDirError
from harness.rundir.records import HOURS, liveness, run_share
from harness.rundir.rundir import RunDir


@dataclass
class Frames:
    runs: pd.DataFrame  # one row per run: identity, status, cost, final metrics
    evals: pd.DataFrame  # one row per evaluation line of metrics.jsonl
    train: pd.DataFrame  # one row per train line
    # soft-octave runs' recorded beta schedules (run.json `beta_schedule`), with run, method, variant, seed
    schedules: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. unparseable metrics lines, with file and line
    figure_notes: list[str] = field(default_factory=list)  # figures not drawn, and why


def find_runs(paths: list[Path], warnings: list[str] | None = None) -> list[RunDir]:
    """Each path is a run directory or a folder searched (recursively) for them. A run whose
    run.json cannot be read (not JSON, wrong kinds of values) is skipped and named in `warnings`."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if RunDir.is_run(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(q.parent for q in p.rglob("run.json"))
        else:
            raise RunDirError(f"{p} is neither a run directory nor a folder of runs")
    if not found:
        raise RunDirError("no run directories found in " + ", ".join(str(p) for p in paths))
    runs, unreadable = [], []
    for path in found:
        try:
            run = RunDir.open(path)
            run.manifest()
            runs.append(run)
        except RunDirError as e:
            unreadable.append(str(e))
    if not runs:
        raise RunDirError(f"no readable run directory in {', '.join(str(p) for p in paths)}: {'; '.join(unreadable)}")
    if warnings is not None:
        warnings += [f"{why}; the run is skipped" for why in unreadable]
    return runs


# the settings that make runs one configuration: tables and time-to-target group their seeds by these
GROUP = ["method", "variant", "schedule_provenance", "data", "resolution", "budget"]
# evaluations of a finished run with their own tables: `harness eval --truncation` and --latents-from
SWEEPS = ("truncation", "latents-from")


def fid_column(evals: pd.DataFrame) -> tuple[str, str] | None:
    """The FID column present in the data and its axis label; stand-in scores say so."""
    for col, label in (("fid", "FID (clean-fid, TF-Inception)"), ("fid_dinov2", "FD_DINOv2 (DINOv2 features, NOT FID)"),
                       ("fid_standin", "fid_standin (stand-in network, NOT FID)")):
        if col in evals and evals[col].notna().any():
            return col, label
    return None


def training_curves(frames: Frames) -> tuple[pd.DataFrame, str | None]:
    """(the runs' FID evaluations in training, sorted by run and budget clock; the FID column)."""
    ev = frames.evals
    if ev.empty:
        return ev, None
    ev = ev[(ev["kind"] == "eval") & ~ev["stage"].isin([*SWEEPS, "pipeline"])]
    if "truncation" in ev:
        ev = ev[ev["truncation"].isna() | (ev["truncation"] == 1.0)]
    found = fid_column(ev)
    if found is None:
        return ev.iloc[0:0], None
    col = found[0]
    ev = ev[ev[col].notna()].copy()
    ev["train_h"] = ev["budget_s"] / 3600.0
    return ev.sort_values(["run", "budget_s"]), col


def _final_metrics(records: list[dict]) -> dict:
    """The last evaluation of each stage without truncation (or at 1.0: an NSBGAN pipeline writes
    one line per level), flattened to `<metric>` (or `<stage>/<metric>` when a method has several
    stages reporting the same key), and FID* from the level it was measured at (fid_star_truncation).
    Sweeps after training are left to their own tables."""
    last: dict[str, dict] = {}
    star: dict = {}
    for r in records:
        if r.get("kind") != "eval" or r["stage"] in SWEEPS:
            continue
        if r.get("truncation", 1.0) == 1.0:
            last[r["stage"]] = r
        if any(k in r for k in ("fid_star", "fid_star_standin")):
            star = {k: v for k, v in r.items() if k.startswith("fid_star")} | {"fid_star_truncation": r.get("truncation")}
    skip = {"kind", "stage", "step", "epoch", "budget_s", "wall_s", *HOURS, "kwh", "kwh_eval", "kg_co2e", "gpu_j",
            "gpu_j_eval", "time", "final", "eval_s", "notes"}
    out: dict = {}
    for stage, r in last.items():
        for k, v in r.items():
            if k in skip or not isinstance(v, (int, float)):
                continue
            out[k if k not in out else f"{stage}/{k}"] = v
    return {**out, **{k: v for k, v in star.items() if isinstance(v, (int, float))}}


def _arch(config: dict) -> str | None:
    """The GAN architecture: NSBGAN's sampler's (a nested config; a plain string in older runs) or
    BigGAN's `arch`; None for others."""
    sampler = config.get("sampler")
    return (sampler.get("arch") if isinstance(sampler, dict) else sampler) or config.get("arch")


def _model_facts(manifest: dict) -> dict:
    """Stages' static facts (parameters, MACs, ...) from run.json; prefixed by the stage name
    when a method has several stages."""
    stages = manifest.get("stage_state", {})
    out = {}
    for name, state in stages.items():
        for k, v in (state.get("model") or {}).items():
            out[k if len(stages) == 1 else f"{name}/{k}"] = v
    return out


def _provenance(manifest: dict, records: list[dict]) -> dict:
    """What a reader needs to trust a number: code version, device model, FID flavour, precision."""
    prov = manifest.get("provenance") or {}
    fid_lines = [r for r in records if r.get("kind") == "eval" and ("fid" in r or "fid_standin" in r)]
    key = "fid" if any("fid" in r for r in fid_lines) else "fid_standin"
    modes = sorted({str(r[f"{key}_mode"]) for r in fid_lines if r.get(f"{key}_mode")})
    refs = sorted({str(r[f"{key}_ref"]) for r in fid_lines if r.get(f"{key}_ref")})
    cfg = manifest.get("config") or {}
    precision = manifest.get("precision") or (cfg["amp"] if isinstance(cfg.get("amp"), str) else None)
    commit = prov.get("git_commit")
    return {
        "commit": None if commit is None else commit[:10] + ("+dirty" if prov.get("git_dirty") else ""),
        "devices": ", ".join(sorted(set(map(str, prov.get("devices") or [])))) or None,
        # runs from before FID lines named their mode used clean-fid's "clean" resize
        "fid_mode": ", ".join(modes) if modes else ("clean" if fid_lines else None),
        "fid_ref": ", ".join(refs) if refs else None,  # reference sets: dataset id/split[:n]
        "train_precision": precision,  # fp32 | bf16 (`precision` is PRDC's, harness.metrics.suite)
    }


def device_kind(manifest: dict) -> str | None:
    """cuda | cpu: the run's training device (None where run.json does not say)."""
    device = manifest.get("device") or (manifest.get("provenance") or {}).get("device")
    return str(device).split(":")[0] if device else None


def with_hours_named(record: dict, kind: str | None) -> dict:
    """A line or totals of a CPU run written before cpu_h existed calls its CPU-hours gpu_h: renamed."""
    if kind == "cpu" and "gpu_h" in record and "cpu_h" not in record:
        record = {**record, "cpu_h": record["gpu_h"]}
        del record["gpu_h"]
    return record


def collect(paths: list[Path]) -> Frames:
    rows, evals, trains, warnings, schedules = [], [], [], [], []
    for run in find_runs(paths, warnings):
        m = run.manifest()
        kind = device_kind(m)
        records = [with_hours_named(r, kind) for r in run.metrics.read(warnings)]
        settings = m.get("run", {})
        totals = with_hours_named(m.get("totals") or {}, kind)
        share, min_share = run_share(m.get("exclusive_share"))
        base = {
            "run": run.path.name,
            "path": str(run.path),
            "method": m["method"],
            "variant": m.get("config", {}).get("variant"),  # None for methods without variants
            # octave runs: whose beta schedule (official-code | reconstructed | user); None for others
            "schedule_provenance": m.get("schedule_provenance"),
            "arch": _arch(m.get("config", {})),
            "data": m.get("dataset", {}).get("name"),
            "dataset_id": m.get("dataset", {}).get("id"),
            "resolution": m.get("config", {}).get("resolution"),
            "seed": settings.get("seed"),
            "budget": settings.get("budget"),
        }
        rows.append({
            **base,
            "status": liveness(m),
            "steps": totals.get("steps"),
            "train_h": totals.get("train_hours"),
            # the share of the machine the run's training had (harness.report.conditions), beside its cost
            "share": share,
            "min_share": min_share,
            **{h: totals[h] for h in HOURS if totals.get(h) is not None},
            "wall_h": None if totals.get("wall_s") is None else totals["wall_s"] / 3600,
            "images_per_s": None if not totals.get("budget_s") else (totals.get("images") or 0) / totals["budget_s"],
            "kwh": totals.get("kwh"),
            "kwh_train": totals.get("kwh_train"),
            "kg_co2e": totals.get("kg_co2e"),
            "device": (m.get("provenance") or {}).get("devices", [None])[0],
            "fid_backbone": ((m.get("fid") or {}).get("backbone") or {}).get("name"),
            "deviations": "; ".join(m.get("deviations") or []) or None,  # from the paper's setting
            **_provenance(m, records),
            **_model_facts(m),
            **_final_metrics(records),
        })
        if isinstance(m.get("beta_schedule"), dict):
            schedules.append({**base, **m["beta_schedule"]})
        for r in records:
            target = evals if r.get("kind") == "eval" else trains if r.get("kind") == "train" else None
            if target is not None:
                target.append({**base, **{k: v for k, v in r.items() if k != "notes"},
                               "notes": "; ".join(r.get("notes") or [])})
    return Frames(pd.DataFrame(rows), pd.DataFrame(evals), pd.DataFrame(trains), schedules, warnings)
