"""The one place that turns images into metrics and labels them.

An `ImageScorer` holds the resolved backbone, which metrics to compute (`--metrics`,
harness.metrics.suite) and which real images a reference is (a Selection: the whole split, a
stratified subset, or the first n; harness.metrics.reference, cached per dataset id, split,
selection and weights). One extraction of each side's features serves every metric. Every result
carries its sample counts, reference and network, and a stand-in backbone can only ever produce keys
named `..._standin` (`fid_standin`, `kid_standin_mean`): there is no code path from it to `fid`.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
from rich.console import Console

from harness.data import ImageDataset
from harness.data.store import cache_root
from harness.errors import MetricError
from harness.metrics import suite
from harness.metrics.backbone import Backbone, metric_key
from harness.metrics.features import stats_from_features
from harness.metrics.fid import CHUNK, FID_MODES, FeatureAccumulator, frechet_distance
from harness.metrics.reference import Reference, Selection, checked_features, reference_set
from harness.metrics.sharding import ONE_PROCESS, EvalGroup, agree, failure, on_rank0
from harness.ui.progress import EvalProgress
from harness.rundir.samples import SampleKeeper


T = TypeVar("T")


def fid_key(backbone: Backbone, name: str = "fid") -> str:
    """`fid` for the TF Inception, `fid_standin` / `fid_dinov2` otherwise (also for `fid_star`)."""
    return metric_key(backbone, name)


class ImageScorer:
    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu", cache_dir=None, batch_size: int = 250,
                 is_splits: int = 10, mode: str = "clean", selection: Selection = Selection("stratified"),
                 metrics: str = suite.RECORDED_BEFORE, resamples: int = suite.RESAMPLES, chunk: int = CHUNK):
        if mode not in FID_MODES:
            raise MetricError(f"unknown FID mode '{mode}'; use one of: {', '.join(FID_MODES)}")
        self.backbone = backbone
        self.metrics = suite.parse_metrics(metrics)  # what `score` computes (harness.metrics.suite)
        self.resamples = resamples  # of each bootstrap interval (`ci`)
        self.chunk = chunk  # samples drawn at once, with seed + k for chunk k: the same at any number of processes
        self.group: EvalGroup = ONE_PROCESS  # the processes an evaluation is split over (harness.metrics.sharding)
        self.mode = mode  # clean-fid's resize mode: clean | legacy_tensorflow (harness.metrics.fid)
        self.device = torch.device(device)
        self.cache = cache_root(cache_dir) / "fid-ref"
        self.selection = selection  # which real images a dataset's reference is (harness.metrics.reference)
        self.batch_size = batch_size
        self.is_splits = is_splits
        self.used_stats: dict[str, str] = {}  # stats file -> sha256, for run.json
        self.used_labels: dict[str, str] = {}  # stats file -> the reference set it describes
        # shows the images of each feature extraction; the loop sets a visible one (harness.progress)
        self.progress = EvalProgress(Console(stderr=True), enabled=False)

    @property
    def resize_mode(self) -> str:
        """The resize the features are taken after: the network's own (DINOv2) or the run's FID mode."""
        return self.backbone.resize or self.mode

    # --- reference statistics -------------------------------------------------------------------
    def reference(self, dataset: ImageDataset, n: int) -> Reference:
        """The reference set of `dataset` this scorer's selection names (an open count: `n`, the
        samples scored against it): its features and statistics, computed once and cached by
        dataset id, split, selection, weights and resize mode (harness.metrics.reference)."""
        selection = self.selection.sized(n)
        mode = "" if self.resize_mode == "clean" else f"-{self.resize_mode}"
        folder = self.cache / f"{dataset.id}-{dataset.split}-{selection.key()}-{self.backbone.key}{mode}"
        ref = reference_set(dataset, selection, folder, self._feature_chunks)
        self._used(ref.stats)
        self.used_labels[str(ref.stats)] = ref.label
        return ref

    def _feature_chunks(self, batches, total: int, label: str, done: int):
        """The features (float32) of each batch of uint8 images, with progress counted from `done`."""
        with self.progress.task(label + (f" (resuming at {done})" if done else ""), total - done) as advance:
            for batch in batches:
                acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, want_probs=False, mode=self.mode)
                acc.add(batch)
                advance(len(batch))
                yield acc.features().astype(np.float32)

    def _used(self, path: Path) -> None:
        if str(path) not in self.used_stats:
            self.used_stats[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()

    # --- scores ---------------------------------------------------------------------------------
    def features(self, batches, total: int | None = None, label: str = "features") -> FeatureAccumulator:
        """Features (and IS probabilities) of uint8 image batches; with `total`, progress is shown."""
        acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, "is" in self.metrics, self.mode)
        if total is None:
            return acc.add_all(batches)
        return self._extract(acc, batches, label, total)

    def _extract(self, acc: FeatureAccumulator, batches, label: str, total: int) -> FeatureAccumulator:
        with self.progress.task(label, total) as advance:
            for batch in batches:
                self._add(acc, batch, advance)
        return acc

    def _add(self, acc: FeatureAccumulator, batch: torch.Tensor, advance: Callable[[int], None]) -> None:
        # pieces of one backbone batch on a GPU, small ones on a CPU (where a batch takes seconds),
        # so the bar moves; images are independent in an eval-mode backbone, the features the same
        piece = self.batch_size if self.device.type == "cuda" else 25
        for start in range(0, len(batch), piece):
            acc.add(batch[start:start + piece])
            advance(len(batch[start:start + piece]))

    def sampled_features(self, draw: Callable[[int], torch.Tensor], sizes: list[int], label: str,
                         keep: SampleKeeper | None = None) -> FeatureAccumulator | None:
        """Features (and IS probabilities) of chunks of uint8 images, chunk k = `draw(k)` of `sizes[k]`
        images, in chunk order, split over the scorer's group (harness.metrics.sharding): chunk k is
        drawn and featurised on rank k % world, rank 0 gathers each round of `world` chunks. Rank 0
        returns all the features, the other ranks None. `keep` keeps the images, in chunk order, on
        rank 0 (the other ranks send it the images it wants). A failure on any rank, rank 0's
        keeping included, is raised on every rank at the end of its round."""
        group, rank0 = self.group, self.group.rank == 0
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        acc = FeatureAccumulator(self.backbone, self.device, self.batch_size, "is" in self.metrics, self.mode)
        own: list[tuple[int, str, str]] = []  # rank 0's failure in keeping, told at the next agreement
        with self.progress.task(label, starts[-1]) as advance, _discarded_on_failure(keep):
            for first in range(0, len(sizes), group.world):
                k = first + group.rank
                mine = None
                if k < len(sizes):
                    try:
                        mine = ("ok", *self._chunk(draw, k, sizes[k], advance,
                                                   keep is not None and keep.wants(starts[k])))
                    except Exception as e:  # the other ranks learn of it below, then all fail alike
                        if group.world == 1:
                            raise
                        mine = ("error", *failure(e))
                got = group.gather(mine)
                if group.world > 1:
                    seen = [(r, *m[1:]) for r, m in enumerate(got or []) if m is not None and m[0] == "error"]
                    agree(group, seen + own)
                for r, item in enumerate(got or []):
                    if item is None:
                        continue
                    _, feats, probs, images = item
                    acc.feats.append(feats)
                    if probs is not None:
                        acc.probs.append(probs)
                    if r != 0:
                        advance(len(feats))
                    if keep is not None and images is not None and not own:
                        try:
                            keep.add(images)
                        except Exception as e:
                            if group.world == 1:
                                raise
                            own.append((0, *failure(e)))
            if rank0 and keep is not None and not own:
                try:
                    keep.close()
                except Exception as e:
                    if group.world == 1:
                        raise
                    own.append((0, *failure(e)))
            if group.world > 1:
                agree(group, own)
        return acc if rank0 else None

    def _chunk(self, draw: Callable[[int], torch.Tensor], k: int, size: int, advance: Callable[[int], None],
               send_images: bool) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor | None]:
        """Chunk k's features, IS probabilities and (if `send_images`) its images on the CPU."""
        images = draw(k)
        if len(images) != size:
            raise MetricError(f"chunk {k} of the samples has {len(images)} images, expected {size}")
        part = FeatureAccumulator(self.backbone, self.device, self.batch_size, "is" in self.metrics, self.mode)
        self._add(part, images, advance)
        return part.features(), part.probabilities(), images.cpu() if send_images else None

    def on_rank0(self, work: Callable[[], T]) -> T:
        """`work()` (the metrics of gathered features) on rank 0; its result on every rank."""
        return on_rank0(self.group, work)

    def score(self, fake: FeatureAccumulator, reference: ImageDataset | None = None,
              reference_features: FeatureAccumulator | None = None, name: str = "fid") -> dict:
        """The scorer's metrics of `fake` against a dataset split (the scorer's selection of it, cached)
        or against already-extracted features, with the reference's labels and the network's name,
        weights and sha256. `name` other than "fid" (FID* against reconstructions): that Frechet
        distance alone, under that name."""
        n = fake.count
        if n < 2:
            raise MetricError(f"FID needs at least 2 samples, got {n}")
        if reference_features is not None:
            real = suite.RealSide(*stats_from_features(reference_features.features()), reference_features.count,
                                  reference_features.features)
            labels = {"ref": reference_features.label or "given features"}
        else:
            r = self.reference(reference, n)
            real = suite.RealSide(r.mu, r.sigma, r.count, lambda: checked_features(r))
            labels = {"ref": r.label, "ref_selection": r.selection, "ref_sha256": r.index_sha256}
        if name != "fid":
            key = fid_key(self.backbone, name)
            mu, sigma = stats_from_features(fake.features())
            out = {key: frechet_distance(mu, sigma, real.mu, real.sigma, self.device), f"{key}_n": n,
                   f"{key}_ref_n": real.count}
        else:
            out = suite.metrics_from_features(self.metrics, self.backbone, fake.features(), real, fake.probabilities(),
                                              self.device, self.is_splits, resamples=self.resamples)
            key = fid_key(self.backbone) if "fid" in self.metrics else "metrics"
        # beside the FID (or, without one, under `metrics_`): its resize mode and reference set
        out.update({f"{key}_mode": self.resize_mode, **{f"{key}_{k}": v for k, v in labels.items()}})
        if name == "fid":
            out.update(self.backbone.line_fields())
        return out

    def missing(self, n: int) -> list[str]:
        """Why requested metrics are absent from an evaluation of `n` samples (harness.metrics.suite)."""
        return suite.missing(self.metrics, self.backbone, n, self.is_splits)

    def provenance(self) -> dict:
        return {"backbone": self.backbone.describe(), "mode": self.resize_mode, "reference": self.selection.describe(),
                "metrics": list(self.metrics), "settings": suite.settings(),
                "reference_stats": dict(self.used_stats)}


