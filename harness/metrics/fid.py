"""FID as clean-fid computes it, with an in-memory (and GPU) path that gives the same numbers.

clean-fid's "clean" mode: resize each uint8 image to 299x299 with PIL's bicubic filter on float
channels (no quantisation after resizing), clip to [0, 255], TF-Inception 2015-12-05 pool3
features, float64 mean and covariance, Frechet distance with scipy's `sqrtm` (clean-fid's
`frechet_distance`, which drops a negligible imaginary part and raises on a large one).

`clean_resize` replaces the per-image PIL call with torch's antialiased bicubic interpolation,
which implements PIL's kernel (a = -0.5, support scaled when downsampling, renormalised at the
borders): it agrees with PIL to ~2e-5 grey levels in float64 and ~3e-3 in float32, on any device.
The distance and the statistics are clean-fid's own functions.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid.fid import frechet_distance as _cleanfid_frechet

from harness.errors import MetricError
from harness.metrics.inception import Backbone


def clean_resize(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) float32 in [0, 255], as clean-fid's "clean" mode."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(f"FID expects (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255)


def stats_from_features(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64, as `cleanfid.fid.fid_from_feats` computes them."""
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < 2:
        raise MetricError(f"FID needs at least 2 images, got {len(feats)}")
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """clean-fid's Frechet distance (scipy sqrtm, eps on the diagonal if the product is singular)."""
    try:
        with warnings.catch_warnings():
            # scipy warns that sqrtm's `disp` is deprecated and, for n < feature dimension, that the
            # product is singular; clean-fid handles the latter and small-n FIDs are labelled as such
            warnings.simplefilter("ignore")
            return float(_cleanfid_frechet(mu1, sigma1, mu2, sigma2))
    except ValueError as e:  # a large imaginary component: the covariances are inconsistent
        raise MetricError(f"Frechet distance failed: {e}") from None


class FeatureAccumulator:
    """Runs batches of uint8 images through a backbone; keeps features (float64) and, if the
    backbone has logits, the 1008-way probabilities for IS. Inception runs in float32 with TF32
    off: bf16 or TF32 would change FID in the second decimal."""

    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu", batch_size: int = 250,
                 want_probs: bool = True):
        self.backbone, self.device, self.batch_size = backbone, torch.device(device), batch_size
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
                    x = clean_resize(chunk, self.backbone.input_size)
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


def chunks_of(sample: Callable[[int, int], torch.Tensor], n: int, seed: int, chunk: int = 500) -> Iterator[torch.Tensor]:
    """Draw `n` images from `sample(count, seed)` in chunks with distinct seeds, so 50k samples
    never sit in memory at once."""
    for k, start in enumerate(range(0, n, chunk)):
        yield sample(min(chunk, n - start), seed + k)
