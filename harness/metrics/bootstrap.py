"""Bootstrap percentile intervals for FID and KID from extracted features: resample the fake
features (optionally the real ones too) with replacement, recompute the metric, and take the
central `level` quantiles of the resampled values (Efron & Tibshirani 1993, ch. 13).

Default 200 resamples: the 2.5% and 97.5% ends then come from about the 5th and 195th order
statistics, whose Monte Carlo error is ~0.19 bootstrap standard deviations (sqrt(p(1-p)/B) / phi(z));
1000 would halve that at 5x the cost. Both metrics run in float64 on the caller's device.
Cost per FID resample, M fake features of width d: the resampled covariance from multiplicities,
2 * 0.63 M d^2 flops (only the ~63% of rows drawn at least once are touched, and the resample is
never materialised), plus the Frechet distance's Cholesky, congruence and symmetric eigenvalues,
~3 d^3 (d = 2048, M = 50k: 2.7e11 + 3e10 flops). Per KID resample: the KID itself, 6 subsets m^2 d flops
(1.2e12 at the defaults), independent of M.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from harness.errors import MetricError
from harness.metrics.fid import frechet_distance
from harness.metrics.features import feature_tensor, resampled_stats
from harness.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid

RESAMPLES = 200
LEVEL = 0.95


class BootstrapInterval(NamedTuple):
    low: float
    high: float
    resamples: int




def percentile_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of `values`, np.percentile's linear
    interpolation between order statistics."""
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _check(resamples: int, level: float) -> None:
    if resamples < 2:
        raise MetricError(f"a bootstrap interval needs at least 2 resamples, got {resamples}")
    if not 0 < level < 1:
        raise MetricError(f"a confidence level is in (0, 1), got {level}")


def _multiplicities(rng: np.random.Generator, n: int, device: torch.device) -> torch.Tensor:
    """How often each of n rows appears in n draws with replacement, (n,) int64."""
    return torch.from_numpy(np.bincount(rng.integers(0, n, n), minlength=n)).to(device)


def fid_interval(real, fake, resamples: int = RESAMPLES, level: float = LEVEL, resample_real: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu") -> BootstrapInterval:
    """real: (N, D), fake: (M, D) features -> percentile interval of FID over `resamples` resamples.

    Resample b draws `rng.integers(0, M, M)` (then `(0, N, N)` if resample_real) from
    `np.random.default_rng(seed)`; without resample_real the real statistics stay those of all N.
    """
    _check(resamples, level)
    device = torch.device(device)
    real = feature_tensor(real, device, name="FID real features")
    fake = feature_tensor(fake, device, name="FID fake features")
    if real.shape[1] != fake.shape[1]:
        raise MetricError(f"FID of features of different widths: real {real.shape[1]}, fake {fake.shape[1]}")
    rng = np.random.default_rng(seed)
    all_real = torch.ones(len(real), dtype=torch.long, device=device)
    real_stats = resampled_stats(real, all_real)
    fids = []
    for _ in range(resamples):
        fake_stats = resampled_stats(fake, _multiplicities(rng, len(fake), device))
        if resample_real:
            real_stats = resampled_stats(real, _multiplicities(rng, len(real), device))
        fids.append(frechet_distance(*real_stats, *fake_stats, device))
    return BootstrapInterval(*percentile_interval(fids, level), resamples)


def kid_interval(real, fake, resamples: int = RESAMPLES, level: float = LEVEL, resample_real: bool = False,
                 subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
                 device: torch.device | str = "cpu") -> BootstrapInterval:
    """real: (N, D), fake: (M, D) features -> percentile interval of KID (the subset mean) over
    `resamples` resamples.

    Resample b draws `rng.integers(0, M, M)` (then `(0, N, N)` if resample_real), then the seed of
    its KID subsets, `rng.integers(2**32)`, from `np.random.default_rng(seed)`. A resample repeats
    rows, and the unbiased MMD^2 counts a row paired with its copy as two samples: this lifts the
    resampled KIDs by about (E k(x, x) - E k(x, y)) / M (the kernel's excess on a repeated pair over a
distinct one, over M), small beside the subset spread at M = 50k but not zero.
    """
    _check(resamples, level)
    device = torch.device(device)
    real = feature_tensor(real, device, name="KID real features")
    fake = feature_tensor(fake, device, name="KID fake features")
    rng = np.random.default_rng(seed)
    kids = []
    for _ in range(resamples):
        fake_rows = torch.from_numpy(rng.integers(0, len(fake), len(fake))).to(device)
        real_rows = torch.from_numpy(rng.integers(0, len(real), len(real))).to(device) if resample_real else None
        resampled_real = real if real_rows is None else real[real_rows]
        kids.append(kid(resampled_real, fake[fake_rows], subsets, subset_size, int(rng.integers(2**32)), device)[0])
    return BootstrapInterval(*percentile_interval(kids, level), resamples)
