"""Prepare a real image set once: decode, crop and/or resize to RxR, into the uint8 memmap of
harness.data.store (the embedded `shapes` set is rendered into the same layout by harness.data.shapes).

The dataset id recorded in run.json is `<kind>-<R>-[<options>-]<sha256(index.json)[:12]>`, the
non-default preparation options named (e.g. `celeba-128-all-squash-...`, `imagenet-256-native-...`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from harness.data import DataSpec, DataSplits, parse_data_spec
from harness.data.shapes import prepare_shapes
from harness.data.sources import Source, checked_labels, read_source
from harness.data.store import FORMAT, MemmapDataset, cache_root, write_prepared
from harness.errors import DataError

# what each (crop, resize) option pair does, written into index.json (so into the dataset id)
PROCESSING = {
    ("centre", "crop"): "centre crop to a square of the short side, then PIL bicubic resize (antialiased) to R",
    ("native", "crop"): "torchvision CenterCrop(R) at native resolution (zero padding where smaller), no resize",
    ("long-edge", "crop"): "BigGAN-PyTorch CenterCropLongEdge (centre square of the short side, torchvision "
                           "rounding), then PIL bilinear resize of the short side to R (torchvision Resize(R))",
    ("centre", "squash"): "PIL bilinear resize of the full frame to RxR (aspect ratio not kept, no crop)",
}
MAX_HELD_OUT = 10_000


def prepared_dir(spec: DataSpec, resolution: int, cache_dir=None) -> Path:
    source = str(Path(os.path.expanduser(spec.path)).resolve())
    ident = f"{spec.kind}\0{source}\0{resolution}\0{FORMAT}"
    if spec.tag:  # the default preparation keeps the cache folder it always had
        ident += f"\0{spec.tag}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "data" / f"{spec.kind}-{resolution}-{spec.tag + '-' if spec.tag else ''}{key}"


def square_resize(img: np.ndarray, resolution: int, where: str = "") -> np.ndarray:
    """(H, W, 3) uint8 -> (R, R, 3) uint8: centre crop to the short side, then bicubic resize.
    Images smaller than R after cropping are refused: upscaling would invent the detail that the
    frequency-domain methods are measured on."""
    h, w = img.shape[:2]
    s = min(h, w)
    if s < resolution:
        raise DataError(
            f"image {where or ''} is {w}x{h}, smaller than {resolution}x{resolution} after cropping; "
            f"use a resolution <= {s} (--set resolution={2 ** int(np.log2(s))})"
        )
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top:top + s, left:left + s]
    if s != resolution:
        img = np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.BICUBIC))
    return img


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 as torchvision's `CenterCrop(size)`: an image smaller
    than the crop is first zero-padded, (size - w) // 2 on the left and the rest on the right (the
    same vertically); the crop then starts at int(round((h - size) / 2)) (Python rounds halves to
    even, as torchvision's `center_crop` does)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = img.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[top:top + size, left:left + size]


def long_edge_resize(img: np.ndarray, resolution: int, where: str = "") -> np.ndarray:
    """BigGAN-PyTorch's sampler data (`CenterCropLongEdge()` then `transforms.Resize(R)`): the centre
    square of the short side, cropped as torchvision does, then PIL bilinear to RxR."""
    s = min(img.shape[:2])
    if s < resolution:
        raise DataError(f"image {where} is {img.shape[1]}x{img.shape[0]}, smaller than {resolution}x{resolution}; "
                        f"use crop=native (pads) or a resolution <= {s}")
    img = center_crop(img, s)
    if s != resolution:
        img = np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.BILINEAR))
    return img


def squash_resize(img: np.ndarray, resolution: int, where: str = "") -> np.ndarray:
    """The octave code's CelebA (`resize_celeba.py`: scipy.misc.imresize(img, (R, R)), PIL bilinear):
    the whole frame resized to RxR, aspect ratio not kept. Upscaling is refused as in `square_resize`."""
    h, w = img.shape[:2]
    if min(h, w) < resolution:
        raise DataError(f"image {where} is {w}x{h}, smaller than {resolution}x{resolution}; use a resolution "
                        f"<= {min(h, w)}")
    if (h, w) == (resolution, resolution):
        return img
    return np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.BILINEAR))


def prepared_image(img: np.ndarray, resolution: int, spec: DataSpec, where: str = "") -> np.ndarray:
    """(H, W, 3) uint8 -> (R, R, 3) uint8 by the spec's crop / resize options."""
    crop, resize = spec.option("crop"), spec.option("resize")
    if resize == "squash":
        return squash_resize(img, resolution, where)
    if crop == "native":
        return center_crop(img, resolution)
    if crop == "long-edge":
        return long_edge_resize(img, resolution, where)
    return square_resize(img, resolution, where)


