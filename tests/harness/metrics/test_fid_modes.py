"""clean-fid's resize modes: legacy_tensorflow next to clean, recorded beside every FID and in the cache key."""
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.fid import FeatureAccumulator, clean_resize, legacy_tensorflow_resize
from harness.metrics.inception import standin_backbone
from harness.metrics.scorer import ImageScorer


def tf1_resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """TF1 `tf.image.resize_bilinear(align_corners=False)` (half_pixel_centers=False), written as a
    direct loop over output pixels: in = out * (in_size / out_size), neighbours clamped at the border."""
    c, h, w = img.shape
    out = np.empty((c, size, size))
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); fy = y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x)); x1 = min(x0 + 1, w - 1); fx = x - x0
            top = img[:, y0, x0] * (1 - fx) + img[:, y0, x1] * fx
            bottom = img[:, y1, x0] * (1 - fx) + img[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def nvlabs_inside_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """What the NVlabs inception-2015-12-05 TorchScript does to an input that is not 299x299 when
    clean-fid's legacy_tensorflow mode calls it with resize_inside=True: an affine grid shifted by
    1/W - 1/299 (and 1/H - 1/299), bilinear grid_sample with border padding."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1)
    theta[:, 0, 2] += 1 / w - 1 / size
    theta[:, 1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize("hw,size", [((64, 64), 299), ((128, 96), 299), ((37, 53), 29), ((300, 300), 299)])
def test_legacy_tensorflow_resize_matches_the_tf_graph_and_the_nvlabs_inside_resize(hw, size):
    images = torch.from_numpy(np.random.default_rng(sum(hw)).integers(0, 256, (2, 3, *hw), dtype=np.uint8))
    ours = legacy_tensorflow_resize(images, size)
    assert ours.shape == (2, 3, size, size) and ours.dtype == torch.float32
    for k in range(2):
        want = tf1_resize_bilinear(images[k].double().numpy(), size)
        np.testing.assert_allclose(ours[k].double().numpy(), want, rtol=0, atol=2e-3)
    np.testing.assert_allclose(ours.double().numpy(), nvlabs_inside_resize(images, size).numpy(), rtol=0, atol=2e-3)


def test_clean_fid_resizes_nothing_itself_in_legacy_tensorflow_mode():
    # clean-fid's own definition of the mode: no resize outside the network, the TorchScript resizes inside
    from cleanfid import features, resize

    x = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    assert resize.build_resizer("legacy_tensorflow")(x) is x
    src = inspect.getsource(features.build_feature_extractor)
    assert 'mode == "legacy_tensorflow"' in src and "resize_inside=True" in src
    # and the two modes really differ: clean antialiases a downscale, legacy_tensorflow aliases
    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 512, 512), dtype=np.uint8))
    assert (clean_resize(img) - legacy_tensorflow_resize(img)).abs().mean() > 5


def test_fid_mode_is_recorded_beside_the_fid_and_in_the_cache_key(tmp_path):
    backbone = standin_backbone(torch.device("cpu"))
    data = ShapesDataset(32, "val")
    fakes = ShapesDataset(32).images(np.arange(40))[0]
    out = {}
    for mode in ("clean", "legacy_tensorflow"):
        scorer = ImageScorer(backbone, cache_dir=tmp_path, mode=mode)
        out[mode] = scorer.score(scorer.features([fakes]), reference=data)
        assert scorer.provenance()["mode"] == mode
    files = sorted(p.parent.name for p in (tmp_path / "fid-ref").glob("*/stats.npz"))
    assert len(files) == 2 and sum("legacy_tensorflow" in f for f in files) == 1
    for mode, metrics in out.items():
        assert metrics["fid_standin_mode"] == mode and metrics["fid_standin_n"] == 40
        assert metrics["fid_standin_ref"] == f"{data.id}/val stratified n=40 seed=0"
        assert metrics["fid_standin_ref_selection"] == "stratified n=40 seed=0"
        assert metrics["fid_standin_ref_sha256"] == data.index_sha256
    assert out["clean"]["fid_standin"] != out["legacy_tensorflow"]["fid_standin"]
    with pytest.raises(MetricError, match="unknown FID mode"):
        ImageScorer(backbone, mode="tf")
    with pytest.raises(MetricError, match="unknown FID mode"):
        FeatureAccumulator(backbone, mode="pil")
