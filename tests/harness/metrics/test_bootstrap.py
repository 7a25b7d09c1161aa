"""Bootstrap intervals against a direct loop: the same resamples drawn from the same generator,
materialised, with np.cov and clean-fid's `frechet_distance` / `kernel_distance`, np.percentile."""
import warnings

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance as scipy_frechet
from cleanfid.fid import kernel_distance

from harness.errors import MetricError
from harness.metrics.bootstrap import fid_interval, kid_interval
from harness.metrics.features import resampled_stats


@pytest.fixture(scope="module")
def features():
    """(200, 16) real and (150, 16) fake float64 features."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 16)), np.abs(rng.normal(0.2, 1.1, size=(150, 16)))


def fid_of(real, fake):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm's deprecated `disp`
        return float(scipy_frechet(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)))


def test_resampled_stats_are_those_of_the_materialised_resample(features):
    fake = features[1]
    draw = np.random.default_rng(1).integers(0, len(fake), len(fake))
    counts = torch.from_numpy(np.bincount(draw, minlength=len(fake)))
    mean, cov = resampled_stats(torch.from_numpy(fake), counts, chunk_size=17)
    np.testing.assert_allclose(mean.numpy(), fake[draw].mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cov.numpy(), np.cov(fake[draw], rowvar=False), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("resample_real", [False, True])
def test_fid_interval_matches_a_direct_loop(features, resample_real):
    real, fake = features
    rng = np.random.default_rng(4)
    fids = []
    for _ in range(30):
        fake_b = fake[rng.integers(0, len(fake), len(fake))]
        real_b = real[rng.integers(0, len(real), len(real))] if resample_real else real
        fids.append(fid_of(real_b, fake_b))
    low, high = np.percentile(fids, [2.5, 97.5])
    interval = fid_interval(real, fake, resamples=30, resample_real=resample_real, seed=4)
    assert interval.resamples == 30
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
    assert interval.low < fid_of(real, fake) < interval.high


@pytest.mark.parametrize("resample_real", [False, True])
def test_kid_interval_matches_a_direct_loop(features, resample_real):
    real, fake = features
    rng = np.random.default_rng(2)
    kids = []
    for _ in range(8):
        fake_b = fake[rng.integers(0, len(fake), len(fake))]
        real_b = real[rng.integers(0, len(real), len(real))] if resample_real else real
        np.random.seed(int(rng.integers(2**32)))
        kids.append(kernel_distance(real_b, fake_b, num_subsets=5, max_subset_size=60))
    low, high = np.percentile(kids, [5, 95])
    interval = kid_interval(real, fake, resamples=8, level=0.9, resample_real=resample_real,
                            subsets=5, subset_size=60, seed=2)
    assert (interval.low, interval.high, interval.resamples) == pytest.approx((low, high, 8), rel=1e-9, abs=1e-14)


def test_bad_settings_are_metric_errors(features):
    with pytest.raises(MetricError, match="level"):
        fid_interval(*features, level=95)
    with pytest.raises(MetricError, match="resamples"):
        kid_interval(*features, resamples=1)