def _held_out(source: Source) -> np.ndarray:
    """Split codes with the unsplit images divided: a fixed (seed 0) 5% hold-out, at most 10k."""
    split = source.split_of.copy()
    unsplit = np.flatnonzero(split == 2)
    k = min(MAX_HELD_OUT, len(unsplit) // 20)
    if k == 0 and len(unsplit) >= 2:
        k = 1
    perm = np.random.default_rng(0).permutation(unsplit)
    split[unsplit] = 0
    split[perm[:k]] = 1
    return split


def prepare(text_or_spec, resolution: int, *, cache_dir=None, force: bool = False, workers: int | None = None,
            progress=None) -> Path:
    """Prepare (or find) the memmap of a data spec at `resolution`; returns its folder. `shapes` is
    rendered into one (harness.data.shapes.prepare_shapes); the others are decoded and resized."""
    spec = parse_data_spec(text_or_spec) if isinstance(text_or_spec, str) else text_or_spec
    if spec.kind == "shapes":
        return prepare_shapes(resolution, cache_dir=cache_dir, force=force, workers=workers, progress=progress)
    spec = spec.with_defaults("")  # options equal to the defaults name the default preparation
    out = prepared_dir(spec, resolution, cache_dir)
    if (out / "index.json").is_file() and not force:
        return out
    source = read_source(spec)
    checked_labels(source.labels, len(source.class_names) or None, source.path)  # every reader's, before a byte is written
    split = _held_out(source)
    order = np.concatenate([np.flatnonzero(split == 0), np.flatnonzero(split == 1)])
    n_train = int((split == 0).sum())
    n = len(order)

    def one(k: int) -> np.ndarray:
        i = int(order[k])
        img = source.load(i)
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"{source.kind} image {i} has shape {img.shape}, expected (H, W, 3)")
        return prepared_image(img, resolution, spec, f"#{i} of {source.path}").transpose(2, 0, 1)

    # split=all: every image is trained on; the held-out split stays the official one (inside it)
    train_stop = n if spec.option("split") == "all" else n_train
    index = {
        "format": FORMAT,
        "kind": source.kind,
        "source": source.path,
        "resolution": resolution,
        "processing": PROCESSING[(spec.option("crop"), spec.option("resize"))],
        "count": n,
        "splits": {"train": [0, train_stop], "val": [n_train, n]},
        "num_classes": int(max(len(source.class_names), int(source.labels.max(initial=-1)) + 1)),
        "class_names": source.class_names,
        "source_fingerprint": source.fingerprint,
        "notes": source.notes,
    }
    if spec.options:  # only then: a default preparation's index (and id) is what it always was
        index.update(options=dict(spec.options), tag=spec.tag)
    return write_prepared(out, one, n, resolution, source.labels[order], index, workers=workers, progress=progress)


def open_prepared(spec: DataSpec, resolution: int, *, cache_dir=None, prepare_missing: bool = True) -> DataSplits:
    folder = prepared_dir(spec, resolution, cache_dir)
    if not (folder / "index.json").is_file():
        if not prepare_missing:
            raise DataError(f"{spec} is not prepared at {resolution}px: run `harness prepare --data {spec} "
                            f"--resolution {resolution}`")
        prepare(spec, resolution, cache_dir=cache_dir)
    try:
        splits = DataSplits(MemmapDataset(folder, "train"), MemmapDataset(folder, "val"))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"prepared data in {folder} is unreadable ({e}); re-run `harness prepare --force`") from None
    if len(splits.train) == 0:
        raise DataError(f"{spec} has no training images")
    return splits
