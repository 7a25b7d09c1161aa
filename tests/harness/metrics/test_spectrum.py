"""The azimuthal 1-D power spectrum against a sinusoid of known radius."""
import numpy as np
import pytest
import torch

from harness.metrics.spectrum import spectrum_1d, spectrum_stats


def test_spectrum_of_a_sinusoid_peaks_at_its_radius():
    n, k = 64, 9
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    wave = 0.5 + 0.4 * np.cos(2 * np.pi * (k * x + 0 * y) / n)
    img = torch.from_numpy(np.repeat(wave[None, None], 3, axis=1))
    profile = spectrum_1d(img)[0]
    assert profile.shape == (n // 2 + 1,) and profile[0] == pytest.approx(1.0)
    assert int(torch.argmax(profile[1:])) + 1 == k
    diag = 0.5 + 0.4 * np.cos(2 * np.pi * (6 * x + 8 * y) / n)  # radius 10
    p2 = spectrum_1d(torch.from_numpy(np.repeat(diag[None, None], 3, axis=1)))[0]
    assert int(torch.argmax(p2[1:])) + 1 == 10
    stats = spectrum_stats(torch.cat([img, img]))
    assert stats["n"] == 2 and np.allclose(stats["std"], 0)
