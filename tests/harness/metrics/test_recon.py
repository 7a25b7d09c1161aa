"""Reconstruction MSE in [0, 1] pixel units."""
import pytest
import torch

from harness.metrics.recon import reconstruction_mse


def test_reconstruction_mse_in_unit_range():
    a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    b = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert reconstruction_mse(a, b) == pytest.approx(1.0)
    assert reconstruction_mse(a, torch.full((2, 3, 4, 4), 0.5)) == pytest.approx(0.25)
    assert reconstruction_mse(a, torch.full((2, 3, 4, 4), 2.0)) == pytest.approx(1.0)  # clipped like an image


# --- the Inception weights resolver -------------------------------------------------------------
