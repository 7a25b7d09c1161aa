"""`harness fid A B`: FID (and IS) between two image sources of any kind, torch-fidelity style.

A source is a folder of images, an .npz of uint8 images, a dataset spec (`cifar10:PATH`, `shapes`,
...; its reference statistics are cached by dataset id) or a run directory: the samples its final
evaluation kept (samples/<stage>-final.npz), else new samples from its last checkpoint
(harness.evaluate). `fid_between(a, b, scorer)` is the one entry point.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from harness.data import KINDS, ImageDataset, open_dataset
from harness.data.sources import IMAGE_EXTENSIONS, load_npz, open_rgb
from harness.errors import DataError
from harness.posthoc.restore import restore_run, sample_run
from harness.metrics.scorer import ImageScorer
from harness.rundir.rundir import RunDir
from harness.rundir.samples import final_samples_path


@dataclass
class ImageSource:
    """`batches(n)` yields (k, 3, H, W) uint8 batches, n images in all (fewer if the source has
    fewer); `dataset` is set for dataset specs, whose statistics are cached."""

    label: str
    count: int | None  # None: unbounded (a generator)
    batches: Callable[[int], Iterator[torch.Tensor]]
    resolution: int | None
    dataset: ImageDataset | None = None


def _folder(path: Path) -> ImageSource:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images in {path}")

    def batches(n: int) -> Iterator[torch.Tensor]:
        for f in files[:n]:  # one at a time: folder images may differ in size, as clean-fid allows
            yield torch.from_numpy(open_rgb(f).copy()).permute(2, 0, 1)[None]

    with Image.open(files[0]) as im:
        res = im.size[0] if im.size[0] == im.size[1] else None
    return ImageSource(str(path), len(files), batches, res)


def _npz(path: Path) -> ImageSource:
    x, _ = load_npz(path)

    def batches(n: int) -> Iterator[torch.Tensor]:
        for s in range(0, min(n, len(x)), 500):
            yield torch.from_numpy(np.ascontiguousarray(x[s:min(n, s + 500)].transpose(0, 3, 1, 2)))

    return ImageSource(str(path), len(x), batches, x.shape[1] if x.shape[1] == x.shape[2] else None)


def _dataset(spec: str, resolution: int, split: str) -> ImageSource:
    splits = open_dataset(spec, resolution)
    data = splits.train if split == "train" else splits.val

    def batches(n: int) -> Iterator[torch.Tensor]:
        for s in range(0, min(n, len(data)), 500):
            yield data.images(np.arange(s, min(n, len(data), s + 500)))[0]

    return ImageSource(f"{spec} ({data.id}, {split})", len(data), batches, resolution, data)


def final_samples(run_dir: Path) -> Path | None:
    """The run's kept final samples: the whole pipeline's if it has them, else its last stage's."""
    stages = RunDir.open(run_dir).manifest().get("stages", [])
    for name in ["pipeline", *reversed(stages)]:
        path = final_samples_path(run_dir, name)
        if path.is_file():
            return path
    return None


def is_dataset_spec(text: str) -> bool:
    return text == "shapes" or text.split(":", 1)[0] in KINDS and ":" in text


def open_source(text: str, *, resolution: int | None, split: str, device) -> ImageSource:
    """Resolve one side of `harness fid`. Dataset specs need a resolution (from the other side or
    --resolution); run directories without kept samples are sampled from their last checkpoint."""
    if is_dataset_spec(text):
        if resolution is None:
            raise DataError(f"{text}: give --resolution (or compare against a source with a known size)")
        return _dataset(text, resolution, split)
    path = Path(text).expanduser()
    if RunDir.is_run(path):
        kept = final_samples(path)
        if kept is not None:
            src = _npz(kept)
            src.label = f"{path}: {kept.relative_to(path)}, kept by its final evaluation"
            return src
        restored = restore_run(path, device)
        return ImageSource(f"{path} (samples of {restored.info.name}, {restored.checkpoints})", None,
                           lambda n: sample_run(restored, n, 1.0, 0), restored.cfg.resolution)
    if path.is_dir():
        return _folder(path)
    if path.is_file() and path.suffix == ".npz":
        return _npz(path)
    raise DataError(f"{text} is not an image folder, an .npz, a dataset spec or a run directory")


@dataclass
class Comparison:
    """What `fid_between` measured: the scorer's metrics of A against B (FID, IS of A where the
    weights have logits, KID, ...), and why a requested one is missing."""

    a: str  # the sources' labels
    b: str
    n_a: int  # images of A scored
    metrics: dict
    notes: list[str]


def fid_between(a: str, b: str, scorer: ImageScorer, *, samples: int = 50_000, resolution: int | None = None,
                split: str = "train", device=None) -> Comparison:
    """FID between image sources `a` (generated) and `b` (reference), at most `samples` images of
    each. A dataset spec takes its resolution from `resolution` or from the other side."""
    if split not in ("train", "val"):
        raise DataError(f"--split must be train or val, got '{split}'")
    first, other = (b, a) if is_dataset_spec(a) else (a, b)  # a dataset spec learns its size from the other
    src_first = open_source(first, resolution=resolution, split=split, device=device)
    src_other = open_source(other, resolution=resolution or src_first.resolution, split=split, device=device)
    src_a, src_b = (src_first, src_other) if first is a else (src_other, src_first)
    n_a = min(samples, src_a.count) if src_a.count is not None else samples
    n_b = min(samples, src_b.count) if src_b.count is not None else samples
    with torch.no_grad():
        fake = scorer.features(src_a.batches(n_a), total=n_a, label=f"features of {src_a.label}")
        if src_b.dataset is not None:
            metrics = scorer.score(fake, reference=src_b.dataset)
        else:
            metrics = scorer.score(fake, reference_features=scorer.features(src_b.batches(n_b), total=n_b,
                                                                            label=f"features of {src_b.label}"))
    return Comparison(src_a.label, src_b.label, fake.count, metrics, scorer.missing(fake.count))
