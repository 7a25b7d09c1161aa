"""The metrics `--metrics` chooses, every one computed from the same two feature sets (the fake
samples' and the reference set's, each extracted once), the keys they are written under, and what
each does with fewer samples than it needs.

    fid    Frechet distance, clean-fid's          fid, fid_n, fid_ref_n (and the reference's labels)
    is     Inception Score, 10 splits              is_mean, is_std, is_n (Inception weights with logits only)
    kid    KID: unbiased MMD^2, cubic kernel       kid_mean, kid_std, kid_n, kid_ref_n, kid_subsets, kid_subset_size
    prdc   precision / recall (k = 3),             precision, recall, density, coverage, prdc_n, prdc_ref_n
           density / coverage (k = 5)
    fdinf  FD-infinity, the official grid          fdinf, fdinf_n, fdinf_points (n >= 10,000 only)
    ci     bootstrap intervals of FID and KID      fid_low, fid_high, fid_resamples, fid_level; kid_low, ...

Every key carries the network's family unless it is the TF Inception (harness.metrics.backbone:
`kid_standin_mean`, `precision_dinov2`). KID and PRDC compare the fake features with the reference's
(all of them, or a seeded random subset of as many rows as there are samples when the reference is
larger: PRDC's k-NN balls shrink with the sample count, so its two sides have equal size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from harness.errors import MetricError
from harness.metrics.backbone import Backbone, metric_key
from harness.metrics.bootstrap import LEVEL, RESAMPLES, fid_interval_given, kid_interval
from harness.metrics.fdinf import FDINF_POINTS, FDINF_SMALLEST, fd_infinity
from harness.metrics.features import stats_from_features
from harness.metrics.fid import frechet_distance
from harness.metrics.is_ import inception_score
from harness.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid
from harness.metrics.prdc import DC_K, PR_K, prdc

NAMES = ("fid", "is", "kid", "prdc", "fdinf", "ci")
RECORDED_BEFORE = "fid,is"  # what runs computed before --metrics existed (IS where the weights had logits)
SUBSET_SEED = 0  # the reference rows KID and PRDC take from a larger reference set
# FD-inf fits FID against 1/N over the official grid (N from 5000 to n): below 2 x 5000 the grid spans
# less than a 2:1 range of 1/N and the intercept is mostly noise, so it is not reported at all
FDINF_MIN_SAMPLES = 2 * FDINF_SMALLEST


def parse_metrics(text: str) -> tuple[str, ...]:
    """`fid,kid,ci` -> ("fid", "kid", "ci"), in NAMES' order; MetricError for an unknown or empty list."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise MetricError(f"--metrics takes a comma-separated list of {', '.join(NAMES)}; got '{text}'")
    if "ci" in names and not {"fid", "kid"} & set(names):
        raise MetricError("--metrics ci is the bootstrap interval of fid or kid: name one of them too")
    return tuple(n for n in NAMES if n in names)


