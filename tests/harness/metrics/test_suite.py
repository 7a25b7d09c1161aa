"""Every metric of `--metrics` through the scorer, from one extraction of each side: equal to the
metric functions (each verified against its reference package in its own test file) called on the
same features, keyed for the network (`_standin`, `_dinov2`, nothing for the TF Inception), with the
small-sample rules and the notes that say why a requested metric is missing."""
import numpy as np
import pytest
import torch

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.backbone import Backbone
from harness.metrics.bootstrap import fid_interval_given, kid_interval
from harness.metrics.fdinf import fd_infinity
from harness.metrics.fid import FeatureAccumulator
from harness.metrics.inception import standin_backbone
from harness.metrics.kid import kid
from harness.metrics.prdc import prdc
from harness.metrics.reference import checked_features
from harness.metrics.scorer import ImageScorer
from harness.metrics.suite import RealSide, parse_metrics


def test_metrics_parse_in_one_order_and_refuse_what_they_cannot_do():
    assert parse_metrics("kid, fid ,ci") == ("fid", "kid", "ci")
    assert parse_metrics("fid,kid,prdc,fdinf,is") == ("fid", "is", "kid", "prdc", "fdinf")
    for bad in ("", "fid,clip", "ci", "is,ci"):
        with pytest.raises(MetricError):
            parse_metrics(bad)


def test_every_metric_through_the_scorer_equals_the_functions_on_the_same_features(tmp_path):
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path, metrics="fid,is,kid,prdc,fdinf,ci",
                         resamples=20)
    fake = scorer.features([ShapesDataset(32).images(np.arange(40))[0]])
    data = ShapesDataset(32, "val")
    out = scorer.score(fake, reference=data)
    real = np.asarray(checked_features(scorer.reference(data, 40)), dtype=np.float64)
    f = fake.features()
    assert (out["kid_standin_mean"], out["kid_standin_std"]) == kid(real, f)
    assert (out["kid_standin_n"], out["kid_standin_ref_n"], out["kid_standin_subsets"],
            out["kid_standin_subset_size"]) == (40, 40, 100, 40)
    assert {k: out[f"{k}_standin"] for k in ("precision", "recall", "density", "coverage")} == prdc(real, f)
    assert (out["prdc_standin_n"], out["prdc_standin_ref_n"]) == (40, 40)
    ref = scorer.reference(data, 40)
    assert (out["fid_standin_low"], out["fid_standin_high"], out["fid_standin_resamples"]) == \
        fid_interval_given(ref.mu, ref.sigma, f, resamples=20)
    assert out["fid_standin_low"] <= out["fid_standin"] <= out["fid_standin_high"]
    assert (out["kid_standin_low"], out["kid_standin_high"]) == kid_interval(real, f, resamples=20)[:2]
    assert out["fid_standin_level"] == out["kid_standin_level"] == 0.95
    # a stand-in never writes a key named as the real metric, and says so on the line
    metric_keys = [k for k in out if k.split("_")[0] in ("fid", "kid", "precision", "recall", "density", "coverage",
                                                          "prdc", "fdinf", "is")]
    assert metric_keys and all("_standin" in k for k in metric_keys)
    assert out["backbone"].startswith("standin") and out["backbone_weights"] is None
    assert "fdinf_standin" not in out  # 40 samples: below the official grid
    assert scorer.missing(40) == [
        "IS missing: the stand-in backbone has no class logits",
        "FD-inf missing: it needs n >= 10000 (the official grid from 5000 samples to n, at least a 2:1 range of 1/N); "
        "got n=40"]


def _given(backbone, feats, probs=None):
    acc = FeatureAccumulator(backbone, "cpu")
    acc.feats, acc.probs = [feats], ([probs] if probs is not None else [])
    return acc


def fake_network(family: str, dim: int = 16) -> Backbone:
    """A Backbone of `family` whose features are never computed here (the tests pass features)."""
    return Backbone(f"test {family}", "test", "/weights.pt", "ab" * 32, lambda x: x, (lambda x: x) if family ==
                    "inception" else None, family=family)


def test_keys_name_the_network_and_fd_infinity_runs_on_the_official_grid():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(12000, 8)), rng.normal(0.1, 1.1, size=(10000, 8))
    probs = rng.dirichlet(np.ones(1008), size=10000)
    inception = ImageScorer(fake_network("inception"), metrics="fid,is,kid,fdinf")
    out = inception.score(_given(inception.backbone, fake, probs), reference_features=_given(inception.backbone, real))
    assert out["fdinf"] == fd_infinity(real.mean(0), np.cov(real, rowvar=False), fake)
    assert (out["fdinf_n"], out["fdinf_points"]) == (10000, 15)
    assert {"fid", "is_mean", "kid_mean"} <= set(out) and out["backbone_sha256"] == "ab" * 32
    assert out["kid_ref_n"] == 10000  # a larger reference gives KID and PRDC as many rows as there are samples
    dino = ImageScorer(fake_network("dinov2"), metrics="fid,is,kid,prdc,fdinf")
    out = dino.score(_given(dino.backbone, fake[:50]), reference_features=_given(dino.backbone, real[:60]))
    assert "fdinf_dinov2" not in out
    assert {"fid_dinov2", "kid_dinov2_mean", "precision_dinov2", "coverage_dinov2", "prdc_dinov2_n"} <= set(out)
    assert not {"fid", "kid_mean", "precision", "is_mean"} & set(out)
    assert dino.missing(50)[0] == "IS missing: test dinov2 has no 1008-way Inception logits"


def test_a_larger_reference_gives_a_seeded_subset_of_as_many_rows():
    feats = np.arange(100.0)[:, None].repeat(3, 1)
    side = RealSide(np.zeros(3), np.eye(3), 100, lambda: feats)
    rows = side.sample(10)
    assert rows.shape == (10, 3) and np.array_equal(rows, side.sample(10)) and len(np.unique(rows[:, 0])) == 10
    assert np.array_equal(side.sample(200), feats)


def test_without_fid_the_reference_labels_stay_on_the_line(tmp_path):
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path, metrics="kid")
    out = scorer.score(scorer.features([ShapesDataset(32).images(np.arange(12))[0]]), reference=ShapesDataset(32, "val"))
    assert "fid_standin" not in out and "kid_standin_mean" in out
    assert out["metrics_ref"].endswith("stratified n=12 seed=0") and out["metrics_mode"] == "clean"
