"""Image converters between the data's uint8 and the ranges networks work in.

Two ranges, named in every function: `unit` is float [0, 1] (NSBGAN's encoder and decoders, the
wavelet coefficients of the official code) and `signed` is float [-1, 1] (what a tanh generator
emits and a GAN discriminator sees). The uint8 -> float direction works in place on one new
tensor: the same values as `images.float() / 255` (or `/ 127.5 - 1`) without the batch-sized
temporaries, which at 256x256 on a CPU each pay their page faults (~2.5x the time).
"""
from __future__ import annotations

import torch


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.to(torch.float32, copy=True).div_(255.0)


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8 [0, 255], clipped and rounded."""
    return (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8)


def uint8_to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.to(torch.float32, copy=True).div_(127.5).sub_(1.0)


def signed_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clipped and rounded."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
