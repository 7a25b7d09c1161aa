"""FID as clean-fid computes it, with an in-memory (and GPU) path that gives the same numbers.

clean-fid's "clean" mode: resize each uint8 image to 299x299 with PIL's bicubic filter on float
channels (no quantisation after resizing), clip to [0, 255], TF-Inception 2015-12-05 pool3
features, float64 mean and covariance, Frechet distance (clean-fid's `frechet_distance` takes a
general matrix square root with scipy's `sqrtm`: ~40 s for 2048x2048 on two CPU cores).

`clean_resize` replaces the per-image PIL call with torch's antialiased bicubic interpolation,
which implements PIL's kernel (a = -0.5, support scaled when downsampling, renormalised at the
borders): it agrees with PIL to ~2e-5 grey levels in float64 and ~3e-3 in float32, on any device.
The statistics are clean-fid's (numpy float64). The distance needs only tr(sqrt(S1 S2)), which
`trace_sqrt_product` computes exactly from symmetric eigenvalues in float64 on the evaluation's
device (`tests/harness/metrics/test_frechet.py` holds clean-fid's `frechet_distance` as the
reference; `benchmarks/fid.py` times both).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import MetricError
from harness.metrics.backbone import Backbone


def clean_resize(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) float32 in [0, 255], as clean-fid's "clean" mode."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(f"FID expects (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255)


def legacy_tensorflow_resize(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) float32 in [0, 255], as clean-fid's "legacy_tensorflow"
    mode: clean-fid resizes nothing itself there (`build_resizer` returns the identity) and lets the
    NVlabs TorchScript resize inside the network (`resize_inside=True`), which emulates the original TF
    Inception graph's `ResizeBilinear` (TF1, align_corners=False, no half-pixel centres): output pixel j
    reads the input at j * H / size, bilinear between the two neighbours, the last row/column repeated
    past the border. Unlike "clean", no antialiasing: downscaling aliases, as in the TF code that
    produced the NSBGAN-era FIDs."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(f"FID expects (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, device=x.device, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp_(max=n_in - 1)
        return lo, (lo + 1).clamp_(max=n_in - 1), (src - lo).to(torch.float32)

    y0, y1, fy = taps(h)
    x0, x1, fx = taps(w)
    rows = x[..., y0, :] + (x[..., y1, :] - x[..., y0, :]) * fy[:, None]
    return rows[..., x0] + (rows[..., x1] - rows[..., x0]) * fx


def pil_uint8_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) float32 of whole grey levels in [0, 255]: PIL's bicubic
    resize of an 8-bit image (torchvision's `Resize` of a PIL image, as dgm-eval feeds DINOv2), which
    runs the horizontal pass, rounds and clips to 8 bits, then the vertical pass, rounded again. The
    passes are `clean_resize`'s kernel; PIL's fixed-point weights round a few edge pixels (under 1%) one or
    two grey levels the other way (tests/harness/metrics/test_dinov2.py)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    for shape in ((x.shape[-2], size), (size, size)):
        if x.shape[-2:] != shape:
            x = F.interpolate(x, size=shape, mode="bicubic", antialias=True, align_corners=False)
        x = x.add_(0.5).floor_().clamp_(0, 255)  # PIL's fixed point rounds halves up (clip8)
    return x


FID_MODES = ("clean", "legacy_tensorflow")  # the resize modes a run's FID may use (MethodConfig.fid_mode)
# every resize a backbone may take: the FID modes, and a network protocol's own (harness.metrics.backbone)
FID_RESIZE = {"clean": clean_resize, "legacy_tensorflow": legacy_tensorflow_resize, "pil_uint8": pil_uint8_resize}




def low_rank_factor(sigma: torch.Tensor, tol: float) -> torch.Tensor:
    """(d, k) B with B B^T = sigma up to a residual whose diagonal is below tol * max diag(sigma):
    Cholesky with diagonal pivoting, stopped at the numerical rank k (O(d k^2), where an eigh of
    the d x d matrix costs O(d^3); for the covariance of n < d samples, k = n - 1)."""
    d = sigma.shape[-1]
    residual = sigma.diagonal().clone()  # diagonal of sigma - B B^T
    limit = tol * float(residual.max().clamp_min(0))
    factor = sigma.new_zeros(d, d)
    rank = 0
    while rank < d:
        j = int(residual.argmax())
        pivot = float(residual[j])
        if pivot <= limit:
            break
        col = (sigma[:, j] - factor[:, :rank] @ factor[j, :rank]) / pivot ** 0.5
        factor[:, rank] = col
        residual -= col * col
        residual[j] = 0  # exactly, not -rounding: this pivot is spent
        rank += 1
    return factor[:, :rank]


def _congruence(sigma: torch.Tensor, factor: torch.Tensor, triangular: bool) -> torch.Tensor:
    """B^T S B, symmetric, of which eigvalsh reads the lower triangle. On a CPU with B lower
    triangular (a Cholesky factor), LAPACK's dsygst (itype 2) forms it in about d^3 flops, exploiting
    both structures, where two general matrix products take 4 d^3 (about a quarter of the distance's
    time at d = 2048); elsewhere, the products, symmetrised (exactly symmetric only up to rounding)."""
    if triangular and sigma.device.type == "cpu":
        from scipy.linalg import lapack

        out, info = lapack.dsygst(np.asfortranarray(sigma.numpy()), np.asfortranarray(factor.numpy()),
                                  itype=2, lower=1, overwrite_a=1)
        if info == 0:
            return torch.from_numpy(out)  # lower triangle: B^T S B; upper: S's, unread
    inner = factor.T @ sigma @ factor
    return (inner + inner.T) / 2


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr(sqrt(S1 S2)) of two symmetric positive semi-definite (d, d) float64 matrices, exactly.

    S1 S2 is not symmetric, but with S1 = B B^T it is similar to the symmetric PSD B^T S2 B, whose
    eigenvalues are those of S1 S2; the trace of the root is the sum of their square roots
    (eigenvalues below zero are rounding: clamped). B is S1's Cholesky factor when S1 is positive
    definite. Otherwise (a covariance of fewer samples than dimensions) B is the pivoted Cholesky
    factor of S1 stopped at its numerical rank (remaining diagonal below d * eps * max): the null
    space adds nothing to the spectrum of S1 S2, and keeping its rounding noise would add d square
    roots of noise (~1e-8 each). The same tolerance then applies to the eigenvalues of B^T S2 B,
    singular where S2 has the lower rank.
    """
    d = sigma1.shape[-1]
    tol = d * torch.finfo(sigma1.dtype).eps
    factor, info = torch.linalg.cholesky_ex(sigma1)
    pivots = factor.diagonal() ** 2
    full_rank = int(info) == 0 and bool(pivots.min() > tol * pivots.max())
    if not full_rank:
        factor = low_rank_factor(sigma1, tol)
    ev = torch.linalg.eigvalsh(_congruence(sigma2, factor, triangular=full_rank), UPLO="L")
    floor = 0 if full_rank else tol * ev.max().clamp_min(0)
    return torch.where(ev > floor, ev, 0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2, device: torch.device | str = "cpu") -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)) in float64 on `device`.

    mu: (d,), sigma: (d, d) symmetric PSD (numpy arrays or tensors). Agrees with clean-fid's
    `frechet_distance` (scipy `sqrtm`) to ~1e-9 relative where the covariances have full rank; on
    rank-deficient ones (fewer samples than dimensions) it stays exact where `sqrtm` loses digits.
    """
    device = torch.device(device)
    mu1, mu2 = (torch.atleast_1d(torch.as_tensor(a).to(device, torch.float64)) for a in (mu1, mu2))
    sigma1, sigma2 = (torch.atleast_2d(torch.as_tensor(a).to(device, torch.float64)) for a in (sigma1, sigma2))
    d = mu1.shape[-1]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricError(f"Frechet distance of mismatched statistics: means {tuple(mu1.shape)}, {tuple(mu2.shape)}, "
                          f"covariances {tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    if not all(bool(torch.isfinite(a).all()) for a in (mu1, mu2, sigma1, sigma2)):
        raise MetricError("Frechet distance of non-finite statistics (NaN or infinite features)")
    diff = mu1 - mu2
    tr_root = trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_root)


class FeatureAccumulator:
    """Runs batches of uint8 images through a backbone; keeps features (float64) and, if the
    backbone has logits, the 1008-way probabilities for IS. Inception runs in float32 with TF32
    off: bf16 or TF32 would change FID in the second decimal."""

    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu", batch_size: int = 250,
                 want_probs: bool = True, mode: str = "clean"):
        if mode not in FID_RESIZE:
            raise MetricError(f"unknown FID mode '{mode}'; use one of: {', '.join(FID_MODES)}")
        self.backbone, self.device, self.batch_size = backbone, torch.device(device), batch_size
        self.mode = backbone.resize or mode  # a network with a resize of its own protocol (DINOv2) keeps it
        self.resize = FID_RESIZE[self.mode]
        self.label = ""  # what the images are, when these features serve as an FID reference
        self.want_probs = want_probs and backbone.has_logits
        self.feats: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    @torch.no_grad()
    def add(self, images: torch.Tensor) -> None:
        prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size].to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, enabled=False):
                    x = self.resize(chunk, self.backbone.input_size)
                    self.feats.append(self.backbone.features(x).double().cpu().numpy())
                    if self.want_probs:
                        self.probs.append(self.backbone.probs(x).double().cpu().numpy())
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev

    def add_all(self, batches: Iterable[torch.Tensor]) -> "FeatureAccumulator":
        for b in batches:
            self.add(b)
        return self

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.feats)

    def features(self) -> np.ndarray:
        return np.concatenate(self.feats) if self.feats else np.zeros((0, 0))

    def probabilities(self) -> np.ndarray | None:
        return np.concatenate(self.probs) if self.probs else None


CHUNK = 500  # samples drawn at once for an evaluation: 50k never sit in memory together


def chunks_of(sample: Callable[[int, int], torch.Tensor], n: int, seed: int, chunk: int = CHUNK) -> Iterator[torch.Tensor]:
    """Draw `n` images from `sample(count, seed)` in chunks with distinct seeds, so 50k samples
    never sit in memory at once."""
    for k, start in enumerate(range(0, n, chunk)):
        yield sample(min(chunk, n - start), seed + k)
