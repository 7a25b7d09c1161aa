"""Precision / recall / density / coverage against the `prdc` package (sklearn float64 distances,
full matrices) on the same features; the chunked computation against itself unchunked; and which
side is real."""
import numpy as np
import pytest
import torch

from harness.errors import MetricError
from harness.metrics.prdc import knn_radii, prdc


@pytest.fixture(scope="module")
def features():
    """(200, 64) real and (230, 64) fake float64 features; the fake is narrower and shifted, so
    precision, recall, density and coverage all differ from each other and from 0 and 1."""
    rng = np.random.default_rng(0)
    real = rng.normal(0.0, 1.0, size=(200, 64))
    fake = rng.normal(0.15, 0.8, size=(230, 64))
    return real, fake


def package(real, fake, k):
    compute_prdc = pytest.importorskip("prdc").compute_prdc
    return {key: float(v) for key, v in compute_prdc(real, fake, nearest_k=k).items()}


@pytest.mark.parametrize("pr_k, dc_k", [(3, 5), (4, 4), (1, 2)])
def test_matches_the_prdc_package(features, pr_k, dc_k):
    real, fake = features
    ours = prdc(real, fake, pr_k=pr_k, dc_k=dc_k)
    at_pr, at_dc = package(real, fake, pr_k), package(real, fake, dc_k)
    expected = {"precision": at_pr["precision"], "recall": at_pr["recall"],
                "density": at_dc["density"], "coverage": at_dc["coverage"]}
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0 < ours["recall"] < ours["precision"] <= 1  # the narrow fake: faithful, not diverse


def test_radii_match_sklearn_nearest_neighbours(features):
    """The k-th neighbour distances, against sklearn's own k-NN search (the package's
    `compute_nearest_neighbour_distances` is the same quantity by argpartition)."""
    neighbors = pytest.importorskip("sklearn.neighbors")
    real = features[0]
    dist, _ = neighbors.NearestNeighbors(n_neighbors=6).fit(real).kneighbors(real)  # column 0: itself
    ours = knn_radii(torch.from_numpy(real), (3, 5), chunk_size=64).numpy()
    np.testing.assert_allclose(ours, dist[:, [3, 5]].T, rtol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 199])
def test_chunks_give_the_unchunked_result(features, chunk_size):
    real, fake = features
    assert prdc(real, fake, chunk_size=chunk_size) == prdc(real, fake, chunk_size=10_000)


def test_real_and_fake_sides(features):
    """Fake = half of real: every fake is a real sample (precision 1), half the real samples are
    fakes (recall >= 0.5). Swapped, the roles swap: recall 1, precision < 1."""
    real = features[0]
    half = real[::2]
    forward = prdc(real, half)
    assert forward["precision"] == 1 and forward["coverage"] >= 0.5
    assert 0.5 <= forward["recall"] < 1
    swapped = prdc(half, real)
    assert swapped["recall"] == 1 and swapped["coverage"] == 1
    assert 0.5 <= swapped["precision"] < 1


def test_identical_sets_are_perfect(features):
    real = features[0]
    scores = prdc(real, real.copy())
    # Each real ball holds its centre and the k - 1 nearer neighbours, not the k-th (strict "<"):
    # N k memberships in all, density exactly 1
    assert scores == {"precision": 1, "recall": 1, "density": 1, "coverage": 1}


def test_float32_inputs_and_tensors(features):
    real, fake = (torch.from_numpy(f.astype(np.float32)) for f in features)
    assert prdc(real, fake) == prdc(real.double().numpy(), fake.double().numpy())
    lower = prdc(real, fake, dtype=torch.float32)
    assert lower == pytest.approx(prdc(real, fake), abs=2 / 200)


def test_bad_inputs_are_metric_errors(features):
    real, fake = features
    with pytest.raises(MetricError, match="more than 3 samples"):
        prdc(real, fake[:3])
    with pytest.raises(MetricError, match="widths"):
        prdc(real, fake[:, :3])


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(features):
    real, fake = features
    assert prdc(*features, device="cuda") == pytest.approx(prdc(real, fake), abs=1e-12)
