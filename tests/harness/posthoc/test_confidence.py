"""The official NSBGAN sampling script's confidence filter: its classifier as the script ran it
(torchvision Inception-v3 in train mode on the low-pass image), the filtered sampling of a pipeline,
and every truncation line saying whether and how its samples were filtered."""
import numpy as np
import pytest
import torch

from harness.errors import MetricError
from harness.posthoc.confidence import OfficialConfidenceFilter
from methods.nsbgan import encode, low_pass_image
from methods.wavelets import wavedec2
from tests.methods.test_nsbgan_sampler import built


def test_the_low_pass_image_is_the_latent_alone_through_the_inverse_transforms():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    tl = encode(x, 2, mode="zero")
    coeffs = wavedec2(x, 2, "bior2.2", "zero")
    zeroed = [coeffs[0]] + [tuple(torch.zeros_like(b) for b in level) for level in coeffs[1:]]
    from methods.wavelets import waverec2

    torch.testing.assert_close(low_pass_image(tl, 2), waverec2(zeroed, "bior2.2", "zero"))
    assert low_pass_image(tl, 2).shape == x.shape
    ramp = torch.linspace(0, 1, 32, dtype=torch.float64).expand(1, 3, 32, 32).contiguous()
    smooth = low_pass_image(encode(ramp, 2, mode="zero"), 2)  # bior2.2 keeps a ramp away from the borders
    torch.testing.assert_close(smooth[..., 8:-8, 8:-8], ramp[..., 8:-8, 8:-8], rtol=0, atol=1e-9)


def test_the_classifier_runs_as_the_script_ran_it(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception_v3.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    f = OfficialConfidenceFilter(weights, torch.device("cpu"))
    assert f.model.training and f.model.transform_input  # never .eval(): batch statistics, dropout
    mask = f.keep(torch.rand(2, 3, 16, 16))
    assert mask.dtype == torch.bool and mask.shape == (2,) and not mask.any()  # random weights: never 0.95 sure
    assert "sample_wt.py" in f.describe() and f.sha256[:12] in f.describe() and "not in the paper" in f.describe()
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(MetricError, match="not torchvision Inception-v3 weights"):
        OfficialConfidenceFilter(tmp_path / "junk.pth", torch.device("cpu"))
    with pytest.raises(MetricError, match="no such file"):
        OfficialConfidenceFilter(tmp_path / "missing.pth", torch.device("cpu"))


def test_filtered_sampling_keeps_what_the_filter_accepts_and_decodes_it(tmp_path):
    method = built("nsbgan", tmp_path)
    seen = []

    def keep(images):  # accept the brighter half of each draw, as a classifier's choice would be arbitrary
        seen.append(images)
        means = images.mean(dim=(1, 2, 3))
        return means > means.median()

    chunks = list(method.sample_filtered(10, 1.0, 7, keep, draw_batch=8, max_draws=40))
    out = torch.cat(chunks)
    assert out.shape == (10, 3, 64, 64) and out.dtype == torch.uint8
    assert all(s.shape == (8, 3, 64, 64) for s in seen) and len(seen) == 3  # 3 or 4 kept per draw of 8
    with pytest.raises(MetricError, match="kept 0 of 16 samples"):
        list(method.sample_filtered(4, 1.0, 7, lambda x: torch.zeros(len(x), dtype=torch.bool), 8, 16))


def test_every_truncation_line_says_how_its_samples_were_filtered(tmp_path, monkeypatch):
    from harness.metrics.inception import standin_backbone
    from harness.metrics.scorer import ImageScorer
    from harness.posthoc import sweeps
    from harness.posthoc.restore import RestoredRun
    from harness.data.shapes import ShapesDataset
    from harness.data import DataSplits
    from harness.rundir.rundir import RunDir

    method = built("nsbgan", tmp_path)
    run = RunDir.create(tmp_path / "r", {"method": "nsbgan", "config": {}, "stages": []})
    data = DataSplits(ShapesDataset(64, "train"), ShapesDataset(64, "val"))
    restored = RestoredRun(run, type("I", (), {"name": "nsbgan"})(), None, data, method, {}, {}, torch.device("cpu"))
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=tmp_path / "c")
    official = type("F", (), {"keep": staticmethod(lambda x: torch.arange(len(x)) % 2 == 0),
                              "describe": staticmethod(lambda: "official (sample_wt.py l.97-144, not in the paper)")})()
    monkeypatch.setattr(sweeps, "DRAW_BATCH", 8)
    plain, filtered = (sweeps.truncation_sweep(restored, scorer, [1.0], 8, official_filter=f, log=lambda m: None)[0]
                       for f in (None, official))
    assert plain["sample_filter"] == "none (as the paper)" and filtered["sample_filter"].startswith("official")
    assert filtered["fid_standin_n"] == 8 and np.isfinite(filtered["fid_standin"])
