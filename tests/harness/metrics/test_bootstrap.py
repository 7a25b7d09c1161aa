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


def test_fid_interval_from_cached_statistics_equals_the_one_from_features(features):
    from harness.metrics.bootstrap import fid_interval_given

    real, fake = features
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)  # a cached reference's stats.npz, as clean-fid computes them
    given = fid_interval_given(mu, sigma, fake, resamples=20, seed=3)
    assert given == pytest.approx(fid_interval(real, fake, resamples=20, seed=3), rel=1e-12)
    with pytest.raises(MetricError, match="different widths"):
        fid_interval_given(mu[:8], sigma[:8, :8], fake, resamples=4)


def test_fewer_samples_than_dimensions_take_the_gram_route_to_the_same_fids():
    """n <= D: each resample's FID from n x n matrices (SampleGram) equals the covariance route's
    (resampled_stats + frechet_distance), resample by resample. The resample's covariance goes
    first: frechet_distance factors its first covariance at its numerical rank, so the null space of
    a covariance of fewer samples than dimensions adds no square roots of rounding noise."""
    from harness.metrics.bootstrap import SampleGram
    from harness.metrics.fid import frechet_distance

    rng = np.random.default_rng(5)
    real, fake = np.abs(rng.normal(size=(30, 48))), np.abs(rng.normal(0.3, 1.2, size=(25, 48)))
    for ref in (real, np.abs(rng.normal(size=(400, 48)))):  # a rank-deficient and a full-rank reference
        mu, sigma = torch.from_numpy(ref.mean(0)), torch.from_numpy(np.cov(ref, rowvar=False))
        gram = SampleGram(mu, sigma, torch.from_numpy(fake))
        for _ in range(5):
            counts = torch.from_numpy(np.bincount(rng.integers(0, 25, 25), minlength=25))
            direct = frechet_distance(*resampled_stats(torch.from_numpy(fake), counts), mu, sigma)
            assert gram.fid(counts) == pytest.approx(direct, rel=1e-9)


def test_kid_interval_from_a_kernel_table_equals_recomputing_the_kernels(features, monkeypatch):
    import harness.metrics.bootstrap as bootstrap

    real, fake = features
    table = kid_interval(real, fake, resamples=6, subsets=4, subset_size=50, seed=7)
    monkeypatch.setattr(bootstrap, "KERNEL_TABLE", 0)
    assert kid_interval(real, fake, resamples=6, subsets=4, subset_size=50, seed=7) == pytest.approx(table, rel=1e-10)
