"""Datasets as uint8 NCHW tensors: the embedded `shapes` set and cached real image sets.

A data spec is `shapes` (procedural, no download) or `KIND:PATH[,key=value...]` with KIND one of
cifar10, celeba, imagenet, folder, npz. Real sets are decoded, cropped and resized once by `prepare`
into a uint8 memmap under the cache directory; training reads batches from it and never resizes.
Preparation options (`KIND:PATH,split=all`): see `OPTIONS`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.config import MethodConfig
from harness.errors import DataError

KINDS = ("shapes", "cifar10", "celeba", "imagenet", "folder", "npz")
# Preparation options (`celeba:/data/celeba,split=all,resize=squash`), each part of the dataset id, so that
# two preparations never share a cache or FID reference statistics.
# option -> (its values, the default first; the kinds it applies to)
OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # official: train on the published training partition, hold out the rest (CelebA val + test, CIFAR-10
    # test, ImageNet val; a fixed 5% where there is none); all: train on every image (the octave code's
    # 202,599 CelebA images), the held-out split is then the same images as with `official`, also trained on.
    # Not for npz (it has no partition).
    "split": (("official", "all"), ("cifar10", "celeba", "imagenet", "folder")),
    # centre: centre square of the short side, PIL bicubic resize to R (the harness's own); native:
    # torchvision CenterCrop(R) at native resolution, no resize, zero padding where the image is smaller
    # (the NSBGAN decoder scripts); long-edge: BigGAN-PyTorch's CenterCropLongEdge + Resize(R), PIL bilinear
    # (the NSBGAN sampler data). Not for cifar10.
    "crop": (("centre", "native", "long-edge"), ("celeba", "imagenet", "folder", "npz")),
    # squash: PIL bilinear resize of the full frame to RxR, aspect ratio not kept, no crop (the octave
    # code's resize_celeba.py). Not with a crop=.
    "resize": (("crop", "squash"), ("celeba", "imagenet", "folder", "npz")),
}


class ImageDataset(abc.ABC):
    """A split of an image set. `images(idx)` -> ((n, 3, R, R) uint8, (n,) int64 labels)."""

    name: str  # the kind, e.g. "cifar10"
    id: str  # identity of the prepared data: kind, resolution and a hash of its index
    storage: str = "prepared"  # how its images reach training: "prepared" (a memmap) or "rendered" (shapes)
    options: dict[str, str] = {}  # the preparation options that differ from the defaults
    index_sha256: str
    split: str
    resolution: int
    num_classes: int

    @abc.abstractmethod
    def __len__(self) -> int:
        ...

    @abc.abstractmethod
    def images(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` images of the split (all of them if it has fewer)."""
        return self.images(np.arange(min(n, len(self))))

    def labels(self) -> np.ndarray:
        """(N,) int64: the class of every image of the split, in index order. Read from the images
        here (correct, slow); the concrete sets override it with their stored labels."""
        return np.concatenate([self.images(np.arange(s, min(len(self), s + 1000)))[1].numpy()
                               for s in range(0, len(self), 1000)] or [np.zeros(0, np.int64)])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "id": self.id,
            "index_sha256": self.index_sha256,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "options": dict(self.options),
        }


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str | None
    options: tuple[tuple[str, str], ...] = ()  # (key, value) given in the spec, sorted by key

    def __str__(self) -> str:
        base = self.kind if self.path is None else f"{self.kind}:{self.path}"
        return ",".join([base] + [f"{k}={v}" for k, v in self.options])

    def option(self, key: str) -> str:
        """The value of an option, or its default."""
        return dict(self.options).get(key, OPTIONS[key][0][0])

    @property
    def tag(self) -> str:
        """The non-default option values joined by '-' ('' for the defaults): part of the dataset id."""
        return "-".join(v for k, v in self.options if v != OPTIONS[k][0][0])

    def with_defaults(self, defaults: str) -> "DataSpec":
        """This spec with a method's default options (its config's `data_options`, a stage's
        `data_options`) added where the spec gives none and the kind accepts them; options the spec
        names win (`split=official` too). `defaults` is `key=value,...`,
        or `kind:key=value,...` for options that hold for one kind only (the octave code's CelebA
        split and resize say nothing about CIFAR-10; `celeba:split=all,resize=squash`), several joined by ';'."""
        given = dict(self.options)
        shaped = "crop" in given or "resize" in given  # the two say together how the frame becomes RxR
        mine = []
        for part in str(defaults or "").split(";"):
            kind, sep, options = part.partition(":")
            if not sep:
                mine.append(part)
            elif kind.strip().lower() not in KINDS:
                raise DataError(f"unknown dataset kind '{kind}' in data_options '{defaults}'")
            elif kind.strip().lower() == self.kind:
                mine.append(options)
        for key, value in _parse_options(",".join(mine), "data_options").items():
            if key not in given and self.kind in OPTIONS[key][1] and not (shaped and key in ("crop", "resize")):
                given[key] = value
        # the result names only what differs from the defaults: one preparation, one cache and one id
        options = tuple((k, v) for k, v in _checked(self.kind, given, str(self)) if v != OPTIONS[k][0][0])
        return DataSpec(self.kind, self.path, options)


