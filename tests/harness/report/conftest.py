"""Synthetic run directories: run.json + metrics.jsonl written with the harness's own RunDir, so
report tests check values, not only that files exist."""
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.rundir.rundir import RunDir


def make_run(root: Path, name: str, method: str, seed: int, curve: list[tuple[float, float]], *,
             variant: str | None = None, n: int = 64, key: str = "fid", kwh_per_h: float = 0.5,
             devices: int = 1, status: str = "budget_exhausted", schedule: dict | None = None,
             grid: bool = True, real: bool = True, precision: str = "fp32") -> Path:
    """A finished run whose evaluations are `curve` = [(budget hours, FID), ...]."""
    config = {"resolution": 32, **({"variant": variant} if variant else {})}
    manifest = {"method": method, "config": config, "stages": ["gan"],
                "run": {"seed": seed, "budget": "1h", "devices": devices},
                "dataset": {"name": "shapes", "id": "shapes-v1-32-test"},
                "provenance": {"git_commit": "0123456789abcdef", "git_dirty": False, "devices": ["Test CPU 9000"]},
                "fid": {"backbone": {"name": "test-inception"}}, "precision": precision}
    if schedule:
        manifest["beta_schedule"] = schedule
    run = RunDir.create(root / name, manifest)
    for step, (hours, fid) in enumerate(curve, 1):
        run.metrics.append({"kind": "eval", "stage": "gan", "step": 100 * step, "epoch": float(step), "budget_s": hours * 3600,
                 "wall_s": hours * 3600, "gpu_h": hours * devices, "kwh": hours * kwh_per_h, key: fid,
                 f"{key}_n": n, f"{key}_ref_n": n, f"{key}_mode": "legacy_tensorflow",
                 f"{key}_ref": f"shapes-v1-32-test/train[:{n}]"})
    total_h = curve[-1][0] if curve else 0.0
    run.update(status=status, totals={"steps": 100 * len(curve), "budget_s": total_h * 3600,
                                      "train_hours": total_h, "gpu_h": total_h * devices, "kwh": total_h * kwh_per_h,
                                      "images": 1000})
    if grid:
        run.save_grid(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), f"gan-{100 * len(curve):08d}")
    if real:  # what a run written since run directories keep one has (harness.launch.prepare.save_real_grid)
        run.save_grid(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), "real")
    return root / name


@pytest.fixture
def two_methods(tmp_path) -> Path:
    """dcgan (2 seeds) reaches FID 100 at 0.5 h and 0.75 h and never 60; octave (2 seeds)
    reaches 100 at 0.25 h and 0.5 h, 60 at 1 h with one seed only."""
    root = tmp_path / "runs"
    make_run(root, "dcgan-s0", "dcgan", 0, [(0.25, 150.0), (0.5, 100.0), (1.0, 90.0)])
    make_run(root, "dcgan-s1", "dcgan", 1, [(0.25, 140.0), (0.5, 120.0), (0.75, 95.0), (1.0, 92.0)])
    make_run(root, "oct-s0", "octave-dcgan", 0, [(0.25, 100.0), (0.5, 70.0), (1.0, 60.0)], variant="oct")
    make_run(root, "oct-s1", "octave-dcgan", 1, [(0.25, 130.0), (0.5, 99.0), (1.0, 65.0)], variant="oct")
    return root


__all__ = ["make_run", "np"]
