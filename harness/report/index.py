"""The report as one page: index.html (self-contained: figures embedded as data URIs, tables as
HTML, no script, no network reference) and index.md (the same, pointing at figures/ and tables/).

Read top to bottom: the conditions and reading notes, a summary of one row per configuration with
the columns that matter, real training images beside each run's final samples, the figures, then
every table behind an expandable section (the first INLINE_ROWS rows of a longer one; the evaluation
lines only named: they are in tables/).
Each table and figure has a caption; a table wider than the page scrolls inside its box.
"""
from __future__ import annotations

import base64
import html
import io
import os
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from harness.report.collect import Frames
from harness.report.conditions import conditions_notes
from harness.report.tables import HEADLINE_CAPTION, _markdown, headline_table
from harness.rundir.samples import REAL_GRID

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
# long tables stay in their files: the page shows their first rows
INLINE_ROWS = 60
LINKED_ONLY = ("evals",)  # every line of every run: for plotting elsewhere, not for reading
SAMPLES_WIDTH = 360  # px: three grids to a row of the page; a 32 px set's 8 x 8 grid (274 px) at its own size


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
    grids = sorted((g for g in Path(run_dir).glob("samples/*.png") if g.stem != REAL_GRID),
                   key=lambda p: (p.stat().st_mtime, p.name))
    pipeline = [g for g in grids if g.name.startswith("pipeline")]
    return (pipeline or grids or [None])[-1]


def real_grid(run_dir: Path) -> Path | None:
    """samples/real.png: the run's training images in the layout of its sample grids (None in older runs)."""
    path = Path(run_dir) / "samples" / f"{REAL_GRID}.png"
    return path if path.is_file() else None


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


def _html_table(df: pd.DataFrame, caption: str, cls: str = "t") -> str:
    """A table with its caption above it; a table wider than the page scrolls inside its box."""
    shown = df.astype(object).where(df.notna(), "")  # None and NaN alike show as empty cells
    body = shown.to_html(index=False, na_rep="", border=0, classes=cls, float_format=lambda v: f"{v:.4g}", escape=True)
    return (f"<figure class='table'><figcaption>{html.escape(caption)}</figcaption>"
            f"<div class='scroll'>{body}</div></figure>")


def _figure(src: str, alt: str, caption: str, cls: str = "", width: int | None = None) -> str:
    """An image with its one-line caption (`caption` is HTML, already escaped), `width` px wide at most."""
    attr = (f" class='{cls}'" if cls else "") + (f" style='width:{width}px'" if width else "")
    return f"<figure{attr}><img alt='{html.escape(alt)}' src='{src}'><figcaption>{caption}</figcaption></figure>"