@contextlib.contextmanager
def _discarded_on_failure(keep: SampleKeeper | None) -> Iterator[None]:
    try:
        yield
    finally:
        if keep is not None:
            keep.discard()  # after close(): nothing left to remove


def generator_metrics(ctx, sample: Callable[..., torch.Tensor], truncation: float = 1.0,
                      extra: dict[str, FeatureAccumulator | None] | None = None) -> dict[str, float]:
    """The scorer's metrics (FID or fid_standin, IS, KID, ...) of `ctx.eval_samples` samples against
    the training split. `sample(n, truncation=, seed=)` returns (n, 3, R, R) uint8; samples are drawn
    in chunks of `ctx.scorer.chunk`, chunk k with seed `seed + k` whichever process draws it, so the
    samples, and the metrics, do not depend on the number of processes they are split over under
    torchrun; every rank gets the same result. `extra` {name: features, complete on rank 0} scores
    the same samples against other references too (e.g. FID* against reconstructions: keys
    `fid_star`, or `fid_star_standin`)."""
    if ctx.scorer is None or ctx.eval_samples <= 0:
        return {}
    n, seed, chunk = ctx.eval_samples, ctx.seed * 1_000_003 + 7, ctx.scorer.chunk
    sizes = [min(chunk, n - start) for start in range(0, n, chunk)]

    def draw(k: int) -> torch.Tensor:
        return sample(sizes[k], truncation=truncation, seed=seed + k)

    keep = SampleKeeper(ctx.samples_path, ctx.samples_limit) if ctx.samples_path is not None else None
    fake = ctx.scorer.sampled_features(draw, sizes, f"eval {ctx.stage} step {ctx.step}: sampling + features", keep)

    def scores() -> dict:
        out = ctx.scorer.score(fake, reference=ctx.data)
        for name, reference in (extra or {}).items():
            out.update(ctx.scorer.score(fake, reference_features=reference, name=name))
        return out

    out = ctx.scorer.on_rank0(scores)
    for reason in ctx.scorer.missing(n):
        if reason not in ctx.notes:
            ctx.notes.append(reason)
    if n < 10_000 and "fid" in ctx.scorer.metrics and "small-sample" not in " ".join(ctx.notes):
        ctx.notes.append(f"small-sample FID (n={n}): biased upwards, comparable only at equal n"
                         + ("; KID is unbiased at any n" if "kid" in ctx.scorer.metrics else ""))
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
