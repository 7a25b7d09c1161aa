"""`--backbone`: the feature network every metric of a run, `harness eval` or `harness fid` uses.

    inception        the TF Inception of FID and IS (harness.metrics.inception: resolution order)
    standin          a fixed random conv net for smoke tests (its numbers are labelled `_standin`)
    dinov2:PATH      DINOv2 ViT features (dgm-eval's FD_DINOv2) from weights at PATH (harness.metrics.dinov2)
"""
from __future__ import annotations

import os

import torch

from harness.errors import MetricError
from harness.metrics.backbone import Backbone
from harness.metrics.dinov2 import dinov2_backbone, weights_file
from harness.metrics.inception import resolve_inception, standin_backbone

SPECS = "inception | standin | dinov2:PATH"


def check_backbone_spec(spec: str, files: bool = False) -> str:
    """`spec` if it names a network; else a MetricError. A DINOv2 file is checked when it is resolved,
    or here with `files` (a comparison checks it before its first job starts)."""
    kind, colon, path = spec.partition(":")
    if kind in ("inception", "standin") and not colon or kind == "dinov2" and path:
        if kind == "dinov2" and files:
            weights_file(path)
        return spec
    raise MetricError(f"unknown --backbone '{spec}': use {SPECS}")


def resolve_backbone(inception: str | os.PathLike | None = None, backbone: str = "inception",
                     device: torch.device | str = "cpu", env: dict | None = None) -> Backbone:
    """The network `backbone` names, on `device`; MetricError (one line) when it cannot be had."""
    kind, _, path = check_backbone_spec(backbone).partition(":")
    if kind == "standin":
        return standin_backbone(torch.device(device))
    if kind == "dinov2":
        return dinov2_backbone(path, device)
    return resolve_inception(inception, device, env)
