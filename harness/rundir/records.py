"""The record format of a run directory: status values, metrics.jsonl lines, run.json summaries.

`harness report` reads what these functions build, so this is the one place that says what a
line or a summary holds. A metrics.jsonl line is
    {"kind": "train"|"eval"|"diverged"|"stretch", "stage", "step", "epoch", "budget_s", "wall_s",
     "gpu_h" or "cpu_h", "kwh", "kwh_eval", "kg_co2e", "gpu_j", "gpu_j_eval", "time", ...}
where budget_s is training time on the clock, gpu_h (GPU runs) or cpu_h (CPU runs) = budget_s x
devices / 3600, kwh the energy of training so far (evaluation's separately, in kwh_eval) and gpu_j
the GPUs' energy counters' joules of training so far. A train line adds the losses and `share`
(harness.engine.exclusivity), an eval line the metrics and its GPUs' `joules`; a stretch line ends
each training segment with its steps, seconds, share figures and GPU joules (per step too).
"""
from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from enum import StrEnum
from typing import Any, Callable, Iterable

from harness.rundir.schema import NONE, NUMBER, ListOf, MapOf, Obj, problem
from harness.ui.units import format_seconds


class Status(StrEnum):
    """A run's or a stage's status in run.json (plain strings on disk)."""

    RUNNING = "running"
    COMPLETED = "completed"  # the method's own end (its iterations or epochs) was reached
    BUDGET_EXHAUSTED = "budget_exhausted"
    DIVERGED = "diverged"  # a non-finite loss; the last good checkpoint was evaluated
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: checkpointed, resumable


# a stage that ended in one of these is not trained again when its run is continued
FINISHED = frozenset({Status.COMPLETED, Status.BUDGET_EXHAUSTED, Status.DIVERGED})


def run_status(stage_statuses: Iterable[str]) -> Status:
    """The run's status from its stages': the most serious one wins."""
    present = set(stage_statuses)
    for s in (Status.FAILED, Status.DIVERGED, Status.INTERRUPTED, Status.BUDGET_EXHAUSTED, Status.COMPLETED):
        if s in present:
            return s
    return Status.COMPLETED


# what readers of a metrics.jsonl line rely on (checked as lines are read back; other keys are free)
_NUMBERS = ("epoch", "budget_s", "wall_s", "gpu_h", "cpu_h", "kwh", "kwh_eval", "kg_co2e", "time", "eval_s", "images_per_s",
            "truncation", "gpu_j", "gpu_j_eval", "share")
LINE = Obj(kind=str, stage=str, step=int, final=bool, notes=(ListOf(str), NONE), stage_steps=MapOf(int),
           **{k: (NUMBER, NONE) for k in _NUMBERS})


def line_problem(record) -> str | None:
    """Why a parsed metrics.jsonl line is no record of this harness (`null`, `[1, 2]`, a string
    step, a missing kind), or None."""
    if not isinstance(record, dict):
        return f"it holds {type(record).__name__}, not a record"
    if missing := [k for k in ("kind", "stage", "step") if k not in record]:
        return f"it has no {', '.join(missing)}"
    return problem(record, LINE, "the line")


# device-hours by what they count: GPU-hours on GPUs, CPU-hours (the CPU, all the cores the run may
# use, per training process) on a CPU. Runs written before cpu_h existed call both gpu_h.
HOURS = ("gpu_h", "cpu_h")


def hours_key(device_type: str) -> str:
    """The device-hours field of a run on `device_type` (a torch.device's type)."""
    return "gpu_h" if device_type == "cuda" else "cpu_h"


def device_hours(budget_s: float, devices: int) -> float:
    return budget_s * devices / 3600.0


