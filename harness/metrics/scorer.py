"""The one place that turns images into FID / IS numbers and labels them.

An `ImageScorer` holds the resolved backbone and the cache of real-data statistics, which are
computed once per (dataset id, split, sample count, backbone) and stored as .npz under the cache
dir. Every result carries its sample count, and a stand-in backbone can only ever produce keys
named `fid_standin` / `fid_star_standin`: there is no code path from it to a key called `fid`.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from harness.rundir.atomic import atomic_path
from harness.data import ImageDataset
from harness.data.store import cache_root
from harness.errors import MetricError
from harness.metrics.fid import FID_MODES, FeatureAccumulator, chunks_of, frechet_distance, stats_from_features
from harness.metrics.inception import Backbone
from harness.metrics.is_ import inception_score
from harness.ui.progress import EvalProgress
from harness.rundir.samples import tee_npz


def fid_key(backbone: Backbone, name: str = "fid") -> str:
    """`fid` for a real Inception, `fid_standin` otherwise (also for `fid_star`)."""
    return f"{name}_standin" if backbone.is_standin else name


class ImageScorer:
    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu", cache_dir=None, batch_size: int = 250,
                 is_splits: int = 10, mode: str = "clean"):
        if mode not in FID_MODES:
            raise MetricError(f"unknown FID mode '{mode}'; use one of: {', '.join(FID_MODES)}")
        self.backbone = backbone
        self.mode = mode  # clean-fid's resize mode: clean | legacy_tensorflow (harness.metrics.fid)
        self.device = torch.device(device)
        self.cache = cache_root(cache_dir) / "fid-stats"
        self.batch_size = batch_size
        self.is_splits = is_splits
        self.used_stats: dict[str, str] = {}  # stats file -> sha256, for run.json
        # shows the images of each feature extraction; the loop sets a visible one (harness.progress)
        self.progress = EvalProgress(Console(stderr=True), enabled=False)

    # --- reference statistics -------------------------------------------------------------------
    def reference_stats(self, dataset: ImageDataset, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(mu, sigma, count) of the first `n` images of a dataset split, cached on disk."""
        n = min(n, len(dataset))
        mode = "" if self.mode == "clean" else f"-{self.mode}"  # clean keeps the files it always had
        path = self.cache / f"{dataset.id}-{dataset.split}-n{n}-{self.backbone.key}{mode}.npz"
        if path.is_file():
            try:
                with np.load(path) as d:
                    mu, sigma = d["mu"], d["sigma"]
                self._used(path)
                return mu, sigma, n
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a torn cache file: recompute it
        acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, want_probs=False, mode=self.mode)
        batches = (dataset.images(np.arange(start, min(n, start + 1000)))[0] for start in range(0, n, 1000))
        self._extract(acc, batches, f"reference statistics of {dataset.id} {dataset.split}", n)
        mu, sigma = stats_from_features(acc.features())
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, mu=mu, sigma=sigma, dataset_id=dataset.id, split=dataset.split, n=n,
                     backbone=self.backbone.key, mode=self.mode)
        self._used(path)
        return mu, sigma, n

    def _used(self, path: Path) -> None:
        if str(path) not in self.used_stats:
            self.used_stats[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()

    # --- scores ---------------------------------------------------------------------------------
    def features(self, batches, total: int | None = None, label: str = "features") -> FeatureAccumulator:
        """Features (and IS probabilities) of uint8 image batches; with `total`, progress is shown."""
        acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, mode=self.mode)
        if total is None:
            return acc.add_all(batches)
        return self._extract(acc, batches, label, total)

    def _extract(self, acc: FeatureAccumulator, batches, label: str, total: int) -> FeatureAccumulator:
        # pieces of one backbone batch on a GPU, small ones on a CPU (where a batch takes seconds),
        # so the bar moves; images are independent in an eval-mode backbone, the features the same
        piece = self.batch_size if self.device.type == "cuda" else 25
        with self.progress.task(label, total) as advance:
            for batch in batches:
                for start in range(0, len(batch), piece):
                    acc.add(batch[start:start + piece])
                    advance(len(batch[start:start + piece]))
        return acc

    def score(self, fake: FeatureAccumulator, reference: ImageDataset | None = None,
              reference_features: FeatureAccumulator | None = None, name: str = "fid") -> dict[str, float]:
        """FID of `fake` against a dataset split (as many real images as fakes, cached) or
        against already-extracted features; plus IS of `fake` where the backbone has logits."""
        n = fake.count
        if n < 2:
            raise MetricError(f"FID needs at least 2 samples, got {n}")
        mu, sigma = stats_from_features(fake.features())
        if reference_features is not None:
            mu_r, sigma_r = stats_from_features(reference_features.features())
            n_ref = reference_features.count
            ref = reference_features.label or "given features"
        else:
            mu_r, sigma_r, n_ref = self.reference_stats(reference, n)
            ref = f"{reference.id}/{reference.split}[:{n_ref}]"  # dataset id, split, its first n_ref images
        key = fid_key(self.backbone, name)
        # beside every FID: its resize mode and reference set (the sample counts are the _n keys)
        out = {key: frechet_distance(mu, sigma, mu_r, sigma_r, self.device), f"{key}_n": n, f"{key}_ref_n": n_ref,
               f"{key}_mode": self.mode, f"{key}_ref": ref}
        if name == "fid":
            out.update(self.inception_score(fake))
        return out

    def inception_score(self, fake: FeatureAccumulator) -> dict[str, float]:
        probs = fake.probabilities()
        if probs is None or self.backbone.is_standin or len(probs) < self.is_splits:
            return {}
        mean, std = inception_score(probs, self.is_splits)
        return {"is_mean": mean, "is_std": std, "is_n": len(probs)}

    def missing_is_reason(self, n: int) -> str | None:
        if self.backbone.is_standin:
            return "IS missing: the stand-in backbone has no class logits"
        if not self.backbone.has_logits:
            return f"IS missing: {self.backbone.name} provides pool3 features only (no 1008-way logits)"
        if n < self.is_splits:
            return f"IS missing: {n} samples are fewer than its {self.is_splits} splits"
        return None

    def provenance(self) -> dict:
        return {"backbone": self.backbone.describe(), "mode": self.mode, "reference_stats": dict(self.used_stats)}


