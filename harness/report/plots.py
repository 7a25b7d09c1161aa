"""Paper-style figures from collected runs (matplotlib, png + pdf): FID against IS over truncation
levels (NSBGAN Fig. 3), FID and IS against training hours, GPU- or CPU-hours, kWh (the harness's own) and
epochs (octave Figs. 4, 7, 10a), against truncation, 1-D spectra (octave Fig. 10b), beta schedules
(octave Fig. 9). A figure that cannot be drawn says why in `frames.figure_notes`."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.report.collect import Frames, fid_column, training_curves  # noqa: E402

X_AXES = {"train_h": "training hours (budget clock)", "gpu_h": "GPU-hours", "cpu_h": "CPU-hours",
          "kwh": "training energy (kWh)", "epoch": "epoch"}


def _label(row: pd.Series) -> str:
    variant = row.get("variant")
    return f"{row['method']}" + (f" {variant}" if isinstance(variant, str) else "")


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def curves(frames: Frames, out: Path) -> list[Path]:
    ev, _ = training_curves(frames)
    col = fid_column(ev)
    if col is None:
        return []
    ev["label"] = ev.apply(_label, axis=1)
    written = []
    metrics = [col] + ([("is_mean", "Inception Score")] if "is_mean" in ev and ev["is_mean"].notna().any() else [])
    for x, xlabel in X_AXES.items():
        if x not in ev or ev[x].isna().all():
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
        for ax, (metric, ylabel) in zip(axes[0], metrics):
            for label, part in ev[ev[metric].notna()].groupby("label"):
                for seed, run in part.groupby("seed"):
                    run = run.sort_values(x)
                    ax.plot(run[x], run[metric], marker="o", ms=3, lw=1.2, label=f"{label} (seed {seed})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        written += _save(fig, out, f"{metrics[0][0]}_vs_{x}")
    return written


def truncation_curves(frames: Frames, out: Path) -> list[Path]:
    ev = frames.evals
    if ev.empty or "truncation" not in ev:
        return []
    t = ev[ev["stage"].isin(["truncation", "pipeline"]) & ev["truncation"].notna()].copy()
    col = fid_column(t)
    if t.empty or col is None:
        return []
    t["label"] = t.apply(_label, axis=1)
    metrics = [col] + ([("is_mean", "Inception Score")] if "is_mean" in t and t["is_mean"].notna().any() else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for (label, run, stage, step), part in t.groupby(["label", "run", "stage", "step"]):
            part = part.sort_values("truncation")
            what = "final" if stage == "pipeline" else f"eval, step {step}"
            ax.plot(part["truncation"], part[metric], marker="o", label=f"{label} ({run}, {what})")
        ax.set_xscale("log")
        ax.set_xlabel("truncation (z standard deviation)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out, f"{metrics[0][0]}_vs_truncation")


def fid_against_is(frames: Frames, out: Path) -> list[Path]:
    """NSBGAN Fig. 3 ("NOT-SO-BIGGAN FID/IS score"): FID against IS across truncation levels, one
    curve per run and evaluation (the final pipeline's levels, each `harness eval --truncation`
    sweep), the `--latents-from` points (Fig. 3's pretrained-BigGAN approximation) and the FID*
    marker (Sec. 5.1). Needs IS: without it the figure is not drawn, and the note says why."""
    ev = frames.evals
    if ev.empty or "stage" not in ev:
        return []
    sweeps = ev[ev["stage"].isin(["truncation", "pipeline"]) & ev.get("truncation", pd.Series(dtype=float)).notna()]
    latents = ev[ev["stage"] == "latents-from"]
    both = pd.concat([sweeps, latents])
    col = fid_column(both)
    if both.empty or col is None:
        return []
    if "is_mean" not in both or both["is_mean"].isna().all():
        why = ("the stand-in network has no class logits" if col[0] == "fid_standin" else
               "the Inception weights used give pool3 features only (IS needs the 1008-way logits: --inception "
               "PATH to the NVlabs TorchScript)")
        frames.figure_notes.append(f"NSBGAN Fig. 3 (FID against IS over truncation levels) is not drawn: no "
                                   f"evaluation has an Inception Score ({why}).")
        return []
    metric, ylabel = col
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sweeps = sweeps.assign(label=sweeps.apply(_label, axis=1)) if len(sweeps) else sweeps
    for (label, run, stage, step), part in (sweeps.groupby(["label", "run", "stage", "step"]) if len(sweeps) else []):
        part = part[part["is_mean"].notna()].sort_values("truncation", ascending=False)
        what = "final" if stage == "pipeline" else f"eval, step {step}"
        line, = ax.plot(part["is_mean"], part[metric], marker="o", ms=4, label=f"{label} ({run}, {what})")
        for _, row in part.iterrows():
            ax.annotate(f"{row['truncation']:g}", (row["is_mean"], row[metric]), fontsize=6, color=line.get_color(),
                        xytext=(3, 3), textcoords="offset points")
        star = f"{metric.replace('fid', 'fid_star', 1)}"
        if star in part:
            marked = part[part[star].notna()]
            ax.scatter(marked["is_mean"], marked[star], marker="*", s=120, color=line.get_color(), zorder=3,
                       label=f"FID* of {run} (truncation {', '.join(f'{x:g}' for x in marked['truncation'])})")
    for run, part in (latents.groupby("run") if len(latents) else []):
        part = part[part["is_mean"].notna()].sort_values("is_mean")
        ax.plot(part["is_mean"], part[metric], ls="--", marker="s", ms=4,
                label=f"{run}: --latents-from (pretrained-generator approximation)")
    ax.set_xlabel("Inception Score")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return _save(fig, out, f"{metric}_against_is")


def spectra(frames: Frames, out: Path) -> list[Path]:
    """The latest saved spectrum of each run (samples/*spectrum*.npz: fake_mean, fake_std,
    real_mean, real_std) against the real data's."""
    found = []
    for _, row in frames.runs.iterrows():
        files = sorted(Path(row["path"]).glob("samples/*spectrum*.npz"))
        if files:
            found.append((_label(row) + f" s{row['seed']}", files[-1]))
    if not found:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    real_drawn = False
    for label, path in found:
        with np.load(path) as d:
            f = np.arange(len(d["fake_mean"])) / (2 * (len(d["fake_mean"]) - 1))
            ax.plot(f, d["fake_mean"], label=label)
            ax.fill_between(f, d["fake_mean"] - d["fake_std"], d["fake_mean"] + d["fake_std"], alpha=0.15)
            if not real_drawn:
                ax.plot(f, d["real_mean"], "k--", label="real")
                real_drawn = True
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("normalised 1-D power spectrum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out, "spectra")


def beta_schedules(frames: Frames, out: Path) -> list[Path]:
    """The soft-octave beta_H / beta_L schedules over training (octave Fig. 9), as each run
    recorded them in run.json, with their provenance (official-code, reconstructed, user)."""
    if not frames.schedules:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = set()
    for k, s in enumerate(frames.schedules):
        key = (s.get("name"), s.get("provenance"), tuple(s.get("beta_h") or ()))
        if key in drawn or not s.get("progress"):
            continue  # seeds of one configuration share their schedule
        drawn.add(key)
        color = f"C{len(drawn) - 1}"
        label = f"{s.get('method')} {s.get('variant') or s.get('name')} ({s.get('provenance', 'unknown provenance')})"
        ax.plot(s["progress"], s["beta_h"], color=color, lw=1.6, label=f"{label}: beta_H")
        ax.plot(s["progress"], s["beta_l"], color=color, lw=1.2, ls="--", label=f"{label}: beta_L")
    ax.set_xlabel("training progress (fraction of the run)")
    ax.set_ylabel("beta")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out, "beta_schedules")


def write_figures(frames: Frames, out: Path) -> list[Path]:
    folder = Path(out) / "figures"
    return fid_against_is(frames, folder) + curves(frames, folder) + truncation_curves(frames, folder) + \
        spectra(frames, folder) + beta_schedules(frames, folder)
