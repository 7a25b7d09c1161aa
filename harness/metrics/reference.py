"""The real images a FID reference is computed over, chosen without bias, and their features and
statistics, cached on disk and resumable: a whole ImageNet split takes hours on a CPU.

The official protocol (BigGAN-PyTorch's calculate_inception_moments.py) takes the moments over the
whole training split. Fewer images are a seeded, class-stratified random subset, never a prefix of
the storage order: prepared sets are stored class by class, so the first 50,000 ImageNet images
cover 39 of its 1,000 classes. The first n images stay available, named as such (`first`).
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from harness.data import ImageDataset
from harness.errors import MetricError
from harness.metrics.features import stats_from_features
from harness.rundir.atomic import atomic_path, atomic_write_bytes, sha256_file

KINDS = ("all", "stratified", "first")


@dataclass(frozen=True)
class Selection:
    """Which images of a split: `all`; `stratified` (a seeded random subset, each class in proportion
    to its share of the split; uniform where there are no classes); `first` (the first n in storage
    order). `n` None: as many as the samples scored against it (a run's eval_samples)."""

    kind: str
    n: int | None = None
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> "Selection":
        """`all` | `stratified[:N[:SEED]]` | `first[:N]`."""
        kind, *rest = str(text).strip().split(":")
        try:
            numbers = [int(x) for x in rest]
        except ValueError:
            numbers = None
        if kind not in KINDS or numbers is None or len(numbers) > (2 if kind == "stratified" else 0 if kind == "all"
                                                                    else 1) or any(x < 0 for x in numbers):
            raise MetricError(f"a FID reference is all, stratified[:N[:SEED]] or first[:N], got '{text}'")
        if numbers and numbers[0] < 2:
            raise MetricError(f"a FID reference needs at least 2 images, got '{text}'")
        return cls(kind, numbers[0] if numbers else None, numbers[1] if len(numbers) > 1 else 0)

    def sized(self, n: int) -> "Selection":
        """This selection with its open count set to `n` (the samples scored against it)."""
        return self if self.kind == "all" or self.n is not None else Selection(self.kind, n, self.seed)

    def describe(self) -> str:
        """`all`, `stratified n=50000 seed=0`, `first n=50000`."""
        if self.kind == "all":
            return "all"
        n = "n as many as the samples" if self.n is None else f"n={self.n}"
        return f"stratified {n} seed={self.seed}" if self.kind == "stratified" else f"first {n}"

    def key(self) -> str:
        """Part of the cache file name."""
        return {"all": "all", "stratified": f"strat{self.n}s{self.seed}", "first": f"first{self.n}"}[self.kind]


def select(dataset: ImageDataset, selection: Selection) -> np.ndarray:
    """The indices of `selection` in `dataset`, sorted (storage order reads fastest)."""
    size = len(dataset)
    if selection.kind == "all" or selection.n is None or selection.n >= size:
        return np.arange(size)
    if selection.kind == "first":
        return np.arange(selection.n)
    return stratified(dataset.labels() if dataset.num_classes > 1 else np.zeros(size, np.int64), selection.n,
                      selection.seed)


def stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` indices of `labels`, each class taking its share of n (largest remainders break the
    rounding), drawn without replacement by one seeded generator; sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(-(exact - quota), kind="stable")[: n - int(quota.sum())]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota) if q]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


@dataclass
class Reference:
    """A reference set's statistics, features and identity (what every FID line names)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    label: str  # `<dataset id>/<split> <selection>`
    selection: str
    index_sha256: str  # the dataset index's: which prepared images these are
    features: Path  # (count, D) float32 .npy, for metrics beyond FID: read them with `checked_features`
    stats: Path
    features_sha256: str  # the features file's, recorded in stats.npz when it was written


def reference_set(dataset: ImageDataset, selection: Selection, folder: Path,
                  extract: Callable[[Iterator, int, str, int], Iterator[np.ndarray]], chunk: int = 1000) -> Reference:
    """The reference of `selection` of `dataset`, from `folder` if complete; otherwise its features
    are extracted (continuing where an interrupted extraction stopped) into features.npy, then its
    float64 mean and covariance into stats.npz. `extract(batches, total, label, done)` yields the
    features of each uint8 batch."""
    idx = select(dataset, selection)
    if len(idx) < 2:
        raise MetricError(f"a FID reference needs at least 2 images; {dataset.id}/{dataset.split} has {len(idx)}")
    label = f"{dataset.id}/{dataset.split} {selection.describe()}"
    folder.mkdir(parents=True, exist_ok=True)
    stats, features, progress = folder / "stats.npz", folder / "features.npy", folder / "progress.json"
    # one extraction at a time (jobs side by side may need the same reference): the second waits, then reads
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(stats, len(idx)):
            _extract(dataset, selection, idx, label, stats, features, progress, extract, chunk)
        elif not _has_digest(stats):
            _record_digest(stats, features)
    with np.load(stats) as d:
        mu, sigma, digest = d["mu"], d["sigma"], str(d["features_sha256"])
    return Reference(mu, sigma, len(idx), label, selection.describe(), dataset.index_sha256, features, stats, digest)


def _extract(dataset: ImageDataset, selection: Selection, idx: np.ndarray, label: str, stats: Path, features: Path,
             progress: Path, extract, chunk: int) -> None:
    """Features of the images `idx` into features.npy, resuming an interrupted extraction, then stats.npz."""
    done = _resumable(progress, features, len(idx))
    batches = (dataset.images(idx[s:s + chunk])[0] for s in range(done, len(idx), chunk))
    out = None
    for feats in extract(batches, len(idx), f"reference features of {label}", done):
        if out is None:
            out = _open_features(features, len(idx), feats.shape[1], fresh=done == 0)
        out[done:done + len(feats)] = feats
        done += len(feats)
        out.flush()
        atomic_write_bytes(progress, json.dumps({"done": done, "count": len(idx)}).encode())
    mu, sigma = moments(np.load(features, mmap_mode="r"))
    with atomic_path(stats) as tmp:
        np.savez(tmp, mu=mu, sigma=sigma, count=len(idx), dataset_id=dataset.id, split=dataset.split,
                 selection=selection.describe(), index_sha256=dataset.index_sha256,
                 features_sha256=sha256_file(features))
    progress.unlink(missing_ok=True)


def _has_digest(stats: Path) -> bool:
    with np.load(stats) as d:
        return "features_sha256" in d.files


def _record_digest(stats: Path, features: Path) -> None:
    """A cache written before digests were kept: its features' digest is recorded now (trust on first use)."""
    with np.load(stats) as d:
        fields = {k: d[k] for k in d.files}
    with atomic_path(stats) as tmp:
        np.savez(tmp, **fields, features_sha256=sha256_file(features))


_VERIFIED: set[tuple] = set()  # (path, digest, size, mtime) of feature files already checked in this process


def checked_features(ref: Reference) -> np.ndarray:
    """The reference's (count, D) float32 features (a read-only memmap), after checking, once per
    process and file version, that they are the ones its statistics were computed from (the sha256
    stats.npz recorded). A changed file is a MetricError naming the folder to delete, never a silent
    mix of features and statistics."""
    st = ref.features.stat()
    key = (str(ref.features), ref.features_sha256, st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        actual = sha256_file(ref.features)
        if actual != ref.features_sha256:
            raise MetricError(f"{ref.features} is not the file {ref.stats.name} was computed from (sha256 {actual[:16]}..., "
                              f"recorded {ref.features_sha256[:16]}...); delete {ref.features.parent} to recompute it")
        _VERIFIED.add(key)
    return np.load(ref.features, mmap_mode="r")


IN_MEMORY = 1 << 27  # features (N x D) up to this many: clean-fid's np.mean / np.cov on them at once (1 GB)


def moments(features: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and covariance (np.cov's, n - 1) of (N, D) features: as clean-fid computes them
    (stats_from_features) where they fit in memory, else in chunks: two passes, the second over
    centred rows, so a memmap of a million rows never sits in memory (equal up to summation order)."""
    n = len(features)
    if features.size <= IN_MEMORY:
        return stats_from_features(np.asarray(features))
    mu = np.zeros(features.shape[1])
    for s in range(0, n, chunk):
        mu += np.asarray(features[s:s + chunk], dtype=np.float64).sum(axis=0)
    mu /= n
    sigma = np.zeros((features.shape[1], features.shape[1]))
    for s in range(0, n, chunk):
        centred = np.asarray(features[s:s + chunk], dtype=np.float64) - mu
        sigma += centred.T @ centred
    return mu, sigma / (n - 1)


def _complete(stats: Path, count: int) -> bool:
    if not stats.is_file():
        return False
    try:
        with np.load(stats) as d:
            return int(d["count"]) == count and d["mu"].shape[0] > 0
    except (OSError, ValueError, KeyError):
        stats.unlink(missing_ok=True)  # torn: recompute
        return False


def _resumable(progress: Path, features: Path, count: int) -> int:
    """Images already extracted by an interrupted run (0 if none or if its files disagree)."""
    try:
        state = json.loads(progress.read_text())
        if state["count"] == count and np.load(features, mmap_mode="r").shape[0] == count:
            return int(state["done"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 0


def _open_features(path: Path, count: int, dim: int, fresh: bool) -> np.memmap:
    if not fresh:
        existing = np.load(path, mmap_mode="r+")
        if existing.shape == (count, dim) and existing.dtype == np.float32:
            return existing
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
    os.replace(tmp, path)
    return out