def generator_metrics(ctx, sample: Callable[..., torch.Tensor], truncation: float = 1.0,
                      extra: dict[str, FeatureAccumulator] | None = None) -> dict[str, float]:
    """FID (or fid_standin) and IS of `ctx.eval_samples` samples against the training split.
    `sample(n, truncation=, seed=)` returns (n, 3, R, R) uint8; samples are drawn in chunks.
    `extra` {name: features} scores the same samples against other references too (e.g. FID*
    against reconstructions: keys `fid_star`, or `fid_star_standin`)."""
    if ctx.scorer is None or ctx.eval_samples <= 0:
        return {}
    n = ctx.eval_samples
    chunks = chunks_of(lambda k, seed: sample(k, truncation=truncation, seed=seed), n, seed=ctx.seed * 1_000_003 + 7)
    if ctx.samples_path is not None:
        chunks = tee_npz(chunks, ctx.samples_path, ctx.samples_limit)
    fake = ctx.scorer.features(chunks, total=n, label=f"eval {ctx.stage} step {ctx.step}: sampling + features")
    out = ctx.scorer.score(fake, reference=ctx.data)
    for name, reference in (extra or {}).items():
        out.update(ctx.scorer.score(fake, reference_features=reference, name=name))
    reason = ctx.scorer.missing_is_reason(n)
    if reason and reason not in ctx.notes:
        ctx.notes.append(reason)
    if n < 10_000 and "small-sample" not in " ".join(ctx.notes):
        ctx.notes.append(f"small-sample FID (n={n}): biased upwards, comparable only at equal n")
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
