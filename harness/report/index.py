"""The report as one page: index.html (self-contained: figures embedded as data URIs, tables as
HTML, no network reference) and index.md (the same, pointing at figures/ and tables/).

Each table and figure comes with one line on what it shows; each run's final sample grid and the
runs' provenance (commit, device, dataset id, FID flavour, sample counts, precision) follow.
"""
from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path

import pandas as pd

from harness.report.collect import Frames
from harness.report.conditions import conditions_notes
from harness.report.tables import _markdown

TABLE_NOTES = {
    "summary": "One row per configuration (method x variant x data x budget): the share of the machine its runs "
               "trained with (mean and lowest run) and its flag, seeds N, mean, std and best of N of each final "
               "metric, and mean cost.",
    "time_to_target": "When each configuration first reached each FID target: the share of the machine its runs "
                      "had and its flag, runs that reached it (k/N) and their mean training hours, GPU- or "
                      "CPU-hours and kWh at the first evaluation at or below it.",
    "runs": "One row per run: status, steps, share of the machine, cost and final metrics (sample counts in the "
            "*_n columns).",
    "cost": "Cost of each run: training hours on the budget clock, the share of the machine, GPU-hours (GPU runs) "
            "or CPU-hours (CPU runs: training hours x processes), wall hours, images/s, energy, parameters.",
    "provenance": "Where each number comes from: code commit, device model, dataset id, FID backbone and "
                  "flavour, sample counts (generated vs real), precision.",
    "truncation": "FID / IS (and FID* where measured) at each truncation level: NSBGAN Fig. 3's numbers.",
    "mse": "Reconstruction MSE of the decoders on training and held-out images (NSBGAN Table 1).",
    "instances": "Every run of each configuration with several (NSBGAN's instances); best-of-N is in the summary.",
    "time_to_target_runs": "Time-to-target per run and target (the grouped table above averages these).",
    "jobs": "The comparison's jobs and their exit codes (a job that failed before its run directory existed "
            "appears only here).",
    "evals": "Every evaluation line of every run (metrics.jsonl), for plotting elsewhere.",
}
FIGURE_NOTES = {
    "_against_is": "FID against Inception Score over truncation levels, one curve per run and evaluation, points "
                   "labelled with their truncation; --latents-from points dashed, FID* starred (NSBGAN Fig. 3).",
    "_vs_train_h": "against training hours on the budget clock (the harness's own; octave Figs. 4, 7 use epochs)",
    "_vs_gpu_h": "against GPU-hours",
    "_vs_cpu_h": "against CPU-hours",
    "_vs_kwh": "against training energy in kWh (codecarbon)",
    "_vs_epoch": "against epochs (octave Fig. 10a)",
    "_vs_truncation": "against the truncation level (NSBGAN Fig. 3's levels; the figure itself is FID against IS)",
    "spectra": "1-D power spectra of generated and real images (octave Fig. 10b).",
    "beta_schedules": "The soft-octave beta_H / beta_L schedules the runs trained with (octave Fig. 9), with "
                      "their provenance.",
}
# long tables stay in their files; the page links to them
INLINE_ROWS = 60


def figure_note(name: str) -> str:
    for key, note in FIGURE_NOTES.items():
        if key in name:
            if key.startswith("_vs_"):
                metric = name.split("_vs_")[0]
                what = "stand-in score (not FID)" if "standin" in metric else metric.upper().replace("_MEAN", "")
                return f"{what} of each run's evaluations {note}; one line per seed."
            return note
    return ""


