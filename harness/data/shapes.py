"""`shapes`: the embedded default dataset, so a fresh machine can run every method.

Ten classes of coloured shapes on textured backgrounds, rendered procedurally from
(seed, split, index) at any resolution from 32 to 256 with no download. Every image mixes low
frequencies (a smooth background gradient, the silhouette) with high ones (a fine background
grating, striped / checkered / rippled fills, mild pixel noise), so that wavelet decoders and
octave convolutions have something to learn in both bands. Edges are antialiased from the signed
distance, so the same scene renders consistently at every resolution.

Rendering costs ~4 ms per 256x256 image per core, too slow to feed a GPU at 128 or 256, so
`harness prepare --data shapes --resolution R` can render both splits once into the uint8 memmap
the real sets use (`<cache>/data/<shapes id>/`, 10.8 GB at 256). `open_shapes` reads that when it
exists and renders otherwise: the same images, the same dataset id and description either way.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import torch

from harness.data import DataSplits, ImageDataset
from harness.data.store import FORMAT, MemmapDataset, cache_root, write_prepared
from harness.errors import DataError

CLASSES = ("disk", "square", "triangle", "ring", "cross", "striped-disk", "checkered-square", "star",
           "ellipse", "rippled-disk")
VERSION = 1
SPLIT_SIZES = {"train": 50_000, "val": 5_000}
_SPLIT_CODE = {"train": 0, "val": 1}


def _rotate(x: np.ndarray, y: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return c * x + s * y, -s * x + c * y


def _box(x: np.ndarray, y: np.ndarray, hx: float, hy: float) -> np.ndarray:
    """Signed distance to an axis-aligned box of half-sizes (hx, hy)."""
    dx, dy = np.abs(x) - hx, np.abs(y) - hy
    outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
    return outside + np.minimum(np.maximum(dx, dy), 0)


def _triangle(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance to an equilateral triangle of circumradius ~r pointing up."""
    k = np.sqrt(3.0)
    x, y = np.abs(x) - r * 0.866, -y + r * 0.5
    flip = x + k * y > 0
    x, y = np.where(flip, (x - k * y) / 2, x), np.where(flip, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * r * 0.866, 0)
    return -np.hypot(x, y) * np.sign(y)


def shape_radius(size: float, resolution: int) -> float:
    """A radius around the shape's centre outside which its antialiasing alpha is exactly 0: alpha
    > 0 needs sdf < 1/R, every silhouette lies within 0.8 sqrt(2) size of its centre (the square's
    corner) and every sdf grows at least 1.6 / 2.2 as fast as the distance (the ellipse's)."""
    return 0.8 * np.sqrt(2.0) * size + 2.2 / 1.6 / resolution * 1.01 + 2.0 / resolution


@functools.lru_cache(maxsize=16)
def _coordinates(r: int) -> np.ndarray:
    """Pixel centres in [-1, 1] (float32), read-only: shared by every image of a resolution."""
    t = (np.arange(r, dtype=np.float32) + 0.5) / r * 2 - 1
    t.setflags(write=False)
    return t


def _window(t: np.ndarray, centre: float, radius: float) -> slice:
    """The pixels whose centres lie within `radius` of `centre` (one pixel of slack each side)."""
    r = len(t)
    lo = int(np.floor((centre - radius + 1) * r / 2 - 0.5)) - 1
    hi = int(np.ceil((centre + radius + 1) * r / 2 - 0.5)) + 2
    return slice(min(max(lo, 0), r), min(max(hi, 0), r))


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A buffer of this thread's, reused from image to image: a fresh megabyte-sized array costs
    its page faults every time, about as much as the arithmetic done in it."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.shape != shape:
        buf = buffers[name] = np.empty(shape, dtype)
    return buf


