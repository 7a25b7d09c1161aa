"""The official NSBGAN sampling script's confidence filter (hanseungwook/BigGAN-PyTorch sample_wt.py
l.97-144, branch `rejection`), faithfully, quirks included: not in the paper, and added after its
figures, so never on by default. A sample is kept when torchvision's Inception-v3 gives its low-pass
image a top-1 probability above 0.95."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from harness.errors import MetricError
from harness.rundir.atomic import sha256_file

THRESHOLD = 0.95  # sample_wt.py l.128, hard-coded
DRAW_BATCH = 512  # --G_batch_size 512 (scripts/sample_BigGAN_wt.slurm): the classifier's batch statistics
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class OfficialConfidenceFilter:
    """`keep(images)`: a bool mask over (N, 3, R, R) low-pass images in [0, 1] (NSBGAN: the TL-only
    inverse transform of the latent; NSBGAN-PIXEL: the downsampled image)."""

    def __init__(self, weights: Path, device: torch.device, threshold: float = THRESHOLD):
        from torchvision.models import inception_v3

        path = Path(weights).expanduser()
        if not path.is_file():
            raise MetricError(f"--official-filter {weights}: no such file (torchvision's Inception-v3 ImageNet weights, "
                              f"e.g. inception_v3_google-0cc3c7bd.pth from a torch hub cache)")
        # torch.hub's inception_v3(pretrained=True) sets transform_input=True and aux_logits=True (l.98)
        model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # a wrong or damaged file: several torch error types
            raise MetricError(f"--official-filter {weights}: not torchvision Inception-v3 weights ({e})") from None
        # the official code never calls .eval(): `rejection_model(x)[0]` (l.124) only works in train mode,
        # so BatchNorm takes batch statistics and Dropout is active, as here
        self.model = model.to(device).train()
        self.device, self.threshold, self.sha256 = torch.device(device), threshold, sha256_file(path)

    def describe(self) -> str:
        return (f"official (sample_wt.py l.97-144, not in the paper): torchvision Inception-v3 "
                f"(sha256 {self.sha256[:12]}) in train mode on the low-pass image, nearest-resized to 299, "
                f"x * std + mean, top-1 > {self.threshold}")

    @torch.no_grad()
    def keep(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.to(self.device, torch.float32), 299)  # l.121: the default, nearest
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[None, :, None, None]
        x = x * std + mean  # l.122 utils.normalize_batch: the inverse of a normalisation, as written
        probs = torch.softmax(self.model(x)[0], dim=1)  # l.124-125: the main head's logits
        return (probs.max(dim=1).values > self.threshold).cpu()
