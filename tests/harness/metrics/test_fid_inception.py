"""The state-dict port of the TF Inception (pytorch-fid's / torch-fidelity's weights file): its
network against torch-fidelity's own copy on the same random weights, resolution from the torch
hub cache and from --inception, the published-sha256 check; and, where the real files exist, the
three sources against each other on the same images."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.shapes import ShapesDataset
from harness.errors import MetricError
from harness.metrics.fid import FeatureAccumulator
from harness.metrics.fid_inception import pool3, tf_inception_v3, unbiased_probs
from harness.metrics.networks import resolve_backbone


def random_port(seed: int = 0) -> torch.nn.Module:
    """The port with random weights that keep activations of order one through all 94 convolutions
    (He-normal convolutions, random batch-norm affine and statistics)."""
    gen = torch.Generator().manual_seed(seed)
    net = tf_inception_v3()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def port_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_port().state_dict(), path)
    return path


def sha_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_the_port_equals_torch_fidelitys_network_on_the_same_weights(port_file):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(port_file))
    mine = tf_inception_v3()
    mine.load_state_dict(torch.load(port_file, weights_only=True))
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, logits = theirs(images)  # torch-fidelity resizes 299 -> 299 (the identity), then (x - 128) / 128
        ours = pool3(mine, images.float())
        probs = unbiased_probs(mine, ours)
    assert feats.abs().mean() > 0.1  # activations of order one: the comparison means something
    torch.testing.assert_close(ours, feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1), rtol=1e-4, atol=1e-6)


def test_state_dict_weights_resolve_from_the_hub_cache_with_logits(port_file, monkeypatch, tmp_path):
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "hub_checkpoints", lambda: port_file.parent)
    monkeypatch.setattr(inc, "STATE_DICT_SHA256_PREFIX", sha_prefix(port_file))
    b = resolve_backbone(None, "inception", "cpu", env={})
    assert b.source == "torch hub cache (pytorch-fid)" and "pytorch-fid port" in b.name
    assert b.has_logits and b.family == "inception" and b.suffix == "" and b.path == str(port_file)
    assert b.sha256 == hashlib.sha256(port_file.read_bytes()).hexdigest() and b.key == f"inception-{b.sha256[:16]}"
    # the same file given by path, under torch-fidelity's name
    copy = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    copy.write_bytes(port_file.read_bytes())
    explicit = resolve_backbone(copy, "inception", "cpu", env={})
    assert explicit.source == "--inception" and "torch-fidelity port" in explicit.name
    acc = FeatureAccumulator(explicit, "cpu", batch_size=4).add_all([ShapesDataset(32).images(np.arange(2))[0]])
    assert acc.features().shape == (2, 2048) and acc.probabilities().shape == (2, 1008)
    np.testing.assert_allclose(acc.probabilities().sum(1), 1.0, rtol=1e-6)


def test_a_state_dict_that_is_not_the_published_port_is_refused(port_file, tmp_path):
    # the random weights' sha256 does not start with the published 6726825d
    with pytest.raises(MetricError, match="not the published port") as e:
        resolve_backbone(port_file, "inception", "cpu", env={})
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(MetricError, match="not an Inception-v3 state dict"):
        resolve_backbone(other, "inception", "cpu", env={})


def _real_files() -> dict[str, Path]:
    import harness.metrics.inception as inc

    found = {made_by: inc.hub_checkpoints() / name for name, made_by in inc.STATE_DICT_FILES.items()}
    found["nvlabs"] = inc.CLEANFID_CACHE
    return {k: p for k, p in found.items() if p.is_file()}


@pytest.mark.skipif(len(_real_files()) < 2, reason="needs two of: pytorch-fid's and torch-fidelity's weights in the "
                                                   "torch hub cache, clean-fid's NVlabs TorchScript in /tmp")
def test_the_real_inception_sources_agree_on_the_same_images():
    images = ShapesDataset(64).images(np.arange(64))[0]
    feats, probs = {}, {}
    for source, path in _real_files().items():
        acc = FeatureAccumulator(resolve_backbone(path, "inception", "cpu", env={}), "cpu", 32).add_all([images])
        feats[source], probs[source] = acc.features(), acc.probabilities()
    first = next(iter(feats))
    for source in feats:  # two ports of one graph: agree to float32 rounding of 94 layers
        np.testing.assert_allclose(feats[source], feats[first], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(probs[source], probs[first], rtol=1e-2, atol=1e-4)
