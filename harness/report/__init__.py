"""`harness report`: run directories -> tables, figures and a one-page index (html + md)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.report.collect import Frames, collect


@dataclass
class Report:
    frames: Frames
    written: list[Path]
    index: Path  # index.html


def write_report(runs: list[Path], out: Path, *, targets: list[float] | None = None,
                 jobs: list[dict] | None = None, title: str = "fsgan-harness report") -> Report:
    """Collect `runs` (run directories or folders of them) and write tables/, figures/, index.html
    and index.md into `out`. `targets` are the FID targets of the time-to-target table (default:
    derived from the runs); `jobs` a comparison's job list."""
    from harness.report.index import write_index
    from harness.report.plots import write_figures
    from harness.report.tables import report_tables, write_tables

    frames = collect(runs)
    tables = report_tables(frames, targets, jobs)
    written = write_tables(tables, out)
    figures = write_figures(frames, out)
    index = write_index(frames, tables, figures, out, title)
    return Report(frames, written + figures + index, index[0])
