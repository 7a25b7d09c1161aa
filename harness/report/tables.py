"""Tables from collected runs: csv (exact), markdown (review) and LaTeX (papers).

Runs of one configuration with several seeds are grouped: each metric shows mean, std and the
best of N together with N, never a best without its N.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from harness.report.collect import GROUP, Frames, fid_column, training_curves
from harness.report.conditions import UNEQUAL_BY, config_conditions, flagged
from harness.report.targets import time_to_target
from harness.rundir.records import BUSY_BELOW, HOURS
from harness.ui.units import format_seconds

RUN_COLUMNS = ["run", "method", "variant", "arch", "data", "seed", "status", "steps", "train_h", "share", "min_share",
               "gpu_h", "cpu_h", "images_per_s", "kwh", "kg_co2e", "fid", "fid_n", "fid_standin", "fid_standin_n",
               "is_mean", "is_std", "mse_val", "mse_train"]
FAMILIES = ("", "_standin", "_dinov2")  # the key suffix of each feature network (harness.metrics.backbone)


def _per_network(better: dict[tuple[str, str | None], str], prefix: str = "") -> dict[str, str]:
    """{(metric, part): direction} -> {key of each network: direction}: fid -> fid, fid_standin, fid_dinov2."""
    return {f"{prefix}{metric}{family}" + (f"_{part}" if part else ""): direction
            for (metric, part), direction in better.items() for family in FAMILIES}


# metric -> which direction is better, for best-of-N (keys: harness.metrics.suite)
_IMAGE = {("fid", None): "min", ("kid", "mean"): "min", ("fdinf", None): "min", ("precision", None): "max",
          ("recall", None): "max", ("density", None): "max", ("coverage", None): "max"}
METRICS = {**_per_network(_IMAGE), **_per_network({("fid_star", None): "min"}), "is_mean": "max",
           "mse_val": "min", "mse_train": "min", "pipeline/mse_val": "min", "pipeline/mse_train": "min",
           **_per_network(_IMAGE, "pipeline/"), "pipeline/is_mean": "max"}


def runs_table(frames: Frames) -> pd.DataFrame:
    cols = [c for c in RUN_COLUMNS if c in frames.runs.columns]
    hidden = {"path", "dataset_id", "budget", "wall_h", "kwh_train", "device", "fid_backbone", "resolution", "commit",
              "devices", "fid_mode", "fid_ref", "train_precision", "deviations", "device_kind"}
    extra = [c for c in frames.runs.columns if c not in cols and c not in hidden]
    return frames.runs[cols + sorted(extra)]


def summary_table(frames: Frames) -> pd.DataFrame:
    """One row per configuration: the share of the machine its runs had beside the budget (and its
    flag, harness.report.conditions), seeds N, and mean / std / best-of-N of each metric."""
    df = frames.runs
    keys = [k for k in GROUP if k in df.columns]
    rows = []
    for group, part in df.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row.update(config_conditions(part))
        row["n_seeds"] = int(part["seed"].nunique()) if "seed" in part else len(part)
        row["statuses"] = ", ".join(f"{s}x{c}" if c > 1 else s for s, c in part["status"].value_counts().items())
        for metric, better in METRICS.items():
            if metric not in part or part[metric].isna().all():
                continue
            vals = part[metric].dropna().astype(float)
            row[f"{metric}_mean"] = vals.mean()
            row[f"{metric}_std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
            row[f"{metric}_best_of_{len(vals)}"] = vals.min() if better == "min" else vals.max()
        for cost in ("gpu_h", "cpu_h", "kwh", "kg_co2e", "images_per_s"):
            if cost in part and part[cost].notna().any():
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
    cols = [c for c in ["run", *keys, "seed", "arch", "status", "steps", "train_h", "share"] if c in df.columns] + metrics
    parts = [part for _, part in df.groupby(keys, dropna=False, sort=True) if len(part) > 1]
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts)[cols].sort_values([*keys, "seed"])


def cost_table(frames: Frames) -> pd.DataFrame:
    cols = [c for c in ["run", "method", "variant", "device", "steps", "train_h", "share", "gpu_h", "cpu_h", "wall_h",
                        "images_per_s", "kwh_train", "kwh", "kg_co2e", "g_params", "d_params", "g_macs", "d_macs"]
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


def provenance_table(frames: Frames) -> pd.DataFrame:
    """Where each number comes from: code version, device model, data, FID flavour and sample
    counts, precision."""
    df = frames.runs.copy()
    for n in ("fid_n", "fid_standin_n"):
        ref = n.replace("_n", "_ref_n")
        if n in df and ref in df:
            df[n.replace("_n", "_samples")] = [
                None if pd.isna(a) else f"{int(a)} vs {int(b)} real" if pd.notna(b) else f"{int(a)}"
                for a, b in zip(df[n], df[ref])]
    cols = [c for c in ["run", "commit", "devices", "dataset_id", "fid_backbone", "fid_mode", "fid_ref", "fid_samples",
                        "fid_standin_samples", "train_precision"] if c in df.columns]
    return df[cols]


def _write(df: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.csv", folder / f"{name}.md", folder / f"{name}.tex"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(_markdown(df))
    paths[2].write_text(df.to_latex(index=False, float_format="%.4g", na_rep="--"))
    return paths


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def report_tables(frames: Frames, targets: list[float] | None = None,
                  jobs: list[dict] | None = None) -> dict[str, pd.DataFrame]:
    """Every table of a report, by file name; tables that would be empty are left out."""

    ttt_runs, ttt = time_to_target(frames, targets)
    tables = {"summary": summary_table(frames), "time_to_target": ttt, "runs": runs_table(frames),
              "cost": cost_table(frames), "provenance": provenance_table(frames),
              "truncation": truncation_table(frames), "mse": mse_table(frames),
              "instances": instances_table(frames), "time_to_target_runs": ttt_runs,
              "jobs": pd.DataFrame(jobs or []),
              "evals": frames.evals.drop(columns=["path"], errors="ignore")}
    return {name: t for name, t in tables.items() if not t.empty}


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    written = []
    for name, table in tables.items():
        written += _write(table, Path(out) / "tables", name)
    return written


SHORT_STATUS = {"completed": "done", "budget_exhausted": "budget", "interrupted": "stopped", "failed": "FAILED"}


def _count(n) -> str:
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _fid_cell(value, n=None, spread=None) -> str:
    if value is None or pd.isna(value):
        return "-"
    text = f"{value:.1f}" + ("" if spread is None or pd.isna(spread) else f"±{spread:.1f}")
    return text + ("" if n is None or pd.isna(n) else f" n={_count(n)}")


def _amount(v) -> str:
    if v is None or pd.isna(v):
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}" if v >= 1 else f"{v:.2g}"


def hours_column(runs: pd.DataFrame) -> tuple[str | None, str]:
    """(the device-hours column the console shows, its header): GPU-h, CPU-h, or dev-h for a mix."""
    present = [h for h in ("gpu_h", "cpu_h") if h in runs and runs[h].notna().any()]
    if len(present) == 1:
        return present[0], "GPU-h" if present[0] == "gpu_h" else "CPU-h"
    return (None, "dev-h") if present else (None, "GPU-h")


def _kid_cell(runs: pd.DataFrame, col: str) -> str:
    """KID x 10^3 of the runs' final evaluations: one run's ± half its bootstrap interval, or the mean
    ± std over seeds."""
    values = runs[col].astype(float) if col in runs else pd.Series(dtype=float)
    if values.dropna().empty:
        return "-"
    if len(values.dropna()) > 1:
        return f"{1e3 * values.mean():.2f}±{1e3 * values.std():.2f}"
    row = runs.loc[values.notna()].iloc[0]
    low, high = col.replace("_mean", "_low"), col.replace("_mean", "_high")
    half = (row[high] - row[low]) / 2 if low in row and high in row and pd.notna(row.get(low)) else None
    return f"{1e3 * row[col]:.2f}" + ("" if half is None else f"±{1e3 * half:.2f}")


def console_summary(frames: Frames) -> Group:
    """The report on a terminal: one row per configuration with the few columns that fit in 80
    characters (the full tables are in the files): seeds, statuses, mean GPU- or CPU-hours, kWh, the
    share of the machine the runs had (`!`: flagged, harness.report.conditions), and the headline
    metric. Without KID: the best evaluation's FID with its sample count and the final one's (mean ±
    std over seeds). With KID (the CPU demo's headline, unbiased at its 64 samples): the final KID x
    10^3 with half its 95% interval (or ± std over seeds) beside the final FID and its n."""
    curves, col = training_curves(frames)
    standin = col == "fid_standin"
    star = "*" if standin else ""
    kid_col = None if col is None else col.replace("fid", "kid", 1) + "_mean"
    with_kid = kid_col is not None and kid_col in curves and curves[kid_col].notna().any()
    fid = ("FD_DINOv2" if col == "fid_dinov2" else "FID") + star
    df = frames.runs
    hours, header = hours_column(df)
    caption = ("status: done = completed, budget = budget spent; share: of the machine (lowest run), ! = flagged" +
               ("; dev-h: GPU-hours of GPU runs, CPU-hours of CPU runs" if header == "dev-h" else "") +
               ("; * stand-in score, NOT FID/KID" if standin else ""))
    if with_kid:
        caption += ("; KID x 10^3 ± half its 95% bootstrap interval (one seed) or ± std (seeds); FID below n=10k is "
                    "small-sample: biased upwards")
        headers = ("method", "seeds", "status", f"KID{star}", f"final {fid}", header, "kWh", "share")
    else:
        headers = ("method", "seeds", "status", f"best {fid}", "final", header, "kWh", "share")
    table = Table(*headers, box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for column in table.columns:
        column.no_wrap = True
    keys = [k for k in GROUP if k in df.columns]
    flags = []
    for _, part in df.groupby(keys, dropna=False, sort=True):
        first = part.iloc[0]
        name = first["method"] + (f" {first['variant']}" if isinstance(first.get("variant"), str) else "")
        counts = part["status"].map(lambda v: SHORT_STATUS.get(str(v), str(v)[:8])).value_counts()
        status = ", ".join(f"{s} x{c}" if c > 1 else str(s) for s, c in counts.items())
        best = final = "-"
        mine = curves[curves["run"].isin(part["run"])] if col is not None else curves
        if col is not None and not mine.empty:
            last_rows = mine.groupby("run").tail(1)
            last = last_rows[col]
            if with_kid:
                best = _kid_cell(last_rows, kid_col)
                final = _fid_cell(last.mean(), last_rows[f"{col}_n"].iloc[0] if f"{col}_n" in last_rows else None,
                                  spread=last.std() if len(last) > 1 else None)
            else:
                i = mine[col].idxmin()
                best = _fid_cell(mine.loc[i, col], mine.loc[i].get(f"{col}_n"))
                final = _fid_cell(last.mean(), spread=last.std() if len(last) > 1 else None)
        if hours is not None:
            cost = part[hours].astype(float).mean() if hours in part else None
        elif any(h in part for h in HOURS):  # a mix of GPU and CPU runs: each run's own device-hours
            cost = pd.concat([part[h] for h in HOURS if h in part], axis=1).max(axis=1).astype(float).mean()
        else:  # no run recorded any (each failed before its first segment)
            cost = None
        kwh = part["kwh"].astype(float).mean() if "kwh" in part else None
        cond = config_conditions(part)
        share = "-" if cond["share"] is None else f"{cond['share_min']:.2f}" + ("!" if flagged(cond["conditions"]) else "")
        if flagged(cond["conditions"]):
            flags.append(f"! {name}: {cond['conditions']}")
        table.add_row(name[:20] if with_kid else name[:22], str(part["seed"].nunique()),
                      status[:12] if with_kid else status[:14], best, final, _amount(cost), _amount(kwh), share)
    return Group(table, *(Text(f, style="yellow") for f in flags), Text(caption, style="dim"))


SMALL_SAMPLE = 10_000  # FID from fewer samples is biased upwards (clean-fid, Chong & Forsyth 2020)


def config_name(first: pd.Series, varies: set[str]) -> str:
    """A configuration as people name it: method and variant, and what else differs between those on the page."""
    name = first["method"] + (f" {first['variant']}" if isinstance(first.get("variant"), str) else "")
    extra = [str(first[k]) for k in ("data", "resolution", "budget", "schedule_provenance")
             if k in varies and first.get(k) is not None and not pd.isna(first.get(k))]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _key(values) -> tuple:
    """A group key with NaN as None, so that keys from two frames compare equal."""
    values = values if isinstance(values, tuple) else (values,)
    return tuple(None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values)


def _metric_key(part: pd.DataFrame, key: str) -> str | None:
    """The column of `key` for these runs: the whole pipeline's where a method evaluates one, else the stage's."""
    for col in (f"pipeline/{key}", key):
        if col in part and part[col].notna().any():
            return col
    return None


def _with_spread(part: pd.DataFrame, col: str, scale: float = 1.0, digits: int = 1, spread: str | None = None) -> str:
    """Mean ± std over seeds; one run's value ± half its bootstrap interval (`col`_low/_high), or ± its own
    `spread` column (IS's std over splits)."""
    values = part[col].dropna().astype(float)
    if len(values) > 1:
        return f"{scale * values.mean():.{digits}f} ± {scale * values.std(ddof=1):.{digits}f}"
    row = part.loc[values.index[0]]
    base = col.removesuffix("_mean")
    low, high = row.get(f"{base}_low"), row.get(f"{base}_high")
    if low is not None and high is not None and pd.notna(low) and pd.notna(high):
        return f"{scale * row[col]:.{digits}f} ± {scale * (high - low) / 2:.{digits}f}"
    if spread is not None and pd.notna(row.get(spread)):
        return f"{scale * row[col]:.{digits}f} ± {scale * row[spread]:.{digits}f}"
    return f"{scale * row[col]:.{digits}f}"


def _time_to_target(rows: pd.DataFrame | None) -> str:
    """The first target (in the table's order: the easiest first) any run of the configuration reached."""
    if rows is None or rows.empty:
        return "-"
    for row in rows.sort_values("target", ascending=False).itertuples(index=False):
        if int(row.reached.split("/")[0]):
            return f"≤ {row.target:g} in {format_seconds(row.train_h_mean * 3600)} ({row.reached})"
    return f"not reached (≤ {rows['target'].max():g})"


def _cost(part: pd.DataFrame) -> str:
    """Mean device-hours per run, named for the runs' device (GPU- or CPU-hours), and kWh."""
    cells = []
    for col, unit in (("gpu_h", "GPU-h"), ("cpu_h", "CPU-h"), ("kwh", "kWh")):
        if col in part and part[col].notna().any():
            cells.append(f"{_amount(part[col].astype(float).mean())} {unit}")
    return ", ".join(cells) or "-"


def _share(part: pd.DataFrame) -> str:
    cond = config_conditions(part)
    if cond["share"] is None:
        return "not measured"
    return f"{cond['share']:.2f}" + (f" ⚑ {cond['conditions']}" if flagged(cond["conditions"]) else "")


HEADLINE_CAPTION = ("One row per configuration, its seeds together: status, the final evaluation's metrics, time to "
                    "target, cost and the share of the machine the runs trained with.")


def headline_table(frames: Frames, ttt: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """(the page's summary: one row per configuration with the columns people read first, how to read it).

    Columns: configuration, seeds, statuses, the final KID x 10^3 and FID (and IS where measured) with
    their intervals, time to the first FID target reached, cost, and the share of the machine with its
    flag (harness.report.conditions). Every cell is text; the full numbers are in summary.csv."""
    df = frames.runs
    keys = [k for k in GROUP if k in df.columns]
    varies = {k for k in keys if df[k].astype(str).nunique() > 1}
    fid = fid_column(df)
    family = "" if fid is None else fid[0][len("fid"):]
    standin = family == "_standin"
    ttt_rows = {} if ttt is None or ttt.empty else \
        {_key(k): part for k, part in ttt.groupby([k for k in keys if k in ttt], dropna=False, sort=False)}
    fid_header = {"": "FID", "_standin": "FID stand-in", "_dinov2": "FD_DINOv2"}.get(family, "FID")
    with_kid, with_is = _metric_key(df, f"kid{family}_mean") is not None, _metric_key(df, "is_mean") is not None
    small = False
    rows = []
    for group, part in df.groupby(keys, dropna=False, sort=True):
        first = part.iloc[0]
        counts = part["status"].map(lambda v: SHORT_STATUS.get(str(v), str(v))).value_counts()
        row = {"method": config_name(first, varies),
               "seeds": str(part["seed"].nunique() or len(part)) if "seed" in part else str(len(part)),
               "status": ", ".join(f"{s} ×{c}" if c > 1 else str(s) for s, c in counts.items())}
        kid = _metric_key(part, f"kid{family}_mean")
        if with_kid:
            row["KID ×10³"] = "-" if kid is None else _with_spread(part, kid, scale=1e3, digits=2)
        col = None if fid is None else _metric_key(part, fid[0])
        if fid is not None:
            cell = "-"
            if col is not None:
                cell = _with_spread(part, col)
                n = part[f"{col}_n"].dropna() if f"{col}_n" in part else pd.Series(dtype=float)
                if len(n):
                    cell += f" (n={_count(n.min())})"
                    small = small or n.min() < SMALL_SAMPLE
            row[fid_header] = cell
        is_col = _metric_key(part, "is_mean")
        if with_is:
            row["IS"] = "-" if is_col is None else _with_spread(part, is_col, digits=2, spread="is_std")
        if ttt_rows:
            row["time to target"] = _time_to_target(ttt_rows.get(_key(group)))
        row["cost per run"] = _cost(part)
        row["share of the machine"] = _share(part)
        rows.append(row)
    table = pd.DataFrame(rows).fillna("-")
    if small and fid_header in table:
        table = table.rename(columns={fid_header: f"{fid_header}, small-sample"})
    legend = ("Status: done = completed, budget = its budget spent. Metrics of the final evaluation: one seed "
               "± half its 95% bootstrap interval where measured, "
               "several seeds mean ± std over them"
               + ("; KID ×10³ is unbiased at any sample count" if any(c.startswith("KID") for c in table) else "")
               + (f"; FID from fewer than {SMALL_SAMPLE:,} samples (n) is small-sample: biased upwards, comparable "
                  f"only at equal n" if small else "")
               + ("; stand-in: scored with the stand-in network, not Inception: NOT FID/KID, not comparable with "
                  "published numbers" if standin else "")
               + (". Time to target: the first FID target of the time-to-target table the runs reached, the mean "
                  "training time of those that did (k of N)" if ttt_rows else "")
               + f". Cost: mean per run. Share of the machine: mean over the runs, ⚑ flagged when a run had less "
                 f"than {BUSY_BELOW:g} of it or its seeds' shares differ by more than {UNEQUAL_BY:g} (the notes "
                 f"above say more). Every column: tables/summary.csv.")
    return table, legend
