"""Precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020) from
extracted features, as the `prdc` package (clovaai/generative-evaluation-prdc) defines them, with
the distances computed in row chunks on the caller's device: memory grows with chunk_size x (N or
M), never with N x M (the package holds three full matrices: 20 GB each in float64 at 50k).

Each sample's manifold ball has as radius the distance to its k-th nearest neighbour on its own
side (itself excluded). Which side is "real" matters (torch-fidelity issue #58 swapped them):
  precision = fraction of fake samples inside some real ball (radii of real, k = PR_K)
  recall    = fraction of real samples inside some fake ball (radii of fake, k = PR_K)
  density   = mean over fake samples of the number of real balls containing it, / k (k = DC_K)
  coverage  = fraction of real samples whose own ball contains some fake sample (k = DC_K)
"Inside" is strict (distance < radius), as in the package.
"""
from __future__ import annotations

import torch

from harness.errors import MetricError
from harness.metrics.features import feature_pair

PR_K = 3  # Kynkaanniemi et al. 2019: k = 3 throughout their experiments
DC_K = 5  # Naeem et al. 2020 recommend k = 5 (their README's `nearest_k = 5`)


def pairwise_distances(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """(a, d), (b, d) with their squared row norms (a,), (b,) -> (a, b) Euclidean distances, in
    sklearn's `euclidean_distances` order: sqrt(max(-2 x.y + |x|^2 + |y|^2, 0)), in place to hold
    one (a, b) matrix."""
    dist = x @ y.T
    return dist.mul_(-2).add_(x_sq[:, None]).add_(y_sq[None, :]).clamp_(min=0).sqrt_()


def knn_radii(feats: torch.Tensor, ks: tuple[int, ...], chunk_size: int = 1024) -> torch.Tensor:
    """(N, D) -> (len(ks), N): each sample's distance to its k-th nearest other sample, for each k
    (the package's `compute_nearest_neighbour_distances`: the (k+1)-th smallest of its row, the
    zero self-distance included; sklearn sets that diagonal to exactly 0, so do we)."""
    n, k_max = len(feats), max(ks)
    if n <= k_max:
        raise MetricError(f"k-nearest-neighbour radii with k = {k_max} need more than {k_max} samples, got {n}")
    sq = (feats * feats).sum(1)
    radii = feats.new_empty(len(ks), n)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        dist = pairwise_distances(feats[rows], feats, sq[rows], sq)
        diag = torch.arange(len(dist), device=feats.device)
        dist[diag, start + diag] = 0
        smallest = dist.topk(k_max + 1, dim=1, largest=False, sorted=True).values
        radii[:, rows] = smallest[:, list(ks)].T
    return radii


def prdc(real, fake, device: torch.device | str = "cpu", pr_k: int = PR_K, dc_k: int = DC_K,
         chunk_size: int = 1024, dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """real: (N, D), fake: (M, D) features (numpy or torch) -> {"precision", "recall", "density",
    "coverage"}; all in [0, 1] but density, in [0, N / dc_k].

    Equals `prdc.compute_prdc(real, fake, nearest_k=pr_k)` for precision and recall and
    `compute_prdc(real, fake, nearest_k=dc_k)` for density and coverage, where the package takes one
    k for all four. float64 by default, as sklearn's distances of float64 features (of float32 ones
    it computes in float64 and stores float32, so radius ties within float32 rounding may fall either
    way between the two). dtype=float32 (TF32 off) is 1.3-2.5x faster on a CPU, more on GPUs with
    slow float64, and flips the comparisons within its rounding: 1 precision sample in 10k on random
    2048-d features. Memory on `device`: the centred features, (N + M) D, plus about
    chunk_size x max(N, M) x (itemsize + 3) bytes for one chunk's distances and comparisons.
    """
    if min(pr_k, dc_k) < 1 or chunk_size < 1:
        raise MetricError(f"PRDC needs k >= 1 and chunk_size >= 1, got pr_k={pr_k}, dc_k={dc_k}, "
                          f"chunk_size={chunk_size}")
    real, fake = feature_pair(real, fake, device, dtype, metric="PRDC")
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds the dot products to ~1e-3
    try:
        # Distances do not move with a common shift; centring shrinks |x|^2 + |y|^2 - 2 x.y's cancellation.
        centre = real.mean(0)
        real, fake = real - centre, fake - centre
        real_pr, real_dc = knn_radii(real, (pr_k, dc_k), chunk_size)
        (fake_pr,) = knn_radii(fake, (pr_k,), chunk_size)
        real_sq, fake_sq = (real * real).sum(1), (fake * fake).sum(1)
        in_pr = torch.zeros(len(fake), dtype=torch.long, device=real.device)  # real balls holding each fake
        in_dc = torch.zeros_like(in_pr)
        recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
        covered = torch.zeros_like(recalled)
        for start in range(0, len(real), chunk_size):
            rows = slice(start, start + chunk_size)
            dist = pairwise_distances(real[rows], fake, real_sq[rows], fake_sq)
            in_pr += (dist < real_pr[rows, None]).sum(0)
            inside_dc = dist < real_dc[rows, None]
            in_dc += inside_dc.sum(0)
            covered[rows] = inside_dc.any(1)  # = min over fakes < own radius, the package's form
            recalled[rows] = (dist < fake_pr[None, :]).any(1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return {
        "precision": float((in_pr > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_dc.sum()) / (dc_k * len(fake)),
        "coverage": float(covered.double().mean()),
    }
