"""Tables from collected runs: csv (exact), markdown (review) and LaTeX (papers).

Runs of one configuration with several seeds are grouped: each metric shows mean, std and the
best of N together with N, never a best without its N.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from harness.report.collect import Frames

RUN_COLUMNS = ["run", "method", "variant", "arch", "data", "seed", "status", "steps", "train_h", "gpu_h", "images_per_s",
               "kwh", "kg_co2e", "fid", "fid_n", "fid_standin", "fid_standin_n", "is_mean", "is_std", "mse_val",
               "mse_train"]
GROUP = ["method", "variant", "data", "resolution", "budget"]
# metric -> which direction is better, for best-of-N
METRICS = {"fid": "min", "fid_standin": "min", "fid_star": "min", "fid_star_standin": "min", "is_mean": "max",
           "mse_val": "min", "mse_train": "min", "pipeline/mse_val": "min", "pipeline/mse_train": "min",
           "pipeline/fid": "min", "pipeline/fid_standin": "min", "pipeline/is_mean": "max"}


def runs_table(frames: Frames) -> pd.DataFrame:
    cols = [c for c in RUN_COLUMNS if c in frames.runs.columns]
    hidden = {"path", "dataset_id", "budget", "wall_h", "kwh_train", "device", "fid_backbone", "resolution"}
    extra = [c for c in frames.runs.columns if c not in cols and c not in hidden]
    return frames.runs[cols + sorted(extra)]


def summary_table(frames: Frames) -> pd.DataFrame:
    """One row per configuration: seeds N, and mean / std / best-of-N of each metric."""
    df = frames.runs
    keys = [k for k in GROUP if k in df.columns]
    rows = []
    for group, part in df.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n_seeds"] = int(part["seed"].nunique()) if "seed" in part else len(part)
        row["statuses"] = ", ".join(f"{s}x{c}" if c > 1 else s for s, c in part["status"].value_counts().items())
        for metric, better in METRICS.items():
            if metric not in part or part[metric].isna().all():
                continue
            vals = part[metric].dropna().astype(float)
            row[f"{metric}_mean"] = vals.mean()
            row[f"{metric}_std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
            row[f"{metric}_best_of_{len(vals)}"] = vals.min() if better == "min" else vals.max()
        for cost in ("gpu_h", "kwh", "kg_co2e", "images_per_s"):
            if cost in part:
                row[f"{cost}_mean"] = part[cost].astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def instances_table(frames: Frames) -> pd.DataFrame:
    """Every run of each configuration that has several (NSBGAN Sec. 5: "5 instances in total (3
    BigGAN-deep and 2 BigGAN samplers)", the best reported): seed, architecture, status (diverged
    ones included, with the metrics of their last good checkpoint) and the metrics, one row each;
    the best-of-N of the group is in the summary table, beside N."""
    df = frames.runs
    keys = [k for k in GROUP if k in df.columns]
    metrics = [m for m in METRICS if m in df.columns and df[m].notna().any()]
    cols = [c for c in ["run", *keys, "seed", "arch", "status", "steps", "train_h"] if c in df.columns] + metrics
    parts = [part for _, part in df.groupby(keys, dropna=False, sort=True) if len(part) > 1]
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts)[cols].sort_values([*keys, "seed"])


def cost_table(frames: Frames) -> pd.DataFrame:
    cols = [c for c in ["run", "method", "variant", "device", "steps", "train_h", "gpu_h", "wall_h", "images_per_s",
                        "kwh_train", "kwh", "kg_co2e", "g_params", "d_params", "g_macs", "d_macs"]
            if c in frames.runs.columns]
    return frames.runs[cols]


def truncation_table(frames: Frames) -> pd.DataFrame:
    ev = frames.evals
    if ev.empty or "truncation" not in ev:
        return pd.DataFrame()
    # `harness eval --truncation` sweeps and the final pipeline evaluation's levels (NSBGAN)
    t = ev[ev["stage"].isin(["truncation", "pipeline"]) & ev["truncation"].notna()]
    cols = [c for c in ["run", "method", "seed", "stage", "step", "truncation", "fid", "fid_standin", "is_mean",
                        "is_std", "fid_n", "fid_standin_n", "fid_star", "fid_star_standin"] if c in t.columns]
    return t[cols].sort_values(["run", "stage", "step", "truncation"], ascending=[True, True, True, False])


def mse_table(frames: Frames) -> pd.DataFrame:
    """NSBGAN Table 1: train and held-out reconstruction MSE per method (and per decoder level)."""
    ev = frames.evals
    if ev.empty or "mse_val" not in ev:
        return pd.DataFrame()
    last = ev[ev["mse_val"].notna()].groupby(["run", "stage"], sort=False).tail(1)
    cols = [c for c in ["run", "method", "seed", "stage", "step", "mse_train", "mse_val"] if c in last.columns]
    return last[cols]


def _write(df: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.csv", folder / f"{name}.md", folder / f"{name}.tex"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(_markdown(df))
    paths[2].write_text(df.to_latex(index=False, float_format="%.4g", na_rep="--"))
    return paths


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_tables(frames: Frames, out: Path) -> list[Path]:
    folder = Path(out) / "tables"
    written = _write(runs_table(frames), folder, "runs")
    written += _write(summary_table(frames), folder, "summary")
    written += _write(cost_table(frames), folder, "cost")
    for name, table in (("truncation", truncation_table(frames)), ("mse", mse_table(frames)),
                        ("instances", instances_table(frames))):
        if not table.empty:
            written += _write(table, folder, name)
    if not frames.evals.empty:
        written += _write(frames.evals.drop(columns=["path"], errors="ignore"), folder, "evals")
    return written


def console_table(df: pd.DataFrame) -> Table:
    cols = [c for c in RUN_COLUMNS if c in df.columns]
    table = Table(*cols)
    for _, row in df.iterrows():
        table.add_row(*["" if pd.isna(row[c]) else (f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]))
                        for c in cols])
    return table
