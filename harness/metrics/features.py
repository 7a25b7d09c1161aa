"""Feature arrays as every metric takes them: an (N, D) array checked and put on a device, and its
mean and covariance, plain (clean-fid's) or of a resample given as row multiplicities."""
from __future__ import annotations

import numpy as np
import torch

from harness.errors import MetricError


def feature_tensor(feats, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                   name: str = "features") -> torch.Tensor:
    """(N, D) numpy array or tensor, any float dtype -> (N, D) tensor of `dtype` on `device`."""
    x = torch.as_tensor(feats).to(torch.device(device), dtype)
    if x.ndim != 2 or len(x) == 0:
        raise MetricError(f"{name}: expected a non-empty (N, D) feature array, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x.sum())):  # one pass; isfinite(x) would allocate |x| (800 MB at 50k x 2048)
        raise MetricError(f"{name}: non-finite features (NaN or infinite)")
    return x


def feature_pair(real, fake, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                 metric: str = "FID") -> tuple[torch.Tensor, torch.Tensor]:
    """`metric`'s real (N, D) and fake (M, D) features as tensors (feature_tensor), of one width D."""
    real = feature_tensor(real, device, dtype, name=f"{metric} real features")
    fake = feature_tensor(fake, device, dtype, name=f"{metric} fake features")
    if real.shape[1] != fake.shape[1]:
        raise MetricError(f"{metric} of features of different widths: real {real.shape[1]}, fake {fake.shape[1]}")
    return real, fake


def stats_from_features(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64, as `cleanfid.fid.fid_from_feats` computes them."""
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < 2:
        raise MetricError(f"FID needs at least 2 images, got {len(feats)}")
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def resampled_stats(feats: torch.Tensor, counts: torch.Tensor,
                    chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float features and (N,) multiplicities (non-negative integers, sum n >= 2) -> mean (D,)
    and covariance (D, D) of the sample holding row i counts[i] times: np.mean / np.cov (ddof 1) of
    that sample, up to rounding, in the features' dtype and device. Undrawn rows cost nothing."""
    n = int(counts.sum())
    if n < 2:
        raise MetricError(f"a covariance needs at least 2 samples, got {n}")
    rows = counts.nonzero().squeeze(1)
    weights = counts[rows].to(feats.dtype)
    mean = feats.new_zeros(feats.shape[1])
    for start in range(0, len(rows), chunk_size):
        part = slice(start, start + chunk_size)
        mean += weights[part] @ feats[rows[part]]
    mean /= n
    cov = feats.new_zeros(feats.shape[1], feats.shape[1])
    for start in range(0, len(rows), chunk_size):
        part = slice(start, start + chunk_size)
        centred = feats[rows[part]] - mean  # two-pass, as np.cov: no |mean|^2 cancellation
        cov.addmm_((centred * weights[part, None]).T, centred)
    return mean, cov / (n - 1)