def final_grid(run_dir: Path) -> Path | None:
    """The sample grid of a run's last evaluation (the pipeline's where a method has one)."""
    grids = sorted(Path(run_dir).glob("samples/*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    pipeline = [g for g in grids if g.name.startswith("pipeline")]
    return (pipeline or grids or [None])[-1]


def reading_notes(runs: pd.DataFrame) -> list[str]:
    """What every number on the page depends on: the FID flavour, weights and reference sets, and
    any run that did not train in fp32."""
    notes = []
    if "fid_mode" in runs and runs["fid_mode"].notna().any():
        for (backbone, mode), part in runs.groupby(["fid_backbone", "fid_mode"], dropna=False):
            refs = ", ".join(sorted({str(r) for r in part.get("fid_ref", pd.Series(dtype=object)).dropna()}))
            notes.append(f"FID of {len(part)} run(s): clean-fid '{mode}' resize, weights {backbone}"
                         + (f", reference {refs}" if refs else "") + " (sample counts in the *_n columns).")
    if "deviations" in runs:
        for run, deviations in zip(runs["run"], runs["deviations"]):
            if isinstance(deviations, str) and deviations:
                notes.append(f"{run}: {deviations}")
    if "train_precision" in runs:
        low = runs[runs["train_precision"].notna() & (runs["train_precision"] != "fp32")]
        if len(low):
            notes.append("not fp32: " + ", ".join(f"{r} ({p})" for r, p in zip(low["run"], low["train_precision"])))
    return notes


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(df: pd.DataFrame) -> str:
    shown = df.astype(object).where(df.notna(), "")  # None and NaN alike show as empty cells
    return "<div class='scroll'>" + shown.to_html(index=False, na_rep="", border=0, classes="t",
                                                  float_format=lambda v: f"{v:.4g}", escape=True) + "</div>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse;font-size:.8em;margin:.5em 0}table.t td,table.t th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right}table.t th{background:#f6f6f6}p.note{color:#555;margin:.2em 0}
p.flag{color:#8a4b00;background:#fff4e0;border-left:3px solid #e69500;padding:.2em .5em;margin:.3em 0}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figure img{max-width:560px}
figcaption{font-size:.8em;color:#555;max-width:560px}.scroll{overflow-x:auto}.grid img{image-rendering:pixelated;width:256px}"""


def write_index(frames: Frames, tables: dict[str, pd.DataFrame], figures: list[Path], out: Path,
                title: str = "fsgan-harness report") -> list[Path]:
    """index.html and index.md in `out` (which holds tables/ and figures/)."""
    out = Path(out)
    pngs = [f for f in figures if f.suffix == ".png"]
    made = time.strftime("%Y-%m-%d %H:%M")
    runs = frames.runs
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
         f"<p class='note'>{len(runs)} run(s), made {made} by <code>harness report</code>. Tables: csv, md and tex "
         f"in tables/; figures: png and pdf in figures/.</p>"]
    md = [f"# {title}", "", f"{len(runs)} run(s), made {made} by `harness report`. Tables: csv, md and tex in "
          f"`tables/`; figures: png and pdf in `figures/`.", ""]
    for note in conditions_notes(runs):  # first: whether the comparison on this page is a fair one
        flag = note.startswith(("flag:", "unequal"))
        h.append(f"<p class='{'flag' if flag else 'note'}'>{html.escape(note)}</p>")
        md += [f"**{note}**" if flag else note, ""]
    for note in reading_notes(runs):
        h.append(f"<p class='note'>{html.escape(note)}</p>")
        md += [note, ""]
    warnings = frames.warnings
    if warnings:
        h.append("<p class='note'>warnings: " + html.escape("; ".join(warnings)) + "</p>")
        md += ["warnings: " + "; ".join(warnings), ""]

    def table_section(name: str) -> None:
        df = tables[name]
        note = TABLE_NOTES.get(name, "")
        h.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2><p class='note'>{html.escape(note)}</p>")
        md.extend([f"## {name.replace('_', ' ')}", "", note, ""])
        if len(df) > INLINE_ROWS:
            h.append(f"<p class='note'>{len(df)} rows: see tables/{name}.csv (first {INLINE_ROWS} below).</p>")
            md.extend([f"{len(df)} rows: see [tables/{name}.md](tables/{name}.md).", ""])
            h.append(f"<details><summary>first {INLINE_ROWS} rows</summary>{_html_table(df.head(INLINE_ROWS))}"
                     f"</details>")
            return
        h.append(_html_table(df))
        md.extend([_markdown(df), ""])

    for name in [n for n in ("summary", "time_to_target") if n in tables]:
        table_section(name)
    h.append("<h2>figures</h2>")
    md.extend(["## figures", ""])
    for note in frames.figure_notes:
        h.append(f"<p class='note'>{html.escape(note)}</p>")
        md.extend([note, ""])
    for f in pngs:
        note = figure_note(f.stem)
        h.append(f"<figure><img alt='{html.escape(f.stem)}' src='{_data_uri(f)}'>"
                 f"<figcaption><b>{html.escape(f.stem)}</b>: {html.escape(note)}</figcaption></figure>")
        md.extend([f"![{f.stem}](figures/{f.name})", "", f"**{f.stem}**: {note}", ""])
    h.append("<h2>final samples</h2><p class='note'>Each run's last evaluation's sample grid.</p><div class='grid'>")
    md.extend(["## final samples", "", "Each run's last evaluation's sample grid.", ""])
    for _, row in runs.iterrows():
        grid = final_grid(Path(row["path"]))
        if grid is None:
            continue
        caption = f"{row['run']} ({row.get('status')})"
        h.append(f"<figure><img alt='samples of {html.escape(row['run'])}' src='{_data_uri(grid)}'>"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        md.extend([f"![samples of {row['run']}]({Path(os.path.relpath(grid.resolve(), out.resolve())).as_posix()})", "",
                   caption, ""])
    h.append("</div>")
    for name in [n for n in tables if n not in ("summary", "time_to_target")]:
        table_section(name)
    h.append("</body></html>")
    paths = [out / "index.html", out / "index.md"]
    paths[0].write_text("\n".join(h))
    paths[1].write_text("\n".join(md) + "\n")
    return paths
