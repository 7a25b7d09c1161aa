"""The one place that turns images into FID / IS numbers and labels them.

An `ImageScorer` holds the resolved backbone and which real images a reference is (a Selection:
the whole split, a stratified subset, or the first n; harness.metrics.reference, cached per dataset
id, split, selection and weights). Every result carries its sample counts and reference, and a
stand-in backbone can only ever produce keys named `fid_standin` / `fid_star_standin`: there is no
code path from it to a key called `fid`.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from harness.data import ImageDataset
from harness.data.store import cache_root
from harness.errors import MetricError
from harness.metrics.features import stats_from_features
from harness.metrics.fid import FID_MODES, FeatureAccumulator, chunks_of, frechet_distance
from harness.metrics.backbone import Backbone
from harness.metrics.is_ import inception_score
from harness.metrics.reference import Reference, Selection, reference_set
from harness.ui.progress import EvalProgress
from harness.rundir.samples import tee_npz


def fid_key(backbone: Backbone, name: str = "fid") -> str:
    """`fid` for a real Inception, `fid_standin` otherwise (also for `fid_star`)."""
    return f"{name}_standin" if backbone.is_standin else name


class ImageScorer:
    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu", cache_dir=None, batch_size: int = 250,
                 is_splits: int = 10, mode: str = "clean", selection: Selection = Selection("stratified")):
        if mode not in FID_MODES:
            raise MetricError(f"unknown FID mode '{mode}'; use one of: {', '.join(FID_MODES)}")
        self.backbone = backbone
        self.mode = mode  # clean-fid's resize mode: clean | legacy_tensorflow (harness.metrics.fid)
        self.device = torch.device(device)
        self.cache = cache_root(cache_dir) / "fid-ref"
        self.selection = selection  # which real images a dataset's reference is (harness.metrics.reference)
        self.batch_size = batch_size
        self.is_splits = is_splits
        self.used_stats: dict[str, str] = {}  # stats file -> sha256, for run.json
        self.used_labels: dict[str, str] = {}  # stats file -> the reference set it describes
        # shows the images of each feature extraction; the loop sets a visible one (harness.progress)
        self.progress = EvalProgress(Console(stderr=True), enabled=False)

    @property
    def resize_mode(self) -> str:
        """The resize the features are taken after: the network's own (DINOv2) or the run's FID mode."""
        return self.backbone.resize or self.mode

    # --- reference statistics -------------------------------------------------------------------
    def reference(self, dataset: ImageDataset, n: int) -> Reference:
        """The reference set of `dataset` this scorer's selection names (an open count: `n`, the
        samples scored against it): its features and statistics, computed once and cached by
        dataset id, split, selection, weights and resize mode (harness.metrics.reference)."""
        selection = self.selection.sized(n)
        mode = "" if self.resize_mode == "clean" else f"-{self.resize_mode}"
        folder = self.cache / f"{dataset.id}-{dataset.split}-{selection.key()}-{self.backbone.key}{mode}"
        ref = reference_set(dataset, selection, folder, self._feature_chunks)
        self._used(ref.stats)
        self.used_labels[str(ref.stats)] = ref.label
        return ref

    def _feature_chunks(self, batches, total: int, label: str, done: int):
        """The features (float32) of each batch of uint8 images, with progress counted from `done`."""
        with self.progress.task(label + (f" (resuming at {done})" if done else ""), total - done) as advance:
            for batch in batches:
                acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, want_probs=False, mode=self.mode)
                acc.add(batch)
                advance(len(batch))
                yield acc.features().astype(np.float32)

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
        """FID of `fake` against a dataset split (the scorer's selection of it, cached) or against
        already-extracted features; plus IS of `fake` where the backbone has logits."""
        n = fake.count
        if n < 2:
            raise MetricError(f"FID needs at least 2 samples, got {n}")
        mu, sigma = stats_from_features(fake.features())
        if reference_features is not None:
            mu_r, sigma_r = stats_from_features(reference_features.features())
            n_ref = reference_features.count
            ref = reference_features.label or "given features"
        else:
            r = self.reference(reference, n)
            mu_r, sigma_r, n_ref, ref = r.mu, r.sigma, r.count, r.label
            which = {"ref_selection": r.selection, "ref_sha256": r.index_sha256}
        key = fid_key(self.backbone, name)
        # beside every FID: its resize mode and reference set (the sample counts are the _n keys)
        out = {key: frechet_distance(mu, sigma, mu_r, sigma_r, self.device), f"{key}_n": n, f"{key}_ref_n": n_ref,
               f"{key}_mode": self.resize_mode, f"{key}_ref": ref,
               **({f"{key}_{k}": v for k, v in which.items()} if reference_features is None else {})}
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
        return {"backbone": self.backbone.describe(), "mode": self.mode, "reference": self.selection.describe(),
                "reference_stats": dict(self.used_stats)}


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
