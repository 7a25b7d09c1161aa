"""Tables from collected runs: csv (exact), markdown (review) and LaTeX (papers)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from harness.report.collect import Frames

RUN_COLUMNS = ["run", "method", "variant", "data", "seed", "status", "steps", "train_h", "gpu_h", "images_per_s",
               "kwh", "kg_co2e", "fid", "fid_n", "fid_standin", "fid_standin_n", "is_mean", "is_std", "mse"]


def runs_table(frames: Frames) -> pd.DataFrame:
    cols = [c for c in RUN_COLUMNS if c in frames.runs.columns]
    extra = [c for c in frames.runs.columns if c not in cols and c not in ("path", "dataset_id", "budget", "wall_h",
                                                                            "kwh_train", "device", "fid_backbone",
                                                                            "resolution")]
    return frames.runs[cols + sorted(extra)]


def _write(df: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.csv", folder / f"{name}.md", folder / f"{name}.tex"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n" if _has_tabulate() else df.to_string(index=False) + "\n")
    paths[2].write_text(df.to_latex(index=False, float_format="%.4g", na_rep="--"))
    return paths


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def write_tables(frames: Frames, out: Path) -> list[Path]:
    written = _write(runs_table(frames), Path(out) / "tables", "runs")
    if not frames.evals.empty:
        written += _write(frames.evals.drop(columns=["path"], errors="ignore"), Path(out) / "tables", "evals")
    return written


def console_table(df: pd.DataFrame) -> Table:
    cols = [c for c in RUN_COLUMNS if c in df.columns]
    table = Table(*cols)
    for _, row in df.iterrows():
        table.add_row(*["" if pd.isna(row[c]) else (f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]))
                        for c in cols])
    return table