def line(kind: str, stage: str, *, step: int, epoch: float, budget_s: float, wall_s: float, devices: int,
         energy: dict, hours: str = "gpu_h", **extra: Any) -> dict:
    """One metrics.jsonl line of a stage in training; `energy` is an EnergyMeter summary, `hours`
    the device-hours field (hours_key). Extra fields that are None are left out."""
    return {
        "kind": kind,
        "stage": stage,
        "step": step,
        "epoch": round(epoch, 6),
        "budget_s": budget_s,
        "wall_s": wall_s,
        hours: device_hours(budget_s, devices),
        "kwh": energy["kwh_train"],
        "kwh_eval": energy["kwh_eval"],
        "kg_co2e": None if energy["kg_train"] is None else energy["kg_train"] + energy["kg_eval"],
        **({"gpu_j": energy["gpu_j_train"], "gpu_j_eval": energy["gpu_j_eval"]}
           if energy.get("gpu_j_train") is not None else {}),
        "time": time.time(),
        **{k: v for k, v in extra.items() if v is not None},
    }


def pipeline_line(stage_states: dict[str, dict], stage_steps: dict[str, int], metrics: dict, eval_s: float,
                  notes: list[str] | None) -> dict:
    """The metrics.jsonl line of a whole-pipeline evaluation (stage `pipeline`): its cost is the
    sum of the stages' (from run.json's stage_state)."""
    record = {"kind": "eval", "stage": "pipeline", "step": sum(stage_steps.values()), "stage_steps": stage_steps,
              "final": True, "budget_s": sum((v.get("budget_s") or 0.0) for v in stage_states.values()),
              **{h: sum(v[h] for v in stage_states.values() if v.get(h) is not None)
                 for h in HOURS if any(v.get(h) is not None for v in stage_states.values())},
              "eval_s": eval_s, "time": time.time(), "notes": notes or None, **metrics}
    return {k: v for k, v in record.items() if v is not None}


def stage_summary(*, steps: int, last_step_s: float, epochs: float, images: int, budget_s: float, wall_s: float,
                  devices: int, evals: int, energy: dict, energy_by_node: list[dict] | None = None,
                  hours: str = "gpu_h") -> dict:
    """run.json's stage_state[<stage>] figures after a training segment."""
    return {
        "steps": steps,
        "last_step_s": last_step_s,
        "epochs": round(epochs, 6),
        "images": images,
        "budget_s": budget_s,
        "wall_s": wall_s,
        hours: device_hours(budget_s, devices),
        "images_per_s": images / budget_s if budget_s > 0 else None,
        "steps_per_s": steps / budget_s if budget_s > 0 else None,
        "evals": evals,
        "energy": energy,
        **({"energy_by_node": energy_by_node} if energy_by_node else {}),
    }


# A share of the machine below this is a busy machine: the run's warning, compare's machine line and
# the report's flags draw the line here (harness.engine.exclusivity says what a share is).
BUSY_BELOW = 0.9


def run_share(shares: dict[str, dict] | None) -> tuple[float | None, float | None]:
    """(the run's share of the machine, its lowest stretch's) from run.json's exclusive_share: the
    stages' shares weighted by their measured seconds; (None, None) where nothing was measured."""
    measured = [s for s in (shares or {}).values()
                if isinstance(s, dict) and s.get("share") is not None and s.get("seconds")]
    if not measured:
        return None, None
    seconds = sum(s["seconds"] for s in measured)
    lows = [s["min_share"] for s in measured if s.get("min_share") is not None]
    return round(sum(s["share"] * s["seconds"] for s in measured) / seconds, 3), (min(lows) if lows else None)


def run_totals(stage_states: Iterable[dict], shares: dict[str, dict] | None = None) -> dict:
    """run.json's `totals`: the stages' figures summed (None where no stage has one), and the
    share of the machine their training had (`shares`: run.json's exclusive_share, per stage)."""
    stages = list(stage_states)

    def total(key: str, sub: str | None = None):
        vals = [(s.get(sub) or {}).get(key) if sub else s.get(key) for s in stages]
        vals = [v for v in vals if v is not None]
        return sum(vals) if vals else None

    totals = {k: total(k) for k in ("steps", "images", "budget_s", "wall_s")}
    totals.update({h: v for h in HOURS if (v := total(h)) is not None})
    totals["train_hours"] = None if totals["budget_s"] is None else totals["budget_s"] / 3600.0
    for k in ("kwh_train", "kwh_eval", "kg_train", "kg_eval", "gpu_j_train", "gpu_j_eval"):
        totals[k] = total(k, "energy")
    share, low = run_share(shares)
    if share is not None:
        totals["exclusive_share"], totals["min_share"] = share, low
    parts = [totals["kwh_train"], totals["kwh_eval"]]
    totals["kwh"] = None if any(p is None for p in parts) else sum(parts)
    kg = [totals["kg_train"], totals["kg_eval"]]
    totals["kg_co2e"] = None if any(p is None for p in kg) else sum(kg)
    return totals