@dataclass
class RealSide:
    """The reference of an evaluation: its statistics (FID) and its (count, D) features, read only
    when a metric needs them (`rows()`: a memmap whose digest was checked, or an array)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    rows: Callable[[], np.ndarray]

    def sample(self, n: int) -> np.ndarray:
        """All reference features, or `n` rows of them chosen at random (seeded) when there are more."""
        feats = self.rows()
        if len(feats) <= n:
            return np.array(feats)  # a copy: a read-only memmap would not become a writable tensor
        pick = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(feats), n, replace=False))
        return np.array(feats[pick])


def missing(names: tuple[str, ...], backbone: Backbone, n: int, is_splits: int = 10) -> list[str]:
    """Why a requested metric is absent from an evaluation of `n` samples (one note each)."""
    notes = []
    if "is" in names:
        if backbone.is_standin:
            notes.append("IS missing: the stand-in backbone has no class logits")
        elif not backbone.has_logits:
            notes.append(f"IS missing: {backbone.name} has no 1008-way Inception logits")
        elif n < is_splits:
            notes.append(f"IS missing: {n} samples are fewer than its {is_splits} splits")
    if "prdc" in names and n <= DC_K:
        notes.append(f"PRDC missing: its k-nearest-neighbour radii (k = {DC_K}) need more than {DC_K} samples, got {n}")
    if "fdinf" in names and n < FDINF_MIN_SAMPLES:
        notes.append(f"FD-inf missing: it needs n >= {FDINF_MIN_SAMPLES} (the official grid from {FDINF_SMALLEST} "
                     f"samples to n, at least a 2:1 range of 1/N); got n={n}")
    return notes


def metrics_from_features(names: tuple[str, ...], backbone: Backbone, fake: np.ndarray, real: RealSide,
                          probs: np.ndarray | None = None, device: torch.device | str = "cpu",
                          is_splits: int = 10, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """Every metric of `names` (but the ones `missing` names) of fake features (n, D) against
    `real`; IS from `probs` (n, 1008). Keys as the module docstring lists them."""
    n, key = len(fake), (lambda metric, part=None: metric_key(backbone, metric, part))
    out: dict = {}
    if "fid" in names:
        mu, sigma = stats_from_features(fake)
        out.update({key("fid"): frechet_distance(mu, sigma, real.mu, real.sigma, device), key("fid", "n"): n,
                    key("fid", "ref_n"): real.count})
        if "ci" in names:
            low, high, resamples = fid_interval_given(real.mu, real.sigma, fake, resamples, seed=seed, device=device)
            out.update({key("fid", "low"): low, key("fid", "high"): high, key("fid", "resamples"): resamples,
                        key("fid", "level"): LEVEL})
    if "is" in names and probs is not None and not backbone.is_standin and n >= is_splits:
        mean, std = inception_score(probs, is_splits)
        out.update({"is_mean": mean, "is_std": std, "is_n": n})
    if {"kid", "prdc"} & set(names):
        real_rows = real.sample(n)
        if "kid" in names:
            mean, std = kid(real_rows, fake, seed=seed, device=device)
            out.update({key("kid", "mean"): mean, key("kid", "std"): std, key("kid", "n"): n,
                        key("kid", "ref_n"): len(real_rows), key("kid", "subsets"): KID_SUBSETS,
                        key("kid", "subset_size"): min(n, len(real_rows), KID_SUBSET_SIZE)})
            if "ci" in names:
                low, high, resamples = kid_interval(real_rows, fake, resamples, seed=seed, device=device)
                out.update({key("kid", "low"): low, key("kid", "high"): high, key("kid", "resamples"): resamples,
                            key("kid", "level"): LEVEL})
        if "prdc" in names and n > DC_K:
            if len(real_rows) <= DC_K:
                raise MetricError(f"PRDC needs more than {DC_K} reference images, the reference has {len(real_rows)}")
            out.update({key(k): v for k, v in prdc(real_rows, fake, device=device).items()})
            out.update({key("prdc", "n"): n, key("prdc", "ref_n"): len(real_rows)})
    if "fdinf" in names and n >= FDINF_MIN_SAMPLES:
        out.update({key("fdinf"): fd_infinity(real.mu, real.sigma, fake, seed=seed, device=device),
                    key("fdinf", "n"): n, key("fdinf", "points"): FDINF_POINTS})
    return out


def settings() -> dict:
    """The fixed settings of the metrics, for run.json."""
    return {"kid": {"subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE, "kernel": "(x.y / d + 1)^3"},
            "prdc": {"precision_recall_k": PR_K, "density_coverage_k": DC_K},
            "fdinf": {"points": FDINF_POINTS, "smallest": FDINF_SMALLEST, "min_samples": FDINF_MIN_SAMPLES},
            "ci": {"method": "bootstrap percentile, fake samples resampled", "resamples": RESAMPLES, "level": LEVEL},
            "reference_rows": f"KID and PRDC: all reference features, or a random subset (seed {SUBSET_SEED}) of as "
                              f"many as the samples when the reference is larger"}
