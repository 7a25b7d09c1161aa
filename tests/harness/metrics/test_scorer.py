"""ImageScorer: stand-in labelling, reference statistics cached by identity, FID*."""
import hashlib

import numpy as np
import pytest
import torch

from harness.data.shapes import ShapesDataset
from harness.metrics.inception import standin_backbone
from harness.metrics.scorer import ImageScorer, fid_key


def test_standin_can_never_write_a_fid_key():
    b = standin_backbone(torch.device("cpu"))
    assert fid_key(b) == "fid_standin" and fid_key(b, "fid_star") == "fid_star_standin"
    scorer = ImageScorer(b)
    a = scorer.features([ShapesDataset(32).images(np.arange(40))[0]])
    out = scorer.score(a, reference=ShapesDataset(32, "val"))
    assert "fid" not in out and "fid_standin" in out and "is_mean" not in out
    assert scorer.missing(40)[0].startswith("IS missing")


def test_scorer_caches_reference_statistics_by_identity_and_selection(tmp_path):
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path)
    data = ShapesDataset(32, "val")
    ref = scorer.reference(data, 50)
    files = list((tmp_path / "fid-ref").glob("*/stats.npz"))
    name = files[0].parent.name
    assert len(files) == 1 and data.id in name and "strat50s0" in name and "standin" in name
    again = scorer.reference(data, 50)
    assert np.array_equal(ref.mu, again.mu) and ref.count == 50
    assert ref.label == f"{data.id}/val stratified n=50 seed=0" and ref.index_sha256 == data.index_sha256
    assert list(scorer.provenance()["reference_stats"].values())[0] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    feats = np.load(ref.features)
    assert feats.shape[0] == 50 and feats.dtype == np.float32  # kept for metrics beyond FID
    np.testing.assert_allclose(ref.mu, feats.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)


def test_fid_star_uses_the_reconstruction_set():
    scorer = ImageScorer(standin_backbone(torch.device("cpu")))
    real = ShapesDataset(32).images(np.arange(60))[0]
    recon = torch.flip(real, dims=[3])  # a "reconstruction" set different from the real images
    samples = scorer.features([recon.clone()])
    star = scorer.score(samples, reference_features=scorer.features([recon]), name="fid_star")
    plain = scorer.score(samples, reference_features=scorer.features([real]), name="fid")
    assert set(star) == {"fid_star_standin", "fid_star_standin_n", "fid_star_standin_ref_n", "fid_star_standin_mode",
                         "fid_star_standin_ref"}
    assert star["fid_star_standin_mode"] == "clean" and star["fid_star_standin_ref"] == "given features"
    assert star["fid_star_standin"] == pytest.approx(0.0, abs=1e-6)
    assert plain["fid_standin"] > 1e-3


def test_sampled_features_are_the_chunks_in_order_and_keep_the_first_images(tmp_path):
    """One process: chunk k = draw(k) in order, features as of the images in one stream, the kept
    samples the first `limit`; a chunk of the wrong size is a MetricError and leaves no file."""
    from harness.errors import MetricError
    from harness.rundir.samples import SampleKeeper

    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path, metrics="fid")
    images = ShapesDataset(32, "val").images(np.arange(7))[0]
    starts = [0, 3, 6, 7]
    acc = scorer.sampled_features(lambda k: images[starts[k]:starts[k + 1]], [3, 3, 1], "test",
                                  SampleKeeper(tmp_path / "kept.npz", limit=4))
    np.testing.assert_allclose(acc.features(), scorer.features([images]).features(), rtol=0, atol=1e-6)
    with np.load(tmp_path / "kept.npz") as f:
        assert np.array_equal(f["images"], images[:4].permute(0, 2, 3, 1).numpy())
    with pytest.raises(MetricError, match="chunk 1 of the samples has 3 images, expected 2"):
        scorer.sampled_features(lambda k: images[starts[k]:starts[k + 1]], [3, 2, 1], "test",
                                SampleKeeper(tmp_path / "bad.npz"))
    assert not (tmp_path / "bad.npz").exists() and not list(tmp_path.glob(".bad.npz.raw*"))
