"""Reconstruction error in [0, 1] pixel space (NSBGAN Table 1)."""
from __future__ import annotations

import torch


def reconstruction_mse(target: torch.Tensor, recon: torch.Tensor, clip: bool = True) -> float:
    """Mean squared error between two (N, C, H, W) image batches in [0, 1] (uint8 inputs are
    divided by 255; float reconstructions are clipped to [0, 1] as an image would be, unless
    `clip` is False: the official NSBGAN evaluation compares the raw float32 decoder output)."""
    if target.shape != recon.shape:
        raise ValueError(f"shapes differ: {tuple(target.shape)} vs {tuple(recon.shape)}")

    def unit(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.double() / 255.0
        return x.double().clamp(0, 1) if clip else x.double()

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