def _parse_options(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if not sep or key not in OPTIONS:
            raise DataError(f"unknown data option '{part}' in '{where}'; options: "
                            + ", ".join(f"{k}={'|'.join(v[0])}" for k, v in OPTIONS.items()))
        out[key] = value
    return out


def _checked(kind: str, options: dict[str, str], where: str) -> tuple[tuple[str, str], ...]:
    for key, value in options.items():
        values, kinds = OPTIONS[key]
        if value not in values:
            raise DataError(f"data option {key}={value} in '{where}': use {key}={'|'.join(values)}")
        if kind not in kinds:
            raise DataError(f"data option {key}= does not apply to {kind} data (only to {', '.join(kinds)})")
    if options.get("resize") == "squash" and options.get("crop", "centre") != "centre":
        raise DataError(f"resize=squash resizes the full frame without a crop: drop crop={options['crop']} "
                        f"in '{where}'")
    return tuple(sorted(options.items()))


def parse_data_spec(text: str) -> DataSpec:
    """`shapes` | `KIND:PATH[,key=value...]`, KIND one of cifar10, celeba, imagenet, folder, npz
    (options: `OPTIONS`). Unknown or inapplicable options are a DataError."""
    kind, sep, rest = str(text).partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}' in '{text}'; use one of: {', '.join(KINDS)}")
    if kind == "shapes":
        if rest:
            raise DataError("the embedded 'shapes' dataset takes no path and no options")
        return DataSpec("shapes", None)
    parts = rest.split(",")
    # trailing `key=value` parts are options; a comma inside a path without "=" stays in the path
    n = len(parts)
    while n > 1 and "=" in parts[n - 1] and "/" not in parts[n - 1]:
        n -= 1
    path = ",".join(parts[:n]).strip()
    if not path:
        raise DataError(f"dataset '{kind}' needs a path: --data {kind}:PATH")
    options = _parse_options(",".join(parts[n:]), str(text))
    return DataSpec(kind, path, _checked(kind, options, str(text)))


@dataclass
class DataSplits:
    """The train and held-out splits of a run's data; `stages` holds the splits of stages that
    train on another preparation of the same images (NSBGAN's sampler: crop=long-edge)."""

    train: ImageDataset
    val: ImageDataset
    stages: dict[str, "DataSplits"] = field(default_factory=dict)

    def for_stage(self, name: str) -> "DataSplits":
        return self.stages.get(name, self)


def open_dataset(text, resolution: int, *, cache_dir=None, prepare_missing: bool = True,
                 defaults: str = "", stage_defaults: dict[str, str] | None = None) -> DataSplits:
    """Open the train and held-out splits of a data spec at `resolution`, preparing the cache
    first if needed (real sets only; `shapes` reads its memmap where `harness prepare --data shapes`
    made one, and renders on the fly otherwise). `defaults` are the method's
    data options, `stage_defaults` {stage: options} those of stages that differ from them."""
    spec = parse_data_spec(text) if isinstance(text, str) else text
    if spec.kind == "shapes":  # from its prepared memmap if there is one, else rendered
        from harness.data.shapes import open_shapes

        return open_shapes(resolution, cache_dir)
    from harness.data.cache import open_prepared

    main = spec.with_defaults(defaults)
    splits = open_prepared(main, resolution, cache_dir=cache_dir, prepare_missing=prepare_missing)
    for stage, options in (stage_defaults or {}).items():
        own = spec.with_defaults(",".join(p for p in (defaults, options) if p))  # the stage's win
        if own != main:
            splits.stages[stage] = open_prepared(own, resolution, cache_dir=cache_dir,
                                                 prepare_missing=prepare_missing)
    return splits


def open_run_data(text: str, cfg: MethodConfig, stage_options: dict[str, str], **kwargs) -> DataSplits:
    """A run's data: the spec with the method config's default options (`cfg.data_options`) and,
    for each stage in `stage_options` (harness.method.Method.stage_data_options), that stage's
    preparation of the same images."""
    return open_dataset(text, cfg.resolution, defaults=cfg.data_options, stage_defaults=stage_options, **kwargs)

