"""The on-disk store of prepared image sets: where the cache lives, and the uint8 memmap layout
every prepared set (real sets and `shapes` alike) is written in and read from.

    <cache>/data/<name>/images.npy  (N, 3, R, R) uint8 (an .npy memmap), train first, then held-out
                        labels.npy  (N,) int64
                        index.json  source, resolution, splits, processing: its sha256 names the set
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from harness.data import ImageDataset
from harness.errors import DataError
from harness.ui.units import format_bytes

FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "fsgan-harness"))


def prepared_bytes(count: int, resolution: int) -> int:
    """The size of a prepared set's images.npy: (count, 3, R, R) uint8 (labels and index are small)."""
    return count * 3 * resolution * resolution


def write_prepared(out: Path, image, count: int, resolution: int, labels: np.ndarray, index: dict, *,
                   workers: int | None = None, progress=None) -> Path:
    """Write a prepared set into the folder `out`: images.npy from `image(k)` -> (3, R, R) uint8 for
    k < count (called from a thread pool of `workers`, default one per core), labels.npy, index.json.
    It is written into a temporary folder beside `out` and renamed into place only when complete, so
    a failure or an interrupt leaves `out` as it was. Refused (DataError) if the disk has too little
    space: the memmap is a sparse file, so running out would otherwise show only part-way through.
    `progress(done, count)` is called once with done=0 before the first image, then every 256."""
    need = prepared_bytes(count, resolution) + labels.nbytes + (1 << 20)
    existing = next(p for p in (out, *out.parents) if p.exists())  # nothing is created before the check
    free = shutil.disk_usage(existing).free
    if free < need:
        raise DataError(f"preparing {count:,} images at {resolution}x{resolution} needs {format_bytes(need)} but "
                        f"{existing} has {format_bytes(free)} free: free some space or choose another --cache-dir")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(count, 3, resolution, resolution))

        def one(k: int) -> None:
            images[k] = image(k)

        if progress is not None:
            progress(0, count)
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for done, _ in enumerate(pool.map(one, range(count)), 1):
                if progress is not None and (done % 256 == 0 or done == count):
                    progress(done, count)
        images.flush()
        np.save(tmp / "labels.npy", labels)
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
        (tmp / "prepared_at").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class MemmapDataset(ImageDataset):
    """One split of a prepared set, read from its uint8 memmap."""

    def __init__(self, folder: Path, split: str):
        index_bytes = (folder / "index.json").read_bytes()
        index = json.loads(index_bytes)
        self.folder = folder
        self.name = index["kind"]
        self.split = split
        self.resolution = int(index["resolution"])
        self.num_classes = int(index["num_classes"])
        self.index_sha256 = hashlib.sha256(index_bytes).hexdigest()
        tag = index.get("tag") or ""
        self.options = dict(index.get("options") or {})
        self.id = f"{self.name}-{self.resolution}-{tag + '-' if tag else ''}{self.index_sha256[:12]}"
        start, stop = index["splits"][split]
        self._all = np.load(folder / "images.npy", mmap_mode="r")
        self._labels = np.load(folder / "labels.npy")
        self.start, self.stop = int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def images(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {self.name}/{self.split} of {len(self)} images")
        rows = self.start + idx
        x = np.empty((idx.size,) + self._all.shape[1:], dtype=np.uint8)
        # row by row, in file order (kinder to the page cache): one copy straight into the batch,
        # where a fancy index copies into a temporary first (1.5 vs 9 ms a batch of 64 at 256)
        for k in np.argsort(rows, kind="stable"):
            x[k] = self._all[rows[k]]
        return torch.from_numpy(x), torch.from_numpy(self._labels[self.start + idx].astype(np.int64))

    def labels(self) -> np.ndarray:
        return self._labels[self.start:self.stop].astype(np.int64)
