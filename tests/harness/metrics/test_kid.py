"""KID against torch-fidelity's `kid_features_to_metric` and clean-fid's `kernel_distance` on the
same features, with the same subset draws (same seed): equal to rounding."""
import numpy as np
import pytest
import torch
from cleanfid.fid import kernel_distance

from harness.errors import MetricError
from harness.metrics.kid import kid, mmd2_unbiased


@pytest.fixture(scope="module")
def features():
    """(200, 64) real and (180, 64) fake float64 features, the fake shifted and wider, non-negative
    like Inception pool3's."""
    rng = np.random.default_rng(0)
    real = np.abs(rng.normal(0.3, 1.0, size=(200, 64)))
    fake = np.abs(rng.normal(0.4, 1.2, size=(180, 64)))
    return real, fake


def test_matches_torch_fidelity_mean_and_std(features):
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    real, fake = features
    # torch-fidelity's input1 is the generated set: its first draw of each subset is from the fake side
    ref = metric_kid.kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=12,
                                            kid_subset_size=50, rng_seed=7, verbose=False)
    mean, std = kid(real, fake, subsets=12, subset_size=50, seed=7)
    assert mean == pytest.approx(ref[metric_kid.KEY_METRIC_KID_MEAN], rel=1e-10, abs=1e-14)
    assert std == pytest.approx(ref[metric_kid.KEY_METRIC_KID_STD], rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("subset_size", [50, 1000])  # 1000: capped at min(N, M) = 180, as clean-fid does
def test_matches_clean_fid_kernel_distance(features, subset_size):
    real, fake = features
    np.random.seed(3)  # clean-fid draws from numpy's global state
    ref = kernel_distance(real, fake, num_subsets=8, max_subset_size=subset_size)
    assert kid(real, fake, subsets=8, subset_size=subset_size, seed=3)[0] == pytest.approx(ref, rel=1e-10, abs=1e-14)


def test_single_subset_is_a_plain_unbiased_mmd(features):
    """One subset holding every sample (N = M = subset_size): the draws only permute, and the
    estimate is the textbook formula written with loops over the kernel matrices."""
    real, fake = features[0][:40], features[1][:40]

    def k(a, b):
        return (a @ b / a.shape[0] + 1) ** 3

    m = len(real)
    xx = sum(k(fake[i], fake[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(real[i], real[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(fake[i], real[j]) for i in range(m) for j in range(m))
    expected = (xx + yy) / (m * (m - 1)) - 2 * xy / m**2
    mean, std = kid(real, fake, subsets=3, subset_size=m, seed=1)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0, abs=1e-12)
    assert float(mmd2_unbiased(torch.from_numpy(real), torch.from_numpy(fake))) == pytest.approx(expected, rel=1e-10)


def test_float32_and_tensor_inputs_compute_in_float64(features):
    real, fake = (f.astype(np.float32) for f in features)
    upcast = kid(real.astype(np.float64), fake.astype(np.float64), subsets=4, subset_size=60)
    assert kid(torch.from_numpy(real), torch.from_numpy(fake), subsets=4, subset_size=60) == upcast


def test_bad_inputs_are_metric_errors(features):
    real, fake = features
    with pytest.raises(MetricError, match="widths"):
        kid(real, fake[:, :10])
    with pytest.raises(MetricError, match="at least 2"):
        kid(real, fake[:1])
    with pytest.raises(MetricError, match="non-finite"):
        kid(real, np.full_like(fake, np.nan))


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(features):
    real, fake = features
    cpu = kid(real, fake, subsets=5, subset_size=100)
    assert kid(real, fake, subsets=5, subset_size=100, device="cuda") == pytest.approx(cpu, rel=1e-9, abs=1e-14)
