"""Time-to-target: when each run first reached each FID target (AlgoPerf's measure, and the form
of NSBGAN's claim that it "converges several times faster" than BigGAN).

A run's curve is its scheduled evaluations in training (the stage that has FID: a GAN's own
stage, NSBGAN's sampler), in budget order; the final whole-pipeline line and the sweeps after
training are left out. The time at which a target is reached is the first evaluation whose FID is
at or below it, read as that line's budget clock (training hours), GPU- or CPU-hours and training kWh:
an upper bound on the true crossing, as fine as the evaluation schedule. Runs of one
configuration (seeds) are grouped: how many reached the target (k/N), and the mean over those
that did; a group none of whose runs reached it shows "not reached". Each row carries the share of
the machine its runs trained with beside the budget, and its flag (harness.report.conditions).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.ui.units import format_seconds
from harness.report.collect import GROUP, Frames, training_curves
from harness.report.conditions import config_conditions

COSTS = {"train_h": "training hours", "gpu_h": "GPU-hours", "cpu_h": "CPU-hours", "kwh": "kWh"}


def _round(x: float) -> float:
    """`x` to 3 significant digits, never below it: a target made from a run's best FID is one that run reached
    (to the nearest, 20.43 would become 20.4, which no run reached)."""
    rounded = float(f"{x:.3g}")
    if rounded >= x or x <= 0:
        return rounded
    return float(f"{rounded + 10.0 ** (math.floor(math.log10(x)) - 2):.3g}")


def default_targets(curves: pd.DataFrame, col: str) -> list[float]:
    """Three targets from the runs themselves: the worst configuration's best FID (every
    configuration reached it, so their times compare), the best configuration's best (only it
    reached it) and their midpoint. With one configuration: its first evaluation's FID (median
    over seeds) and its best, at thirds."""
    keys = [k for k in GROUP if k in curves]
    best = curves.groupby(keys, dropna=False)[col].min()
    hi, lo = float(best.max()), float(best.min())
    if len(best) < 2 or math.isclose(hi, lo):
        first = float(curves.groupby("run")[col].first().median())
        hi = max(first, hi)
        return sorted({_round(lo + (hi - lo) * f) for f in (2 / 3, 1 / 3, 0.0)}, reverse=True)
    return sorted({_round(hi), _round((hi + lo) / 2), _round(lo)}, reverse=True)


def per_run(curves: pd.DataFrame, col: str, targets: list[float], shares: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per run and target: reached or not, and the cost at the first evaluation at or
    below the target; `shares` the runs' share of the machine. Targets are compared with the value
    as written (a `_round`ed target derived from a run's best FID may lie a hair above it, never below)."""
    rows = []
    for run, part in curves.groupby("run", sort=True):
        first = part.iloc[0]
        for t in targets:
            hit = part[part[col] <= t + 1e-9 * abs(t)]
            row = {**{k: first.get(k) for k in ["run", *GROUP, "seed"] if k in part},
                   "share": (shares or {}).get(run), "metric": col, "target": t,
                   "n": int(first.get(f"{col}_n")) if pd.notna(first.get(f"{col}_n")) else None,
                   "reached": not hit.empty}
            for cost in [c for c in COSTS if c in part]:
                row[cost] = float(hit.iloc[0][cost]) if not hit.empty and cost in hit and pd.notna(hit.iloc[0][cost]) \
                    else np.nan
            row["step"] = int(hit.iloc[0]["step"]) if not hit.empty else None
            rows.append(row)
    return pd.DataFrame(rows)


def grouped(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and target: reached k/N and the mean cost over the runs that reached it."""
    if runs.empty:
        return runs
    keys = [k for k in GROUP if k in runs]
    rows = []
    for group, part in runs.groupby([*keys, "metric", "target"], dropna=False, sort=False):
        cond = config_conditions(part.drop_duplicates("run"))
        row = {**dict(zip(keys, group)), "share": cond["share"], "conditions": cond["conditions"],
               **dict(zip(["metric", "target"], group[len(keys):]))}
        hit = part[part["reached"]]
        row["reached"] = f"{len(hit)}/{len(part)}"
        for cost in COSTS:
            if cost in part and part[cost].notna().any():
                row[f"{cost}_mean"] = float(hit[cost].mean()) if len(hit) and hit[cost].notna().any() else np.nan
        row["result"] = "not reached" if hit.empty else f"{format_seconds(row['train_h_mean'] * 3600)} of training"
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(["target", *keys], ascending=[False, *[True] * len(keys)]).reset_index(drop=True)


def time_to_target(frames: Frames, targets: list[float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run, grouped) time-to-target tables; empty frames when no run has an FID curve."""
    curves, col = training_curves(frames)
    if col is None or curves.empty:
        return pd.DataFrame(), pd.DataFrame()
    targets = sorted(targets, reverse=True) if targets else default_targets(curves, col)
    shares = dict(zip(frames.runs["run"], frames.runs["share"])) if "share" in frames.runs else {}
    runs = per_run(curves, col, targets, shares)
    return runs, grouped(runs)
