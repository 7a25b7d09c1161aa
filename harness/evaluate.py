"""Evaluate finished runs: rebuild the method from run.json, load a checkpoint, sample, score.

Used by `harness eval RUN_DIR --truncation ...` (NSBGAN Fig. 3b: FID/IS against truncation) and by
`harness fid` when one side is a run directory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.checkpoint import TrainedStages
from harness.data import DataSplits, open_dataset
from harness.errors import MetricError
from harness.method import Method
from harness.metrics.fid import chunks_of
from harness.metrics.scorer import ImageScorer
from harness.registry import MethodInfo, recorded_method
from harness.run import RunDir


@dataclass
class RestoredRun:
    run: RunDir
    info: MethodInfo
    cfg: Any
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
    info, cfg = recorded_method(m)
    data = open_dataset(m["run"]["data"], cfg.resolution)
    method = info.build(cfg)
    trained = TrainedStages(run, method, data, device, int(m["run"].get("seed", 0)), which)
    trained.all()
    return RestoredRun(run, info, cfg, data, method, trained.checkpoints, trained.steps, device)


def sample_run(restored: RestoredRun, n: int, truncation: float = 1.0, seed: int = 0):
    """Chunks of the run's samples, (k, 3, R, R) uint8, drawn with distinct seeds."""
    if restored.method.sample is None:
        raise MetricError(f"method {restored.info.name} has no sampler to draw images from")
    sample = restored.method.sample
    return chunks_of(lambda k, s: sample(k, truncation=truncation, seed=s, device=restored.device), n, seed)


def truncation_sweep(restored: RestoredRun, scorer: ImageScorer, truncations: list[float], n: int,
                     seed: int = 0, log=print) -> list[dict]:
    """FID/IS against the training split at each truncation level; each result is appended to the
    run's metrics.jsonl as an `eval` line with stage `truncation`."""
    if n < 2:
        raise MetricError("--samples must be at least 2")
    rows = []
    for t in truncations:
        if t <= 0:
            raise MetricError(f"truncation must be positive, got {t}")
        t0 = time.perf_counter()
        with torch.no_grad():
            fake = scorer.features(sample_run(restored, n, t, seed * 1_000_003 + 11))
        metrics = scorer.score(fake, reference=restored.data.train)
        notes = [r for r in [scorer.missing_is_reason(n)] if r]
        row = {"kind": "eval", "stage": "truncation", "truncation": t, "checkpoints": restored.checkpoints,
               "stage_steps": restored.steps, "step": sum(restored.steps.values()), "final": False,
               "eval_s": time.perf_counter() - t0, "time": time.time(), **metrics}
        if notes:
            row["notes"] = notes
        restored.run.log(row)
        rows.append(row)
        log(f"truncation {t:g}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    restored.run.update(fid=scorer.provenance())
    return rows