def _grid_uri(path: Path) -> str:
    """A sample grid as a data URI, at most twice the width it is shown at (a sharp image on a
    high-density screen): a 256 px set's 2,048 px grid would weigh megabytes in every page. The
    file in the run directory keeps its full size."""
    with Image.open(path) as im:
        if im.width <= 2 * SAMPLES_WIDTH:
            return _data_uri(path)
        small = im.convert("RGB").resize((2 * SAMPLES_WIDTH, round(im.height * 2 * SAMPLES_WIDTH / im.width)),
                                         Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid_width(path: Path) -> int:
    """The width a sample grid is shown at: its own (a PNG's IHDR), at most SAMPLES_WIDTH."""
    with open(path, "rb") as f:
        header = f.read(24)
    width = int.from_bytes(header[16:20], "big") if header[12:16] == b"IHDR" else SAMPLES_WIDTH
    return max(1, min(width, SAMPLES_WIDTH))


def _relative(path: Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


STYLE = """*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd}p.note{color:#555;margin:.2em 0}
p.flag{color:#8a4b00;background:#fff4e0;border-left:3px solid #e69500;padding:.2em .5em;margin:.3em 0}
figure{margin:.5em 0}figure img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
figure.table figcaption{margin-bottom:.2em}.scroll{overflow-x:auto;max-width:100%}
table.t{border-collapse:collapse;font-size:.8em}table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}table.t th{background:#f6f6f6}
table.headline{border-collapse:collapse;font-size:.95em}table.headline td,table.headline th{padding:4px 10px;
border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top;white-space:nowrap}
table.headline th{background:#f2f2f2;white-space:normal}table.headline td:first-child{font-weight:600}
table.headline td:last-child{white-space:normal;min-width:12em}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));gap:.5em 1.5em}
.samples{display:flex;flex-wrap:wrap;gap:.5em 1em}.samples figure{max-width:100%}.samples img{width:100%}
.samples figure.real figcaption{font-weight:600;color:#222}
details{margin:.3em 0;border:1px solid #e4e4e4;border-radius:4px;padding:.2em .6em}
details[open]{padding-bottom:.5em}summary{cursor:pointer;font-weight:600}summary span{font-weight:normal;color:#555}
code{font-size:.9em}p.legend{font-size:.85em}"""


def _sample_grids(runs: pd.DataFrame, out: Path) -> tuple[list[str], list[str]]:
    """(html, md) of the samples section: per dataset, a grid of its real images, then each run's
    final generated grid beside it."""
    h, md = [], []
    order = [k for k in ("dataset_id", "method", "variant", "budget", "seed", "run") if k in runs]
    runs = runs.sort_values(order, na_position="last", kind="stable") if order else runs
    sets = runs.groupby("dataset_id", dropna=False, sort=False) if "dataset_id" in runs else [(None, runs)]
    for dataset, part in sets:
        name = "the data" if dataset is None or pd.isna(dataset) else str(dataset)
        h.append("<div class='samples'>")
        real = next((g for g in map(real_grid, part["path"]) if g is not None), None)
        if real is None:
            line = (f"No grid of real images of {name}: these runs were written before run directories kept one "
                    f"(samples/real.png).")
            h.append(f"<p class='note'>{html.escape(line)}</p>")
            md.extend([line, ""])
        else:
            caption = f"real: training images of {name}"
            h.append(_figure(_grid_uri(real), f"real images of {name}", html.escape(caption), "real",
                             _grid_width(real)))
            md.extend([f"![real images of {name}]({_relative(real, out)})", "", f"**{caption}**", ""])
        for _, row in part.iterrows():
            grid = final_grid(Path(row["path"]))
            if grid is None:
                continue
            variant = f" {row['variant']}" if isinstance(row.get("variant"), str) else ""
            caption = f"{row['run']}: {row['method']}{variant}, seed {row.get('seed')}, {row.get('status')}"
            h.append(_figure(_grid_uri(grid), f"samples of {row['run']}", html.escape(caption),
                             width=_grid_width(grid)))
            md.extend([f"![samples of {row['run']}]({_relative(grid, out)})", "", caption, ""])
        h.append("</div>")
    return h, md


def write_index(frames: Frames, tables: dict[str, pd.DataFrame], figures: list[Path], out: Path,
                title: str = "fsgan-harness report") -> list[Path]:
    """index.html and index.md in `out` (which holds tables/ and figures/)."""
    out = Path(out)
    pngs = [f for f in figures if f.suffix == ".png"]
    made = time.strftime("%Y-%m-%d %H:%M")
    runs = frames.runs
    intro = (f"{len(runs)} run(s), made {made} by `harness report`. Below: the summary, real and generated "
             f"images, figures, then every table in full (also as csv, md and tex in tables/; figures as png and "
             f"pdf in figures/).")
    h = [(f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
          f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
          f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"),
         f"<p class='note'>{html.escape(intro).replace('`harness report`', '<code>harness report</code>')}</p>"]
    md = [f"# {title}", "", intro, ""]
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

    headline, legend = headline_table(frames, tables.get("time_to_target"))
    h.append("<h2>summary</h2>" + _html_table(headline, HEADLINE_CAPTION, "headline") +
             f"<p class='note legend'>{html.escape(legend)}</p>")
    md.extend(["## summary", "", HEADLINE_CAPTION, "", _markdown(headline), "", legend, ""])

    h.append("<h2>samples</h2><p class='note'>Real training images, then each run's last evaluation's sample "
             "grid.</p>")
    md.extend(["## samples", "", "Real training images, then each run's last evaluation's sample grid.", ""])
    grids_h, grids_md = _sample_grids(runs, out)
    h.extend(grids_h)
    md.extend(grids_md)

    h.append("<h2>figures</h2>")
    md.extend(["## figures", ""])
    for note in frames.figure_notes:
        h.append(f"<p class='note'>{html.escape(note)}</p>")
        md.extend([note, ""])
    h.append("<div class='figs'>")
    for f in pngs:
        note = figure_note(f.stem)
        h.append(_figure(_data_uri(f), f.stem, f"<b>{html.escape(f.stem)}</b>: {html.escape(note)}"))
        md.extend([f"![{f.stem}](figures/{f.name})", "", f"**{f.stem}**: {note}", ""])
    h.append("</div>")

    h.append("<h2>details</h2><p class='note'>Every table in full, each also in <code>tables/</code> as csv, md "
             "and tex. Click a title to open it.</p>")
    md.extend(["## details", "", "Every table in full, each also in `tables/` as csv, md and tex.", ""])
    for name, df in tables.items():
        label, note = name.replace("_", " "), TABLE_NOTES.get(name, "")
        if name == "summary":
            label = "summary, every column"
        note = note or label
        if name in LINKED_ONLY:
            line = f"{label}: {len(df)} rows in tables/{name}.csv. {note}"
            h.append(f"<p class='note'>{html.escape(line)}</p>")
            md.extend([f"### {label}", "", f"{len(df)} rows: see [tables/{name}.md](tables/{name}.md). {note}", ""])
            continue
        count = f"{len(df)} row{'s' if len(df) != 1 else ''} x {len(df.columns)} columns, tables/{name}.csv"
        if len(df) > INLINE_ROWS:
            count = f"the first {INLINE_ROWS} of {count}"
        h.append(f"<details><summary>{html.escape(label)} <span>({html.escape(count)})</span></summary>"
                 f"{_html_table(df.head(INLINE_ROWS), note)}</details>")
        md.extend([f"### {label}", "", note, ""])
        md.extend([f"{len(df)} rows: see [tables/{name}.md](tables/{name}.md).", ""] if len(df) > INLINE_ROWS
                  else [_markdown(df), ""])
    h.append("</body></html>")
    paths = [out / "index.html", out / "index.md"]
    paths[0].write_text("\n".join(h))
    paths[1].write_text("\n".join(md) + "\n")
    return paths