def render(index: int, resolution: int, split: str = "train", seed: int = 0) -> tuple[np.ndarray, int]:
    """Render image `index` of `split`: ((3, R, R) uint8, class label).

    The scene is drawn on a (R, R) float32 grid whose axes are broadcast rather than materialised;
    the rotated coordinates, silhouette and fill (float64, as the numpy scalars make them) are
    computed only in the window of `shape_radius` around the shape, since outside it alpha is 0 and
    the composite is the background itself. Same operations, same order, same dtypes per pixel as
    the full-frame version (tests/harness/data/test_shapes.py keeps it and checks bitwise equality).
    """
    rng = np.random.default_rng((seed, _SPLIT_CODE[split], index, VERSION))
    label = index % len(CLASSES)
    r = resolution
    t = _coordinates(r)
    x, y = t[None, :], t[:, None]

    # Background: a colour, a smooth gradient (low frequency) and a faint fine grating (high).
    bg = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
    gdir = rng.uniform(0, 2 * np.pi)
    gradient = np.float32(0.25) * (np.float32(np.cos(gdir)) * x + np.float32(np.sin(gdir)) * y)
    gfreq, gdir2 = rng.uniform(14, 22) * np.pi, rng.uniform(0, np.pi)
    grating = np.float32(0.06) * np.sin(np.float32(gfreq) * (np.float32(np.cos(gdir2)) * x + np.float32(np.sin(gdir2)) * y))
    img = _scratch("image", (3, r, r), np.float64)
    np.add(bg[:, None, None], (gradient + grating)[None], out=img, dtype=np.float32)  # a float32 sum, kept in float64

    # Foreground: a shape of the class, rotated, scaled and placed at random.
    cx, cy = rng.uniform(-0.35, 0.35, size=2)
    size = rng.uniform(0.3, 0.55)
    theta = rng.uniform(0, 2 * np.pi)
    extent = shape_radius(size, r)
    rows, cols = _window(t, cy, extent), _window(t, cx, extent)
    xw, yw = x[:, cols] - cx, y[rows, :] - cy  # float64: cx, cy are numpy scalars
    c, s = np.cos(theta), np.sin(theta)
    px, py = c * xw + s * yw, -s * xw + c * yw
    rho = np.hypot(px, py)
    name = CLASSES[label]
    if name in ("disk", "striped-disk", "rippled-disk"):
        sdf = rho - size
    elif name in ("square", "checkered-square"):
        sdf = _box(px, py, size * 0.8, size * 0.8)
    elif name == "triangle":
        sdf = _triangle(px, py, size)
    elif name == "ring":
        sdf = np.abs(rho - size * 0.75) - size * 0.22
    elif name == "cross":
        sdf = np.minimum(_box(px, py, size, size * 0.3), _box(px, py, size * 0.3, size))
    elif name == "star":
        sdf = rho - size * (0.65 + 0.35 * np.cos(5 * np.arctan2(py, px)))
    else:  # ellipse
        sdf = (np.hypot(px, py * 2.2) - size) / 2.2 * 1.6

    # Foreground colour far from the background; textured classes alternate two colours.
    fg = np.clip(1.0 - bg + rng.uniform(-0.15, 0.15, size=3), 0, 1).astype(np.float32)
    fg2 = np.clip(fg * 0.45, 0, 1)
    freq = rng.uniform(6, 11) * np.pi / size * 0.5
    if name == "striped-disk":
        pattern = np.sin(freq * px) > 0
    elif name == "checkered-square":
        pattern = (np.sin(freq * px) > 0) ^ (np.sin(freq * py) > 0)
    elif name == "rippled-disk":
        pattern = np.sin(freq * rho) > 0
    else:
        pattern = np.zeros_like(px, dtype=bool)
    fill = np.where(pattern[None], fg2[:, None, None], fg[:, None, None])

    alpha = np.clip(0.5 - sdf * (r / 2), 0, 1)[None]  # one pixel = 2/R in these coordinates
    inside = img[:, rows, cols]
    img[:, rows, cols] = inside * (1 - alpha) + fill * alpha
    noise = rng.standard_normal(dtype=np.float32, out=_scratch("noise", (3, r, r), np.float32))
    noise *= np.float32(0.02)
    img += noise
    np.clip(img, 0, 1, out=img)
    img *= 255
    img += 0.5
    return img.astype(np.uint8), label


