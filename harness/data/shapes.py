"""`shapes`: the embedded default dataset, so a fresh machine can run every method.

Ten classes of coloured shapes on textured backgrounds, rendered procedurally from
(seed, split, index) at any resolution from 32 to 256 with no download. Every image mixes low
frequencies (a smooth background gradient, the silhouette) with high ones (a fine background
grating, striped / checkered / rippled fills, mild pixel noise), so that wavelet decoders and
octave convolutions have something to learn in both bands. Edges are antialiased from the signed
distance, so the same scene renders consistently at every resolution.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading

import numpy as np
import torch

from harness.data import ImageDataset
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
