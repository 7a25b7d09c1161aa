"""FD-infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to
find them"): FID's bias is linear in 1/N, so FID at several sample counts N, fitted by a line in 1/N,
has at 1/N = 0 an estimate free of the bias. Follows `calculate_FID_infinity` in mchong6/FID_IS_infinity
(`score_infinity.py`), from extracted features: the real statistics fixed, each count a random
subset of the fake features, the distance `harness.metrics.fid.frechet_distance` (float64, on the
caller's device) in place of scipy's `sqrtm`.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.errors import MetricError
from harness.metrics.fid import frechet_distance
from harness.metrics.features import feature_tensor, resampled_stats

# score_infinity.py: num_points=15, np.linspace(5000, num_im, num_points) with num_im=50000 by default
FDINF_POINTS = 15
FDINF_SMALLEST = 5000


def reference_counts(total: int, points: int = FDINF_POINTS, smallest: int = FDINF_SMALLEST) -> np.ndarray:
    """The official grid: `points` counts evenly spaced from `smallest` to `total`, truncated to
    integers (`.astype('int32')` there), (points,) int64."""
    if total < smallest or points < 2:
        raise MetricError(f"FD-infinity's grid runs from {smallest} to the number of fake samples with at least 2 "
                          f"points; got {total} samples, {points} points (pass explicit counts for small sets)")
    return np.linspace(smallest, total, points).astype(np.int32).astype(np.int64)


def fids_at_counts(mu_real, sigma_real, fake, counts, seed: int = 0, device: torch.device | str = "cpu") -> np.ndarray:
    """mu_real: (D,), sigma_real: (D, D), fake: (M, D) features, counts: (P,) ints in [2, M] ->
    (P,) FID of a random `counts[i]`-subset of the fake features, without replacement.

    As the official loop: before each count, shuffle the whole set again (cumulatively) and take
    its first counts[i] rows; the shuffles are `np.random.RandomState(seed).shuffle`, which draws
    the same permutations as their global `np.random.shuffle` after `np.random.seed(seed)`.
    """
    device = torch.device(device)
    fake = feature_tensor(fake, device, name="FD-infinity fake features")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or len(counts) == 0 or counts.min() < 2 or counts.max() > len(fake):
        raise MetricError(f"FD-infinity counts must lie in [2, {len(fake)}] (the fake samples), got {counts.tolist()}")
    rng = np.random.RandomState(seed)
    order = np.arange(len(fake))
    fids = []
    for n in counts:
        rng.shuffle(order)
        chosen = torch.zeros(len(fake), dtype=torch.long)
        chosen[torch.from_numpy(order[:n])] = 1
        fids.append(frechet_distance(mu_real, sigma_real, *resampled_stats(fake, chosen.to(device)), device))
    return np.array(fids)


def extrapolate_to_infinity(counts, values) -> float:
    """Intercept at 1/N = 0 of the least-squares line of `values` against 1/counts (the official
    sklearn `LinearRegression` on 1/N, written out)."""
    x = 1.0 / np.asarray(counts, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape:
        raise MetricError(f"{len(x)} counts but {len(y)} values to fit")
    if len(np.unique(x)) < 2:
        raise MetricError(f"a line in 1/N needs values at 2 or more distinct counts, got {np.asarray(counts).tolist()}")
    dx = x - x.mean()
    slope = (dx @ (y - y.mean())) / (dx @ dx)
    return float(y.mean() - slope * x.mean())


def fd_infinity(mu_real, sigma_real, fake, counts=None, seed: int = 0, device: torch.device | str = "cpu") -> float:
    """mu_real: (D,), sigma_real: (D, D) of the real features, fake: (M, D) -> FD_inf.

    counts: the sample counts to fit (default `reference_counts(M)`: 15 from 5000 to M; small test
    sets pass their own). Costs one fake covariance (2 n D^2) and one Frechet distance per count.
    """
    if counts is None:
        counts = reference_counts(len(fake))
    return extrapolate_to_infinity(counts, fids_at_counts(mu_real, sigma_real, fake, counts, seed, device))
