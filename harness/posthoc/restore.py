"""Rebuild a finished run from run.json, its stages loaded from a checkpoint, and sample from it:
for `harness eval` (harness.posthoc.sweeps) and `harness fid` with a run directory (.sources)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.engine.checkpoints import TrainedStages
from harness.data import DataSplits, open_run_data
from harness.config import MethodConfig
from harness.errors import MetricError
from harness.method import Method
from harness.metrics.fid import chunks_of
from harness.registry import MethodInfo, recorded_method
from harness.rundir.rundir import RunDir


@dataclass
class RestoredRun:
    run: RunDir
    info: MethodInfo
    cfg: MethodConfig
    data: DataSplits
    method: Method
    checkpoints: dict[str, str]  # stage -> checkpoint file used
    steps: dict[str, int]
    device: torch.device


def restore_run(path: Path, device: torch.device, which: str = "last") -> RestoredRun:
    """Rebuild a run's method and load each stage's `which` checkpoint (`best` falls back to
    `last` for stages that never recorded a best)."""
    run = RunDir.open(Path(path))
    m = run.manifest()
    info, cfg = recorded_method(m, str(run.path / "run.json"))
    method = info.build(cfg)
    settings = m.get("run") or {}
    data = open_run_data(settings.get("data", "shapes"), cfg, method.stage_data_options())
    trained = TrainedStages(run, method, data, device, int(settings.get("seed", 0)), which)
    trained.all()
    return RestoredRun(run, info, cfg, data, method, trained.checkpoints, trained.steps, device)


def sample_run(restored: RestoredRun, n: int, truncation: float = 1.0, seed: int = 0):
    """Chunks of the run's samples, (k, 3, R, R) uint8, drawn with distinct seeds."""
    if restored.method.sample is None:
        raise MetricError(f"method {restored.info.name} has no sampler to draw images from")
    sample = restored.method.sample
    return chunks_of(lambda k, s: sample(k, truncation=truncation, seed=s, device=restored.device), n, seed)
