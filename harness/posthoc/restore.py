"""Evaluate finished runs: rebuild the method from run.json, load a checkpoint, sample, score.

Used by `harness eval RUN_DIR --truncation ...` (NSBGAN Fig. 3b: FID/IS against truncation) and by
`harness fid` when one side is a run directory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from harness.engine.checkpoints import TrainedStages
from harness.data import DataSplits, open_run_data
from harness.errors import MetricError
from harness.method import Method
from harness.metrics.fid import FeatureAccumulator, chunks_of
from harness.metrics.scorer import ImageScorer
from harness.registry import MethodInfo, recorded_method
from harness.rundir.rundir import RunDir


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
    data = open_run_data(m["run"]["data"], cfg, info.build(cfg).stages)
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


def confident_chunks(chunks: Iterable[torch.Tensor], scorer: ImageScorer, threshold: float, n: int,
                     max_draws: int) -> Iterator[torch.Tensor]:
    """The official NSBGAN sampler code's rejection (not in the paper): keep only the samples whose
    Inception top-1 probability exceeds `threshold`, until `n` are kept or `max_draws` were drawn
    (then a MetricError). Needs weights with the 1008-way logits."""
    if not scorer.backbone.has_logits or scorer.backbone.is_standin:
        raise MetricError(f"--min-confidence needs Inception weights with class logits (the NVlabs TorchScript, "
                          f"--inception PATH); {scorer.backbone.name} has none")
    kept = drawn = 0
    for chunk in chunks:
        drawn += len(chunk)
        acc = FeatureAccumulator(scorer.backbone, scorer.device, scorer.batch_size, mode=scorer.mode)
        acc.add(chunk)
        good = torch.from_numpy(acc.probabilities().max(axis=1) > threshold)
        take = chunk[good][: n - kept]
        kept += len(take)
        if len(take):
            yield take
        if kept >= n:
            return
        if drawn >= max_draws:
            raise MetricError(f"--min-confidence {threshold}: only {kept} of {drawn} samples passed; "
                              f"lower the threshold or draw more")


def truncation_sweep(restored: RestoredRun, scorer: ImageScorer, truncations: list[float], n: int,
                     seed: int = 0, log=print, min_confidence: float | None = None) -> list[dict]:
    """FID/IS against the training split at each truncation level; each result is appended to the
    run's metrics.jsonl as an `eval` line with stage `truncation`. `min_confidence` applies the
    official sampler code's Inception-confidence rejection, recorded on every line it affects."""
    if n < 2:
        raise MetricError("--samples must be at least 2")
    rows = []
    for t in truncations:
        if t <= 0:
            raise MetricError(f"truncation must be positive, got {t}")
        t0 = time.perf_counter()
        chunks = sample_run(restored, n if min_confidence is None else 50 * n, t, seed * 1_000_003 + 11)
        if min_confidence is not None:
            chunks = confident_chunks(chunks, scorer, min_confidence, n, 50 * n)
        with torch.no_grad():
            fake = scorer.features(chunks, total=n, label=f"truncation {t}: sampling + features")
        metrics = scorer.score(fake, reference=restored.data.train)
        notes = [r for r in [scorer.missing_is_reason(n)] if r]
        if min_confidence is not None:
            notes.append(f"samples kept only if Inception's top-1 probability > {min_confidence} (the official "
                         f"sampler code's rejection, not in the paper)")
        row = {"kind": "eval", "stage": "truncation", "truncation": t, "checkpoints": restored.checkpoints,
               "stage_steps": restored.steps, "step": sum(restored.steps.values()), "final": False,
               "eval_s": time.perf_counter() - t0, "time": time.time(), **metrics}
        if min_confidence is not None:
            row["min_confidence"] = min_confidence
        if notes:
            row["notes"] = notes
        restored.run.metrics.append(row)
        rows.append(row)
        log(f"truncation {t:g}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    restored.run.update(fid=scorer.provenance())
    return rows