STALE_AFTER_S = 300.0  # a `running` run without a heartbeat for this long is reported as stale
FUTURE_S = 60.0  # clocks of the nodes that wrote and that read a heartbeat may differ by this much


def heartbeat(stage: str, step: int) -> dict:
    """run.json's heartbeat[<stage>]: when the stage last logged a step, and which process it is."""
    return {stage: {"time": time.time(), "step": step, "pid": os.getpid(), "host": socket.gethostname()}}


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _seconds(stamp) -> float | None:
    """run.json's `updated` (time.strftime's %Y-%m-%dT%H:%M:%S%z) as a Unix time, or None."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (TypeError, ValueError):
        return None


def liveness(manifest: dict, now: float | None = None, alive: Callable[[int], bool] = process_alive) -> str:
    """The status a report shows: the final one, or for a run marked running, whether it still
    runs: `dead (...)` when every process that wrote its heartbeats ran on this machine and is gone
    (killed with -9, or unable to record its end on a full disk), `stale (...)` when no heartbeat came
    for STALE_AFTER_S (the heartbeat is written when training starts; run.json's own time stands in
    for runs without one), `unknown (...)` for a heartbeat from the future (another node's clock)."""
    status = manifest.get("status")
    if status != Status.RUNNING:
        return str(status)
    now = time.time() if now is None else now
    beats = [b for b in (manifest.get("heartbeat") or {}).values() if isinstance(b, dict)]
    here = socket.gethostname()
    pids = sorted({b["pid"] for b in beats if b.get("host") == here and isinstance(b.get("pid"), int)})
    if beats and all(b.get("host") == here for b in beats) and pids and not any(alive(p) for p in pids):
        return f"dead (pid {', '.join(map(str, pids))} ended without recording its end)"
    times = [b["time"] for b in beats if isinstance(b.get("time"), (int, float)) and not isinstance(b["time"], bool)]
    if not times:
        since = _seconds(manifest.get("updated"))
        if since is None or now - since <= STALE_AFTER_S:
            return "running (no heartbeat yet)"
        return f"stale (no heartbeat; run.json last written {format_seconds(now - since)} ago)"
    last = max(times)
    if last > now + FUTURE_S:
        return f"unknown (heartbeat {format_seconds(last - now)} in the future: clocks differ?)"
    age = max(0.0, now - last)
    if age <= STALE_AFTER_S:
        return str(Status.RUNNING)
    return f"stale (no heartbeat for {format_seconds(age)})"


def lost_total(prior: dict | None, lost: dict, budget_s: float, wall_s: float, kwh: float) -> dict:
    """run.json's stage_state[<stage>]["lost"]: the training a crash threw away, summed over
    resumes. `lost` is RunDir.set_aside_lost's account of one segment; budget_s, wall_s and kwh are
    the checkpoint's, which the segment's last lines ran past."""
    prior = prior or {}
    segment = {"budget_s": (lost["budget_s"] or budget_s) - budget_s, "wall_s": (lost["wall_s"] or wall_s) - wall_s,
               "kwh": None if lost["kwh"] is None else lost["kwh"] - kwh}
    total = {k: (prior.get(k) or 0.0) + (v or 0.0) for k, v in segment.items()}
    total.update(segments=int(prior.get("segments", 0)) + 1, lines=int(prior.get("lines", 0)) + lost["lines"])
    return total
