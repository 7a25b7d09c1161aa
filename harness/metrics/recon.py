"""Reconstruction error in [0, 1] pixel space (NSBGAN Table 1)."""
from __future__ import annotations

import torch


def reconstruction_mse(target: torch.Tensor, recon: torch.Tensor) -> float:
    """Mean squared error between two (N, C, H, W) image batches in [0, 1] (uint8 inputs are
    divided by 255; float reconstructions are clipped to [0, 1] as an image would be)."""
    if target.shape != recon.shape:
        raise ValueError(f"shapes differ: {tuple(target.shape)} vs {tuple(recon.shape)}")

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x.double() / 255.0 if x.dtype == torch.uint8 else x.double().clamp(0, 1)

    return float(((unit(target) - unit(recon)) ** 2).mean())


class MeanAccumulator:
    """Running mean of per-batch MSEs weighted by batch size."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, value: float, n: int) -> None:
        self.total += value * n
        self.count += n

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")
