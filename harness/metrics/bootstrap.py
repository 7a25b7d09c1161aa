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
from harness.metrics.features import feature_pair, feature_tensor, resampled_stats
from harness.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid, kid_from_kernels, polynomial_kernel

RESAMPLES = 200
LEVEL = 0.95
KERNEL_TABLE = 1 << 24  # KID kernel entries kept for the resamples' lookups (128 MB in float64: ~2,300 a side)


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
    real, fake = feature_pair(real, fake, device, metric="FID")
    all_real = torch.ones(len(real), dtype=torch.long, device=device)
    if not resample_real:
        return fid_interval_given(*resampled_stats(real, all_real), fake, resamples, level, seed, device)
    rng = np.random.default_rng(seed)
    fids = []
    for _ in range(resamples):
        fake_stats = resampled_stats(fake, _multiplicities(rng, len(fake), device))
        real_stats = resampled_stats(real, _multiplicities(rng, len(real), device))
        fids.append(frechet_distance(*real_stats, *fake_stats, device))
    return BootstrapInterval(*percentile_interval(fids, level), resamples)


def fid_interval_given(mu_real, sigma_real, fake, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
                       device: torch.device | str = "cpu") -> BootstrapInterval:
    """`fid_interval` without resample_real, from the real statistics mu (D,), sigma (D, D) (a cached
    reference's, whose features may not fit in memory): the same resamples, the same interval."""
    _check(resamples, level)
    device = torch.device(device)
    fake = feature_tensor(fake, device, name="FID fake features")
    real_stats = tuple(torch.as_tensor(a).to(device, torch.float64) for a in (mu_real, sigma_real))
    if real_stats[0].shape != (fake.shape[1],):
        raise MetricError(f"FID of features of different widths: real {real_stats[0].shape[0]}, fake {fake.shape[1]}")
    rng = np.random.default_rng(seed)
    if len(fake) <= fake.shape[1]:
        gram = SampleGram(*real_stats, fake)
        fids = [gram.fid(_multiplicities(rng, len(fake), device)) for _ in range(resamples)]
    else:
        fids = [frechet_distance(*real_stats, *resampled_stats(fake, _multiplicities(rng, len(fake), device)), device)
                for _ in range(resamples)]
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
    real, fake = feature_pair(real, fake, device, metric="KID")
    m, n = len(fake), len(real)
    kernels = None
    if m * m + n * n + m * n <= KERNEL_TABLE:  # small sets: every kernel value once, looked up by each resample
        kernels = (polynomial_kernel(fake, fake), polynomial_kernel(real, real), polynomial_kernel(fake, real))
    every_real = torch.arange(n, device=device)
    rng = np.random.default_rng(seed)
    kids = []
    for _ in range(resamples):
        fake_rows = torch.from_numpy(rng.integers(0, m, m)).to(device)
        real_rows = torch.from_numpy(rng.integers(0, n, n)).to(device) if resample_real else every_real
        subset_seed = int(rng.integers(2**32))
        if kernels is not None:
            kids.append(kid_from_kernels(*kernels, fake_rows, real_rows, subsets, subset_size, subset_seed)[0])
        else:
            kids.append(kid(real[real_rows], fake[fake_rows], subsets, subset_size, subset_seed, device)[0])
    return BootstrapInterval(*percentile_interval(kids, level), resamples)


class SampleGram:
    """FID of resamples of n fake features (n <= D) against fixed real statistics in O(n^3) each,
    from n x n matrices computed once, where the covariance route costs O(n D^2 + D^3).

    With X0 the fake rows centred on their mean, w a resample's multiplicities (sum n) and
    C = X0 - 1 m^T its rows centred on its own mean m = X0^T w / n, the resample's covariance is
    S2 = C^T W C / (n - 1). S1 S2 has the nonzero eigenvalues of W^1/2 C S1 C^T W^1/2 / (n - 1)
    (AB and BA share them), whose entries come from P = X0 S1 X0^T:
    (C S1 C^T)_ij = P_ij - (P w)_i / n - (P w)_j / n + w^T P w / n^2. tr S2 and |mu1 - mu2|^2 come
    from G = X0 X0^T and v = X0 (mu1 - mean) alike. Eigenvalues below n * eps * max are rounding
    (the null space of S1 or of the resample), as `harness.metrics.fid.trace_sqrt_product` treats them.
    """

    def __init__(self, mu_real: torch.Tensor, sigma_real: torch.Tensor, fake: torch.Tensor):
        centre = fake.mean(0)
        x0 = fake - centre
        self.n, self.d = fake.shape
        self.p = x0 @ sigma_real @ x0.T
        self.g = x0 @ x0.T
        self.v = x0 @ (mu_real - centre)
        self.offset = float((mu_real - centre) @ (mu_real - centre)) + float(sigma_real.trace())

    def fid(self, counts: torch.Tensor) -> float:
        """FID of the resample holding fake row i counts[i] times ((n,) int, sum n)."""
        n, w = self.n, counts.to(self.p.dtype)
        root = w.sqrt()
        inner = root[:, None] * _centred(self.p, w) * root[None, :] / (n - 1)
        ev = torch.linalg.eigvalsh((inner + inner.T) / 2)
        ev = torch.where(ev > self.d * torch.finfo(ev.dtype).eps * ev.max().clamp_min(0), ev, 0)
        trace_fake = float(w @ _centred(self.g, w).diagonal()) / (n - 1)
        mean_shift = float(w @ self.v) / n  # (mu1 - centre) . (m - centre)
        mean_sq = float(w @ self.g @ w) / n ** 2  # |m - centre|^2
        return self.offset - 2 * mean_shift + mean_sq + trace_fake - 2 * float(ev.sqrt().sum())


def _centred(m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """C M' C^T from M = X0 M' X0^T, for C = X0 - 1 m^T with m = X0^T w / sum(w) (SampleGram)."""
    n = w.sum()
    a = m @ w / n
    return m - a[:, None] - a[None, :] + (w @ m @ w) / n ** 2
