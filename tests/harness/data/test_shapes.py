"""The shapes renderer against its first, straightforward numpy version (kept here verbatim as the
reference): bitwise-equal uint8 images for many indices, resolutions, both splits and seeds."""
import numpy as np
import pytest

from harness.data.shapes import CLASSES, VERSION, ShapesDataset, _SPLIT_CODE, render, shape_radius


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


def render_v1(index: int, resolution: int, split: str = "train", seed: int = 0) -> tuple[np.ndarray, int]:
    """shapes v1 as first written (harness/data/shapes.py at ce5ad19): one image at a time."""
    rng = np.random.default_rng((seed, _SPLIT_CODE[split], index, VERSION))
    label = index % len(CLASSES)
    r = resolution
    t = (np.arange(r, dtype=np.float32) + 0.5) / r * 2 - 1
    y, x = np.meshgrid(t, t, indexing="ij")

    # Background: a colour, a smooth gradient (low frequency) and a faint fine grating (high).
    bg = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
    gdir = rng.uniform(0, 2 * np.pi)
    gradient = np.float32(0.25) * (np.float32(np.cos(gdir)) * x + np.float32(np.sin(gdir)) * y)
    gfreq, gdir2 = rng.uniform(14, 22) * np.pi, rng.uniform(0, np.pi)
    grating = np.float32(0.06) * np.sin(np.float32(gfreq) * (np.float32(np.cos(gdir2)) * x + np.float32(np.sin(gdir2)) * y))
    img = bg[:, None, None] + (gradient + grating)[None]

    # Foreground: a shape of the class, rotated, scaled and placed at random.
    cx, cy = rng.uniform(-0.35, 0.35, size=2)
    size = rng.uniform(0.3, 0.55)
    px, py = _rotate(x - cx, y - cy, rng.uniform(0, 2 * np.pi))
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
    img = img * (1 - alpha) + fill * alpha
    img = img + 0.02 * rng.standard_normal(size=img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


@pytest.mark.parametrize("resolution", [8, 16, 31, 32, 64, 100, 128, 256])
@pytest.mark.parametrize("split", ["train", "val"])
def test_render_is_bitwise_the_reference(resolution, split):
    count = 60 if resolution <= 128 else 20  # every class several times; 256 is slow in the reference
    start = 1000 * resolution + (7 if split == "val" else 0)
    for index in range(start, start + count):
        ours, label = render(index, resolution, split)
        theirs, label_ref = render_v1(index, resolution, split)
        assert label == label_ref
        assert ours.dtype == np.uint8 and ours.shape == (3, resolution, resolution)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{split} image {index} at {resolution}")


def test_render_is_bitwise_the_reference_for_other_seeds():
    for seed in (1, 12345):
        for index in range(20):
            np.testing.assert_array_equal(render(index, 48, "train", seed)[0], render_v1(index, 48, "train", seed)[0])


def test_dataset_images_are_the_reference_images():
    data = ShapesDataset(40, "val")
    idx = np.array([4999, 0, 17, 17, 250])
    images, labels = data.images(idx)
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(images[k].numpy(), render_v1(int(i), 40, "val")[0])
        assert labels[k] == i % len(CLASSES)


@pytest.mark.parametrize("name", CLASSES)
def test_shape_radius_bounds_every_antialiased_pixel(name):
    """The renderer computes the silhouette only within `shape_radius` of its centre: on a full
    frame, every pixel with alpha > 0 must lie inside that radius."""
    rng = np.random.default_rng(0)
    for r in (8, 32, 256):
        t = (np.arange(r, dtype=np.float64) + 0.5) / r * 2 - 1
        y, x = np.meshgrid(t, t, indexing="ij")
        for _ in range(10):
            size, theta = rng.uniform(0.3, 0.55), rng.uniform(0, 2 * np.pi)
            px, py = _rotate(x, y, theta)
            sdf = _sdf(name, px, py, size)
            alpha = np.clip(0.5 - sdf * (r / 2), 0, 1)
            assert np.hypot(x, y)[alpha > 0].max() < shape_radius(size, r)


def _sdf(name, px, py, size):
    rho = np.hypot(px, py)
    if name in ("disk", "striped-disk", "rippled-disk"):
        return rho - size
    if name in ("square", "checkered-square"):
        return _box(px, py, size * 0.8, size * 0.8)
    if name == "triangle":
        return _triangle(px, py, size)
    if name == "ring":
        return np.abs(rho - size * 0.75) - size * 0.22
    if name == "cross":
        return np.minimum(_box(px, py, size, size * 0.3), _box(px, py, size * 0.3, size))
    if name == "star":
        return rho - size * (0.65 + 0.35 * np.cos(5 * np.arctan2(py, px)))
    return (np.hypot(px, py * 2.2) - size) / 2.2 * 1.6


def test_version_is_unchanged():
    assert VERSION == 1 and _SPLIT_CODE == {"train": 0, "val": 1}
