"""FD-infinity against the official procedure (mchong6/FID_IS_infinity, `calculate_FID_infinity`)
written as a plain loop: global-state shuffles of the activations, np.cov, clean-fid's
`frechet_distance` (scipy sqrtm), np.polyfit in 1/N."""
import warnings

import numpy as np
import pytest
from cleanfid.fid import frechet_distance as scipy_frechet

from harness.errors import MetricError
from harness.metrics.fdinf import extrapolate_to_infinity, fd_infinity, fids_at_counts, reference_counts
from harness.metrics.features import stats_from_features


@pytest.fixture(scope="module")
def features():
    """(400, 16) real and (300, 16) fake float64 features, the fake shifted and correlated."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16))
    fake = rng.normal(0.2, 1.0, size=(300, 16)) @ (np.eye(16) + 0.1 * rng.normal(size=(16, 16)))
    return real, fake


def official_loop(mu_real, sigma_real, fake, counts, seed):
    np.random.seed(seed)
    activations = fake.copy()
    fids = []
    for n in counts:
        np.random.shuffle(activations)
        subset = activations[:n]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqrtm's deprecated `disp`
            fids.append(float(scipy_frechet(subset.mean(0), np.cov(subset, rowvar=False), mu_real, sigma_real)))
    return np.array(fids), np.polyfit(1 / np.asarray(counts), fids, 1)[1]


def test_matches_the_official_procedure(features):
    real, fake = features
    mu, sigma = stats_from_features(real)
    counts = np.linspace(60, 300, 7).astype("int32")
    fids, fd_inf = official_loop(mu, sigma, fake, counts, seed=5)
    np.testing.assert_allclose(fids_at_counts(mu, sigma, fake, counts, seed=5), fids, rtol=1e-9)
    assert fd_infinity(mu, sigma, fake, counts, seed=5) == pytest.approx(fd_inf, rel=1e-9)
    assert fd_inf < fids[-1]  # the bias of FID_N is positive: the intercept lies below


def test_reference_grid():
    counts = reference_counts(50_000)
    assert len(counts) == 15 and counts[0] == 5000 and counts[-1] == 50_000
    np.testing.assert_array_equal(counts, np.linspace(5000, 50_000, 15).astype("int32"))
    assert counts[1] == 8214  # 8214.28..., truncated as the official astype('int32')
    with pytest.raises(MetricError, match="explicit counts"):
        reference_counts(4000)


def test_extrapolation_recovers_an_exact_line():
    counts = np.array([100, 150, 400, 1000])
    assert extrapolate_to_infinity(counts, 3.5 + 700.0 / counts) == pytest.approx(3.5, rel=1e-12)
    with pytest.raises(MetricError, match="distinct counts"):
        extrapolate_to_infinity([100, 100], [1.0, 2.0])


def test_counts_outside_the_fake_set_are_metric_errors(features):
    real, fake = features
    mu, sigma = stats_from_features(real)
    with pytest.raises(MetricError, match="counts must lie"):
        fids_at_counts(mu, sigma, fake, [100, 301])
