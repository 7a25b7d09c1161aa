"""Azimuthally averaged 1-D power spectrum (soft-octave paper Fig. 10b, after Durall et al.).

Per image: grayscale (ITU-R 601 luma), 2-D FFT, shift DC to the centre, 20 log|F|, average
over rings of equal integer radius around DC, divide by the DC value. The published code
(`radialProfile.azimuthalAverage`) centres rings half a pixel off DC for even sizes and
interpolates to a fixed length; here rings are centred on DC exactly and kept at integer radii
0 .. R/2, which is the resolution-independent part of the spectrum.
"""
from __future__ import annotations

import numpy as np
import torch

LUMA = (0.299, 0.587, 0.114)


def _ring_index(size: int) -> tuple[torch.Tensor, int]:
    c = size // 2
    y, x = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    r = torch.sqrt((x.double() ** 2 + y.double() ** 2)).round().long()
    return r, c


def spectrum_1d(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, 3, R, R) uint8 or float -> (N, R//2 + 1) float64 normalised 1-D spectra."""
    x = images.double()
    if images.dtype == torch.uint8:
        x = x / 255.0
    gray = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    size = gray.shape[-1]
    if gray.shape[-2] != size:
        raise ValueError("spectrum_1d expects square images")
    f = torch.fft.fftshift(torch.fft.fft2(gray), dim=(-2, -1))
    mag = 20 * torch.log(f.abs() + eps)
    r, c = _ring_index(size)
    keep = r <= c
    ring = r[keep]
    sums = torch.zeros(len(gray), c + 1, dtype=torch.float64).index_add_(1, ring, mag[:, keep])
    counts = torch.bincount(ring, minlength=c + 1).double()
    profile = sums / counts
    return profile / profile[:, :1]


def spectrum_stats(images: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
    """Mean and std of the normalised 1-D spectrum over a set of images."""
    profiles = torch.cat([spectrum_1d(images[i:i + batch]) for i in range(0, len(images), batch)])
    return {"mean": profiles.mean(0).numpy(), "std": profiles.std(0).numpy(), "n": len(profiles)}
