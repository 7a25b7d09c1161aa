"""Readers of real image sets in their published layouts. Each yields uint8 HWC RGB arrays.

Every reader returns a `Source`: image count, labels, class names, a `load(i)` function, the
names of its splits and a fingerprint of the files it read (for the index hash). Nothing here
resizes; `cache.py` crops and resizes once when it prepares the memmap.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from harness.data import DataSpec
from harness.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class Source:
    kind: str
    path: str
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    load: Callable[[int], np.ndarray]  # i -> (H, W, 3) uint8
    split_of: np.ndarray  # (N,) uint8: 0 train, 1 val, 2 "unsplit" (hold-out chosen later)
    fingerprint: str  # sha256 over what was read: file names, sizes, mtimes or array bytes
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")


def _fingerprint_files(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def open_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; undecodable files are a DataError naming them."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# --- CIFAR-10: the official python tarball or its extracted folder ------------------------------
def _cifar_batches(path: Path) -> dict[str, bytes]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if Path(m.name).name in names}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{path} is not the CIFAR-10 python tarball (missing {missing[0]})")
                return {n: tar.extractfile(members[n]).read() for n in names}
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"cannot read CIFAR-10 tarball {path}: {e}") from None
    folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{path} is not an extracted CIFAR-10 python folder (missing {missing[0]})")
    return {n: (folder / n).read_bytes() for n in names}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 python batch holds (dicts, lists, bytes,
    numbers and numpy arrays, as numpy 1 and 2 and pickle protocols 2 to 5 name them): the batches
    are pickles, and a crafted one must not run code."""

    ALLOWED = {(m, name) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | \
              {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")} | \
              {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR-10 batch holds: refused")
        return super().find_class(module, name)


def _unpickle_batch(data: bytes):
    return _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()


def cifar10_source(path: Path) -> Source:
    raw = _cifar_batches(path)
    images, labels, split = [], [], []
    name = "batches.meta"
    try:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            d = _unpickle_batch(raw[name])
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            images.append(x)
            labels.append(np.asarray(d[b"labels"], dtype=np.int64))
            split.append(np.full(len(x), 1 if name == "test_batch" else 0, dtype=np.uint8))
        name = "batches.meta"
        meta = _unpickle_batch(raw[name])
        class_names = [c.decode() for c in meta[b"label_names"]]
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError, AttributeError) as e:
        raise DataError(f"corrupt CIFAR-10 batch {name} in {path}: {e}") from None
    x = np.concatenate(images)
    h = hashlib.sha256()
    for name in sorted(raw):
        h.update(hashlib.sha256(raw[name]).digest())
    return Source("cifar10", str(path), np.concatenate(labels), class_names, lambda i: x[i],
                  np.concatenate(split), h.hexdigest(), ["official split: 50,000 train, 10,000 test as held-out"])


# --- CelebA: img_align_celeba folder ---------------------------------------------------------------
def celeba_source(path: Path) -> Source:
    folder = path / "img_align_celeba" if (path / "img_align_celeba").is_dir() else path
    files = _images_in(folder)
    if not files:
        raise DataError(f"no images in {folder} (expected CelebA's img_align_celeba folder)")
    split = np.full(len(files), 2, dtype=np.uint8)
    notes = []
    partition = next((p / "list_eval_partition.txt" for p in (folder, folder.parent)
                      if (p / "list_eval_partition.txt").is_file()), None)
    if partition is not None:
        part = {}
        for line in partition.read_text().split("\n"):
            if line.strip():
                name, k = line.split()
                part[name] = int(k)
        split = np.array([0 if part.get(f.name, 0) == 0 else 1 for f in files], dtype=np.uint8)
        notes.append("official partition: train = 0, held-out = val + test")
    return Source("celeba", str(path), np.zeros(len(files), dtype=np.int64), [], lambda i: open_rgb(files[i]),
                  split, _fingerprint_files(files, folder), notes)


