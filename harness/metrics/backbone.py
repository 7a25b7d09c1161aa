"""The one interface of a feature network (Inception, DINOv2, the stand-in) and how its numbers are
named: every metric key carries the network's family unless it is the TF Inception of FID, so a
stand-in's score can only be `fid_standin` and DINOv2's Frechet distance only `fid_dinov2`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

FAMILIES = ("inception", "dinov2", "standin")
STANDIN_VERSION = 1


@dataclass
class Backbone:
    """A feature network. `features(x)` and `probs(x)` take (N, 3, S, S) float in [0, 255] at
    S = `input_size` (clean-fid's convention) and return (N, D) float32 features and (N, 1008)
    softmax probabilities (None: no classifier, so no Inception Score). `resize` fixes the resize
    to S (a harness.metrics.fid mode) where the network's protocol has one of its own; None: the
    run's FID mode."""

    name: str
    source: str
    path: str | None
    sha256: str | None
    features: Callable[[torch.Tensor], torch.Tensor]
    probs: Callable[[torch.Tensor], torch.Tensor] | None
    family: str = "inception"
    input_size: int = 299
    resize: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown backbone family '{self.family}'")

    @property
    def is_standin(self) -> bool:
        return self.family == "standin"

    @property
    def key(self) -> str:
        """Identity for caching reference features and statistics."""
        return f"standin-v{STANDIN_VERSION}" if self.is_standin else f"{self.family}-{self.sha256[:16]}"

    @property
    def suffix(self) -> str:
        """What every metric key of this network carries: nothing for the TF Inception."""
        return "" if self.family == "inception" else f"_{self.family}"

    @property
    def has_logits(self) -> bool:
        return self.probs is not None

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "source": self.source, "path": self.path,
                "sha256": self.sha256, "standin": self.is_standin, "has_logits": self.has_logits,
                "input_size": self.input_size, "notes": self.notes}

    def line_fields(self) -> dict:
        """What every metrics line names of the network: `backbone`, `backbone_weights`, `backbone_sha256`."""
        return {"backbone": self.name, "backbone_weights": self.path, "backbone_sha256": self.sha256}


def metric_key(backbone: Backbone, metric: str, part: str | None = None) -> str:
    """`metric`, suffixed with the network's family unless it is the TF Inception, then `_part`:
    fid, fid_n, kid_mean; fid_standin, kid_standin_mean; fid_dinov2, precision_dinov2."""
    return f"{metric}{backbone.suffix}" + (f"_{part}" if part else "")
