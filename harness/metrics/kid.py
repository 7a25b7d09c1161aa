"""Kernel Inception Distance (Binkowski et al. 2018) from extracted features, as clean-fid's
`kernel_distance` and torch-fidelity's `kid_features_to_metric` compute it: the unbiased MMD^2 with
the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets drawn without
replacement from each side. float64 on the caller's device: the estimate is a small difference of
sums of m^2 kernel values of order 1-10, and float32 loses four of its digits there (1e-4 relative
at KID ~ 1e-3 on 2048-d features).
"""
from __future__ import annotations

import numpy as np
import torch

from harness.errors import MetricError
from harness.metrics.features import feature_pair

# clean-fid `kernel_distance` / torch-fidelity `defaults.py`: kid_subsets, kid_subset_size
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000




def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., m, d), (..., n, d) -> (..., m, n): (x.y / d + 1)^3, torch-fidelity's `kernel_poly` defaults
    (degree 3, gamma 1/d, coef0 1)."""
    return (x @ y.mT / x.shape[-1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two (..., m, d) samples of equal size m >= 2 (shape (...); may be negative):
    the within-sample sums drop the diagonal (divided by m(m-1)), the cross sum keeps it (m^2),
    torch-fidelity's `mmd2(..., mmd_est="unbiased")` and clean-fid's per-subset term."""
    m = x.shape[-2]
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within = (k_xx.sum((-2, -1)) - k_xx.diagonal(dim1=-2, dim2=-1).sum(-1)
              + k_yy.sum((-2, -1)) - k_yy.diagonal(dim1=-2, dim2=-1).sum(-1))
    return within / (m * (m - 1)) - 2 * polynomial_kernel(x, y).sum((-2, -1)) / (m * m)


# subsets computed in one batch: up to this many kernel entries per (group, m, m) matrix and gathered
# feature entries per (group, m, d) side (32 MB and 128 MB in float64)
KERNEL_ENTRIES, GATHERED_ENTRIES = 1 << 22, 1 << 24


def kid(real, fake, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
        device: torch.device | str = "cpu") -> tuple[float, float]:
    """real: (N, D), fake: (M, D) features -> (mean, std) of the unbiased MMD^2 over `subsets` subsets.

    Each subset takes m = min(N, M, subset_size) rows from each side without replacement (clean-fid
    caps m so; torch-fidelity raises instead when m < subset_size). The draws are
    `np.random.RandomState(seed).choice(..., replace=False)`, fake side first, then real, per subset:
    the same rows as torch-fidelity's `kid_features_to_metric(fake, real, rng_seed=seed)` (input1 is
    the generated set there) and as clean-fid's `kernel_distance(real, fake)` after
    `np.random.seed(seed)`. std is over subsets with ddof=0 (torch-fidelity's; clean-fid has none): the
    spread of the subset estimates, not a confidence interval (see `harness.metrics.bootstrap`).
    """
    if subsets < 1:
        raise MetricError(f"KID needs at least one subset, got subsets={subsets}")
    real, fake = feature_pair(real, fake, device, metric="KID")
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise MetricError(f"KID needs subsets of at least 2 samples a side; got {len(real)} real, {len(fake)} fake, "
                          f"subset_size={subset_size}")
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(fake), m, replace=False), rng.choice(len(real), m, replace=False)) for _ in range(subsets)]
    group = max(1, min(KERNEL_ENTRIES // (m * m), GATHERED_ENTRIES // (m * real.shape[1])))
    mmds = torch.empty(subsets, dtype=torch.float64, device=real.device)
    for start in range(0, subsets, group):  # small subsets together: one batched product, not a Python loop each
        part = draws[start:start + group]
        fake_rows = torch.from_numpy(np.stack([f for f, _ in part])).to(fake.device)
        real_rows = torch.from_numpy(np.stack([r for _, r in part])).to(real.device)
        mmds[start:start + len(part)] = mmd2_unbiased(fake[fake_rows], real[real_rows])
    mmds = mmds.cpu().numpy()
    return float(mmds.mean()), float(mmds.std())


def kid_from_kernels(k_ff: torch.Tensor, k_rr: torch.Tensor, k_fr: torch.Tensor, fake_index: torch.Tensor,
                     real_index: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                     seed: int = 0) -> tuple[float, float]:
    """`kid(real[real_index], fake[fake_index], ...)` from the kernel matrices of the distinct rows:
    k_ff (M, M) = k(fake, fake), k_rr (N, N), k_fr (M, N); indices (m',) and (n',) int64, repeats
    allowed (a bootstrap resample). The same subsets as `kid`, and the same kernel values looked up
    instead of recomputed: O(m^2) per subset where `kid` spends O(m^2 d)."""
    m = min(len(fake_index), len(real_index), subset_size)
    if m < 2:
        raise MetricError(f"KID needs subsets of at least 2 samples a side; got {len(real_index)} real, "
                          f"{len(fake_index)} fake, subset_size={subset_size}")
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(fake_index), m, replace=False), rng.choice(len(real_index), m, replace=False))
             for _ in range(subsets)]
    f = fake_index[torch.from_numpy(np.stack([d[0] for d in draws])).to(fake_index.device)]  # (subsets, m)
    r = real_index[torch.from_numpy(np.stack([d[1] for d in draws])).to(real_index.device)]
    k_xx = k_ff[f[:, :, None], f[:, None, :]]
    k_yy = k_rr[r[:, :, None], r[:, None, :]]
    within = (k_xx.sum((-2, -1)) - k_xx.diagonal(dim1=-2, dim2=-1).sum(-1)
              + k_yy.sum((-2, -1)) - k_yy.diagonal(dim1=-2, dim2=-1).sum(-1))
    mmds = within / (m * (m - 1)) - 2 * k_fr[f[:, :, None], r[:, None, :]].sum((-2, -1)) / (m * m)
    mmds = mmds.cpu().numpy()
    return float(mmds.mean()), float(mmds.std())