# --- ImageNet / generic folder: class sub-folders (optionally under train/ and val/) --------------
def folder_source(path: Path, kind: str = "folder") -> Source:
    roots = [(path / "train", 0), (path / "val", 1)] if (path / "train").is_dir() else [(path, 2)]
    class_names = sorted(d.name for d in roots[0][0].iterdir() if d.is_dir())
    files: list[Path] = []
    labels: list[int] = []
    split: list[int] = []
    if class_names:
        cls = {c: k for k, c in enumerate(class_names)}
        for root, code in roots:
            if not root.is_dir():
                continue
            for c in sorted(d.name for d in root.iterdir() if d.is_dir()):
                if c not in cls:
                    raise DataError(f"class folder {root / c} has no counterpart in {roots[0][0]}")
                found = _images_in(root / c)
                files += found
                labels += [cls[c]] * len(found)
                split += [code] * len(found)
    else:  # a flat folder of images: one class
        files = _images_in(path)
        labels = [0] * len(files)
        split = [2] * len(files)
    if not files:
        raise DataError(f"no images found under {path}")
    return Source(kind, str(path), np.asarray(labels, dtype=np.int64), class_names,
                  lambda i: open_rgb(files[i]), np.asarray(split, dtype=np.uint8),
                  _fingerprint_files(files, path), [])


# --- npz: arrays `images` uint8 NHWC, optional `labels` -------------------------------------------
def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (N, H, W, 3) uint8, labels (N,) or None) of an .npz; grey images get 3 channels."""
    try:
        with np.load(path, allow_pickle=False) as d:
            if "images" not in d.files:
                raise DataError(f"{path} has no array 'images' (found: {', '.join(d.files)})")
            x = d["images"]
            y = d["labels"] if "labels" in d.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:  # a torn or non-zip .npz
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: 'images' must be uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: {len(y)} labels for {len(x)} images")
    return x, y


def checked_labels(labels: np.ndarray, n: int | None, where: str) -> tuple[np.ndarray, int]:
    """(labels as int64, the number of classes): labels must be 1-D integers in [0, n), n given (an
    npz's `class_names`) or the number of distinct labels, so every class id a conditional model
    embeds exists (a negative label failed BigGAN much later; one label of 2e7 made an index of 2e7
    class names)."""
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D (one integer per image), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":  # not floats, strings or booleans: a class id is an integer
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    if not len(labels):
        return labels.astype(np.int64), n or 0
    lo, hi = int(labels.min()), int(labels.max())
    if n is None:
        n = len(np.unique(labels))
        if lo < 0 or hi >= n:
            raise DataError(f"{where}: labels must be 0..{n - 1} ({n} distinct values), got {lo}..{hi}: number the "
                            f"classes from 0, or name all of them in an array `class_names`")
    elif lo < 0 or hi >= n:
        raise DataError(f"{where}: labels must lie in 0..{n - 1} (`class_names` names {n} classes), got {lo}..{hi}")
    return labels.astype(np.int64), n


def _npz_class_names(path: Path) -> list[str] | None:
    try:
        with np.load(path, allow_pickle=False) as d:
            names = d["class_names"] if "class_names" in d.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: class_names must be a 1-D array of strings, got {names.dtype} {names.shape}")
    return [str(c) for c in names.tolist()]


def npz_source(path: Path) -> Source:
    x, y = load_npz(path)
    names = _npz_class_names(path)
    if y is None:
        y, n = np.zeros(len(x), dtype=np.int64), len(names) if names else 1
    else:
        y, n = checked_labels(y, len(names) if names is not None else None, str(path))
    h = hashlib.sha256(np.ascontiguousarray(x).data)
    h.update(np.ascontiguousarray(y).data)
    return Source("npz", str(path), y, names or [str(k) for k in range(n)], lambda i: x[i],
                  np.full(len(x), 2, dtype=np.uint8), h.hexdigest(), [])


def read_source(spec: DataSpec) -> Source:
    """Open the raw images a spec names; a missing or unreadable path is a DataError."""
    path = Path(os.path.expanduser(spec.path)).resolve()
    _require(path, f"{spec.kind} data")
    if spec.kind == "cifar10":
        return cifar10_source(path)
    if spec.kind == "celeba":
        if not path.is_dir():
            raise DataError(f"celeba:PATH must be a folder of images (img_align_celeba), got {path}")
        return celeba_source(path)
    if spec.kind in ("imagenet", "folder"):
        if not path.is_dir():
            raise DataError(f"{spec.kind}:PATH must be a folder, got {path}")
        return folder_source(path, spec.kind)
    if spec.kind == "npz":
        return npz_source(path)
    raise DataError(f"no reader for dataset kind '{spec.kind}'")
