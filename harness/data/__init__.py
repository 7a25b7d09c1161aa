"""Datasets as uint8 NCHW tensors: the embedded `shapes` set and cached real image sets.

A data spec is `shapes` (procedural, no download) or `KIND:PATH` with KIND one of cifar10,
celeba, imagenet, folder, npz. Real sets are decoded, cropped and resized once by `prepare` into
a uint8 memmap under the cache directory; training reads batches from it and never resizes.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import DataError

KINDS = ("shapes", "cifar10", "celeba", "imagenet", "folder", "npz")


class ImageDataset(abc.ABC):
    """A split of an image set. `images(idx)` -> ((n, 3, R, R) uint8, (n,) int64 labels)."""

    name: str  # the kind, e.g. "cifar10"
    id: str  # identity of the prepared data: kind, resolution and a hash of its index
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

    def describe(self) -> dict:
        return {
            "name": self.name,
            "id": self.id,
            "index_sha256": self.index_sha256,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
        }


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str | None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_data_spec(text: str) -> DataSpec:
    """`shapes` | `cifar10:PATH` | `celeba:PATH` | `imagenet:PATH` | `folder:PATH` | `npz:PATH`."""
    kind, sep, path = str(text).partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}' in '{text}'; use one of: {', '.join(KINDS)}")
    if kind == "shapes":
        if path:
            raise DataError("the embedded 'shapes' dataset takes no path")
        return DataSpec("shapes", None)
    if not path:
        raise DataError(f"dataset '{kind}' needs a path: --data {kind}:PATH")
    return DataSpec(kind, path)


@dataclass
class DataSplits:
    train: ImageDataset
    val: ImageDataset


def open_dataset(text: str, resolution: int, *, cache_dir=None, prepare_missing: bool = True) -> DataSplits:
    """Open the train and held-out splits of a data spec at `resolution`, preparing the cache
    first if needed (real sets only; `shapes` renders on the fly)."""
    spec = parse_data_spec(text)
    if spec.kind == "shapes":
        from harness.data.shapes import ShapesDataset

        return DataSplits(ShapesDataset(resolution, "train"), ShapesDataset(resolution, "val"))
    from harness.data.cache import open_prepared

    return open_prepared(spec, resolution, cache_dir=cache_dir, prepare_missing=prepare_missing)