class ShapesDataset(ImageDataset):
    """A split of `shapes` at `resolution`; images are rendered when asked for."""

    name = "shapes"
    num_classes = len(CLASSES)
    storage = "rendered"  # how the images are made (PreparedShapes: "prepared"); not part of the id

    def __init__(self, resolution: int, split: str = "train", seed: int = 0):
        if split not in SPLIT_SIZES:
            raise DataError(f"shapes has splits {sorted(SPLIT_SIZES)}, not '{split}'")
        if not 8 <= int(resolution) <= 1024:
            raise DataError(f"shapes renders 8..1024 pixels, not {resolution}")
        self.resolution, self.split, self.seed = int(resolution), split, seed
        index = {"kind": "shapes", "version": VERSION, "seed": seed, "resolution": self.resolution,
                 "classes": CLASSES, "splits": SPLIT_SIZES}
        self.index_sha256 = hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest()
        self.id = f"shapes-v{VERSION}-{self.resolution}-{self.index_sha256[:12]}"

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def images(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for shapes/{self.split} of {len(self)} images")
        out = np.empty((idx.size, 3, self.resolution, self.resolution), dtype=np.uint8)
        labels = np.empty(idx.size, dtype=np.int64)
        for k, i in enumerate(idx):
            out[k], labels[k] = render(int(i), self.resolution, self.split, self.seed)
        return torch.from_numpy(out), torch.from_numpy(labels)

    def labels(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64) % len(CLASSES)  # render()'s label of image `index`


def prepared_folder(resolution: int, cache_dir=None) -> Path:
    """Where `harness prepare --data shapes` writes `resolution`: named by the dataset id, so a new
    renderer version (or split sizes) never reads an old preparation."""
    return cache_root(cache_dir) / "data" / ShapesDataset(resolution).id


def prepare_shapes(resolution: int, *, cache_dir=None, force: bool = False, workers: int | None = None,
                   progress=None) -> Path:
    """Render both splits (train, then val) once into a uint8 memmap; returns its folder. Images are
    `render(i, R, split)` unchanged (bitwise), labels `i % 10`. Threads, one per core: numpy releases
    the GIL in the array arithmetic; on the 2-core VM 2 threads rendered 300-400 images/s at 256 and
    2 processes 270."""
    train, val = ShapesDataset(resolution, "train"), ShapesDataset(resolution, "val")
    out = prepared_folder(resolution, cache_dir)
    if (out / "index.json").is_file() and not force:
        return out
    n_train, n_val = len(train), len(val)

    def image(k: int) -> np.ndarray:
        return render(k, train.resolution, "train")[0] if k < n_train else render(k - n_train, val.resolution, "val")[0]

    labels = np.concatenate([np.arange(n_train), np.arange(n_val)]) % len(CLASSES)
    index = {
        "format": FORMAT,
        "kind": "shapes",
        "shapes_id": train.id,  # checked on open: the id of the images this memmap holds
        "shapes_index_sha256": train.index_sha256,
        "resolution": train.resolution,
        "processing": f"harness.data.shapes.render(i, {train.resolution}, split), seed 0, version {VERSION}",
        "count": n_train + n_val,
        "splits": {"train": [0, n_train], "val": [n_train, n_train + n_val]},
        "num_classes": len(CLASSES),
        "class_names": list(CLASSES),
    }
    return write_prepared(out, image, n_train + n_val, train.resolution, labels.astype(np.int64), index,
                          workers=workers, progress=progress)


class PreparedShapes(MemmapDataset):
    """A split of `shapes` read from its prepared memmap: the images, labels, id, index sha256 and
    description of `ShapesDataset(resolution, split)`, so run.json, resume checks and FID reference
    caches cannot tell the two apart (only `storage` says which fed a run)."""

    storage = "prepared"
    seed = 0

    def __init__(self, folder: Path, split: str):
        super().__init__(folder, split)
        rendered = ShapesDataset(self.resolution, split)
        self.name, self.id, self.index_sha256 = rendered.name, rendered.id, rendered.index_sha256
        self.num_classes, self.options = rendered.num_classes, {}


def open_shapes(resolution: int, cache_dir=None) -> DataSplits:
    """The train and val splits of `shapes`: read from the prepared memmap if `harness prepare --data
    shapes` made one for `resolution`, else rendered on the fly (never prepared here: 10.8 GB at 256
    is the user's choice). A preparation is checked on open: its recorded id, its size, and a few
    images and labels (the first, middle and last of each split) bitwise against fresh renders."""
    rendered = DataSplits(ShapesDataset(resolution, "train"), ShapesDataset(resolution, "val"))
    folder = prepared_folder(resolution, cache_dir)
    if not (folder / "index.json").is_file():
        return rendered
    hint = f"re-run `harness prepare --data shapes --resolution {resolution} --force`"
    try:
        index = json.loads((folder / "index.json").read_text())
        splits = DataSplits(PreparedShapes(folder, "train"), PreparedShapes(folder, "val"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"prepared shapes in {folder} is unreadable ({e}); {hint}") from None
    if index.get("shapes_id") != rendered.train.id:
        raise DataError(f"prepared shapes in {folder} holds {index.get('shapes_id')}, not {rendered.train.id}; {hint}")
    n_train, n = len(rendered.train), len(rendered.train) + len(rendered.val)
    layout = (splits.train.start, splits.train.stop, splits.val.start, splits.val.stop, splits.train._all.shape)
    if layout != (0, n_train, n_train, n, (n, 3, resolution, resolution)):
        raise DataError(f"prepared shapes in {folder} has the wrong layout (splits {index.get('splits')}, images "
                        f"{splits.train._all.shape}); {hint}")
    for mine, theirs in ((splits.train, rendered.train), (splits.val, rendered.val)):
        probe = np.unique([0, len(theirs) // 2, len(theirs) - 1])
        x, y = mine.images(probe)
        x0, y0 = theirs.images(probe)
        if not (torch.equal(x, x0) and torch.equal(y, y0)):
            raise DataError(f"prepared shapes in {folder} differs from the renderer ({mine.split} images "
                            f"{probe.tolist()}): stale or corrupt; {hint}")
    return splits
