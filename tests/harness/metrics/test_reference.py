"""FID reference sets: the whole split, a seeded class-stratified subset or (named as such) the first
n images; never a prefix of a class-sorted store by default. Cached, and resumable when interrupted."""
import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import open_dataset
from harness.errors import MetricError
from harness.metrics.inception import standin_backbone
from harness.metrics.reference import Selection, reference_set, select, stratified
from harness.metrics.scorer import ImageScorer


@pytest.fixture
def class_sorted_folder(tmp_path):
    """A folder set of 5 classes whose prepared store holds them class by class (as ImageNet's)."""
    rng = np.random.default_rng(0)
    for c, count in enumerate((40, 40, 40, 40, 40)):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for k in range(count):
            colour = np.array([50 * c, 255 - 50 * c, 128], np.uint8)
            img = np.clip(colour + rng.integers(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "imgs" / f"class{c}" / f"{k}.png")
    return open_dataset(f"folder:{tmp_path / 'imgs'}", 32, cache_dir=tmp_path / "cache").train


def test_a_class_sorted_store_gets_a_reference_covering_all_classes_in_proportion(class_sorted_folder):
    data = class_sorted_folder
    labels = data.labels()
    assert (np.diff(labels) >= 0).all() and data.num_classes == 5  # stored class by class
    first = labels[select(data, Selection("first", 30))]
    assert set(first) == {0}  # the old reference: the first 30 images, all of one class
    picked = labels[select(data, Selection.parse("stratified:30"))]
    counts = np.bincount(picked, minlength=5)
    share = np.bincount(labels, minlength=5) / len(labels)
    assert (counts == np.round(30 * share)).all() and counts.sum() == 30  # every class, in proportion
    assert np.array_equal(select(data, Selection.parse("stratified:30")), select(data, Selection("stratified", 30)))
    assert not np.array_equal(select(data, Selection.parse("stratified:30:1")), select(data, Selection("stratified", 30)))
    assert len(select(data, Selection.parse("all"))) == len(data)


def test_stratified_quotas_sum_exactly_and_follow_unequal_classes():
    labels = np.repeat([0, 1, 2], [70, 20, 10])
    idx = stratified(labels, 17, seed=3)
    assert len(idx) == 17 and len(np.unique(idx)) == 17 and (np.diff(idx) > 0).all()
    assert np.bincount(labels[idx]).tolist() == [12, 3, 2]  # 11.9, 3.4, 1.7 by largest remainders


@pytest.mark.parametrize("text,described", [("all", "all"), ("stratified", "stratified n as many as the samples seed=0"),
                                            ("stratified:500", "stratified n=500 seed=0"),
                                            ("stratified:500:7", "stratified n=500 seed=7"),
                                            ("first:50000", "first n=50000")])
def test_selections_parse_and_describe_themselves(text, described):
    assert Selection.parse(text).describe() == described


@pytest.mark.parametrize("bad", ["prefix", "first:x", "all:10", "stratified:1", "first:-5", "stratified:10:2:3"])
def test_a_bad_selection_is_one_metric_error(bad):
    with pytest.raises(MetricError, match="a FID reference is|at least 2"):
        Selection.parse(bad)


def test_the_scorer_names_the_reference_on_every_fid_line(class_sorted_folder, tmp_path):
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path / "c",
                         selection=Selection.parse("stratified"))
    fake = scorer.features([class_sorted_folder.images(np.arange(25))[0]])
    out = scorer.score(fake, reference=class_sorted_folder)
    assert out["fid_standin_ref_n"] == 25 and out["fid_standin_ref_selection"] == "stratified n=25 seed=0"
    assert out["fid_standin_ref"] == f"{class_sorted_folder.id}/train stratified n=25 seed=0"
    scorer.selection = Selection.parse("first")
    assert scorer.score(fake, reference=class_sorted_folder)["fid_standin_ref_selection"] == "first n=25"


def test_an_interrupted_extraction_resumes_where_it_stopped(class_sorted_folder, tmp_path):
    data, seen = class_sorted_folder, []

    def extract(batches, total, label, done):
        for batch in batches:
            seen.append(len(batch))
            yield batch.float().mean(dim=(2, 3)).numpy().astype(np.float32)  # 3 "features" per image
            if len(seen) == 2 and not resumed:
                raise KeyboardInterrupt

    resumed = False
    with pytest.raises(KeyboardInterrupt):
        reference_set(data, Selection("all"), tmp_path / "ref", extract, chunk=50)
    assert not (tmp_path / "ref" / "stats.npz").exists() and seen == [50, 50]
    resumed = True
    ref = reference_set(data, Selection("all"), tmp_path / "ref", extract, chunk=50)
    n = len(data)  # 190: a folder without a partition holds out a fixed 5%
    assert seen == [50, 50, 50, n - 150]  # the first 100 were not extracted again
    full = data.images(np.arange(n))[0].float().mean(dim=(2, 3)).numpy().astype(np.float64)
    np.testing.assert_allclose(ref.mu, full.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ref.sigma, np.cov(full, rowvar=False), rtol=1e-5)
    assert ref.count == n and not (tmp_path / "ref" / "progress.json").exists()


def test_moments_in_chunks_equal_clean_fids_in_memory(monkeypatch):
    import harness.metrics.reference as ref
    from harness.metrics.features import stats_from_features

    feats = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    mu, sigma = stats_from_features(feats)
    assert all(np.array_equal(a, b) for a, b in zip(ref.moments(feats), (mu, sigma)))  # clean-fid's, exactly
    monkeypatch.setattr(ref, "IN_MEMORY", 0)
    mu2, sigma2 = ref.moments(feats, chunk=64)  # a million rows' path
    np.testing.assert_allclose(mu2, mu, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sigma2, sigma, rtol=1e-12, atol=1e-14)


def test_reference_features_are_checked_by_their_digest(tmp_path):
    import hashlib

    from harness.data.shapes import ShapesDataset
    from harness.metrics.reference import checked_features

    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path)
    data = ShapesDataset(32, "val")
    ref = scorer.reference(data, 20)
    assert ref.features_sha256 == hashlib.sha256(ref.features.read_bytes()).hexdigest()
    assert checked_features(ref).shape == (20, 256)
    # a cache from before digests were kept: recorded on first use
    with np.load(ref.stats) as d:
        old = {k: d[k] for k in d.files if k != "features_sha256"}
    np.savez(ref.stats, **old)
    assert scorer.reference(data, 20).features_sha256 == ref.features_sha256
    # features changed after their statistics were computed: one line naming what to delete
    feats = np.load(ref.features, mmap_mode="r+")
    feats[0, 0] += 1
    feats.flush()
    del feats
    with pytest.raises(MetricError, match="delete .* to recompute") as e:
        checked_features(scorer.reference(data, 20))
    assert "\n" not in str(e.value)
