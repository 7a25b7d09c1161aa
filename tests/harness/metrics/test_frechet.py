"""The Frechet distance (symmetric eigenvalues, float64 on the evaluation's device) against
clean-fid's `frechet_distance` (scipy `sqrtm`) and, for rank-deficient covariances, against the
spectrum of the small n x n Gram matrix computed with numpy."""
import warnings

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.features import stats_from_features
from harness.metrics.fid import FeatureAccumulator, frechet_distance, trace_sqrt_product
from harness.metrics.inception import standin_backbone


def reference(mu1, s1, mu2, s2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm's deprecated `disp`, "singular matrix"
        return float(cleanfid_frechet(mu1, s1, mu2, s2))


def gram_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Exact FID when `a` has fewer rows than columns: the nonzero eigenvalues of S1 S2 with
    S1 = A^T A (A the centred rows / sqrt(n - 1)) are those of the n x n matrix A S2 A^T."""
    mu1, s1 = stats_from_features(a)
    mu2, s2 = stats_from_features(b)
    centred = (a - mu1) / np.sqrt(len(a) - 1)
    ev = np.linalg.eigvalsh(centred @ s2 @ centred.T)
    ev = ev[ev > len(ev) * np.finfo(float).eps * ev.max()]  # the centred rows' null space is rounding
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum())


@pytest.fixture(scope="module")
def shapes_features():
    """Stand-in backbone features (256-d) of 600 shapes images in two disjoint sets."""
    backbone = standin_backbone(torch.device("cpu"))
    images = ShapesDataset(32).images(np.arange(600))[0]
    feats = FeatureAccumulator(backbone, "cpu", want_probs=False).add_all([images]).features()
    return feats[:300], feats[300:]


def test_matches_clean_fid_on_real_feature_statistics(shapes_features):
    a, b = shapes_features
    mu1, s1 = stats_from_features(a)
    mu2, s2 = stats_from_features(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference(mu1, s1, mu2, s2), rel=1e-6)


def test_matches_clean_fid_on_well_conditioned_covariances():
    rng = np.random.default_rng(0)
    d = 384
    a = rng.normal(size=(3000, d)) @ (np.eye(d) + 0.2 * rng.normal(size=(d, d)) / np.sqrt(d))
    b = rng.normal(loc=0.1, scale=1.3, size=(2500, d))
    stats = (*stats_from_features(a), *stats_from_features(b))
    assert frechet_distance(*stats) == pytest.approx(reference(*stats), rel=1e-9)


@pytest.mark.parametrize("n", [40, 150, 255])
def test_rank_deficient_covariances_are_exact(shapes_features, n):
    """Fewer samples than dimensions (256): S1 has rank n - 1; sqrtm loses digits there, the
    eigenvalue route does not."""
    a, b = shapes_features
    a = a[:n]
    stats = (*stats_from_features(a), *stats_from_features(b))
    ours = frechet_distance(*stats)
    assert np.isfinite(ours) and ours > 0
    # the FID is small next to the traces it is a difference of: compare at 1e-10 of those
    scale = np.trace(stats[1]) + np.trace(stats[3])
    assert ours == pytest.approx(gram_frechet(a, b), abs=1e-10 * scale)
    assert ours == pytest.approx(reference(*stats), rel=1e-4)  # sqrtm: ~1e-6 off on these


def test_both_covariances_rank_deficient():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 128)), rng.normal(loc=0.2, size=(50, 128)) * 2
    stats = (*stats_from_features(a), *stats_from_features(b))
    assert frechet_distance(*stats) == pytest.approx(gram_frechet(a, b), rel=1e-9)
    assert frechet_distance(*stats) == pytest.approx(gram_frechet(b, a), rel=1e-9)  # symmetric in its arguments


def test_trace_sqrt_product_of_commuting_matrices():
    # diagonal S1, S2: tr sqrt(S1 S2) = sum sqrt(s1_i s2_i), zeros included
    s1 = torch.tensor([4.0, 0.0, 9.0, 1e-3], dtype=torch.float64)
    s2 = torch.tensor([1.0, 5.0, 4.0, 1e3], dtype=torch.float64)
    got = trace_sqrt_product(torch.diag(s1), torch.diag(s2))
    assert float(got) == pytest.approx(float((s1 * s2).sqrt().sum()), rel=1e-12)


def test_identical_statistics_give_zero(shapes_features):
    mu, s = stats_from_features(shapes_features[0])
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8 * np.trace(s)


def test_bad_statistics_are_one_line_errors():
    mu, s = np.zeros(4), np.eye(4)
    with pytest.raises(MetricError, match="mismatched"):
        frechet_distance(mu, s, np.zeros(5), np.eye(5))
    with pytest.raises(MetricError, match="non-finite"):
        frechet_distance(mu, s, mu, np.full((4, 4), np.nan))


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(shapes_features):
    a, b = shapes_features
    stats = (*stats_from_features(a[:100]), *stats_from_features(b))
    assert frechet_distance(*stats, device="cuda") == pytest.approx(frechet_distance(*stats), rel=1e-9)


def test_lapack_congruence_equals_the_matrix_products():
    """The CPU path's dsygst (B lower triangular) and the general products (the GPU's and the
    rank-deficient path's) form the same B^T S B in the lower triangle that eigvalsh reads."""
    from harness.metrics.fid import _congruence

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 96)), rng.normal(size=(300, 96)) * 1.5
    s1, s2 = (torch.from_numpy(stats_from_features(x)[1]) for x in (a, b))
    factor = torch.linalg.cholesky(s1)
    lapack, products = _congruence(s2, factor, triangular=True), _congruence(s2, factor, triangular=False)
    expected = factor.T.numpy() @ s2.numpy() @ factor.numpy()
    assert np.allclose(np.tril(lapack.numpy()), np.tril(expected), rtol=1e-10, atol=1e-12)
    assert np.allclose(np.tril(products.numpy()), np.tril(expected), rtol=1e-10, atol=1e-12)
    assert not np.allclose(np.triu(lapack.numpy(), 1), np.triu(expected, 1))  # its upper half is not read
